"""Run tasks against a model and build the results: per-task metrics with stderr/CI, per-item audit records,
the six-task mean, and the Markdown tables (ours, then reference rows that were reported, not re-run)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from ledgerlm.components.stats import binary_score, mean_of_scores, perplexity_score
from ledgerlm.eval.harness import LM
from ledgerlm.tasks import HEADLINE, SIX_TASKS, FewshotSampler, TaskData, load_task
from ledgerlm.tasks.gsm8k import MAX_NEW_TOKENS

REFERENCES = Path(__file__).with_name("references.yaml")
RESULTS_SCHEMA = 1


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))  # first maximum on ties, as np.argmax


def score_loglikelihood_task(lm: LM, data: TaskData, batch_size: int = 32, progress: Callable | None = None) -> dict:
    t0 = time.perf_counter()
    res = lm.loglikelihood([it.requests for it in data.items], batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    records, acc, acc_norm, lls = [], [], [], []
    for it, r in zip(data.items, res):
        ll = [x[0] for x in r]
        rec = {"i": it.index, "src": it.source, "ll": ll, "greedy": [x[1] for x in r], "ntok": [x[2] for x in r]}
        if data.task.kind == "multiple_choice":
            pred = _argmax(ll)
            rec.update(gold=it.gold, pred=pred, acc=int(pred == it.gold))
            acc.append(rec["acc"])
            if "acc_norm" in data.task.metrics:
                pred_n = _argmax([x / len(c) for x, c in zip(ll, it.choices)])  # lm-eval: / len(choice) in chars
                rec.update(pred_norm=pred_n, acc_norm=int(pred_n == it.gold))
                acc_norm.append(rec["acc_norm"])
        else:  # lambada: accuracy = the greedy continuation is the target word; perplexity over items
            rec.update(target=it.target, acc=int(r[0][1]))
            acc.append(rec["acc"])
            lls.append(ll[0])
        records.append(rec)
    metrics = {"acc": binary_score(acc)}
    if acc_norm:
        metrics["acc_norm"] = binary_score(acc_norm)
    if lls:
        metrics["perplexity"] = perplexity_score(lls)
    return _task_result(data, metrics, records, seconds)


def score_generative(
    lm: LM,
    data: TaskData,
    shots: int,
    train: TaskData | None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 16,
    mode: str = "chat",
    progress: Callable | None = None,
) -> dict:
    """Greedy answers to a generative task's items (with `shots` solved examples from `train`), each checked by
    every answer extraction of the task (exact_match_<mode>)."""
    gen = data.task.generation
    if shots and train is None:
        raise ValueError(f"{data.task.name} few-shot needs the {gen.fewshot_split} split (few-shot pool)")
    pool = [{"question": t.question, "answer": t.target} for t in train.items] if shots else []
    sampler = FewshotSampler(pool, gen.fewshot_seed) if shots else None
    prompts = [gen.prompt(it.question, sampler.sample(shots) if sampler else ()) for it in data.items]
    t0 = time.perf_counter()
    gen_stats: dict = {}
    outs = lm.generate(
        prompts, max_new_tokens, gen.stop_strings, batch_size, mode=mode, stats=gen_stats, progress=progress
    )
    seconds = time.perf_counter() - t0
    records = []
    correct: dict[str, list[int]] = {m: [] for m in gen.modes}
    for it, out in zip(data.items, outs):
        ok = {m: int(gen.check(out, it.target, m)) for m in gen.modes}
        for m in gen.modes:
            correct[m].append(ok[m])
        records.append(
            {
                "i": it.index,
                "src": it.source,
                "completion": out,
                "gold": gen.gold(it.target),
                **{m: gen.extract(out, m) for m in gen.modes},
                **{f"ok_{m}": ok[m] for m in gen.modes},
            }
        )
    metrics = {f"exact_match_{m}": binary_score(correct[m]) for m in gen.modes}
    out = _task_result(data, metrics, records, seconds)
    out.update(shots=shots, max_new_tokens=max_new_tokens, fewshot_seed=gen.fewshot_seed if shots else None)
    out.update(generation_mode=mode, truncated_prompts=gen_stats["truncated_prompts"])
    return out


def _task_result(data: TaskData, metrics: dict, records: list, seconds: float) -> dict:
    return {
        "task": data.task.name,
        "split": data.split,
        "source": data.source,
        "n": len(data.items),
        "n_quarantined": len(data.quarantined),
        "quarantined": data.quarantined,
        "metrics": metrics,
        "seconds": round(seconds, 3),
        "items_per_s": round(len(data.items) / seconds, 2) if seconds > 0 else None,
        "items": records,
    }


def evaluate(
    lm: LM,
    tasks: Sequence[str],
    data_dir: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    gsm8k_shots: Sequence[int] = (0, 5),
    gsm8k_max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Callable | None = None,
    log: Callable[[str], None] | None = None,
    gsm8k_generation: str = "chat",
) -> dict:
    """Evaluate `lm` on `tasks`; returns the results document (see docs/eval.md)."""
    say = log or (lambda _m: None)
    out = {
        "schema": RESULTS_SCHEMA,
        "model": lm.name,
        "max_length": lm.max_length,
        "tree_packing": lm.tree,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "limit": limit,
        "tasks": {},
    }
    for name in tasks:
        data = load_task(name, data_dir=data_dir, limit=limit)
        if data.quarantined:
            say(f"{name}: {len(data.quarantined)} malformed record(s) quarantined, e.g. {data.quarantined[0]}")
        gen = data.task.generation
        if gen is not None:
            train = load_task(name, data_dir=data_dir, split=gen.fewshot_split) if any(gsm8k_shots) else None
            for k in gsm8k_shots:
                shown = _named(progress, f"{name} {k}-shot")
                r = score_generative(
                    lm,
                    data,
                    k,
                    train,
                    gsm8k_max_new_tokens,
                    batch_size=max(1, batch_size // 2),
                    mode=gsm8k_generation,
                    progress=shown,
                )
                if r["truncated_prompts"]:
                    say(f"{name} {k}-shot: {r['truncated_prompts']} prompt(s) left-truncated to fit max_length")
                out["tasks"][f"{name}_{k}shot"] = r
                say(f"{name} {k}-shot: {_fmt_metrics(r['metrics'])} ({r['items_per_s']} items/s)")
        else:
            r = score_loglikelihood_task(lm, data, batch_size, _named(progress, name))
            out["tasks"][name] = r
            say(f"{name}: {_fmt_metrics(r['metrics'])} ({r['items_per_s']} items/s)")
    six = [out["tasks"][t]["metrics"][HEADLINE[t]] for t in SIX_TASKS if t in out["tasks"]]
    if len(six) == len(SIX_TASKS):
        out["six_task_mean"] = {**mean_of_scores(six), "metrics": {t: HEADLINE[t] for t in SIX_TASKS}}
    return out


def _named(progress: Callable | None, name: str) -> Callable | None:
    """The progress callable, showing the task's name instead of the loop's."""
    return (lambda it, total=None, desc=None: progress(it, total=total, desc=name, unit="batch")) if progress else None


def _fmt_metrics(m: dict) -> str:
    return ", ".join(f"{k}={v['value']:.4f}±{v['stderr']:.4f}" for k, v in m.items())


def summary_metrics(results: dict) -> dict:
    """Flat metrics for the ledger: {task.metric: value, task.metric_stderr, ..., six_task_mean}."""
    flat = {}
    for t, r in results["tasks"].items():
        for m, v in r["metrics"].items():
            flat[f"{t}.{m}"] = v["value"]
            flat[f"{t}.{m}_stderr"] = v["stderr"]
            flat[f"{t}.{m}_ci95"] = v["ci95"]
        flat[f"{t}.n"] = r["n"]
        if "truncated_prompts" in r:  # generation prompts left-truncated to fit the model's context
            flat[f"{t}.truncated_prompts"] = r["truncated_prompts"]
    if "six_task_mean" in results:
        flat["six_task_mean"] = results["six_task_mean"]["value"]
        flat["six_task_mean_stderr"] = results["six_task_mean"]["stderr"]
    return flat


# ----------------------------------------------------------------------------------------------- reports


def load_references(path: str | Path | None = None) -> list[dict]:
    """Reference rows (reported in publications, not re-run here) from a YAML file."""
    p = Path(path) if path else REFERENCES
    with open(p, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise ValueError(f"{p}: expected a top-level 'rows:' list")
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("model"), str) or not str(r.get("source", "")).strip():
            raise ValueError(f"{p}: rows[{i}] needs 'model' and 'source'")
        where = f"{p}: rows[{i}] ({r['model']})"
        tasks = r.get("tasks") or {}
        if not isinstance(tasks, dict):
            raise ValueError(f"{where}: 'tasks' must map task names to scores")
        for t, v in tasks.items():
            if t not in SIX_TASKS:
                raise ValueError(f"{where}: unknown task {t!r}; expected one of {', '.join(SIX_TASKS)}")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{where}: tasks.{t} = {v!r} is not a fraction in [0, 1]")
        mean = r.get("six_task_mean")
        if mean is not None and (not isinstance(mean, (int, float)) or isinstance(mean, bool)):
            raise ValueError(f"{where}: six_task_mean {mean!r} is not a number")
        if mean is not None and tasks:  # a mean stated beside per-task values must be their mean
            missing = [t for t in SIX_TASKS if t not in tasks]
            if missing:
                raise ValueError(f"{where}: six_task_mean given but tasks lack {', '.join(missing)}")
            m = sum(tasks[t] for t in SIX_TASKS) / len(SIX_TASKS)
            if abs(m - mean) > 1e-4:
                raise ValueError(f"{where}: six_task_mean {mean} is not the mean of its tasks ({m:.4f})")
    return rows


def _f(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"  # perplexities of weak models are huge


def _cell(v: dict | None) -> str:
    if v is None:
        return "—"
    lo, hi = v["ci95"]
    return f"{_f(v['value'])} ± {_f(v['stderr'])} [{_f(lo, 3)}, {_f(hi, 3)}]"


def to_markdown(results: dict, references: list[dict] | None = None) -> str:
    lines = [f"# Evaluation of `{results['model']}`", ""]
    if results.get("limit"):
        lines += [
            f"**Only the first {results['limit']} items of each task (--limit): not comparable to full-split scores.**",
            "",
        ]
    lines += ["value ± stderr [95% CI]; stderr as lm-eval (sample sd / sqrt n), CI Wilson for accuracies.", ""]
    lines += ["| task | split | n | metric | score |", "|---|---|---:|---|---|"]
    for t, r in results["tasks"].items():
        for m, v in r["metrics"].items():
            head = " (in mean)" if t in SIX_TASKS and HEADLINE[t] == m else ""
            mode = " (chat mode: stops at the chat end token, not lm-eval's rule)" if r.get("generation_mode") == "chat" else ""
            lines.append(f"| {t} | {r['split']} | {r['n']} | {m}{head}{mode} | {_cell(v)} |")
    if "six_task_mean" in results:
        s = results["six_task_mean"]
        lines.append(f"| **six-task mean** | | {s['n']} | headline metrics | **{_cell(s)}** |")
    q = {t: r["n_quarantined"] for t, r in results["tasks"].items() if r["n_quarantined"]}
    if q:
        lines += ["", "Quarantined malformed records: " + ", ".join(f"{t}: {n}" for t, n in q.items())]
    if references and any(t in results["tasks"] for t in SIX_TASKS):  # nothing to compare in e.g. an arith-only run
        lines += ["", "## Reference rows — reported, not re-run", ""]
        lines += ["Copied from the cited sources; their harness, metric choices and splits may differ from ours.", ""]
        cols = list(SIX_TASKS)
        lines += [
            "| model | " + " | ".join(cols) + " | six-task mean | source |",
            "|---|" + "---:|" * (len(cols) + 1) + "---|",
        ]
        ours = [
            f"{results['tasks'][t]['metrics'][HEADLINE[t]]['value']:.4f}" if t in results["tasks"] else "—"
            for t in cols
        ]
        mean = f"{results['six_task_mean']['value']:.4f}" if "six_task_mean" in results else "—"
        lines.append(f"| **{results['model']} (this run)** | " + " | ".join(ours) + f" | **{mean}** | measured |")
        for r in references:
            cells = [_num(r.get("tasks", {}).get(t)) for t in cols]
            lines.append(
                f"| {r['model']} | " + " | ".join(cells) + f" | {_num(r.get('six_task_mean'))} | {r['source']} |"
            )
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "—"
