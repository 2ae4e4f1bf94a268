"""Running a curate step on a datatrove executor (local, Ray or Slurm by `executor.kind`) and waiting for it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ledgerlm import hub
from ledgerlm.data.curate.base import CurateStep
from ledgerlm.data.curate.config import Config


def _venv_activate() -> str | None:
    """The activate script of the virtual environment running this process (datatrove `source`s it in each job;
    $VIRTUAL_ENV is unset when ledgerlm runs as .venv/bin/ledgerlm, and is a directory, not a script)."""
    venv = os.environ.get("VIRTUAL_ENV") or (sys.prefix if sys.prefix != sys.base_prefix else None)
    script = Path(venv) / "bin" / "activate" if venv else None
    return str(script) if script is not None and script.is_file() else None


def execute(cfg: Config, step: CurateStep, tasks: int, logs: Path, resume: bool) -> None:
    """Run one step on the configured datatrove executor and wait for it."""
    ex = cfg.executor
    workers = min(ex.workers, tasks)
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        step.in_pool = workers > 1
        # fork: pool workers are children of this process (their CPU time and peak memory are accounted to it,
        # and they die with it, see CurateStep.run)
        LocalPipelineExecutor(
            [step], tasks=tasks, workers=workers, logging_dir=str(logs), skip_completed=resume, start_method="fork"
        ).run()
    elif ex.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        # Ray's workers do not inherit this process's environment: hand them the Hub mirror, if one is in use
        mirror = {"runtime_env": {"env_vars": {hub.ENV: str(hub.mirror())}}} if hub.mirror() else None
        RayPipelineExecutor(
            [step],
            tasks=tasks,
            workers=workers,
            logging_dir=str(logs),
            skip_completed=resume,
            cpus_per_task=ex.slurm_cpus_per_task,
            ray_remote_kwargs=mirror,
        ).run()
    else:
        from datatrove.executor import SlurmPipelineExecutor

        job = SlurmPipelineExecutor(
            [step],
            tasks=tasks,
            workers=workers,
            time=ex.slurm_time,
            partition=ex.slurm_partition,
            cpus_per_task=ex.slurm_cpus_per_task,
            mem_per_cpu_gb=ex.slurm_mem_per_cpu_gb,
            logging_dir=str(logs),
            skip_completed=resume,
            job_name=f"curate-{logs.name}",
            venv_path=_venv_activate(),
        )
        job.run()
        # sbatch returns at once: wait for every task's completion marker before the next step reads its outputs
        while job.get_incomplete_ranks(skip_completed=True):
            time.sleep(ex.poll_seconds)
    for r in range(tasks):
        if not (logs / "completions" / f"{r:05d}").exists():
            raise RuntimeError(f"curate step {logs.name}: task {r} did not complete (see {logs}/logs)")
