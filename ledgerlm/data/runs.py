"""Sorted runs and their external merge: how curate writes output shards sorted by id in bounded memory.

A run is a text file of `KEY \\0 JSON \\n` lines sorted by KEY (JSON text never holds a raw NUL or newline). Runs are
read by splitting on b"\\n" only: U+2028/U+2029/U+0085 are legal inside our JSON text.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from pathlib import Path

from ledgerlm.io import atomic_path

FAN_IN = 128  # runs merged at once (open files); more runs are merged in passes


def record_key(rec: dict) -> str:
    """Output order: id, then origin (copies of one document in one source share an id)."""
    return f"{rec['id']}\x01{rec.get('file', '')}\x01{int(rec.get('line', 0)):012d}"


def keyed_line(rec: dict) -> bytes:
    return (record_key(rec) + "\0" + json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")


def write_run(path: Path, lines: list[bytes]) -> None:
    """Sort keyed lines and write them atomically (a run is complete or absent)."""
    lines.sort()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.writelines(lines)


def _read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:  # binary iteration splits on b"\n" only
        yield from f


def merge_runs(runs: list[Path], out: Path, tmp_run, strip_keys: bool = True) -> int:
    """Heap-merge sorted runs into `out` (atomic), in passes of FAN_IN files; returns the number of records.

    `tmp_run(level, i)` names an intermediate run. Byte order of `KEY\\0` equals the order of the keys.
    """
    level = 0
    while len(runs) > FAN_IN:
        nxt = []
        for i in range(0, len(runs), FAN_IN):
            p = tmp_run(level, i // FAN_IN)
            with atomic_path(p) as tmp, open(tmp, "wb") as f:
                f.writelines(heapq.merge(*(_read(r) for r in runs[i : i + FAN_IN])))
            nxt.append(p)
        runs, level = nxt, level + 1
    n = 0
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        for line in heapq.merge(*(_read(r) for r in runs)):
            f.write(line[line.index(b"\0") + 1 :] if strip_keys else line)
            n += 1
    return n
