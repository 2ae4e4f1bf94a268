"""`ledgerlm compare A B`: paired significance tests between two evaluation results on the same items.

Per task: exact McNemar test on the per-item 0/1 outcomes of the task's headline metric (and both GSM8K matches).
Six-task mean: paired bootstrap over items (resampled within each task, same indices for A and B).
A and B are results .json files or run directories (RUN/eval/results.json). Items are paired by index and must
come from the same source lines, else the comparison is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ledgerlm.components.stats import mcnemar, paired_bootstrap_mean
from ledgerlm.eval.eval_stage import load_results
from ledgerlm.io import atomic_write_json
from ledgerlm.tasks import HEADLINE, SIX_TASKS

GSM8K_METRICS = {"exact_match_strict": "ok_strict", "exact_match_flexible": "ok_flexible"}


def _outcomes(task_result: dict, metric: str) -> list[int]:
    key = GSM8K_METRICS.get(metric, metric)
    return [int(r[key]) for r in task_result["items"]]


def _check_paired(t: str, a: dict, b: dict) -> None:
    sa = [(r["i"], r["src"].rsplit(":", 1)[-1]) for r in a["items"]]
    sb = [(r["i"], r["src"].rsplit(":", 1)[-1]) for r in b["items"]]
    if sa != sb:
        raise ValueError(f"{t}: A and B were scored on different items (n={len(sa)} vs {len(sb)}); cannot pair them")


def compare(a: dict, b: dict, iters: int = 10000, seed: int = 0) -> dict:
    rows = []
    common = [t for t in a["tasks"] if t in b["tasks"]]
    if not common:
        raise ValueError("the two results share no task")
    for t in common:
        ta, tb = a["tasks"][t], b["tasks"][t]
        _check_paired(t, ta, tb)
        metrics = [HEADLINE[t]] if t in HEADLINE else [m for m in GSM8K_METRICS if m in ta["metrics"]]
        for m in metrics:
            xa, xb = _outcomes(ta, m), _outcomes(tb, m)
            test = mcnemar(xa, xb)
            rows.append(
                {
                    "task": t,
                    "metric": m,
                    "n": len(xa),
                    "a": ta["metrics"][m]["value"],
                    "b": tb["metrics"][m]["value"],
                    **test,
                }
            )
    out = {"a": a.get("model"), "b": b.get("model"), "tasks": rows}
    if all(t in common for t in SIX_TASKS):
        xa = [_outcomes(a["tasks"][t], HEADLINE[t]) for t in SIX_TASKS]
        xb = [_outcomes(b["tasks"][t], HEADLINE[t]) for t in SIX_TASKS]
        out["six_task_mean"] = {
            "a": a["six_task_mean"]["value"],
            "b": b["six_task_mean"]["value"],
            **paired_bootstrap_mean(xa, xb, iters=iters, seed=seed),
        }
    return out


def to_markdown(c: dict) -> str:
    lines = [
        f"A = `{c['a']}`, B = `{c['b']}`",
        "",
        "| task | metric | n | A | B | B − A | A only | B only | p (McNemar) |",
    ]
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in c["tasks"]:
        lines.append(
            f"| {r['task']} | {r['metric']} | {r['n']} | {r['a']:.4f} | {r['b']:.4f} | {r['b'] - r['a']:+.4f} | "
            f"{r['a_only']} | {r['b_only']} | {r['p_value']:.4g} |"
        )
    if "six_task_mean" in c:
        s = c["six_task_mean"]
        lo, hi = s["ci95"]
        lines += [
            "",
            f"Six-task mean: A {s['a']:.4f}, B {s['b']:.4f}, B − A {s['diff']:+.4f} "
            f"(95% CI [{lo:+.4f}, {hi:+.4f}], paired bootstrap p = {s['p_value']:.4g}, {s['iters']} resamples)",
        ]
    return "\n".join(lines) + "\n"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("result_a", type=Path, help="results .json or run directory (A)")
    p.add_argument("result_b", type=Path, help="results .json or run directory (B)")
    p.add_argument("--iters", type=int, default=10000, help="bootstrap resamples for the six-task mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON here")


def main(args) -> int:
    try:
        c = compare(load_results(args.result_a), load_results(args.result_b), iters=args.iters, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(c), end="")
    if args.json:
        atomic_write_json(args.json, c)
    return 0


# Names the lead's brief used.
add_compare_args = add_args
compare_cmd = main
