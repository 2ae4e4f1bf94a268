"""docs/ARCHITECTURE.md "How to add a stage", followed literally: its module and recipe blocks are read from the doc,
the module is registered with one line, and `ledgerlm run` records it in the ledger; its report section, its
`ledgerlm plan` estimate, its recipe check and its headline (`ledgerlm sweep` without --metric) are picked up."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest

from ledgerlm import ledger, stage
from ledgerlm.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def _block(text: str, lang: str, first_line: str) -> str:
    """The fenced ```lang block of the doc whose first line is `first_line`."""
    for body in re.findall(rf"```{lang}\n(.*?)```", text, re.S):
        if body.startswith(first_line + "\n"):
            return body
    raise AssertionError(f"docs/ARCHITECTURE.md: no ```{lang} block starting {first_line!r}")


@pytest.fixture
def hello(tmp_path, monkeypatch):
    """The doc's module and recipe written out, and the registry restored after the test (the one line adds to it)."""
    doc = DOC.read_text()
    section = doc[doc.index("### How to add a stage") :]
    (tmp_path / "hello_stage.py").write_text(_block(section, "python", "# hello_stage.py"))
    (tmp_path / "hello.yaml").write_text(_block(section, "yaml", "# hello.yaml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hello_stage", raising=False)
    saved = dict(stage.STAGES)
    yield tmp_path / "hello.yaml"
    stage.STAGES.clear()
    stage.STAGES.update(saved)


def test_walkthrough_adds_a_stage_with_one_file_and_one_registry_line(tmp_path, hello, capsys):
    stage.register("hello", "hello_stage")  # the one registry line

    run = tmp_path / "runs" / "hello"
    assert main(["run", str(hello), "--out", str(run)]) == 0
    rec = ledger.read_record(run, "hello")
    assert rec["status"] == "ok" and rec["config"] == {"text": "hi", "repeat": 2}
    assert rec["counters"] == {"lines": 2} and rec["outputs"]["hello"]["path"] == "hello/hello.txt"
    assert rec["metrics"] == {"chars": 4}
    assert (run / "hello" / "hello.txt").read_text() == "hi\nhi\n"
    assert "intact" in capsys.readouterr().out  # the recipe's audit step re-hashed it
    assert ledger.audit(run)[0] == []
    # it is a command and a plan entry like any stage
    assert main(["hello", "--out", str(run), "text=hey"]) == 0
    assert json.loads((run / "ledger" / "hello.json").read_text())["config"]["text"] == "hey"
    # every Config field is a flag, with the field's comment as its help
    assert main(["hello", "--out", str(run), "--repeat", "3"]) == 0
    assert ledger.read_record(run, "hello")["counters"] == {"lines": 3}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["hello", "--help"])
    assert "how many lines (default: 2)" in " ".join(capsys.readouterr().out.split())
    assert main(["plan", str(hello), "--out", str(run)]) == 0
    assert " 1. hello (hello_stage)" in capsys.readouterr().out


def test_the_stage_brings_its_report_section(tmp_path, hello):
    stage.register("hello", "hello_stage")
    run = tmp_path / "run"
    assert main(["run", str(hello), "--out", str(run)]) == 0
    md = (run / "report" / "report.md").read_text()
    page = (run / "report" / "report.html").read_text()
    assert "\n## Greeting\n" in md and "<h2>Greeting</h2>" in page
    assert "**Verdict:** wrote 2 lines of `hi`." in md
    assert "- **hello**: wrote 2 lines of `hi`." in md  # its verdict is in the summary at the top too
    assert "| characters | 4 |" in md
    assert "## Evaluation" in md and "Evaluation was not run in this run." in md  # every registered stage has its say


def test_the_stage_brings_its_plan_estimate(hello, capsys):
    stage.register("hello", "hello_stage")
    assert main(["plan", str(hello), "--cpus", "8"]) == 0
    out = capsys.readouterr().out
    entry = out[out.index(" 1. hello (hello_stage)") : out.index(" 2. report")]
    assert "write 2 lines of 'hi': no GPU, well under a second on 8 cores" in entry
    assert "not estimated" not in entry  # it returned an Estimate: counted, not flagged
    last = out.strip().splitlines()[-1]
    assert last.startswith("total estimated: ~0.0 GPU-hours") and "hello" not in last


def test_the_stage_brings_its_recipe_check(tmp_path, hello, capsys):
    stage.register("hello", "hello_stage")
    for command in (["plan", str(hello)], ["run", str(hello), "--out", str(tmp_path / "r")]):
        assert main([*command, "hello.repeat=9"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {hello}: hello.repeat: 9 lines are more than report.max_samples=4", err
    assert not (tmp_path / "r").exists()  # refused at load, before anything ran
    assert main(["plan", str(hello), "hello.repeat=4"]) == 0  # at the limit: allowed


def test_sweep_without_metric_plots_the_stage_headline(tmp_path, hello, capsys):
    stage.register("hello", "hello_stage")
    out = tmp_path / "sw"
    assert main(["sweep", str(hello), "--stage", "hello", "--grid", "hello.repeat=1,3", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "sweep" / "sweep.csv").open()))
    assert sorted(float(r["chars"]) for r in rows) == [2.0, 6.0]
