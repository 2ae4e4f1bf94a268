"""The runner: runs a recipe's stages in order, skipping what is up to date and re-running what is not. What a stage
is lives in stage.py; what a recipe is, in recipe.py; what `ledgerlm plan` says, in plan.py.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ledgerlm import hub, ledger, rehearsal
from ledgerlm.config import ConfigError, to_dict
from ledgerlm.device import resolve_device
from ledgerlm.progress import divert_stderr, fmt_duration, say
from ledgerlm.recipe import Recipe, build_recipe, load_recipe  # noqa: F401 - build_recipe, load_recipe: re-exported
from ledgerlm.samples import sample_model
from ledgerlm.stage import CHECKS, STAGES, StageContext, StageResult, StageSpec, get, get_check

# ----------------------------------------------------------------------------- running one stage


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL


class _StageLogHandler(logging.FileHandler):
    """The stage's log file. On a full disk it falls silent instead of printing a traceback per record (and
    raising from close()), so the user sees the one error that stopped the stage, not the logger's."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not disk_full(sys.exc_info()[1]):
            super().handleError(record)

    def close(self) -> None:
        try:
            super().close()
        except OSError as e:
            if not disk_full(e):
                raise


def _stage_logger(run_dir: Path, stage: str) -> tuple[logging.Logger, logging.Handler]:
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"ledgerlm.{stage}")
    log.setLevel(logging.INFO)
    handler = _StageLogHandler(run_dir / "logs" / f"{stage}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


def stage_inputs(spec: StageSpec, cfg: Any, ctx: StageContext) -> dict[str, dict]:
    """Hash what the stage says it reads. Hub datasets are given as strings 'hub:NAME'."""
    declared = spec.inputs(cfg, ctx) if spec.inputs else {}
    out = {}
    for name, p in declared.items():
        if isinstance(p, str) and p.startswith("hub:"):
            out[name] = {"path": p, "kind": "hub"}
            local = hub.local_copy(p)  # read from a Hub mirror
            generated = getattr(getattr(ctx.recipe, "hub_mirror", None), "generate", "")
            if local is not None and generated:  # small and made by us: hashed like any input, re-hashed by audit
                mirror = ledger.hash_artifact(local, ctx.run_dir)
                out[name].update(sha256=mirror["sha256"], mirror=mirror)
            elif local is not None:  # a real mirror may hold terabytes: recorded by path, as the Hub is by name
                out[name]["mirror_path"] = str(local)
        else:
            out[name] = ledger.hash_artifact(Path(p), ctx.run_dir)
            if out[name]["kind"] == "missing":  # every declared input is read: say which one is not there
                raise ConfigError(f"{ctx.stage}.{name}", _missing(Path(p), ctx.run_dir))
    return out


def _missing(path: Path, run_dir: Path) -> str:
    """Why an input is not there, in words: which stage of the run makes it, if one does."""
    path, run_dir = Path(path).resolve(), Path(run_dir).resolve()
    maker = path.relative_to(run_dir).parts[0] if path.is_relative_to(run_dir) and path != run_dir else None
    if maker in STAGES:
        return f"{path} does not exist: it is made by the {maker} stage (`ledgerlm {maker} --out {run_dir}`)"
    return f"path does not exist: {path}"


def prepare_mirror(recipe: Recipe, run_dir: Path, echo=print) -> Path | None:
    """The recipe's Hub mirror directory (None: the real Hub); a generated one is built here the first time."""
    path = recipe.hub_mirror.resolve(run_dir)
    if path is None:
        return None
    if recipe.hub_mirror.generate == "rehearsal":
        vocab = recipe.hub_mirror.vocab_size
        if not rehearsal.is_built(path, vocab):
            echo(f"[hub_mirror] generating the rehearsal's Hub repositories → {path}")
            rehearsal.write_mirror(path, vocab)
    elif not path.is_dir():
        raise ConfigError("hub_mirror.path", f"directory does not exist: {path}", recipe.source)
    return path


def run_stage(recipe: Recipe, stage: str, run_dir: Path, force: bool = False, echo=print) -> tuple[str, dict | None]:
    """Run one stage unless its record already matches config and inputs. Returns ('ran'|'skipped', record)."""
    with hub.using(prepare_mirror(recipe, Path(run_dir), echo)):
        return _run_stage(recipe, stage, run_dir, force, echo)


def _run_stage(recipe: Recipe, stage: str, run_dir: Path, force: bool, echo) -> tuple[str, dict | None]:
    run_dir = Path(run_dir)
    spec = get(stage)
    cfg = recipe.section(stage)
    log, handler = _stage_logger(run_dir, stage)
    ctx = StageContext(
        run_dir=run_dir,
        stage=stage,
        recipe=recipe,
        seed=recipe.seed,
        device=resolve_device(recipe.device),
        log=log,
        terminal=sys.stderr,
    )
    try:
        config = to_dict(cfg)
        config_sha = ledger.canonical_sha256(config)
        inputs = stage_inputs(spec, cfg, ctx)
        inputs_sha = ledger.canonical_sha256({k: v.get("sha256", v["path"]) for k, v in inputs.items()})
        prev = ledger.read_record(run_dir, stage)
        if not force and _up_to_date(prev, config_sha, inputs_sha, run_dir):
            echo(f"[{stage}] up to date (config and inputs unchanged) — skipped")
            for w in prev.get("warnings", []):  # still true of the recorded result: do not let it go quiet
                say(f"warning [{stage}] {w['code']}: {w['message']} (recorded)", ctx.terminal)
            return "skipped", prev
        # Under torchrun every rank runs the stage; only rank 0 touches the run directory and the ledger (the
        # others cannot get ahead of it: the stage's process-group rendezvous waits for rank 0).
        lead = int(os.environ.get("RANK", "0")) == 0
        attempt_path = _begin_attempt(ctx, config_sha, inputs_sha, force, lead)
        echo(f"[{stage}] {'resuming' if ctx.resuming else 'running'} → {ctx.out_dir}")
        log.info("stage %s starting (resuming=%s) config=%s", stage, ctx.resuming, config)
        started, t0 = ledger.now(), time.time()
        record = _new_record(ctx, started, config, config_sha, inputs, inputs_sha)
        result = _call_stage(spec, cfg, ctx)
        _finish_record(record, result, ctx, t0)
        if not lead:
            return "ran", None
        if "model" in result.outputs and spec.makes_model:
            _add_samples(record, spec, result, ctx)
        ledger.write_record(run_dir, record)
        attempt_path.unlink(missing_ok=True)
        log.info("stage %s done in %.1fs", stage, record["seconds"])
        for line in result.summary:
            log.info("summary: %s", line)
            echo(f"[{stage}] {line}")
        echo(f"[{stage}] done in {fmt_duration(record['seconds'])}")
        return "ran", record
    finally:
        ctx.close()
        log.removeHandler(handler)
        handler.close()


def _up_to_date(prev: dict | None, config_sha: str, inputs_sha: str, run_dir: Path) -> bool:
    """The last record is `ok`, for the same config and inputs, and its outputs are still there: skip the stage."""
    return bool(
        prev
        and prev.get("status") == "ok"
        and prev.get("config_sha256") == config_sha
        and prev.get("inputs_sha256") == inputs_sha
        and _outputs_present(prev, run_dir)
    )


def _begin_attempt(ctx: StageContext, config_sha: str, inputs_sha: str, force: bool, lead: bool) -> Path:
    """Set ctx.resuming, clear an earlier attempt's outputs for a fresh start, and note this attempt in the ledger
    directory (removed once the record is written). -> the attempt file's path."""
    # A stage killed earlier with the same config and inputs resumes in place; otherwise it starts clean.
    attempt_path = ledger.ledger_dir(ctx.run_dir) / f"{ctx.stage}.attempt.json"
    attempt = {"stage": ctx.stage, "config_sha256": config_sha, "inputs_sha256": inputs_sha}
    prior = _read_json(attempt_path)
    ctx.resuming = prior is not None and {k: prior.get(k) for k in attempt} == attempt and not force
    if lead and not ctx.resuming:
        for d in (ctx.out_dir, ctx.run_dir / "tensorboard" / ctx.stage):  # a fresh start: nothing of an earlier attempt
            if d.exists():
                shutil.rmtree(d)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    if lead:
        ledger.atomic_write_json(attempt_path, {**attempt, "started": ledger.now()})
    return attempt_path


def _new_record(ctx: StageContext, started: str, config: dict, config_sha: str, inputs: dict, inputs_sha: str) -> dict:
    """The stage's record as it starts: what runs, on what, with which code (results are added when it ends)."""
    return {
        "schema": ledger.SCHEMA,
        "stage": ctx.stage,
        "recipe": ctx.recipe.name,
        "recipe_file": ctx.recipe.source,
        "status": "running",
        "started": started,
        "config": config,
        "config_sha256": config_sha,
        "seed": ctx.recipe.seed,
        "device": ctx.device,
        "code": ledger.code_version(),
        "env": ledger.environment(),
        "inputs": inputs,
        "inputs_sha256": inputs_sha,
    }


def _call_stage(spec: StageSpec, cfg: Any, ctx: StageContext) -> StageResult:
    """Run the stage with other libraries' stderr in its log; a failure is logged with its traceback and re-raised."""
    try:
        with divert_stderr(ctx.run_dir / "logs" / f"{ctx.stage}.log"):  # other libraries' banners and warnings
            return spec.run(cfg, ctx)
    except Exception as e:
        if disk_full(e) and not e.filename:  # a failed write() does not say which file: name the stage's dir
            e.filename = str(ctx.out_dir)
        ctx.log.error("stage %s failed: %s\n%s", ctx.stage, e, traceback.format_exc())
        raise


def _finish_record(record: dict, result: StageResult, ctx: StageContext, t0: float) -> None:
    """Add the stage's results to its record: hashed outputs, counters, metrics, summary, warnings."""
    for key, value in nonfinite(result.metrics):
        ctx.warn("nonfinite_metric", f"{key} is {value}: no usable number was measured (see logs/{ctx.stage}.log)")
    record.update(
        status="ok",
        ended=ledger.now(),
        seconds=round(time.time() - t0, 3),
        outputs={k: ledger.hash_artifact(Path(p), ctx.run_dir) for k, p in result.outputs.items()},
        counters=result.counters,
        metrics=result.metrics,
        extra=result.extra,
        summary=result.summary,
        warnings=ctx.warnings,
        # untracked: the log and event files hold wall-clock times, so they are not hashed outputs
        logs=ctx.log_paths(),
    )


def _add_samples(record: dict, spec: StageSpec, result: StageResult, ctx: StageContext) -> None:
    """Sample generations from the stage's model into its record (chat models in the chat template)."""
    try:
        chat = spec.produces == "chat_model"
        record["samples"] = sample_model(Path(result.outputs["model"]), chat, ctx.recipe.samples, ctx.device)
    except Exception as e:  # samples are for reading, not for passing: record why they are absent
        ctx.log.warning("could not sample from %s: %s", result.outputs["model"], e)
        record["samples_error"] = str(e)


def nonfinite(metrics: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every NaN/inf number in a stage's metrics, nested dicts and lists included."""
    items = metrics.items() if isinstance(metrics, dict) else enumerate(metrics) if isinstance(metrics, list) else ()
    out = []
    for k, v in items:
        key = f"{prefix}.{k}" if isinstance(k, str) and prefix else f"{prefix}[{k}]" if isinstance(k, int) else k
        if isinstance(v, dict | list):
            out += nonfinite(v, key)
        elif isinstance(v, float) and not math.isfinite(v):
            out.append((key, v))
    return out


def _outputs_present(record: dict, run_dir: Path) -> bool:
    """Cheap freshness check for skipping: every recorded output still exists with its recorded size."""
    for art in record.get("outputs", {}).values():
        p = ledger.resolve(art["path"], run_dir)
        if art["kind"] == "file" and (not p.is_file() or p.stat().st_size != art["size"]):
            return False
        if art["kind"] == "dir":
            for f, (size, _) in art.get("files", {}).items():
                q = p / f
                if not q.is_file() or q.stat().st_size != size:
                    return False
    return True


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the whole pipeline


def preflight(recipe: Recipe, run_dir: Path) -> None:
    """Fail before any compute if a stage names an external file or directory that does not exist."""
    run_dir = Path(run_dir).resolve()
    for i, stage in enumerate(recipe.stages):
        if stage in CHECKS:
            continue
        spec = get(stage)
        if spec.inputs is None:
            continue
        ctx = StageContext(run_dir=run_dir, stage=stage, recipe=recipe, seed=recipe.seed)
        try:
            declared = spec.inputs(recipe.section(stage), ctx)
        except ConfigError:
            raise
        except Exception:  # noqa: S112 - inputs that depend on upstream outputs are checked when the stage runs
            continue
        for name, p in declared.items():
            if isinstance(p, str) and p.startswith("hub:"):
                continue
            p = Path(p).resolve()
            if p.exists():
                continue
            inside = p.is_relative_to(run_dir) and p != run_dir
            if not inside or p.relative_to(run_dir).parts[0] not in recipe.stages[:i]:  # no earlier stage makes it
                raise ConfigError(f"{stage}.{name}", _missing(p, run_dir), recipe.source)


def run_pipeline(recipe: Recipe, run_dir: Path, force: bool = False, echo=print) -> int:
    """Run the recipe's stages in order. Once a stage re-runs, every later stage re-runs too."""
    run_dir = Path(run_dir)
    preflight(recipe, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger.atomic_write_json(run_dir / "recipe.json", recipe.to_dict())
    rerun = force
    t0 = time.time()
    verdicts: dict[str, str] = {}  # check -> what it found
    warned: list[str] = []
    for stage in recipe.stages:
        if stage in CHECKS:
            passed, verdicts[stage] = get_check(stage).check(run_dir, echo)
            if not passed:
                return 1
            continue
        status, record = run_stage(recipe, stage, run_dir, force=rerun, echo=echo)
        rerun = rerun or status == "ran"
        warned += [f"{stage}: {w['code']}" for w in (record or {}).get("warnings", [])]
    echo(f"finished {recipe.name!r} in {fmt_duration(time.time() - t0)}")
    checks = "  ".join(f"{c}: {verdicts.get(c, f'not run (check with `ledgerlm {c} {run_dir}`)')}" for c in CHECKS)
    echo(f"  ledger: {ledger.ledger_dir(run_dir)}  {checks}")
    if warned:
        echo(f"  {len(warned)} warning(s): {'; '.join(warned)}")
    return 0
