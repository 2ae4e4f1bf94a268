"""docs/ARCHITECTURE.md "What to touch", row by row: each test does what its row says with a toy one and sees it
used. (The stage row is tests/test_add_stage.py; the eval-task row is tests/test_tasks.py.)"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

import pytest

from ledgerlm import stage
from ledgerlm.cli import main
from ledgerlm.data import filters
from ledgerlm.data.filters import QualityConfig
from ledgerlm.data.quality import DocView

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def _row(what: str) -> str:
    """The row of the "What to touch" table for `what` (its first cell starts with it)."""
    return next(x for x in DOC.read_text().splitlines() if x.startswith(f"| {what} ") and x.count("|") == 5)


# a quality filter: one Filter subclass holding its thresholds (a nested `Settings` dataclass, flat recipe keys) and
# its verdict, and one entry in filters.FILTERS (QualityConfig is built from the registered filters' Settings)


class Exclamations(filters.Filter):
    @dataclasses.dataclass
    class Settings:
        max_exclamations: int | None = 3  # the toy filter's threshold (None: off)

    fields = ("max_exclamations",)

    def filter(self, doc: DocView) -> filters.Verdict:
        n = doc.text.count("!")
        if n > self.cfg.max_exclamations:
            return filters.fail("toy_exclamations", n, self.cfg.max_exclamations)
        return filters.KEEP


@dataclasses.dataclass
class ToyQuality(QualityConfig, Exclamations.Settings):
    """QualityConfig as it is built with Exclamations in FILTERS: one more Settings among its bases."""


def test_a_quality_filter_is_one_class_and_one_line(monkeypatch):
    row = _row("a quality filter")
    assert "filters.FILTERS" in row and "Settings" in row and "quality.py" not in row  # one file, one class
    # QualityConfig's fields are the registered filters' Settings, nothing declared apart from them but `enabled`
    assert QualityConfig.__bases__ == tuple(f.Settings for f in reversed(filters.FILTERS))
    own = {f.name for f in dataclasses.fields(QualityConfig)} - {"enabled"}
    assert own == {f.name for F in filters.FILTERS for f in dataclasses.fields(F.Settings)}
    monkeypatch.setattr(filters, "FILTERS", [Exclamations, *filters.FILTERS])  # the one line (first: it decides)
    cfg = ToyQuality()
    text = "Wow! Really! So much! Too much!"
    reason, details, _ = filters.QualityGates(cfg).check(text)
    assert reason == "quality:toy_exclamations" and details["value"] == 4 and details["threshold"] == 3
    assert filters.QualityGates(ToyQuality(max_exclamations=9)).check(text)[0] != reason  # under its threshold
    off = filters.QualityGates(ToyQuality(max_exclamations=None))  # None: the filter is not built at all
    assert not any(isinstance(f, Exclamations) for f in off.filters)


# a report section: one card.Section(title, render, missing, group) in the stage's report module, named by its
# SPEC's report=

TOY = '''
from dataclasses import dataclass

from ledgerlm.card import Section
from ledgerlm.stage import StageResult, StageSpec


@dataclass
class Config:
    n: int = 3  # a number


def run(cfg, ctx):
    return StageResult(metrics={"n": cfg.n})


def overview(card, rec, records):
    card.verdict("toy", f"counted to {card.num(rec['metrics']['n'])}.")


def details(card, rec, records):
    card.table(["stages in this run"], [[", ".join(records)]])


SPEC = StageSpec(
    name="toy",
    config=Config,
    run=run,
    help="a toy",
    report=(
        Section("Toy overview", overview, missing="The toy was not run."),
        Section("Toy (tuned)", details, group="Post-training"),
    ),
)
'''


def test_a_report_section_is_one_section_in_the_spec(tmp_path, monkeypatch):
    assert "card.Section" in _row("a report section")
    (tmp_path / "toy_stage.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy_stage", raising=False)
    saved = dict(stage.STAGES)
    try:
        stage.register("toy", "toy_stage")
        (tmp_path / "toy.yaml").write_text("name: toy\nstages: [toy, report]\n")
        run = tmp_path / "run"
        assert main(["run", str(tmp_path / "toy.yaml"), "--out", str(run)]) == 0
        md = (run / "report" / "report.md").read_text()
    finally:
        stage.STAGES.clear()
        stage.STAGES.update(saved)
    assert "\n## Toy overview\n" in md and "**Verdict:** counted to 3." in md
    # a grouped section goes under the group's one heading, a level down, in registry order (after rl here)
    post = md[md.index("\n## Post-training\n") : md.index("\n## Grids\n")]
    assert "\n### Toy (tuned)\n" in post and "| toy |" in post
    assert "No post-training stage was run" not in post
    assert md.count("\n## Post-training\n") == 1


@pytest.mark.parametrize("what", ["a stage", "an eval task"])
def test_the_other_rows_name_their_tests(what):
    row = _row(what)
    test_file = row.split("`tests/")[1].split("`")[0].split("::")
    path = Path(__file__).parent / test_file[0]
    assert path.is_file()
    if len(test_file) > 1:
        assert f"def {test_file[1]}(" in path.read_text()
