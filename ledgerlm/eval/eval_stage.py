"""The `eval` stage: score a model on the six zero-shot tasks (+ GSM8K) and write RUN/eval/results.json + results.md.

As a pipeline stage it evaluates the last model this run produced (rl > dpo > interpolate > sft > pretrain) unless
`model` names a stage or a path. As a command it also works outside any run:

    ledgerlm eval --model DIR[,DIR2,...] --tasks piqa,winogrande [--data-dir D] [--limit N] --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ledgerlm.config import ConfigError, apply_overrides, from_dict, parse_override
from ledgerlm.eval.backends import load_lm
from ledgerlm.eval.eval_report import SECTION as REPORT
from ledgerlm.eval.evaluate import evaluate, load_references, summary_metrics, to_markdown
from ledgerlm.io import atomic_write_json, atomic_write_text
from ledgerlm.ledger import WARN_P
from ledgerlm.post.start_checks import start_checks
from ledgerlm.progress import Progress, say
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.tasks import SIX_TASKS, TASKS, TaskDataError, hub_unavailable, local_source
from ledgerlm.tasks.gsm8k import MAX_NEW_TOKENS


@dataclass
class Config:
    model: str = "auto"  # "auto", a stage name (sft, ...), a model folder / Hub name, or "A,B,..." (ensemble)
    tasks: list[str] = field(default_factory=lambda: list(SIX_TASKS))  # task names (ledgerlm.tasks); default the six
    data_dir: Path | None = None  # local task files (D/<task>/<split>.jsonl or ../shared/data layout); None = Hub
    limit: int | None = None  # first N items of each task (quick checks; not comparable to full-split scores)
    batch_size: int = 32  # requests scored per forward pass
    backend: str = "auto"  # auto | hf (transformers) | ledgerlm (our Llama)
    dtype: str | None = None  # float32 | bfloat16 | float16; None = float32
    device: str | None = None  # None = the recipe's device
    ensemble_mode: str = "prob"  # prob (mean of probabilities) | logit (mean of logits)
    gsm8k_shots: list[int] | None = None  # None = by task and model context (generation_defaults)
    gsm8k_max_new_tokens: int | None = None  # None = by task and model context (generation_defaults)
    # lm-eval (default): lm-eval's generation rule (its stop strings, batches and decoding), so GSM8K scores compare
    # with published ones | chat: stop at <|im_end|>/EOS, an explicit choice, labelled "chat mode" in the results
    gsm8k_generation: str = "lm-eval"
    references: Path | None = None  # YAML of reported rows; None = ledgerlm/eval/references.yaml

    def validate(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"tasks: unknown {bad}; known: {', '.join(TASKS)}")
        if not self.tasks:
            raise ValueError("tasks: give at least one task")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.backend not in ("auto", "hf", "ledgerlm"):
            raise ValueError(f"backend must be auto, hf or ledgerlm, got {self.backend!r}")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.ensemble_mode not in ("prob", "logit"):
            raise ValueError(f"ensemble_mode must be prob or logit, got {self.ensemble_mode!r}")
        if self.gsm8k_shots is not None and (any(k < 0 for k in self.gsm8k_shots) or not self.gsm8k_shots):
            raise ValueError(f"gsm8k_shots must be a non-empty list of counts >= 0, got {self.gsm8k_shots}")
        if self.gsm8k_max_new_tokens is not None and self.gsm8k_max_new_tokens < 1:
            raise ValueError("gsm8k_max_new_tokens must be >= 1")
        if self.gsm8k_generation not in ("chat", "lm-eval"):
            raise ValueError(f"gsm8k_generation must be chat or lm-eval, got {self.gsm8k_generation!r}")
        if (why := hub_unavailable(self.tasks, self.data_dir)) is not None:
            raise ValueError(f"tasks: {why}")


def generation_defaults(task: str, max_length: int) -> tuple[list[int], int]:
    """(shot counts, max new tokens) for a generative task on a model with a `max_length`-token context: the task's
    budget, at most a quarter of the context; 0- and k-shot (GSM8K: 5) when k solved examples, the question and the
    answer fit the context, else 0-shot only (a 256-token demo model gets [0] and 64 tokens, SmolLM's 2048 gets
    [0, 5])."""
    gen = TASKS[task].generation
    new = min(gen.max_new_tokens, max(8, max_length // 4))
    shots = [0, gen.few_shot] if (gen.few_shot + 1) * gen.shot_tokens + new <= max_length else [0]
    return shots, new


def resolve_model(cfg: Config, ctx) -> list[Path | str]:
    """The model folder(s) to score: a stage's output, the latest one present, or explicit paths / Hub names."""
    if cfg.model == "auto":
        return [SPEC.starting_model(ctx, "eval.model")]
    if cfg.model in SPEC.starts_from:
        return [ctx.stage_dir(cfg.model) / "model"]
    return model_specs(cfg.model)


_HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")


def model_specs(model: str) -> list[Path | str]:
    """Each comma-separated model: an existing model folder (Path) or a Hub name (str); anything else is an error
    that says what a model argument can be."""
    out: list[Path | str] = []
    for spec in (s.strip() for s in model.split(",")):
        p = Path(spec).expanduser()
        if p.is_dir() and not (p / "config.json").is_file():
            raise ConfigError("eval.model", f"{spec} has no config.json: not a model folder (try RUN/<stage>/model)")
        if p.exists():
            out.append(p)
        elif spec and _HUB_NAME.fullmatch(spec) and not spec.startswith("."):
            out.append(spec)
        elif spec:
            raise ConfigError(
                "eval.model",
                f"no model at {spec}: give a model folder (RUN/<stage>/model), a stage name ({', '.join(SPEC.starts_from)})"
                " inside a run, or a Hub name such as org/model",
            )
    return out


def inputs(cfg: Config, ctx) -> dict:
    out = {}
    for i, m in enumerate(resolve_model(cfg, ctx)):
        out[f"model_{i}" if "," in cfg.model else "model"] = m if isinstance(m, Path) else f"hub:{m}"
    out.update(data_inputs(cfg))
    if cfg.references is not None:
        out["references"] = cfg.references
    return out


def data_inputs(cfg: Config) -> dict:
    """Where each task's items (and few-shot pool) come from: a local file, or "hub:..."; a missing local file is a
    TaskDataError naming what was tried."""
    out = {}
    for t in cfg.tasks:
        task = TASKS[t]
        if task.generate is not None:
            continue  # generated by our code: nothing external to hash
        few_shot = cfg.gsm8k_shots is None or any(cfg.gsm8k_shots)  # auto may choose few-shot: hash the pool
        splits = [task.split] + ([task.generation.fewshot_split] if task.generation and few_shot else [])
        for split in splits:
            key = f"data_{t}_{split}"
            if cfg.data_dir is None:
                out[key] = task.hub_source(split)
                continue
            path, labels = local_source(t, split, cfg.data_dir)
            out[key] = path
            if labels is not None:
                out[key + "_labels"] = labels
    return out


def _evaluate(cfg: Config, models: list, device: str, log=print, progress=None) -> tuple[dict, str]:
    spec = ",".join(str(m) for m in models)
    lm = load_lm(
        spec, device=cfg.device or device, backend=cfg.backend, dtype=cfg.dtype, ensemble_mode=cfg.ensemble_mode
    )
    # Generative tasks run with their own shots and budget (explicit settings win over generation_defaults).
    groups: dict[tuple, list[str]] = {}
    for t in cfg.tasks:
        key = ()
        if TASKS[t].generation is not None:
            shots, new = generation_defaults(t, lm.max_length)
            key = (tuple(cfg.gsm8k_shots or shots), cfg.gsm8k_max_new_tokens or new)
        groups.setdefault(key, []).append(t)
    results = None
    for key, tasks in groups.items():
        shots, new = key or ((0,), MAX_NEW_TOKENS)
        if key and new >= lm.max_length:
            raise ConfigError(
                "eval.gsm8k_max_new_tokens",
                f"{new} new tokens do not fit the model's {lm.max_length} positions with a prompt "
                f"(at most {lm.max_length - 1}; lm-eval refuses this too)",
            )
        part = evaluate(
            lm,
            tasks,
            data_dir=cfg.data_dir,
            limit=cfg.limit,
            batch_size=cfg.batch_size,
            gsm8k_shots=list(shots),
            gsm8k_max_new_tokens=new,
            gsm8k_generation=cfg.gsm8k_generation,
            progress=progress,
            log=log,
        )
        if results is None:
            results = part
        else:
            results["tasks"].update(part["tasks"])
            results.update({k: v for k, v in part.items() if k == "six_task_mean"})
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()}
    results["device"] = lm.device
    return results, to_markdown(results, load_references(cfg.references))


def run(cfg: Config, ctx):
    models = resolve_model(cfg, ctx)
    try:
        results, md = _evaluate(cfg, models, ctx.device, log=ctx.log.info, progress=ctx.progress)
    except TaskDataError as e:
        raise ConfigError("eval.data_dir", str(e)) from None
    atomic_write_json(ctx.out_dir / "results.json", results)
    atomic_write_text(ctx.out_dir / "results.md", md)
    counters = {f"{t}.n": r["n"] for t, r in results["tasks"].items()}
    counters.update({f"{t}.quarantined": r["n_quarantined"] for t, r in results["tasks"].items()})
    metrics = summary_metrics(results)
    ctx.tracker.log({k: v for k, v in metrics.items() if isinstance(v, float)}, 0)
    for task, message in chance_warnings(results):
        ctx.warn("eval_at_chance", f"{task}: {message}")
    return StageResult(
        outputs={"results": ctx.out_dir / "results.json", "report": ctx.out_dir / "results.md"},
        counters=counters,
        metrics=metrics,
        extra={
            "model": results["model"],
            "limit": cfg.limit,
            # how GSM8K was generated: "lm-eval" (comparable to published scores) or "chat" (an explicit choice)
            "gsm8k_generation": cfg.gsm8k_generation if any(t.startswith("gsm8k") for t in results["tasks"]) else None,
            "items_per_s": {t: r["items_per_s"] for t, r in results["tasks"].items()},
            "references": load_references(cfg.references),  # reported, not re-run: shown beside our rows
        },
        summary=results_table(results),
    )


def _pct(name: str) -> bool:
    return name.startswith(("acc", "exact_match"))


def results_table(results: dict) -> list[str]:
    """The terminal's results table: one row per task and metric, with its stderr, 95% CI and n."""
    rows = [("task", "metric", "value", "stderr", "95% CI", "n")]
    for t, r in results["tasks"].items():
        for m, v in r["metrics"].items():
            f = (lambda x: f"{x:.1%}") if _pct(m) else (lambda x: f"{x:.3g}")
            lo, hi = v["ci95"]
            label = f"{m} (chat mode)" if r.get("generation_mode") == "chat" else m
            rows.append((t, label, f(v["value"]), f(v["stderr"]), f"{f(lo)}-{f(hi)}", f"{r['n']:,}"))
    if "six_task_mean" in results:
        sm = results["six_task_mean"]
        rows.append(("six-task mean", "", f"{sm['value']:.1%}", f"{sm['stderr']:.1%}", "", f"{sm['n']:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    return [f"evaluated {results['model']}", *table]


def chance_rate(task: dict) -> float:
    """Expected accuracy of guessing: 1/choices averaged over items (multiple choice); 0 for open answers."""
    lls = [rec["ll"] for rec in task["items"] if "gold" in rec and rec.get("ll")]
    return sum(1 / len(x) for x in lls) / len(lls) if lls else 0.0


def chance_warnings(results: dict) -> list[tuple[str, str]]:
    """(task, message) for each task where no 0/1 metric is better than chance: a one-sided binomial test against
    the task's chance rate (multiple choice), or no correct answer at all (open answers, where chance is ~0)."""
    from scipy.stats import binomtest  # heavy: only when results are checked

    out = []
    for t, r in results["tasks"].items():
        chance = chance_rate(r)
        scores = {m: v for m, v in r["metrics"].items() if _pct(m) and v.get("n")}
        if not scores:
            continue
        verdicts = []
        for m, v in scores.items():
            k, n = round(v["value"] * v["n"]), v["n"]
            p = float(binomtest(k, n, chance, alternative="greater").pvalue) if chance > 0 else (1.0 if k == 0 else 0.0)
            verdicts.append((p, m, k, n))
        p, m, k, n = min(verdicts)
        if p >= WARN_P:
            if chance > 0:
                why = f"one-sided binomial p = {p:.2g} >= {WARN_P}"
                out.append((t, f"{m} {k / n:.1%} ({k}/{n}) is not better than chance {chance:.1%} ({why})"))
            else:
                out.append((t, f"no item answered correctly ({m} 0/{n}): the model is at chance on this task"))
    return out


def plan(cfg: Config, ctx) -> list[str]:
    lines = [
        f"tasks: {', '.join(cfg.tasks)} ({'first ' + str(cfg.limit) + ' items each' if cfg.limit else 'full splits'})"
    ]
    for t in (t for t in cfg.tasks if TASKS[t].generation is not None):
        gen = TASKS[t].generation
        shots = cfg.gsm8k_shots or f"0 (and {gen.few_shot} if the model's context fits them)"
        new = cfg.gsm8k_max_new_tokens or f"{gen.max_new_tokens} (at most a quarter of the model's context)"
        lines.append(f"{t}: {shots} shots, up to {new} generated tokens per item")
    lines.append(f"data: {cfg.data_dir or 'Hugging Face Hub'}")
    return lines


# ----------------------------------------------------------------------------------------------- command line


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model folder, stage name, Hub name, or A,B,... for an ensemble")
    p.add_argument("--tasks", default=None, help=f"comma-separated, from {','.join(TASKS)} (default: the six)")
    p.add_argument("--data-dir", type=Path, default=None, help="local task files instead of the Hub")
    p.add_argument("--limit", type=int, default=None, help="first N items of each task")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--backend", choices=["auto", "hf", "ledgerlm"], default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    p.add_argument("--device", default=None, help="cuda / cpu (default: the recipe's device)")
    p.add_argument(
        "--gsm8k-shots", default=None, help="comma-separated shot counts, e.g. 0,5 (default: by task and model context)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="generation budget (default: by task and model context)"
    )
    p.add_argument(
        "--gsm8k-generation",
        choices=["chat", "lm-eval"],
        default=None,
        help="lm-eval: lm-eval's generation rule, comparable to published scores (default); chat: stop at <|im_end|>",
    )
    p.add_argument("--references", type=Path, default=None, help="YAML of reported reference rows")


def cli_overrides(args) -> dict:
    tasks = args.tasks.split(",") if getattr(args, "tasks", None) else None
    shots = [int(x) for x in args.gsm8k_shots.split(",")] if getattr(args, "gsm8k_shots", None) else None
    return {
        "model": args.model,
        "tasks": [t.strip() for t in tasks if t.strip()] if tasks else None,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "backend": args.backend,
        "dtype": args.dtype,
        "device": args.device,
        "gsm8k_shots": shots,
        "gsm8k_max_new_tokens": args.max_new_tokens,
        "gsm8k_generation": getattr(args, "gsm8k_generation", None),
        "references": str(args.references) if args.references else None,
    }


def direct_main(args) -> int | None:
    """`ledgerlm eval ... --out FILE.json`: evaluate without a run directory. Returns None for the normal path."""
    out = getattr(args, "out", None)
    if out is None or Path(out).suffix != ".json":
        return None
    raw = apply_overrides({}, {k: v for k, v in cli_overrides(args).items() if v is not None})
    for o in args.overrides:
        parts, value = parse_override(o)
        raw = apply_overrides(raw, {".".join(parts[1:] if parts[0] == "eval" else parts): value})
    cfg = from_dict(Config, raw, prefix="eval")
    if cfg.model in ("auto", *SPEC.starts_from):
        raise ConfigError("eval.model", "with --out FILE.json give --model a model folder (or A,B for an ensemble)")

    def progress(it, total=None, desc=None, unit="batch"):
        return Progress(it, total, f"[eval] {desc}", unit=unit)

    try:
        data_inputs(cfg)  # a missing task file stops here, before the model is loaded
        results, md = _evaluate(cfg, model_specs(cfg.model), "auto", progress=progress)
    except TaskDataError as e:
        raise ConfigError("eval.data_dir", str(e)) from None
    out = Path(out)
    atomic_write_json(out, results)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    for task, message in chance_warnings(results):
        say(f"warning [eval] eval_at_chance: {task}: {message}")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def load_results(path: str | Path) -> dict:
    """A results document from a file, or from a run directory (RUN/eval/results.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / "eval" / "results.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no evaluation results (expected a results .json or a run directory)"
        ) from None


SPEC = StageSpec(
    name="eval",
    config=Config,
    run=run,
    help="zero-shot six-task evaluation and GSM8K, with confidence intervals",
    inputs=inputs,
    plan=plan,
    add_cli_args=add_cli_args,
    cli_overrides=cli_overrides,
    direct_main=direct_main,
    starts_from=("rl", "dpo", "interpolate", "sft", "pretrain",),
    report=REPORT,
    checks=start_checks("eval", "model"),
)
