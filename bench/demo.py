"""Time the README's first command from a clean clone: set up, run the demo, get the report.

    python -m bench.demo [--repo .] [--keep]

Clones the committed HEAD into a temporary directory, runs the first line of README.md's first ```bash block
there exactly as written (venv + install + `ledgerlm run demo`), and records the wall time of the whole command
and of each stage (from the run's ledger) in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench._record import record


def readme_command(readme: Path, line: int) -> str:
    lines, inside = [], False
    for text in readme.read_text().splitlines():
        if text.startswith("```bash"):
            inside = True
        elif inside and text.startswith("```"):
            break
        elif inside:
            lines.append(text.strip())
    return lines[line - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--keep", action="store_true", help="keep the clone (printed) instead of deleting it")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ledgerlm-demo-"))
    clone = work / "ledgerlm"
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    cmd = readme_command(clone / "README.md", 1)
    print(f"+ {cmd}  (in {clone})", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    load0 = os.getloadavg()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env)
    total = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # install + pipeline, all processes
    load1 = os.getloadavg()
    if proc.returncode != 0:
        print(f"README command failed with exit code {proc.returncode}")
        return 1
    run = clone / "runs" / "demo"
    stages = []
    for p in sorted((run / "ledger").glob("*.json")):
        rec = json.loads(p.read_text())
        stages.append((rec["started"], rec["stage"], rec["seconds"]))
    rows = "\n".join(f"| {s} | {secs:.1f} |" for _, s, secs in sorted(stages))
    staged = sum(secs for *_, secs in stages)
    report = run / "report" / "report.html"
    body = (
        f"README's first command from a fresh clone (new venv, `pip install`, `ledgerlm run demo`): "
        f"**{total:.0f} s** wall in total ({cpu:.0f} s CPU, user + system of every process; load average "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after), of which the pipeline's stages took {staged:.0f} s; "
        f"report written: {report.is_file()}. Goal: under 600 s on 2 cores.\n\n"
        f"| stage | seconds |\n|---|---|\n{rows}\n"
    )
    if not args.no_record:
        record("demo-from-clean-clone", body, command="python -m bench.demo")
    else:
        print(body)
    if args.keep:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
