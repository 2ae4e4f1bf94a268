"""What a stage is: one declared `StageSpec` per stage, the registry of stage modules, and what a stage is given
(`StageContext`) and returns (`StageResult`).

A stage is a module that ends with `SPEC = StageSpec(...)`: its Config dataclass, `run(cfg, ctx) -> StageResult`,
what it reads (`inputs`), what `ledgerlm plan` says about it (`plan`), what it produces and which upstream stages
its model may start from. Everything else (the runner, the CLI, samples, eval, sweeps) asks the spec; adding a stage
is one new module plus one line in STAGES (or `register(name, module)`). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerlm.config import ConfigError, to_dict
from ledgerlm.ledger import read_record
from ledgerlm.progress import LoggingConfig, Progress, Tracker, resolve_mode, say

# Stage name -> module (which ends with `SPEC = StageSpec(...)`). Order here is the canonical pipeline order.
STAGES: dict[str, str] = {
    "curate": "ledgerlm.data.curate",
    "tokenize": "ledgerlm.data.tokenize_stage",
    "pretrain": "ledgerlm.train.pretrain",
    "sft": "ledgerlm.post.sft",
    "interpolate": "ledgerlm.post.interpolate",
    "dpo": "ledgerlm.post.dpo",
    "reward": "ledgerlm.post.reward",
    "rl": "ledgerlm.post.rl",
    "eval": "ledgerlm.eval.eval_stage",
    "report": "ledgerlm.report.report_stage",
}
# Steps a recipe may list that check the run instead of producing anything (no record of their own); each is also
# a command `ledgerlm <name> RUN_DIR`. Name -> module, which ends with `SPEC = CheckSpec(...)`.
CHECKS: dict[str, str] = {"audit": "ledgerlm.audit"}
# What a stage's `produces` may say. Models (plain or chat) get sample generations in the ledger and can be
# started from; a reward model scores text and is neither sampled nor a starting point.
PRODUCES = ("model", "chat_model", "reward_model", None)


@dataclass(frozen=True)
class StageSpec:
    name: str
    config: type  # the stage's Config dataclass (its recipe section)
    run: Callable[[Any, StageContext], StageResult]
    help: str  # one line, for `ledgerlm --help` and `ledgerlm plan`
    inputs: Callable[[Any, StageContext], dict] | None = None  # name -> path, or "hub:NAME"; hashed into the record
    # `ledgerlm plan`: what it needs and would do, and its cost on the target device (ctx.target, a
    # ledgerlm.estimate.Target): lines, or an Estimate (lines and the GPU-hours they add up to)
    plan: Callable[[Any, StageContext], Any] | None = None
    produces: str | None = None  # see PRODUCES: what RUN/<stage>/model holds, if anything
    starts_from: tuple[str, ...] = ()  # upstream stages whose model "auto" starts from: the first present wins
    headline: tuple[str, ...] = ()  # the metrics that say how the stage went (sweep plots them by default)
    report: Any = None  # its part of the report: a ledgerlm.card.Section, or a tuple of them
    checks: Callable[[Any], None] | None = None  # (recipe): rules between its section and others', at recipe load
    add_cli_args: Callable | None = None  # (parser): flags of `ledgerlm <stage>` beyond key=value overrides
    cli_overrides: Callable | None = None  # (args) -> {field: value}; default: flags named like Config fields
    direct_main: Callable | None = None  # (args) -> exit code, or None to run as a stage (`eval --out FILE.json`)

    def __post_init__(self) -> None:
        if self.produces not in PRODUCES:
            raise ValueError(f"stage {self.name}: produces must be one of {PRODUCES}, got {self.produces!r}")

    @property
    def makes_model(self) -> bool:
        """Its RUN/<stage>/model is a language model (sampled after the stage, and a possible starting point)."""
        return self.produces in ("model", "chat_model")

    def starting_model(self, ctx: StageContext, key: str) -> Path:
        """The model a stage set to "auto" starts from: the first of `starts_from` that has a model in this
        run, else the first this recipe runs (it will exist by then, so `plan` and preflight pass). `key` names the
        recipe field in the error when there is none."""
        names = self.starts_from
        for name in names:
            d = Path(ctx.stage_dir(name)) / "model"
            if (d / "config.json").is_file():
                return d
        planned = getattr(ctx.recipe, "stages", None) or []
        for name in names:
            if name in planned:
                return Path(ctx.stage_dir(name)) / "model"
        raise ConfigError(
            key,
            f"auto: no model in {ctx.run_dir} (looked for {', '.join(n + '/model' for n in names)}); "
            f"give {key} a stage name or a model folder",
        )


@dataclass(frozen=True)
class CheckSpec:
    name: str
    help: str  # one line, for `ledgerlm --help`
    check: Callable[[Path, Callable], tuple[bool, str]]  # (run_dir, echo) -> (passed, verdict for the run's summary)
    plan: str  # what `ledgerlm plan` says the step does


def get_check(name: str) -> CheckSpec:
    """The spec of the check `name` (see CHECKS)."""
    spec = importlib.import_module(CHECKS[name]).SPEC
    if spec.name != name:
        raise ValueError(f"{CHECKS[name]}: SPEC.name is {spec.name!r}, registered as {name!r}")
    return spec


def register(name: str, module: str) -> None:
    """Add a stage: `module` (importable) ends with `SPEC = StageSpec(name=name, ...)`. It runs after the others."""
    STAGES[name] = module


def get(name: str) -> StageSpec:
    """The spec of stage `name` (its module is imported now, so commands that need no stage stay fast)."""
    if name not in STAGES:
        raise ConfigError("stages", f"unknown stage {name!r} (known: {', '.join(STAGES)}, {', '.join(sorted(CHECKS))})")
    spec = importlib.import_module(STAGES[name]).SPEC
    if spec.name != name:
        raise ValueError(f"{STAGES[name]}: SPEC.name is {spec.name!r}, registered as {name!r}")
    return spec


@dataclass
class StageResult:
    """What a stage returns: named output paths (hashed by the ledger), counters, metrics, anything else, and a few
    `summary` lines for the terminal at the end of the stage (also kept in the record)."""

    outputs: dict[str, Path] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


@dataclass
class StageContext:
    run_dir: Path
    stage: str
    recipe: Any  # ledgerlm.recipe.Recipe
    seed: int = 0
    device: str = "cpu"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ledgerlm"))
    resuming: bool = False  # True when the stage was killed earlier with the same config and inputs
    target: Any = None  # `ledgerlm plan`: the machine its estimates are for (ledgerlm.estimate.Target)
    terminal: Any = None  # where progress and warnings go (the real stderr, while third-party output is diverted)
    warnings: list[dict] = field(default_factory=list)  # [{"code", "message"}], recorded in the stage's record
    _tracker: Any = None

    @property
    def out_dir(self) -> Path:
        return self.run_dir / self.stage

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def record(self, name: str) -> dict | None:
        """Another stage's ledger record in this run (e.g. to read its metrics), or None."""
        return read_record(self.run_dir, name)

    @property
    def logging_cfg(self):
        return getattr(self.recipe, "logging", None) or LoggingConfig()

    @property
    def tracker(self):
        """This stage's metric tracker (TensorBoard under RUN/tensorboard/<stage>/, wandb / trackio if asked)."""
        if self._tracker is None:
            section = getattr(self.recipe, "sections", {}).get(self.stage)
            self._tracker = Tracker(self.run_dir, self.stage, self.logging_cfg, to_dict(section) if section else None)
        return self._tracker

    def progress(self, iterable=None, total: int | None = None, desc: str | None = None, **kw):
        """Progress of a loop that is not training (files, batches, items): a bar on a terminal, lines elsewhere."""
        desc = f"[{self.stage}] {desc}" if desc and desc != self.stage else f"[{self.stage}]"
        kw.setdefault("unit", "it")
        return Progress(
            iterable,
            total,
            desc,
            mode=self.logging_cfg.progress,
            every_s=self.logging_cfg.every_s,
            stream=self.terminal,
            **kw,
        )

    @property
    def on_terminal(self) -> bool:
        """Progress shows as bars (a terminal): a library may draw its own (e.g. the BPE trainer's)."""
        return resolve_mode(self.logging_cfg.progress, self.terminal or sys.stderr) == "bar"

    def steps(self, total: int, start: int = 0, desc: str | None = None, show: tuple[str, ...] | None = None):
        """Progress of a training loop: `log(row)` each step; the row's numbers go to the tracker too."""
        tracker = self.tracker if int(os.environ.get("RANK", "0")) == 0 else None  # one rank tracks
        return self.progress(None, total, desc, start=start, unit="step", tracker=tracker, show=show)

    def warn(self, code: str, message: str) -> None:
        """A result that is quietly bad: printed now, logged, and kept in the record's `warnings`."""
        self.warnings.append({"code": code, "message": message})
        self.log.warning("%s: %s", code, message)
        if int(os.environ.get("RANK", "0")) == 0:
            say(f"warning [{self.stage}] {code}: {message}", self.terminal)

    def log_paths(self) -> dict[str, str]:
        """The stage's logs, relative to the run: its text log and, if it tracked scalars, its event files."""
        return {"log": f"logs/{self.stage}.log", **(self._tracker.paths() if self._tracker else {})}

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
