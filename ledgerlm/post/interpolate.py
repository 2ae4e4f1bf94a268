"""Weight interpolation (the `interpolate` stage): θ(α) = (1 − α)·θ_base + α·θ_tuned for a list of α, each scored on a
metric set; the whole sweep is written out and the α picked by a declared rule becomes `RUN/interpolate/model/`.

Why: fine-tuning a small model trades general ability (what the base knew) for the new behaviour; a point between
the two often keeps most of both (WiSE-FT, model soups). The metric set is pluggable -- `METRICS` maps a name to a
function of (model, tokenizer, env) -- so a recipe can weigh held-out SFT loss against benchmark accuracy.

Built-in metrics:
  sft_val_loss         mean NLL per assistant token on the held-out conversations of the `sft` section (lower better)
  <task>[.<metric>]    any task known to `ledgerlm.eval` (piqa, arc_easy, hellaswag, winogrande, lambada_openai,
                       gsm8k, ...), scored by the eval harness on `eval_limit` items (higher better)
Other stages can register more: `interpolate.METRICS["name"] = fn(model, tokenizer, env) -> float`, or
-> (float, per-item scores) so the stage's effect (chosen α vs the tuned model it started from) gets a paired test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ledgerlm.components.stats import effect
from ledgerlm.config import ConfigError
from ledgerlm.eval.backends import LedgerLlama
from ledgerlm.eval.evaluate import evaluate
from ledgerlm.eval.harness import load_tok
from ledgerlm.io import atomic_write_json, atomic_write_text
from ledgerlm.post import sft
from ledgerlm.post.common import (
    effect_line,
    effect_metrics,
    load_model_and_tokenizer,
    resolve_model_dir,
    save_model_dir,
    seed_everything,
    warn_if_worse,
)
from ledgerlm.post.interpolate_checks import checks
from ledgerlm.post.interpolate_report import SECTION as REPORT
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.tasks import TASKS


@dataclass
class Config:
    base: str = "pretrain"  # stage name or model dir (α = 0)
    tuned: str = "sft"  # stage name or model dir (α = 1)
    # weights of the tuned model to try (e.g. 0,0.5,1)
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    # metric names: sft_val_loss, a task such as piqa, or task.metric
    metrics: list[str] = field(default_factory=lambda: ["sft_val_loss"])
    choose: str = ""  # metric that picks α (default: the first of `metrics`)
    mode: str = "auto"  # min | max | auto (min for *loss / *ppl / *perplexity, else max)
    data: str = ""  # held-out conversations for sft_val_loss (default: the sft section's data and split)
    eval_limit: int = 200  # items per benchmark metric (0 = all)
    eval_data_dir: str = ""  # local benchmark files (else the Hub)

    def validate(self) -> None:
        if not self.alphas:
            raise ValueError("alphas must not be empty")
        if not self.metrics:
            raise ValueError("metrics must not be empty")
        if self.choose and self.choose not in self.metrics:
            raise ValueError(f"choose={self.choose!r} is not one of metrics {self.metrics}")
        if self.mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be auto, min or max, got {self.mode!r}")


def interpolate_state(base: dict, tuned: dict, alpha: float) -> dict:
    """(1 − α)·base + α·tuned, tensor by tensor, computed in fp32 and cast back; shapes and names must match."""
    if set(base) != set(tuned):
        diff = sorted(set(base) ^ set(tuned))[:5]
        raise ValueError(f"base and tuned models have different tensors: {diff}")
    out = {}
    for k, b in base.items():
        t = tuned[k]
        if b.shape != t.shape:
            raise ValueError(f"tensor {k!r}: base shape {tuple(b.shape)} != tuned shape {tuple(t.shape)}")
        if not torch.is_floating_point(b):
            out[k] = t.clone()
            continue
        out[k] = torch.lerp(b.float(), t.float(), alpha).to(t.dtype)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Metrics


@dataclass
class MetricEnv:
    cfg: Config
    ctx: object
    device: str
    model_dir: Path  # where the tokenizer files are (the tuned model's dir)
    cache: dict = field(default_factory=dict)


def _sft_val_loss(model, tokenizer, env: MetricEnv) -> tuple[float, list[float]]:
    if "sft_val" not in env.cache:
        section = copy.copy(env.ctx.recipe.section("sft"))  # same data and held-out split as the sft stage
        if env.cfg.data:
            section.data = env.cfg.data
        if not section.data:
            raise ConfigError(
                "interpolate.data", "sft_val_loss needs held-out conversations: set interpolate.data or sft.data"
            )
        seq_len = section.seq_len or model.cfg.max_seq_len
        _, val, _, _ = sft.load_data(section, tokenizer, seq_len)
        if not val:
            raise ConfigError("interpolate.data", "no held-out conversations (sft.val_fraction is 0 and no val_data)")
        env.cache["sft_val"] = (val, seq_len, section.eval_batch_size)
    val, seq_len, bs = env.cache["sft_val"]
    items = sft.per_example_loss(model, val, seq_len, bs, env.device)
    # the mean over assistant tokens (what the sft stage reports), from the per-conversation means
    value = sum(x * e.n_trained for x, e in zip(items, val)) / sum(e.n_trained for e in val)
    return value, items


def _task_metric(name: str) -> Callable:
    """`task` or `task.metric` from ledgerlm.eval (e.g. `piqa`, `piqa.acc`, `gsm8k`), scored by its harness on the
    in-memory interpolated weights. Default metric: the task's headline (acc_norm / acc; a generative task's 0-shot flexible EM)."""
    task, _, metric = name.partition(".")
    if task not in TASKS:
        raise ConfigError("interpolate.metrics", f"{name!r}: not sft_val_loss nor a task ({', '.join(TASKS)})")

    def score(model, tokenizer, env: MetricEnv) -> tuple[float, list[float] | None]:
        if "lm" not in env.cache:  # one wrapper: the weights under it change in place for every alpha
            env.cache["lm"] = LedgerLlama(model, load_tok(env.model_dir), name="interpolated", device=env.device)
        data_dir = env.cfg.eval_data_dir or None
        res = evaluate(env.cache["lm"], [task], data_dir=data_dir, limit=env.cfg.eval_limit or None, gsm8k_shots=(0,))
        generative = TASKS[task].generation is not None  # scored 0-shot, reported as `<task>_0shot`
        m = metric or ("exact_match_flexible" if generative else TASKS[task].headline)
        got = res["tasks"][f"{task}_0shot" if generative else task]["metrics"]
        if m not in got:
            raise ConfigError("interpolate.metrics", f"{name}: task {task} has metrics {sorted(got)}, not {m!r}")
        # per-item right/wrong for the before/after test (none for perplexity)
        field = m.replace("exact_match_", "ok_") if generative else m
        recs = res["tasks"][f"{task}_0shot" if generative else task]["items"]
        items = [float(r[field]) for r in recs] if recs and all(field in r for r in recs) else None
        return float(got[m]["value"]), items

    return score


METRICS: dict[str, Callable] = {"sft_val_loss": _sft_val_loss}


def metric_fn(name: str) -> Callable:
    return METRICS.get(name) or _task_metric(name)


def direction(name: str, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    return "min" if name.endswith(("loss", "ppl", "perplexity")) else "max"


def choose(rows: list[dict], metric: str, mode: str) -> dict:
    """The row with the best `metric` (ties: the smallest α, i.e. the one closest to the base)."""
    sign = 1.0 if direction(metric, mode) == "min" else -1.0
    return min(rows, key=lambda r: (sign * r[metric], r["alpha"]))


def _score(fn, model, tokenizer, env) -> tuple[float, list[float] | None]:
    got = fn(model, tokenizer, env)
    value, items = got if isinstance(got, tuple) else (got, None)
    return float(value), items


def interpolate_effect(key: str, mode: str, tuned: tuple[float, list | None], chosen: tuple[float, list | None]):
    """The chosen α's model against the tuned model the stage started from (α = 1), on the metric that chose it:
    paired over items when the metric gives per-item scores (McNemar for right/wrong, else paired bootstrap)."""
    higher = direction(key, mode) == "max"
    label = {"sft_val_loss": "held-out SFT chat loss (tested per conversation)"}.get(key, key)
    (b, b_items), (a, a_items) = tuned, chosen
    if b_items is not None and a_items is not None and len(b_items) == len(a_items) and b_items:
        e = effect(key, b_items, a_items, higher_is_better=higher, label=label)
        e.update(before=b, after=a)  # the metric itself (a loss is a mean over tokens, not over items)
        e["improved"] = bool(a > b if higher else a < b)
        return e
    improved = bool(a > b if higher else a < b)
    return {
        "metric": key,
        "before": b,
        "after": a,
        "n": None,
        "test": None,
        "p": None,
        "label": label,
        "higher_is_better": higher,
        "improved": improved,
    }


def table_md(rows: list[dict], metrics: list[str], chosen: float, rule: str) -> str:
    head = "| α | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics) + "\n"
    body = "".join(
        f"| {r['alpha']:g}{' (chosen)' if r['alpha'] == chosen else ''} | "
        + " | ".join(f"{r[m]:.4f}" for m in metrics)
        + " |\n"
        for r in rows
    )
    return f"# Weight interpolation θ = (1−α)·θ_base + α·θ_tuned\n\nRule: {rule}\n\n{head}{body}"


# ----------------------------------------------------------------------------------------------------------------------
# Stage protocol


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    return {
        "base_model": resolve_model_dir(cfg.base, ctx, "interpolate.base"),
        "tuned_model": resolve_model_dir(cfg.tuned, ctx, "interpolate.tuned"),
    }


def plan(cfg: Config, ctx) -> list[str]:
    return [f"{len(cfg.alphas)} alphas {cfg.alphas} x metrics {cfg.metrics}; choose by {cfg.choose or cfg.metrics[0]}"]


def run(cfg: Config, ctx):
    seed_everything(ctx.seed)
    base_dir = resolve_model_dir(cfg.base, ctx, "interpolate.base")
    tuned_dir = resolve_model_dir(cfg.tuned, ctx, "interpolate.tuned")
    base, _ = load_model_and_tokenizer(base_dir, "cpu")
    model, tokenizer = load_model_and_tokenizer(tuned_dir, "cpu")
    if base.cfg != model.cfg:
        raise ValueError(f"interpolate: {base_dir} and {tuned_dir} have different model configs")
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    tuned_sd = {k: v.clone() for k, v in model.state_dict().items()}
    del base
    model.to(ctx.device)
    env = MetricEnv(cfg, ctx, ctx.device, tuned_dir)
    fns = {m: metric_fn(m) for m in cfg.metrics}
    key = cfg.choose or cfg.metrics[0]
    rows, key_items = [], {}
    for alpha in ctx.progress(cfg.alphas, desc="alphas", unit="alpha"):
        model.load_state_dict(interpolate_state(base_sd, tuned_sd, alpha))
        model.eval()
        row = {"alpha": float(alpha)}
        with torch.no_grad():
            for m, fn in fns.items():
                row[m], items = _score(fn, model, tokenizer, env)
                if m == key:
                    key_items[float(alpha)] = items
        ctx.log.info("interpolate alpha=%g %s", alpha, row)
        rows.append(row)
    best = choose(rows, key, cfg.mode)
    tuned_row = next((r for r in rows if r["alpha"] == 1.0), None)
    if tuned_row is None:  # the start (the tuned model itself) was not among the alphas: score it for the effect
        model.load_state_dict(tuned_sd)
        model.eval()
        with torch.no_grad():
            tuned_score = _score(fns[key], model, tokenizer, env)
    else:
        tuned_score = (tuned_row[key], key_items.get(1.0))
    eff = interpolate_effect(key, cfg.mode, tuned_score, (best[key], key_items.get(best["alpha"])))
    warn_if_worse(ctx, "interpolation", eff)
    rule = f"{direction(key, cfg.mode)} {key} (ties: smaller α)"
    out = Path(ctx.out_dir)
    atomic_write_json(
        out / "sweep.json",
        {"base": str(base_dir), "tuned": str(tuned_dir), "rule": rule, "chosen_alpha": best["alpha"], "rows": rows},
    )
    atomic_write_text(out / "sweep.md", table_md(rows, cfg.metrics, best["alpha"], rule))
    model.load_state_dict(interpolate_state(base_sd, tuned_sd, best["alpha"]))
    save_model_dir(model, tokenizer, out / "model")
    metrics = {"chosen_alpha": best["alpha"], **{f"chosen_{m}": best[m] for m in cfg.metrics}, **effect_metrics(eff)}
    for r in rows:
        metrics.update({f"{m}@{r['alpha']:g}": r[m] for m in cfg.metrics})
    return StageResult(
        outputs={"model": out / "model", "sweep_json": out / "sweep.json", "sweep_md": out / "sweep.md"},
        counters={"alphas": len(rows)},
        metrics=metrics,
        extra={"rule": rule, "base": str(base_dir), "tuned": str(tuned_dir)},
        summary=[
            f"chose α = {best['alpha']:g} ({rule})",
            effect_line(eff) + " (against the tuned model, α = 1)",
            *(
                f"α = {r['alpha']:g}: "
                + ", ".join(f"{m} {r[m]:.4g}" for m in cfg.metrics)
                + ("  <- chosen" if r is best else "")
                for r in rows
            ),
        ],
    )


SPEC = StageSpec(
    name="interpolate",
    config=Config,
    run=run,
    help="interpolate base and fine-tuned weights over a list of alphas and pick one",
    inputs=inputs,
    plan=plan,
    produces="chat_model",
    report=REPORT,
    checks=checks,
)
