"""Time `ledgerlm run smollm-135m-rehearsal`: the real recipe's every stage at toy sizes, offline, on a CPU.

    python -m bench.rehearsal [--repeats 3] [--no-record]

Runs the command as tests/test_rehearsal.py does (offline, a fresh HF_HOME, OMP_NUM_THREADS=1, torch.compile with
the aot_eager backend: it traces forward and backward as on the GPU without building C++ code), each repeat into a
fresh directory, and records its wall seconds, CPU seconds (user + system of every process it started), the load
average and each stage's seconds from the run's ledger. Goal: under 3 minutes of wall time on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._record import record
from ledgerlm import hub

RECIPE = "smollm-135m-rehearsal"


def once(work: Path) -> dict:
    env = {
        **os.environ,
        "HF_HOME": str(work / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "LEDGERLM_COMPILE_BACKEND": "aot_eager",
    }
    env.pop(hub.ENV, None)
    run = work / "run"
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "ledgerlm", "run", RECIPE, "--out", str(run)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0 or "[audit] intact" not in p.stdout:
        raise SystemExit(f"{RECIPE} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    stages = {}
    for f in (run / "ledger").glob("*.json"):
        rec = json.loads(f.read_text())
        stages[rec["stage"]] = (rec.get("started", ""), rec["seconds"])
    return {
        "wall": wall,
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "load": (load, os.getloadavg()[0]),
        "stages": {k: v[1] for k, v in sorted(stages.items(), key=lambda kv: kv[1][0])},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    runs = []
    for i in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="ledgerlm-rehearsal-"))
        try:
            runs.append(once(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r = runs[-1]
        print(f"repeat {i}: {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, load {r['load'][0]:.1f}", flush=True)
    wall, cpu = [r["wall"] for r in runs], [r["cpu"] for r in runs]

    def spread(xs, fmt="{:.1f}"):
        if len(xs) == 1:
            return fmt.format(xs[0])
        return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

    stages = list(runs[0]["stages"])
    rows = "\n".join(f"| {s} | {spread([r['stages'].get(s, 0.0) for r in runs])} |" for s in stages)
    body = (
        f"`ledgerlm run {RECIPE} --out RUN` (offline, OMP_NUM_THREADS=1, LEDGERLM_COMPILE_BACKEND=aot_eager, a "
        f"fresh directory each time), {args.repeats} runs, median (min–max): **{spread(wall)} s wall**, "
        f"{spread(cpu)} s CPU (user + system of every process); load average (1 min) at the starts "
        + ", ".join(f"{r['load'][0]:.1f}" for r in runs)
        + ", at the ends "
        + ", ".join(f"{r['load'][1]:.1f}" for r in runs)
        + f", on {os.cpu_count()} cores. "
        "Every run's audit: intact. Goal: under 180 s wall on 2 cores.\n\n"
        f"| stage | seconds (ledger) |\n|---|---:|\n{rows}\n"
    )
    numbers = {
        "wall_s": [round(x, 1) for x in wall],
        "cpu_s": [round(x, 1) for x in cpu],
        "load_1min_start": [round(r["load"][0], 2) for r in runs],
    }
    print(body)
    if not args.no_record:
        record("rehearsal", body, numbers=numbers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
