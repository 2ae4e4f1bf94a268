"""The diff in words and numbers: formatted values, why a stage differs, the headline deltas and the terminal summary."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ledgerlm.report.diff.compare import is_number
from ledgerlm.report.diff.model import is_finite

# ----------------------------------------------------------------------------- words and numbers


def fmt(x: Any, digits: int = 4) -> str:
    """A count with thousands separators, a measurement to `digits` significant digits, anything else as text."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    if isinstance(x, str):
        return x
    return json.dumps(x, default=str)


def side_value(c: dict, side: str) -> str:
    """One side of a changed key: its value, `(absent)` where that side had no such key."""
    if c.get("absent") == side:
        return "(absent)"
    return json.dumps(c[side]) if isinstance(c[side], str) or c[side] is None else fmt(c[side])


def delta_text(x: Any, digits: int = 3) -> str:
    return "" if not is_number(x) else f"{'+' if x >= 0 else '−'}{fmt(abs(x), digits)}"


WENT_IN = ("status", "config", "code", "environment", "seed", "inputs")


def why_text(row: dict) -> str:
    """What differs going in → what differs coming out, in a few words."""
    if row["same"]:
        incidental = any(x.get("incidental") for k in ("outputs", "metrics", "inputs") for x in row.get(k) or [])
        return "same" + (" (timings differ)" if incidental else "")
    if row["status"] in ("only in A", "only in B"):
        return f"ran {row['status']}"
    went, came = [], []
    for k in row["why"]:
        items = [x for x in row.get(k) or [] if not x.get("incidental")]
        if k == "config":
            text = f"config ({_some([x['key'] for x in items], 2)})"
        elif k in ("outputs", "inputs"):
            text = f"{k} ({_some([x['name'] for x in items])})"
        elif k in ("code", "environment"):
            text = f"{k} ({_some([x['key'] for x in items])})"
        else:
            text = k
        (went if k in WENT_IN else came).append(text)
    if not went:
        return "same config, code and inputs → " + ", ".join(came) + " differ: not reproducible"
    return ", ".join(went) + " → " + (", ".join(came) if came else "outputs the same")


def _some(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def move_text(state: str | None, side: str) -> str:
    if state is None:
        return f"not read in {side}"
    return f"kept in {side}" if state == "kept" else f"dropped in {side} ({state})"


NOT_HEADLINE = re.compile(
    r"(_stderr|ci95|wilson95|\.n|_n|(^|_)p_\w+|_p)(\[\d+\])?$"
)  # an uncertainty, a count of items, a p-value


def headline_deltas(d: dict, limit: int = 16, per_stage: int = 2) -> list[str]:
    """The metric moves a reader looks at first: each stage's headline metrics, effects and eval's paired tests."""
    m = d.get("model") or {}
    lines = []
    for stage in dict.fromkeys(r["stage"] for r in m.get("metrics", [])):
        rows = [
            r for r in m["metrics"] if r["stage"] == stage and is_finite(r["delta"]) and not NOT_HEADLINE.search(r["key"])
        ]
        rows.sort(key=lambda r: (not r["headline"], -abs(r["delta"]) / max(abs(r["a"]), 1e-12)))
        rows = [r for i, r in enumerate(rows) if (r["a"], r["b"]) not in {(q["a"], q["b"]) for q in rows[:i]}]
        lines += [f"{stage} {r['key']}: {fmt(r['a'])} → {fmt(r['b'])} ({delta_text(r['delta'])})" for r in rows[:per_stage]]
    for e in m.get("effects", []):
        lines.append(f"{e['stage']} effect: A {effect_text(e['a'])}; B {effect_text(e['b'])}")
    ev = m.get("eval")
    if ev:
        for r in ev["tasks"]:
            lines.append(
                f"eval {r['task']} {r['metric']}: {fmt(r['a'])} → {fmt(r['b'])} ({delta_text(r['b'] - r['a'])}; "
                f"n = {r['n']}, McNemar p = {fmt(r['p_value'], 3)})"
            )
        s = ev.get("six_task_mean")
        if s:
            lines.append(
                f"six-task mean: {fmt(s['a'])} → {fmt(s['b'])} ({delta_text(s['diff'])}, 95% CI [{fmt(s['ci95'][0], 3)}, "
                f"{fmt(s['ci95'][1], 3)}], paired bootstrap p = {fmt(s['p_value'], 3)})"
            )
    elif m.get("eval_error"):
        lines.append(f"eval: no paired tests ({m['eval_error']})")
    return lines[:limit]


def effect_text(e: Any) -> str:
    if not isinstance(e, dict):
        return "not recorded"
    return (
        f"{e.get('metric')} {fmt(e.get('before'))} → {fmt(e.get('after'))} "
        f"(n = {fmt(e.get('n'))}, {e.get('test')} p = {fmt(e.get('p'), 3)})"
    )


def verdict_text(d: dict) -> str:
    if d["same"]:
        what = "identical except timings" if d["identical_except_timings"] else "identical"
        n = len(d["stages"])
        return f"The runs are {what}: {n} stage{'s' if n != 1 else ''} with the same config, code, inputs and outputs."
    first = next(r for r in d["stages"] if r["stage"] == d["first_divergent"])
    down = d["downstream"]
    text = f"The runs differ. They part ways at **{first['stage']}** ({why_text(first)})"
    return text + (f"; downstream of it: {', '.join(down)}." if down else ".")


def summary(d: dict, top: int = 8) -> str:
    """What the terminal shows."""
    lines = []
    for side in ("a", "b"):
        x = d[side]
        commit = str(x["commit"] or "?")[:12] + (" dirty" if x["dirty"] else "")
        lines.append(
            f"{side.upper()}: {x['run']}  ({x['recipe']}, seed {x['seed']}, code {commit}, torch {x['torch']}, "
            f"{x['device']})"
        )
    lines.append(verdict_text(d).replace("**", ""))
    width = max((len(r["stage"]) for r in d["stages"]), default=5)
    lines.append("stages:")
    for r in d["stages"]:
        mark = "*" if r["stage"] == d["first_divergent"] else " "
        lines.append(f" {mark}{r['stage']:<{width}}  {why_text(r)}")
    ch = d["changes"]
    changed = [f"recipe: {c['a']} → {c['b']}" for c in ch["recipe"]]
    changed += [f"recipe {c['key']}: {side_value(c, 'a')} → {side_value(c, 'b')}" for c in ch["recipe_keys"]]
    changed += [f"{c['stage']}.{c['key']}: {side_value(c, 'a')} → {side_value(c, 'b')}" for c in ch["config"]]
    changed += [f"{c['kind']} {c['key']}: {fmt(c['a'])} → {fmt(c['b'])}" for c in ch["other"]]
    if changed:
        more = f" (and {len(changed) - top} more; --out DIR or --json lists them all)" if len(changed) > top else ""
        lines.append(f"what changed ({len(changed)}){more}:")
        lines += [f"  {c}" for c in changed[:top]]
    docs = ((d.get("data") or {}).get("curate") or {}).get("documents")
    if docs and docs["moves"]:
        lines.append("documents that moved (curate):")
        for mv in docs["moves"][:top]:
            ex = ", ".join(x[-1]["id"] for x in mv["examples"][:2])
            lines.append(
                f"  {mv['n']:>6,}  {move_text(mv['a'], 'A')}, {move_text(mv['b'], 'B')}" + (f"  (e.g. {ex})" if ex else "")
            )
    deltas = headline_deltas(d)
    if deltas:
        lines.append("metrics, A → B:")
        lines += [f"  {x}" for x in deltas]
    return "\n".join(lines) + "\n"
