"""The `curate` stage: read sources -> quality filters -> cross-source near-dedup -> segment dedup -> decontamination.

Small datatrove pipeline steps, each run by a datatrove executor (local, Slurm or Ray by `executor.kind`), each
spread over tasks, each talking to the next only through the typed work directory (`ledgerlm.data.workdir`):

  scan     (T tasks)  read this task's share of every source in chunks of `chunk_docs` documents; quarantine
                      malformed records; run the quality filters; for each surviving document write its text, id,
                      origin, score, LSH band keys, segment hashes and benchmark n-gram hits to disk. A killed task
                      resumes after its last completed chunk.
  index    (1 task)   each document's rank in id order and in keep order (eligible first), by external sort: each
                      scan chunk's keys sorted into a run, the runs merged in blocks (`ledgerlm.data.extsort`).
  lsh      (B tasks)  one task per LSH band: that band's keys sorted per chunk and merged the same way; edges.
  cluster  (T tasks)  candidate groups split by component; verified greedy clusters (see `ledgerlm.data.dedup`).
  segments (K tasks)  boilerplate lines, one task per range of segment hashes, over documents that survived.
  contam   (1 task)   n-grams too common to count as leaks and the contamination table.
  apply    (T tasks)  apply every decision chunk by chunk, writing sorted runs per output shard.
  merge    (S tasks)  heap-merge the runs of each output shard into kept/ and excluded/ (sorted by id).

Memory per process is bounded by settings, not by the corpus: scan and apply hold one chunk (`chunk_docs`/`chunk_mb`),
index and lsh one merge buffer (`sort_buffer_mb`), segments one hash bucket, cluster its candidates only; what grows
is a byte per document (`alive`) and the near-duplicate candidates and drops. Global columns (ids, ranks, offsets)
live in .npy files read by range or gathered block by block, never memory-mapped (mapped pages stay resident).
Decisions depend only on content (ids, shingles), so outputs are byte-identical whatever the
number of tasks or workers. kept + excluded = read, always.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from ledgerlm.data import curate_plan
from ledgerlm.data.curate.apply import ApplyStep
from ledgerlm.data.curate.base import (
    CurateStep,
    children_die_with_this_process,
    kill_point_for_tests,
    save_bench_cache,
    segment_tasks,
)
from ledgerlm.data.curate.cluster import ClusterStep
from ledgerlm.data.curate.config import KEEP_RULE, Config, quality_by_source, quality_configs
from ledgerlm.data.curate.contam import ContamStep
from ledgerlm.data.curate.executors import execute
from ledgerlm.data.curate.index import IndexStep
from ledgerlm.data.curate.lsh import LshStep
from ledgerlm.data.curate.merge import MergeStep
from ledgerlm.data.curate.scan import ScanStep
from ledgerlm.data.curate.segments import SegmentStep
from ledgerlm.data.curate.summary import curate_summary, summarise
from ledgerlm.data.curate_report import SECTIONS as REPORT
from ledgerlm.data.decontam import load_benchmarks, to_csv, to_markdown
from ledgerlm.data.sources import check_sources
from ledgerlm.data.workdir import WorkDir
from ledgerlm.io import atomic_write_json, atomic_write_text
from ledgerlm.stage import StageResult, StageSpec


def steps(cfg: Config, work: str, out_dir: str) -> list[tuple[str, CurateStep, int | Callable[[], int]]]:
    """(name, step, tasks) in order: each step reads only what the steps before it wrote (tasks may be a function
    of what they wrote)."""
    t = cfg.executor.datatrove_tasks
    return [
        ("scan", ScanStep(cfg, work, t), t),
        ("index", IndexStep(cfg, work, t), 1),
        ("lsh", LshStep(cfg, work, t), cfg.near_dedup.bands if cfg.near_dedup.enabled else 0),
        ("cluster", ClusterStep(cfg, work, t), t if cfg.near_dedup.enabled else 0),
        # as many boilerplate tasks as the scanned segments need (known once scan is done)
        (
            "segments",
            SegmentStep(cfg, work, t),
            (lambda: segment_tasks(cfg, WorkDir(work), t)) if cfg.segment_dedup.enabled else 0,
        ),
        ("contam", ContamStep(cfg, work, t), 1),
        ("apply", ApplyStep(cfg, work, t), t),
        ("merge", MergeStep(cfg, work, t, out_dir), cfg.shards),
    ]


RESULT = ".curate-result.json"  # the stage's summary, written before .work is removed (resume after that point)


def curate(cfg: Config, out_dir: Path, log=None, resume: bool = False, logs_dir: Path | None = None, progress=None):
    """Run the steps into `out_dir` (kept/, excluded/, boilerplate.jsonl, contamination.md/.csv); returns counters and
    the table. A run killed at any point resumes with `resume=True` (every step skips its completed tasks, scan and
    apply their completed chunks); datatrove's task logs and completion markers go to `logs_dir`."""
    if not cfg.sources:
        raise ValueError("curate: no sources (give --input PATH or curate.sources in the recipe)")
    quality_configs(cfg)  # a bad per-source gate override fails here, before anything is written
    if not resume:  # (a resumed run has the same inputs: the ledger compared their hashes)
        check_sources(cfg.sources)  # a missing, unknown-format or empty input: one line, exit 2
    # absolute paths: Ray's workers do not start in this directory (a relative --out failed there)
    out_dir = Path(out_dir).resolve()
    if cfg.executor.kind == "ray":
        cfg = replace(cfg, sources=[replace(s, path=s.path and os.path.abspath(s.path)) for s in cfg.sources])
    result_path = out_dir / RESULT
    work = out_dir / ".work"
    logs = Path(logs_dir).resolve() if logs_dir is not None else work / "logs"
    if resume and result_path.exists():  # killed after the work directory was removed: nothing left to do
        return json.loads(result_path.read_text())
    if not resume:
        for d in (work, logs, out_dir / "kept", out_dir / "excluded"):
            if d.exists():
                shutil.rmtree(d)
    wd = WorkDir(work).make()
    t0 = time.time()
    if cfg.decontam.active and not wd.benchmarks_json.exists():
        save_bench_cache(wd, load_benchmarks(cfg.decontam))
    timings = {}
    with children_die_with_this_process():
        for name, step, n in steps(cfg, str(work), str(out_dir)):
            n = n() if callable(n) else n
            if n == 0:  # switched off (near-dedup or segment dedup)
                if progress is not None:
                    progress(name)
                continue
            t = time.time()
            execute(cfg, step, n, logs / name, resume)
            timings[name] = round(time.time() - t, 3)
            if progress is not None:
                progress(name)
            if log:
                log.info("curate step %s done in %.1fs", name, timings[name])
            kill_point_for_tests(f"after-{name}")
    result = summarise(cfg, wd, cfg.executor.datatrove_tasks)
    result["quality_by_source"] = quality_by_source(cfg)
    result["timings_s"] = {**timings, "total": round(time.time() - t0, 3)}
    rows = result["contamination"]
    if cfg.decontam.active:
        atomic_write_text(out_dir / "contamination.md", to_markdown(rows))
        atomic_write_text(out_dir / "contamination.csv", to_csv(rows))
    atomic_write_json(result_path, result)
    if not cfg.keep_work:
        shutil.rmtree(work)
    kill_point_for_tests("after-cleanup")
    return result


def inputs(cfg: Config, ctx) -> dict:
    out = {}
    for s in cfg.sources:
        if s.format == "demo":
            continue  # generated by our own code from the recorded config: nothing external to hash
        out[f"source:{s.name}"] = f"hub:{s.hf_name}" if (s.format == "hf" or not s.path) else Path(s.path)
    for spec in cfg.decontam.files:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        out[f"benchmark:{name or Path(path).name.split('.')[0]}"] = Path(path)
    if cfg.decontam.tasks and cfg.decontam.data_dir:
        out["benchmark_data_dir"] = Path(cfg.decontam.data_dir)
    return out


def run(cfg: Config, ctx):
    bar = ctx.progress(total=len(steps(cfg, "", "")), desc="curate", unit="step")  # scan, index, ... merge

    def step_done(name: str) -> None:
        bar.update(1, step=name)

    with bar:
        res = curate(
            cfg,
            ctx.out_dir,
            log=ctx.log,
            resume=getattr(ctx, "resuming", False),
            logs_dir=ctx.run_dir / "logs" / "curate-datatrove",
            progress=step_done,
        )
    c = res["counters"]
    ctx.log.info("curate: read %d, kept %d, dropped %s", c["read"], c["kept"], c["dropped"])
    outputs = {
        "kept": ctx.out_dir / "kept",
        "excluded": ctx.out_dir / "excluded",
        "boilerplate": ctx.out_dir / "boilerplate.jsonl",  # the segments removed, with their document counts
    }
    if cfg.decontam.active:
        outputs["contamination_md"] = ctx.out_dir / "contamination.md"
        outputs["contamination_csv"] = ctx.out_dir / "contamination.csv"
    return StageResult(
        outputs=outputs,
        counters=c,
        metrics={"contamination": res["contamination"], "timings_s": res["timings_s"]},
        extra={
            "keep_rule": KEEP_RULE,
            "executor": asdict(cfg.executor),
            # which gates applied to which source's documents (sources not listed: config.quality)
            "quality_by_source": res["quality_by_source"],
        },
        summary=curate_summary(c),
    )


def plan(cfg: Config, ctx) -> list[str]:
    lines = [
        f"sources: {', '.join(s.name for s in cfg.sources) or '(none)'}; executor {cfg.executor.kind} "
        f"x{cfg.executor.datatrove_tasks} tasks, {cfg.executor.workers} workers; memory per scan/apply process: chunks of "
        f"{cfg.chunk_docs:,} documents or {cfg.chunk_mb} MB"
    ]
    own = quality_by_source(cfg)
    if own:
        lines.append(
            "quality: stage-wide gates; own gates for "
            + ", ".join(f"{k} ({len(v['changed'])} changed)" for k, v in own.items())
        )
    if cfg.near_dedup.enabled:
        nd = cfg.near_dedup
        check = f"verified at exact Jaccard >= {nd.exact_jaccard}" if nd.exact_jaccard else "UNVERIFIED LSH groups"
        lines.append(f"near-dedup: MinHash {nd.ngram}-grams, {nd.bands}x{nd.rows}, {check}; keep {KEEP_RULE}")
    if cfg.decontam.active:
        lines.append(f"decontaminate against {cfg.decontam.tasks + cfg.decontam.files} ({cfg.decontam.action})")
    return lines


def _input_source(spec: str, text_field: str | None) -> dict:
    name, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
    name = name or Path(path).name.split(".")[0]
    out = {"name": name, "path": path}
    if text_field:
        out["text_field"] = text_field
    return out


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="source file or directory (repeatable); replaces the recipe's sources",
    )
    p.add_argument("--text-field", default=None, help="JSON/Parquet field holding the text ('*' = every string)")
    p.add_argument(
        "--decontaminate",
        action="append",
        default=[],
        metavar="TASK_OR_FILE",
        help="benchmark task name or file to decontaminate against (repeatable)",
    )
    p.add_argument(
        "--decontam-action",
        choices=["drop", "cut"],
        default=None,
        help="decontam.action: drop a matching document or cut the match",
    )
    p.add_argument("--data-dir", default=None, help="local benchmark data for task names (e.g. ../shared/data)")
    p.add_argument("--datatrove-tasks", type=int, default=None, help="datatrove tasks (shares of the corpus)")
    p.add_argument("--tasks", type=int, default=None, dest="old_tasks", help=argparse.SUPPRESS)  # the old name
    p.add_argument("--workers", type=int, default=None, help="datatrove workers (processes)")


def cli_overrides(args) -> dict:
    out: dict = {}
    if getattr(args, "old_tasks", None) is not None and getattr(args, "datatrove_tasks", None) is None:
        warnings.warn(
            "ledgerlm curate --tasks: renamed to --datatrove-tasks; the old name goes in the next release", stacklevel=2
        )
        args.datatrove_tasks = args.old_tasks
    if getattr(args, "input", None):
        out["sources"] = [_input_source(s, args.text_field) for s in args.input]
    if getattr(args, "decontaminate", None):
        files = [x for x in args.decontaminate if Path(x.rpartition("=")[2]).is_file()]
        out["decontam.files"] = files
        out["decontam.tasks"] = [x for x in args.decontaminate if x not in files]
    for flag, key in (
        ("decontam_action", "decontam.action"),
        ("data_dir", "decontam.data_dir"),
        ("datatrove_tasks", "executor.datatrove_tasks"),
        ("workers", "executor.workers"),
    ):
        if getattr(args, flag, None) is not None:
            out[key] = getattr(args, flag)
    return out


SPEC = StageSpec(
    name="curate",
    config=Config,
    run=run,
    help="quality gates, near-dedup, segment dedup and decontamination of raw text",
    inputs=inputs,
    plan=partial(curate_plan.curate, describe=plan),
    add_cli_args=add_cli_args,
    cli_overrides=cli_overrides,
    report=REPORT,
)
