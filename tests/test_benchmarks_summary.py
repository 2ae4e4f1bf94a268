"""BENCHMARKS.md's summary is generated from its recorded sections, and every section it quotes measured today's code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench import summary
from bench.summary import Row


def test_summary_table_is_generated_from_the_sections():
    text = summary.BENCHMARKS.read_text()
    assert summary.replace_table(text) == text, "the summary table is out of date: run python -m bench.summary"


def test_every_quoted_section_measured_todays_code():
    """Sections quoted by a row carry a commit whose files under the row's paths equal HEAD's (outside a git
    checkout only the stamps are checked); a section without a stamp is quoted only by a row marked unverified."""
    assert summary.problems(summary.BENCHMARKS.read_text()) == []


SAMPLE = """# B

<!-- summary:start -->
<!-- summary:end -->

<!-- bench:speed:start -->
### speed

`python -m bench.speed` — x86_64 CPU, 2 cores, 3.11.7 — 2026-12-07 — commit {commit}

| path | docs/s | same |
|---|---:|---|
| ours | 2,491 | yes |

<!-- numbers: {{"rate": [10.0, 12.5, 11.0], "p": 0.003, "n": 200}} -->
<!-- bench:speed:end -->

<!-- history:start -->
<!-- history:old thing:start -->
### old thing

`python -m bench.old` — x86_64 CPU, 2 cores, 3.11.7 — 2026-11-23

Ratio against the baseline: mean 0.589 ± 0.043.
<!-- history:old thing:end -->
"""


def _rows(paths=("a.py",)):
    return [
        Row("x", "rate ≥ {}", "speed", "{rate:.1f} per s, p = {p:.1e}", [("rate", ">=", 11)], list(paths)),
        Row(
            "x",
            "p < {} and n ≥ {}",
            "speed",
            "{table:ours|docs/s} docs/s",
            [("p", "<", 0.05), ("n", ">=", 500)],
            list(paths),
        ),
        Row(
            "y",
            "ratio ≤ {}",
            "old thing",
            "{text:mean ([0-9.]+)}",
            [("text:mean ([0-9.]+)", "<=", 0.5)],
            unverified="before code stamps",
        ),
        Row("z", "gpu", "old thing", not_measured="no GPU"),
    ]


def test_rows_quote_their_sections_with_spread_and_computed_verdicts(monkeypatch):
    monkeypatch.setattr(summary, "ROWS", _rows())
    text = SAMPLE.format(commit="0123456789ab")
    out = summary.replace_table(text)
    lines = [ln for ln in out.splitlines() if ln.startswith("| x") or ln.startswith("| y") or ln.startswith("| z")]
    assert lines[0] == (
        "| x | rate ≥ 11 | 11.0 (10.0–12.5, n = 3) per s, p = 3.0e-03 | yes | "
        "[speed](#speed) · `0123456789ab` · 2026-12-07 |"
    )
    assert "| 2491 docs/s | **no** (200 ≥ 500 fails) |" in lines[1]  # one comparison fails: not met
    assert (
        "0.589 — *unverified: before code stamps*" in lines[2] and "**no** (0.589 ≤ 0.5 fails) (unverified)" in lines[2]
    )
    assert "not measured on today's code: no GPU | not measured | history: [old thing](#old-thing)" in lines[3]
    assert summary.replace_table(out) == out  # idempotent


def test_a_missing_number_is_an_error(monkeypatch):
    monkeypatch.setattr(summary, "ROWS", [Row("x", "q", "speed", "{nope}", [], ["a.py"])])
    with pytest.raises(KeyError, match="nope"):
        summary.replace_table(SAMPLE.format(commit="0123456789ab"))


def test_unstamped_sections_need_unverified(monkeypatch):
    monkeypatch.setattr(summary, "in_git", lambda: False)
    rows = _rows()
    rows[2] = Row("y", "ratio ≤ {}", "old thing", "{text:mean ([0-9.]+)}", [("text:mean ([0-9.]+)", "<=", 0.5)])
    monkeypatch.setattr(summary, "ROWS", rows)
    (problem,) = summary.problems(SAMPLE.format(commit="0123456789ab"))
    assert "no code stamp" in problem
    monkeypatch.setattr(summary, "ROWS", _rows())
    assert summary.problems(SAMPLE.format(commit="0123456789ab+dirty")) != []  # uncommitted code: not trusted


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_a_section_is_stale_once_its_code_changes(tmp_path: Path, monkeypatch):
    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    git("add", ".")
    git("commit", "-qm", "one")
    measured = git("rev-parse", "HEAD")[:12]
    monkeypatch.setattr(summary, "ROOT", tmp_path)
    monkeypatch.setattr(summary, "ROWS", _rows())
    text = SAMPLE.format(commit=measured)
    (tmp_path / "b.py").write_text("y = 2\n")  # a change elsewhere (a merge of other work) does not count
    git("commit", "-qam", "two")
    assert summary.problems(text) == []
    (tmp_path / "a.py").write_text("x = 2\n")  # the measured code changed: the section is stale
    git("commit", "-qam", "three")
    problems = summary.problems(text)
    assert len(problems) == 2 and all("changed: a.py" in p for p in problems)
    (tmp_path / "a.py").write_text("x = 1\n")  # changed back: same content as measured, current again
    git("commit", "-qam", "four")
    assert summary.problems(text) == []
    assert "is not in this repository" in summary.problems(SAMPLE.format(commit="0" * 12))[0]
