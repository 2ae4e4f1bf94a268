"""Small I/O helpers shared by every stage: atomic writes and compressed JSONL.

Every artifact a stage records in the ledger is written through these helpers, so a killed process leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it into place, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artifacts get the usual permissions
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def open_text(path: str | os.PathLike, mode: str = "rt", errors: str = "strict", compression: str | None = None):
    """Open plain, .gz or .zst text files the same way (`mode` 'rt' or 'wt'); compression defaults to the suffix."""
    path = Path(path)
    compression = compression if compression is not None else path.suffix
    if compression == ".gz":
        return gzip.open(path, mode, encoding="utf-8", errors=errors)
    if compression == ".zst":
        import zstandard

        if "r" in mode:
            stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        else:
            stream = zstandard.ZstdCompressor(level=3).stream_writer(open(path, "wb"), closefd=True)
        return io.TextIOWrapper(stream, encoding="utf-8", errors=errors)
    return open(path, mode, encoding="utf-8", errors=errors)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the records of a JSONL file; a malformed line raises ValueError naming the file and line."""
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records atomically (compressed by the target's suffix); returns how many were written."""
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp, open_text(tmp, "wt", compression=path.suffix) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
