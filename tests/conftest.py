"""Shared fixtures: where the real data lives, and two toy stages for testing the spine without any ML."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One `demo-fast` run for the whole session (test_e2e, test_diff): read it, or copy it before changing it."""
    from ledgerlm.cli import main

    run = tmp_path_factory.mktemp("e2e") / "run"
    assert main(["run", "demo-fast", "--out", str(run)]) == 0  # its last step is the audit
    return run


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def _toy_modules():
    from ledgerlm.stage import StageResult, StageSpec

    make = types.ModuleType("toy_make")

    @dataclass
    class MakeConfig:
        text: str = "hello"
        repeat: int = 2
        source: Path | None = None

    def make_inputs(cfg, ctx):
        return {"source": cfg.source} if cfg.source else {}

    def make_run(cfg, ctx):
        out = ctx.out_dir / "data.txt"
        extra = cfg.source.read_text() if cfg.source else ""
        out.write_text((cfg.text + "\n") * cfg.repeat + extra)
        (ctx.out_dir / "parts").mkdir(exist_ok=True)
        (ctx.out_dir / "parts" / "a.txt").write_text("part a")
        return StageResult(
            outputs={"data": out, "parts": ctx.out_dir / "parts"},
            counters={"lines": cfg.repeat},
            metrics={"resuming": ctx.resuming},
        )

    make.SPEC = StageSpec(name="make", config=MakeConfig, run=make_run, inputs=make_inputs, help="toy: write text")

    upper = types.ModuleType("toy_upper")

    @dataclass
    class UpperConfig:
        fail: bool = False

    def upper_inputs(cfg, ctx):
        return {"data": ctx.stage_dir("make") / "data.txt"}

    def upper_run(cfg, ctx):
        if cfg.fail:
            raise RuntimeError("boom")
        out = ctx.out_dir / "upper.txt"
        out.write_text((ctx.stage_dir("make") / "data.txt").read_text().upper())
        return StageResult(outputs={"upper": out})

    upper.SPEC = StageSpec(name="upper", config=UpperConfig, run=upper_run, inputs=upper_inputs, help="toy: upper-case")
    return make, upper


@pytest.fixture
def empty_registry():
    """The stage registry emptied for one test (register toy stages into it) and restored, in order, after."""
    from ledgerlm.stage import STAGES

    saved = dict(STAGES)
    STAGES.clear()
    yield STAGES
    STAGES.clear()
    STAGES.update(saved)


@pytest.fixture
def toy_stages(monkeypatch, empty_registry):
    """Replace the stage registry by two toy stages: make -> upper."""
    from ledgerlm import pipeline, stage

    make, upper = _toy_modules()
    monkeypatch.setitem(sys.modules, "toy_make", make)
    monkeypatch.setitem(sys.modules, "toy_upper", upper)
    stage.register("make", "toy_make")
    stage.register("upper", "toy_upper")
    return pipeline
