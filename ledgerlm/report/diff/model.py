"""What a change did to the model: metrics rows, training curves, each stage's recorded effect and eval's paired tests."""

from __future__ import annotations

import math
import re
from typing import Any

from ledgerlm import ledger
from ledgerlm.eval.compare import compare as compare_results
from ledgerlm.eval.eval_stage import load_results
from ledgerlm.io import iter_jsonl
from ledgerlm.report.diff.compare import CURVE_KEYS, Run, changed_keys, is_number
from ledgerlm.stage import get

# ----------------------------------------------------------------------------- model: curves, metrics, effects, eval


def metrics_rows(run: Run, rec: dict) -> list[dict]:
    """The rows of a stage's metrics.jsonl (a file output, or a file in an output directory)."""
    for art in (rec.get("outputs") or {}).values():
        base = ledger.resolve(art["path"], run.path)
        if art.get("kind") == "file" and art["path"].endswith("metrics.jsonl"):
            path = base
        elif art.get("kind") == "dir" and "metrics.jsonl" in (art.get("files") or {}):
            path = base / "metrics.jsonl"
        else:
            continue
        if path.is_file():
            return [r for _, r in iter_jsonl(path) if isinstance(r, dict)]
    return []


def headline(stage: str) -> tuple[str, ...]:
    try:
        return tuple(get(stage).headline or ())
    except (KeyError, ImportError, AttributeError):
        return ()


def model_effects(a: Run, b: Run, order: list[str], iters: int, seed: int) -> dict:
    out: dict[str, Any] = {"curves": [], "metrics": [], "effects": []}
    for s in order:
        ra, rb = a.records.get(s), b.records.get(s)
        if not ra or not rb:
            continue
        rows_a, rows_b = metrics_rows(a, ra), metrics_rows(b, rb)
        keys = [k for k in CURVE_KEYS if any(is_finite(r.get(k)) for r in rows_a + rows_b)]
        pa, pb = _points(rows_a, keys), _points(rows_b, keys)
        keys = [k for k in keys if pa[k] != pb[k]][:3]  # a curve the two runs share says nothing about the change
        if keys:
            out["curves"].append(
                {"stage": s, "keys": keys, "a": {k: pa[k] for k in keys}, "b": {k: pb[k] for k in keys}}
            )
        heads = headline(s)
        for c in changed_keys(ra.get("metrics"), rb.get("metrics")):
            if c["incidental"] or c["key"].startswith("effect") or not (is_number(c["a"]) or is_number(c["b"])):
                continue
            if re.search(r"\[\d+\]\.", c["key"]):  # a field of a list of rows (the contamination table): shown whole
                continue
            delta = c["b"] - c["a"] if is_number(c["a"]) and is_number(c["b"]) else None
            out["metrics"].append({"stage": s, **c, "delta": delta, "headline": c["key"] in heads})
        ea, eb = (ra.get("metrics") or {}).get("effect"), (rb.get("metrics") or {}).get("effect")
        if isinstance(ea, dict) or isinstance(eb, dict):
            out["effects"].append({"stage": s, "a": ea, "b": eb})
    ea, eb = a.records.get("eval"), b.records.get("eval")
    if ea and eb:
        try:
            out["eval"] = compare_results(load_results(a.path), load_results(b.path), iters=iters, seed=seed)
        except (ValueError, FileNotFoundError, KeyError) as e:
            out["eval_error"] = str(e)
    return out


def is_finite(x: Any) -> bool:
    return is_number(x) and math.isfinite(x)


def _points(rows: list[dict], keys: list[str], most: int = 1000) -> dict[str, list]:
    """(step, value) per key, thinned to at most `most` points (a long run's curve keeps its shape)."""
    out = {}
    for k in keys:
        pts = [[r["step"], r[k]] for r in rows if is_finite(r.get(k)) and is_number(r.get("step"))]
        stride = max(1, math.ceil(len(pts) / most))
        out[k] = pts[::stride] + (pts[-1:] if pts and (len(pts) - 1) % stride else [])
    return out
