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
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

try:  # only .zst files need it: a fresh GPU machine without it still trains, evaluates and benchmarks
    import zstandard
except ImportError:  # pragma: no cover - exercised on machines without the package
    zstandard = None

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


def _need_zstandard(path) -> None:
    if zstandard is None:
        raise ImportError(f"{path}: reading or writing .zst needs the zstandard package (pip install zstandard)")


def open_text(path: str | os.PathLike, mode: str = "rt", errors: str = "strict", compression: str | None = None):
    """Open plain, .gz or .zst text files the same way (`mode` 'rt' or 'wt'); compression defaults to the suffix."""
    path = Path(path)
    compression = compression if compression is not None else path.suffix
    if compression == ".gz":
        return gzip.open(path, mode, encoding="utf-8", errors=errors)
    if compression == ".zst":
        _need_zstandard(path)
        if "r" in mode:
            stream = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        else:
            stream = zstandard.ZstdCompressor(level=3).stream_writer(open(path, "wb"), closefd=True)
        return io.TextIOWrapper(stream, encoding="utf-8", errors=errors)
    return open(path, mode, encoding="utf-8", errors=errors)


class CorruptInput(ValueError):
    """A compressed file that ends early or is not what its suffix says; `line` = the line it broke in."""

    def __init__(self, path: str | os.PathLike, line: int, why: str):
        self.path, self.line, self.why = str(path), line, why
        super().__init__(f"{path}:{line}: {why}")


CHUNK_BYTES = 1 << 20


def _zst_chunks(f) -> Iterator[bytes]:
    """Decompressed chunks of a (multi-frame) .zst stream; unlike zstandard's stream_reader, a frame cut short
    raises instead of ending quietly."""
    _need_zstandard(getattr(f, "name", ".zst stream"))
    dctx = zstandard.ZstdDecompressor()
    d, fed = dctx.decompressobj(), False
    while raw := f.read(CHUNK_BYTES):
        out = [d.decompress(raw)]
        fed = True
        while d.eof and d.unused_data:  # the next frame starts inside this chunk
            rest = d.unused_data
            d = dctx.decompressobj()
            out.append(d.decompress(rest))
        if d.eof:
            d, fed = dctx.decompressobj(), False
        yield b"".join(out)
    if fed and not d.eof:
        raise EOFError("zstd frame ends before its end (truncated file)")


def _raw_chunks(path: Path) -> Iterator[bytes]:
    name = path.name.lower()
    with open(path, "rb") as raw:
        if name.endswith(".zst"):
            yield from _zst_chunks(raw)
            return
        f = gzip.GzipFile(fileobj=raw, mode="rb") if name.endswith(".gz") else raw
        while chunk := f.read1(CHUNK_BYTES):  # read1: a truncated .gz loses no line before the cut
            yield chunk


def iter_chunks(path: str | os.PathLike) -> Iterator[bytes]:
    """The decompressed bytes of a plain, .gz or .zst file in chunks of up to ~1 MB. A truncated or corrupt
    compressed file raises CorruptInput naming the file and the line it broke in."""
    path = Path(path)
    newlines = 0
    try:
        for chunk in _raw_chunks(path):
            newlines += chunk.count(b"\n")
            yield chunk
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CorruptInput(path, newlines + 1, f"cannot decompress ({e})") from None
    except Exception as e:  # zstandard.ZstdError, without importing zstandard for plain files
        if type(e).__name__ != "ZstdError":
            raise
        raise CorruptInput(path, newlines + 1, f"cannot decompress ({e})") from None


def has_content(path: str | os.PathLike) -> bool:
    """Whether a plain/.gz/.zst file holds anything but whitespace; reads only up to the first such byte. A file
    that cannot be decompressed counts as not empty: its reader reports where it broke."""
    try:
        return any(chunk.strip() for chunk in iter_chunks(path))
    except CorruptInput:
        return True


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes without the b"\\n") of a plain, .gz or .zst file, split on b"\\n" ONLY.

    U+2028, U+2029, U+0085, \\x1c-\\x1e and lone \\r are legal inside JSON strings and inside text, so neither
    str.splitlines() nor a text-mode file (which also splits on \\r) may be used to read JSONL. A truncated or
    corrupt compressed file raises CorruptInput (see iter_chunks); a final line without b"\\n" is still yielded.
    Memory: one chunk plus the longest line.
    """
    lineno, pending = 0, []
    for chunk in iter_chunks(path):
        if b"\n" not in chunk:
            pending.append(chunk)  # a long line: joined once, not re-copied per chunk
            continue
        parts = chunk.split(b"\n")
        parts[0] = b"".join([*pending, parts[0]])
        for part in parts[:-1]:
            lineno += 1
            yield lineno, part
        pending = [parts[-1]] if parts[-1] else []
    if pending:
        yield lineno + 1, b"".join(pending)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of our own JSONL (plain/.gz/.zst), split on "\\n" only; a
    malformed line raises ValueError naming the file and line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}:{lineno}: malformed JSON ({e})") from None


def iter_jsonl_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any, str | None]]:
    """("file:line", value, None) for every non-blank line of anyone's JSONL, or ("file:line", the line's first 200
    characters, why it is not JSON): for readers that quarantine a bad row and go on (split on "\n" only)."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield where, json.loads(line), None
        except json.JSONDecodeError as e:
            yield where, line[:200].decode(errors="replace"), f"invalid JSON ({e.msg} at column {e.colno})"
        except UnicodeDecodeError as e:
            yield where, line[:200].decode(errors="replace"), f"invalid UTF-8 ({e.reason} at byte {e.start})"


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the records of a JSONL file; a malformed line raises ValueError naming the file and line."""
    for _, rec in iter_jsonl(path):
        yield rec


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records atomically (compressed by the target's suffix); returns how many were written."""
    path = Path(path)
    n = 0
    with atomic_path(path) as tmp, open_text(tmp, "wt", compression=path.suffix) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
