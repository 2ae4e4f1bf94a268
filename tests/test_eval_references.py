"""Reference rows: the shipped references.yaml loads (load_references checks each row: a source, our task names,
fractions, and a six-task mean beside per-task values equal to their plain mean) and renders."""

from __future__ import annotations

import pytest
import yaml

from ledgerlm.eval import evaluate as ev
from ledgerlm.tasks import SIX_TASKS


def test_shipped_references_load_and_each_row_has_a_source():
    rows = ev.load_references()
    assert rows, "references.yaml has no rows"
    names = [r["model"] for r in rows]
    assert len(names) == len(set(names)), "duplicate model rows"
    for r in rows:
        assert isinstance(r["source"], str) and r["source"].strip(), r["model"]


@pytest.mark.parametrize(
    "row, expect",
    [
        ({"model": "ok", "source": "s", "tasks": dict.fromkeys(SIX_TASKS, 0.5), "six_task_mean": 0.5}, None),
        ({"model": "bad-mean", "source": "s", "tasks": dict.fromkeys(SIX_TASKS, 0.5), "six_task_mean": 0.6}, "mean"),
        ({"model": "partial", "source": "s", "tasks": {"piqa": 0.6}, "six_task_mean": 0.6}, "lack"),
        ({"model": "percent", "source": "s", "tasks": {"piqa": 62.0}}, "fraction"),
        ({"model": "typo", "source": "s", "tasks": {"arc-easy": 0.4}}, "unknown task"),
        ({"model": "nosrc", "source": "  ", "tasks": {"piqa": 0.6}}, "source"),
    ],
)
def test_load_references_checks_each_row(tmp_path, row, expect):
    p = tmp_path / "refs.yaml"
    p.write_text(yaml.safe_dump({"rows": [row]}), encoding="utf-8")
    if expect is None:
        assert ev.load_references(p) == [row]
    else:
        with pytest.raises(ValueError, match=rf"refs.yaml: rows\[0\].*{expect}"):
            ev.load_references(p)


def _piqa(value: float) -> dict:
    v = {"value": value, "stderr": 0.01, "ci95": [value - 0.02, value + 0.02]}
    return {"split": "validation", "n": 100, "n_quarantined": 0, "metrics": {"acc_norm": v, "acc": v}}


def test_references_render_in_markdown_with_partial_rows():
    rows = ev.load_references()
    md = ev.to_markdown({"model": "m", "tasks": {"piqa": _piqa(0.61)}}, rows)
    assert "## Reference rows — reported, not re-run" in md
    assert "| **m (this run)** | " in md and "0.6100" in md
    for r in rows:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {r['model']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(SIX_TASKS) + 3  # model, six tasks, mean, source
        for t, c in zip(SIX_TASKS, cells[1:7]):
            v = (r.get("tasks") or {}).get(t)
            assert c == (f"{v:.4f}" if v is not None else "—")


def test_load_references_rejects_rows_without_source(tmp_path):
    p = tmp_path / "refs.yaml"
    p.write_text("rows:\n  - model: X\n    six_task_mean: 0.4\n", encoding="utf-8")
    with pytest.raises(ValueError, match="source"):
        ev.load_references(p)


def test_no_reference_rows_without_a_six_task_score():
    """An arith-only (or GSM8K-only) run has nothing to set beside the six-task reference rows."""
    arith = {
        "split": "test",
        "n": 50,
        "n_quarantined": 0,
        "metrics": {"exact_match": {"value": 0.4, "stderr": 0.07, "ci95": [0.27, 0.54]}},
    }
    md = ev.to_markdown({"model": "m", "tasks": {"arith_0shot": arith}}, ev.load_references())
    assert "Reference rows" not in md and "| arith_0shot |" in md
