"""docs/ARCHITECTURE.md "How to add a stage", followed literally: its module and recipe blocks are read from the doc,
the module is registered with one line, and `ledgerlm run` records it in the ledger."""

from __future__ import annotations

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


def test_walkthrough_adds_a_stage_with_one_file_and_one_registry_line(tmp_path, monkeypatch, empty_registry, capsys):
    doc = DOC.read_text()
    section = doc[doc.index("### How to add a stage") :]
    (tmp_path / "hello_stage.py").write_text(_block(section, "python", "# hello_stage.py"))
    (tmp_path / "hello.yaml").write_text(_block(section, "yaml", "# hello.yaml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hello_stage", raising=False)

    stage.register("hello", "hello_stage")  # the one registry line

    run = tmp_path / "runs" / "hello"
    assert main(["run", str(tmp_path / "hello.yaml"), "--out", str(run)]) == 0
    rec = ledger.read_record(run, "hello")
    assert rec["status"] == "ok" and rec["config"] == {"text": "hi", "repeat": 2}
    assert rec["counters"] == {"lines": 2} and rec["outputs"]["hello"]["path"] == "hello/hello.txt"
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
    assert main(["plan", str(tmp_path / "hello.yaml"), "--out", str(run)]) == 0
    assert " 1. hello (hello_stage)" in capsys.readouterr().out
