"""Write one benchmark's section into BENCHMARKS.md (between markers), keeping the other sections."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HISTORY = "<!-- history:start -->"


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.python_version()}"


def default_command() -> str:
    """This run as a user would paste it from the repo root: under `python -m bench.X`, sys.argv[0] is X's full path."""
    return " ".join(["python -m bench." + Path(sys.argv[0]).stem, *map(shlex.quote, sys.argv[1:])])


def code_version() -> str:
    """`commit <sha>` of the checkout the benchmark ran on, `+dirty` when tracked files under ledgerlm/ or bench/
    had uncommitted changes (then the numbers are not of that commit: commit first, then measure)."""
    repo = BENCHMARKS.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "ledgerlm", "bench"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "commit unknown"
    if sha.returncode != 0:
        return "commit unknown"
    return f"commit {sha.stdout.strip()[:12]}" + ("+dirty" if dirty.stdout.strip() else "")


def record(name: str, body: str, command: str | None = None, numbers: dict | None = None) -> None:
    """Replace the section `name` of BENCHMARKS.md with `body`, stamped with command (default: this run's command
    line, see default_command), machine, date and code version.

    `numbers` are the section's headline values, written as one machine-readable line
    `<!-- numbers: {...} -->` that `python -m bench.summary` quotes (so a summary row cannot say more than its
    section measured). Repeated runs give lists; keep them as lists (the summary shows min / median / max, n)."""
    command = command or default_command()
    stamp = f"`{command}` — {machine()} — {datetime.date.today().isoformat()} — {code_version()}"
    if numbers:
        body = body.strip() + "\n\n<!-- numbers: " + json.dumps(numbers, sort_keys=True) + " -->"
    section = f"<!-- bench:{name}:start -->\n### {name}\n\n{stamp}\n\n{body.strip()}\n<!-- bench:{name}:end -->"
    text = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nEach section is written by its script under `bench/`.\n"
    )
    pattern = re.compile(rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif HISTORY in text:  # a new section goes above the history (sections recorded before code stamps)
        head, tail = text.split(HISTORY, 1)
        text = head.rstrip() + "\n\n" + section + "\n\n" + HISTORY + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = BENCHMARKS.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, BENCHMARKS)
    print(section)
