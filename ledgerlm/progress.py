"""What a user sees while a stage runs, and where its numbers go besides the ledger.

- `Progress`: live progress of one loop. On a terminal a tqdm bar with the latest scalars (loss, tokens/s);
  elsewhere (a pipe, a file, CI) one plain line every `every_s` seconds and at the end, so logs stay readable.
- `Tracker`: a stage's scalars as TensorBoard event files under RUN/tensorboard/<stage>/ (offline, by default),
  and to Weights & Biases or trackio when the recipe's `logging.backend` asks for it.
- `divert_stderr`: third-party chatter (datatrove's loguru banners, HF and Python warnings) goes to the stage log,
  not the terminal.

Event files hold wall-clock times, so they are never among a stage's hashed outputs: the record lists them under
`logs` (untracked), beside the stage's text log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

EXTRA_FOR = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # backend -> pip package
# Row keys shown on the progress line when a stage does not choose (in this order); every number is tracked.
SHOW = ("loss", "val_loss", "heldout_acc", "reward_mean", "zero_std_frac", "tok_s")


@dataclass
class LoggingConfig:
    """The recipe's top-level `logging:` section."""

    backend: Literal["tensorboard", "wandb", "trackio", "none"] = "tensorboard"  # wandb/trackio also write TB files
    project: str = "ledgerlm"  # the wandb / trackio project
    progress: Literal["auto", "bar", "lines", "off"] = "auto"  # auto: a bar on a terminal, lines elsewhere
    every_s: float = 30.0  # seconds between progress lines when not on a terminal

    def validate(self) -> None:
        if self.every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {self.every_s}")
        pkg = EXTRA_FOR.get(self.backend)
        if pkg and importlib.util.find_spec(pkg) is None:
            extra = f"pip install 'ledgerlm[{pkg}]'" if pkg != "tensorboard" else "pip install tensorboard"
            raise ValueError(f"backend {self.backend!r} needs the {pkg} package: {extra} (or logging.backend=none)")


def resolve_mode(requested: str, stream) -> str:
    """bar | lines | off. LEDGERLM_PROGRESS overrides the recipe; ranks other than 0 stay quiet."""
    mode = os.environ.get("LEDGERLM_PROGRESS", "") or requested
    if int(os.environ.get("RANK", "0")) != 0:
        return "off"
    if mode == "auto":
        tty = getattr(stream, "isatty", lambda: False)()
        return "bar" if tty and not os.environ.get("CI") else "lines"
    return mode


# ----------------------------------------------------------------------------- formatting


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def fmt_value(v: float | str) -> str:
    """Short, readable numbers for a progress line: 3.214, 0.0021, 12.3k, 1.5M, nan (text as it is)."""
    if isinstance(v, str):
        return v
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.4g}"


def _label(key: str) -> str:
    return {"tok_s": "tok/s", "zero_std_frac": "zero-var"}.get(key, key)


def _fmt_shown(key: str, v: float | str) -> str:
    """Fractions (accuracies, shares of groups) as percentages, everything else by fmt_value."""
    if isinstance(v, float | int) and math.isfinite(v) and key.endswith(("acc", "accuracy", "_frac")):
        return f"{v:.0%}"
    return fmt_value(v)


def numbers(row: dict, prefix: str = "") -> dict[str, float]:
    """The finite-or-not numeric leaves of a row (nested dicts joined with '/'); bools and strings are left out."""
    out = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numbers(v, key + "/"))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = float(v)
    return out


# ----------------------------------------------------------------------------- progress


class Progress:
    """Progress of one loop of `total` units (None: unknown), starting at `start` (a resumed run).

    Wrap an iterable (`for x in Progress(it, ...)`), call `update(n)`, or `log(row)` with a training row whose
    "step" is the position: its numbers go to the tracker and the `show` keys onto the line.
    """

    def __init__(
        self,
        iterable=None,
        total: int | None = None,
        desc: str = "",
        *,
        start: int = 0,
        unit: str = "step",
        tracker: Tracker | None = None,
        mode: str = "auto",
        every_s: float = 30.0,
        stream=None,
        show: tuple[str, ...] | None = None,
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.start = self.n = start
        self.tracker, self.show = tracker, show or SHOW
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self.every_s = every_s
        self.t0 = self.last_print = time.time()
        self.shown: dict[str, float | str] = {}
        self.tokens0: tuple[float, float] | None = None  # (cumulative tokens, time) at the first row without tok_s
        self.closed = False
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm(total=total, initial=start, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)
        if tracker is not None and start > 0:
            tracker.purge_from(start + 1)  # a resumed loop re-logs the steps after its checkpoint

    def __iter__(self):
        try:
            for x in self.iterable:
                yield x
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1, **shown: float | str | None) -> None:
        """Advance by n (0: only change what is shown, e.g. the name of the step now running; None hides a key)."""
        self._advance(self.n + n, shown)

    def log(self, row: dict, step: int | None = None) -> None:
        """A training row (the one written to metrics.jsonl): track its numbers, show some, move to its step."""
        step = int(row.get("step", self.n + 1) if step is None else step)
        nums = numbers(row)
        nums.pop("step", None)
        if self.tracker is not None:
            self.tracker.log(nums, step)
        shown = {k: nums[k] for k in self.show if k in nums}
        if "tok_s" not in nums and "tokens" in nums and "tok_s" in self.show:  # rate since the first row
            now = time.time()
            if self.tokens0 is None:
                self.tokens0 = (nums["tokens"], now)
            elif now > self.tokens0[1]:
                shown["tok_s"] = (nums["tokens"] - self.tokens0[0]) / (now - self.tokens0[1])
        self._advance(step, shown)

    def _advance(self, pos: int, shown: dict) -> None:
        self.shown.update(shown)
        self.shown = {k: v for k, v in self.shown.items() if v is not None}
        if self.bar is not None:
            self.bar.update(pos - self.n)
            if shown:
                self.bar.set_postfix_str(self._postfix(), refresh=False)
        self.n = pos
        done = self.total is not None and pos >= self.total
        if self.mode == "lines" and (done or time.time() - self.last_print >= self.every_s):
            self._print_line()

    def _postfix(self) -> str:
        order = sorted(self.shown, key=lambda k: self.show.index(k) if k in self.show else len(self.show))
        return " ".join(f"{_label(k)} {_fmt_shown(k, self.shown[k])}" for k in order)

    def line(self) -> str:
        """`desc step 120/500 (24%) loss 3.21 tok/s 12.3k, 0:31 elapsed, ETA 1:40`."""
        elapsed = time.time() - self.t0
        parts = [f"{self.desc} {self.unit} {self.n:,}" + (f"/{self.total:,}" if self.total is not None else "")]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        if self.shown:
            parts.append(self._postfix())
        timing = f"{fmt_duration(elapsed)} elapsed"
        done = self.n - self.start
        if self.total is not None and 0 < done and self.n < self.total:
            timing += f", ETA {fmt_duration(elapsed / done * (self.total - self.n))}"
        return " ".join(parts) + ", " + timing

    def _print_line(self) -> None:
        self.last_print = time.time()
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and self.n > self.start and not (self.total is not None and self.n >= self.total):
            self._print_line()  # stopped early (or unknown total): say where it ended
        if self.tracker is not None:
            self.tracker.flush()


def say(message: str, stream=None) -> None:
    """Print a line without breaking a live progress bar."""
    tqdm.write(message, file=stream or sys.stderr)


# ----------------------------------------------------------------------------- metric tracking


class Tracker:
    """Scalars of one stage, by step: TensorBoard event files in RUN/tensorboard/<stage>/ (unless backend=none),
    plus a wandb / trackio run named RUN/<stage> when the backend asks for one. Opened at the first scalar."""

    def __init__(self, run_dir: Path, stage: str, cfg: LoggingConfig | None = None, config: dict | None = None):
        self.run_dir, self.stage, self.cfg = Path(run_dir), stage, cfg or LoggingConfig()
        self.config = config or {}
        self.tb = None
        self.remote: Any = None  # the wandb / trackio module once its run is started
        self.purge_step: int | None = None
        self.opened = False

    @property
    def tb_dir(self) -> Path:
        return self.run_dir / "tensorboard" / self.stage

    def purge_from(self, step: int) -> None:
        """Drop events at step >= `step` written by an earlier attempt (TensorBoard's purge_step on resume)."""
        if not self.opened:
            self.purge_step = step

    def _open(self) -> None:
        self.opened = True
        if self.cfg.backend == "none":
            return
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(log_dir=str(self.tb_dir), purge_step=self.purge_step, flush_secs=30)
        if self.cfg.backend in ("wandb", "trackio"):
            self.remote = importlib.import_module(self.cfg.backend)
            # wandb: files under the run directory, stages of one run grouped; trackio keeps its own store
            kw = {"dir": str(self.run_dir), "group": self.run_dir.name} if self.cfg.backend == "wandb" else {}
            name = f"{self.run_dir.name}/{self.stage}"
            self.remote.init(project=self.cfg.project, name=name, config=self.config, **kw)

    def log(self, scalars: dict[str, float], step: int) -> None:
        if not self.opened:
            self._open()
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.remote is not None:
            self.remote.log(dict(scalars), step=step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.remote is not None:
            self.remote.finish()
            self.remote = None

    def paths(self) -> dict[str, str]:
        """What the record lists under `logs` (relative to the run): written only if something was tracked."""
        return {"tensorboard": f"tensorboard/{self.stage}"} if self.tb_dir.is_dir() else {}


# ----------------------------------------------------------------------------- third-party output


class _Diverted(io.TextIOBase):
    """sys.stderr while a stage runs: writes go to the stage log. Stays valid after the stage (a library that kept
    a reference to it, e.g. a logging handler, then writes to the terminal again)."""

    def __init__(self, terminal):
        self.terminal, self.target = terminal, None

    def write(self, s: str) -> int:
        (self.target or self.terminal).write(s)
        return len(s)

    def flush(self) -> None:
        (self.target or self.terminal).flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return getattr(self.terminal, "encoding", "utf-8")


@contextlib.contextmanager
def divert_stderr(log_path: Path):
    """Send what third-party code prints to stderr (datatrove's loguru banners, HF and Python warnings) into
    `log_path`. Our own progress and warnings keep the terminal: they write to the stream saved before."""
    terminal = sys.stderr
    diverted = _Diverted(terminal)
    loguru = sys.modules.get("loguru")
    with open(log_path, "a", encoding="utf-8", buffering=1) as f:
        diverted.target = f
        sys.stderr = diverted
        if loguru is not None:  # loguru's default sink holds the terminal itself: point it at the log too
            loguru.logger.remove()
            loguru.logger.add(diverted)
        try:
            yield terminal
        finally:
            sys.stderr = terminal
            diverted.target = None
            loguru = sys.modules.get("loguru")
            if loguru is not None:  # back to loguru's default: the terminal
                loguru.logger.remove()
                loguru.logger.add(terminal)
