"""Write one benchmark's section into BENCHMARKS.md (between markers), keeping the other sections."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


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


def record(name: str, body: str, command: str | None = None) -> None:
    """Replace the section `name` of BENCHMARKS.md with `body`, stamped with command (default: this run's command
    line, see default_command), machine and date."""
    command = command or default_command()
    stamp = f"`{command}` — {machine()} — {datetime.date.today().isoformat()}"
    section = f"<!-- bench:{name}:start -->\n### {name}\n\n{stamp}\n\n{body.strip()}\n<!-- bench:{name}:end -->"
    text = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nEach section is written by its script under `bench/`.\n"
    )
    pattern = re.compile(rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    tmp = BENCHMARKS.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, BENCHMARKS)
    print(section)
