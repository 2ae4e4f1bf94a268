"""Peak RSS of `ledgerlm curate` per step: where does memory still grow with the corpus?

    python -m bench.rss_by_step RUN/logs/curate.log ledgerlm curate --input web=FILE --out RUN --datatrove-tasks 1 --workers 1

Runs the command, samples VmRSS of every process of its tree every 0.1 s (Linux /proc), and attributes each sample to
the step in progress: the one after the last "curate step X done" line of the stage log. Prints, per step, the peak
of the largest process ("after X" = the step that follows X). Run it at two corpus sizes and compare.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            out += tree(int(child))
    except OSError:  # the process has exited
        pass
    return out


def rss_kb(pid: int) -> int:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
    except (OSError, AttributeError):
        return 0


def main(log: str, cmd: list[str]) -> int:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks: dict[str, int] = {}
    while p.poll() is None:
        try:
            done = re.findall(r"curate step (\w+) done", open(log).read())
        except OSError:
            done = []
        step = f"after {done[-1]}" if done else "first"
        peaks[step] = max([peaks.get(step, 0), *(rss_kb(q) for q in tree(p.pid))])
        time.sleep(0.1)
    print("exit code", p.returncode)
    for step, kb in peaks.items():
        print(f"{step:22s} {kb / 1e6:.3f} GB")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
