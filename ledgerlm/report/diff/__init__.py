"""`ledgerlm diff RUN_A RUN_B`: why a number moved, read from the two runs' ledgers.

Stage by stage, in pipeline order, the two records are compared on what went in (resolved config, code version,
environment, seed, input hashes) and what came out (output hashes, counters, metrics, warnings, samples). The first
stage where anything differs is where the runs part ways; every later stage that differs is downstream of it, and
each is told why (its own config, its inputs, the code, or nothing at all: the same inputs gave different outputs).

Wall-clock measurements (stage seconds, tokens/s, MFU, elapsed times in metrics files, the report's costs) are
timings, not differences: a run and its re-run with the same seed are "identical except timings".

Then what the change did: to the data (curation: the documents kept in one run and dropped in the other, by
reason, with examples; the contamination table side by side; tokenization: vocabulary, bytes per token, tokens per
source and phase) and to the model (training curves overlaid, final metrics side by side, each post-training
stage's recorded effect, and evaluation's paired per-item tests from `ledgerlm compare`).

Output: a terminal summary, `--out DIR` (diff.md, a self-contained diff.html with the plots, diff.json), `--json`
(the whole diff on stdout). Exit status 0 when the runs are the same, 1 when they differ, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.card import write_page
from ledgerlm.io import atomic_write_json
from ledgerlm.report.diff.compare import (
    EXAMPLES,
    DiffInputError,
    Run,
    changed_keys,
    compare_stage,
    load_run,
    stage_order,
)
from ledgerlm.report.diff.data import data_effects
from ledgerlm.report.diff.model import model_effects
from ledgerlm.report.diff.render import Page, render
from ledgerlm.report.diff.words import summary
from ledgerlm.stage import STAGES

# ----------------------------------------------------------------------------- the whole diff


def diff_runs(
    a: Run, b: Run, iters: int = 10000, seed: int = 0, examples: int = EXAMPLES, skip: tuple[str, ...] = ()
) -> dict:
    order = [s for s in stage_order(a, b) if s not in skip]
    ctx: dict[str, Any] = {"incidental_paths": set(), "verdicts": {}}
    stages = []
    for s in order:
        row = compare_stage(s, a.records.get(s), b.records.get(s), a, b, ctx)
        ctx["verdicts"][s] = row
        stages.append(row)
    first = next((r for r in stages if not r["same"]), None)
    for r in stages:
        r["downstream"] = (
            bool(first) and r is not first and not r["same"] and order.index(r["stage"]) > order.index(first["stage"])
        )
    timings = any(
        (r.get("seconds") or [0, 0])[0] != (r.get("seconds") or [0, 0])[1]
        or any(x.get("incidental") for k in ("metrics", "counters", "outputs", "inputs") for x in r.get(k) or [])
        for r in stages
    )
    d: dict[str, Any] = {
        "a": _run_info(a),
        "b": _run_info(b),
        "same": first is None,
        "identical_except_timings": first is None and timings,
        "first_divergent": first["stage"] if first else None,
        "downstream": [r["stage"] for r in stages if r["downstream"]],
        "stages": stages,
        "changes": _changes(stages, a, b),
    }
    if first is not None:
        d["data"] = data_effects(a, b, examples)
        d["model"] = model_effects(a, b, order, iters, seed)
    return d


def _run_info(run: Run) -> dict:
    first = next(iter(run.records.values()))
    code = first.get("code") or {}
    return {
        "run": str(run.path),
        "recipe": run.name,
        "seed": first.get("seed"),
        "commit": code.get("git_commit") or code.get("package_version"),
        "dirty": code.get("git_dirty"),
        "torch": (first.get("env") or {}).get("torch"),
        "device": first.get("device"),
        "stages": list(run.records),
    }


def _changes(stages: list[dict], a: Run, b: Run) -> dict:
    """Everything that went in differently, once per key (a code or seed change is listed once, with its stages)."""
    config = [{"stage": r["stage"], **c} for r in stages for c in r.get("config") or []]
    seen: dict[tuple, dict] = {}
    for kind in ("code", "environment", "seed"):
        for r in stages:
            for c in r.get(kind) or []:
                k = (kind, c["key"], json.dumps(c["a"], default=str), json.dumps(c["b"], default=str))
                seen.setdefault(k, {"kind": kind, "key": c["key"], "a": c["a"], "b": c["b"], "stages": []})[
                    "stages"
                ].append(r["stage"])
    recipe = (
        []
        if _run_info(a)["recipe"] == _run_info(b)["recipe"]
        else [{"a": _run_info(a)["recipe"], "b": _run_info(b)["recipe"]}]
    )
    return {
        "recipe": recipe,
        "recipe_keys": _recipe_keys(a, b),
        "config": config,
        "other": list(seen.values()),
        "only_in_a": [r["stage"] for r in stages if r.get("status") == "only in A"],
        "only_in_b": [r["stage"] for r in stages if r.get("status") == "only in B"],
    }


def _recipe_keys(a: Run, b: Run) -> list[dict]:
    """The recipes' own keys outside the stage sections (the stage list, `hub_mirror`, `logging`, ...) that differ;
    the name, seed and device are shown with the runs and in every stage's record."""

    def top(run: Run) -> dict:
        return {
            k: v for k, v in run.recipe.items() if k not in STAGES and k not in ("name", "seed", "device", "stages")
        }

    out = changed_keys(top(a), top(b), a.roots, b.roots)
    sa, sb = a.recipe.get("stages"), b.recipe.get("stages")
    if sa != sb:  # the stage list as a whole: an inserted stage is not a change of every later item
        out.insert(0, {"key": "stages", "a": sa, "b": sb, "incidental": False})
    return out


# ----------------------------------------------------------------------------- the report's section


BASELINE_TITLE = "Difference from the baseline"


def check_baseline(baseline: str) -> None:
    """`report.baseline` names a run directory (a ValueError is reported against the key, exit 2)."""
    if baseline and not ledger.read_records(Path(baseline)):
        raise ValueError(
            f"{baseline}: not a run directory (no stage records under {ledger.ledger_dir(Path(baseline))})"
        )


def baseline_inputs(baseline: str) -> dict[str, Path]:
    """The baseline's records, hashed into the report's record: a re-run baseline makes the report stale."""
    if not baseline:
        return {}
    return {
        f"baseline:{r['stage']}": ledger.record_path(Path(baseline), r["stage"])
        for r in ledger.read_records(Path(baseline))
        if r.get("stage") != "report"
    }


def baseline_section(card, run_dir: Path, baseline: Path) -> dict | None:
    """The report's "Difference from the baseline": this run (B) against the baseline (A), without the reports."""
    try:
        a = load_run(baseline, skip=("report",))
        b = load_run(run_dir, rehash=False, skip=("report",))  # its own audit runs after the report
    except DiffInputError as e:
        card.heading(BASELINE_TITLE)
        card.para(f"The baseline cannot be compared: {e}")
        return None
    d = diff_runs(a, b, skip=("report",))
    render(d, card, level=2, title=BASELINE_TITLE)
    card.para(f"A = the baseline `{baseline}`, B = this run. The same as `ledgerlm diff {baseline} {run_dir}`.")
    return d


# ----------------------------------------------------------------------------- files and the command


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1120px;margin:1.5em auto;padding:0 16px;color:#222;"
    "line-height:1.4}h1{font-size:1.5em;overflow-wrap:anywhere}h2{border-bottom:1px solid #ddd;padding-bottom:2px;"
    "margin-top:1.6em}h3,h4{overflow-wrap:anywhere}.scroll{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;"
    "vertical-align:top;overflow-wrap:anywhere}th{background:#f3f3f3;text-align:left}td{max-width:420px}"
    "img{max-width:100%;height:auto;margin:.5em 0}code{background:#f5f5f5;padding:0 3px;overflow-wrap:anywhere}"
    "p{overflow-wrap:anywhere}"
)


def write(d: dict, out: Path) -> Page:
    """OUT/diff.md, OUT/diff.html (self-contained: the plots inline), OUT/diff.json and the plots as PNG files."""
    page = Page()
    render(d, page)
    write_page(out, "diff", "ledgerlm diff", _CSS, page)
    atomic_write_json(out / "diff.json", d)
    return page


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", type=Path, help="run directory A (the baseline)")
    p.add_argument("run_b", type=Path, help="run directory B")
    p.add_argument(
        "--out", type=Path, default=None, help="write diff.md, diff.html (with the plots) and diff.json here"
    )
    p.add_argument("--json", action="store_true", help="print the whole diff as JSON instead of the summary")
    p.add_argument("--examples", type=int, default=EXAMPLES, help="documents shown per kind of curation move")
    p.add_argument("--top", type=int, default=8, help="changes listed in the terminal summary")
    p.add_argument("--iters", type=int, default=10000, help="bootstrap resamples for the six-task mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--no-rehash", action="store_true", help="trust the artifacts: check the records' own hashes, not every file"
    )


def main(args) -> int:
    bad = (
        f"--out {args.out}: exists and is not a directory" if args.out is not None and args.out.exists()
        and not args.out.is_dir() else f"--iters {args.iters}: give at least 1" if args.iters < 1 else None
    )  # fmt: skip
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        a = load_run(args.run_a, rehash=not args.no_rehash)
        b = load_run(args.run_b, rehash=not args.no_rehash)
    except DiffInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = diff_runs(a, b, iters=args.iters, seed=args.seed, examples=max(0, args.examples))
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    else:
        print(summary(d, top=args.top), end="")
    if args.out:
        write(d, args.out)
        print(
            f"wrote {args.out / 'diff.md'} and {args.out / 'diff.html'}", file=sys.stderr if args.json else sys.stdout
        )
    return 0 if d["same"] else 1
