"""Reading documents for tokenization: input files (JSONL plain/.gz/.zst, text), one `Doc` per record with its
source, a quarantine for malformed records, and the held-out split of a document (`split_of`, by content)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ledgerlm.io import CorruptInput, iter_lines

INPUT_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".txt")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

# ----------------------------------------------------------------------------- reading documents


@dataclass
class Doc:
    source: str
    key: str  # stable identity for the split hash: "<source>\0<id>" or the text's hash
    text: str
    file: str
    line: int


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files and directories (searched recursively) -> sorted list of input files with a known suffix."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.name.endswith(INPUT_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{p}: no input files ({', '.join(INPUT_SUFFIXES)})")
            files += found
        elif p.is_file():
            if not p.name.endswith(INPUT_SUFFIXES):
                raise ValueError(f"{p}: unsupported input file (expected {', '.join(INPUT_SUFFIXES)})")
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return files


def default_source_name(path: Path) -> str:
    """Source name for records without one: the file name without suffixes and shard numbers ('web-00003' -> 'web')."""
    name = path.name
    for suf in INPUT_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    return re.sub(r"[-_.]?\d+$", "", name) or name


def iter_documents(
    files: Iterable[Path],
    quarantine: Callable[[dict], None],
    text_field: str = "text",
    source_field: str = "source",
    default_source: str = "",
) -> Iterator[Doc]:
    """Yield documents from JSONL (plain/.gz/.zst) and .txt files, in file order.

    Lines are split on b"\\n" only (U+2028/U+2029/U+0085 are legal inside JSON strings). A .txt file is split into
    documents at blank lines. Malformed records — bad JSON, invalid UTF-8, a missing field, a compressed file that
    ends early — are passed to `quarantine` with file, line and reason, and skipped; never silently dropped.
    """
    for path in files:
        fallback = default_source or default_source_name(path)
        try:
            if path.name.endswith(".txt"):
                yield from _txt_documents(path, fallback, quarantine)
                continue
            for lineno, raw in iter_lines(path):
                if not raw.strip():
                    continue
                reason, rec = _parse_record(raw, text_field, source_field)
                if reason is None:
                    text = rec[text_field]
                    source = rec.get(source_field) or fallback
                    rid = rec.get("id")
                    key = (
                        f"{source}\0{rid}"
                        if rid is not None
                        else "text:" + xxhash.xxh128_hexdigest(text.encode("utf-8"))
                    )
                    yield Doc(source, key, text, str(path), lineno)
                else:
                    quarantine({"file": str(path), "line": lineno, "reason": reason, "record": _shown(raw)})
        except CorruptInput as e:  # the lines before the cut were read; the rest of the file is lost
            quarantine({"file": e.path, "line": e.line, "reason": f"truncated or corrupt file: {e.why}", "record": ""})


def _shown(raw: bytes) -> str:
    """The start of a bad input line, always writable as UTF-8 (invalid bytes become U+FFFD)."""
    return raw[:200].decode("utf-8", "replace")


def _parse_record(raw: bytes, text_field: str, source_field: str) -> tuple[str | None, dict | None]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 ({e.reason} at byte {e.start})", None
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        return f"malformed JSON ({e.msg})", None
    if not isinstance(rec, dict):
        return "record is not a JSON object", None
    text = rec.get(text_field)
    if not isinstance(text, str):
        return f"field {text_field!r} missing or not a string", None
    if not text.strip():
        return f"field {text_field!r} is empty", None
    try:
        text.encode("utf-8")  # a "\\ud800" escape is valid JSON but no text: the encoder cannot take it
    except UnicodeEncodeError:
        return f"field {text_field!r} holds a lone surrogate escape", None
    src = rec.get(source_field)
    if src is not None and (not isinstance(src, str) or not src.strip()):
        return f"field {source_field!r} is not a non-empty string", None
    return None, rec


def _txt_documents(path: Path, source: str, quarantine: Callable[[dict], None]) -> Iterator[Doc]:
    block: list[bytes] = []
    start = 1
    for lineno, raw in iter_lines(path):
        raw = raw.removesuffix(b"\r")  # CRLF text reads as LF text
        if raw.decode("utf-8", "replace").strip():
            if not block:
                start = lineno
            block.append(raw)
        elif block:
            yield from _txt_doc(block, source, path, start, quarantine)
            block = []
    if block:
        yield from _txt_doc(block, source, path, start, quarantine)


def _txt_doc(block: list[bytes], source: str, path: Path, start: int, quarantine) -> Iterator[Doc]:
    data = b"\n".join(block)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:  # quarantined at the line of the first bad byte
        line = start + data.count(b"\n", 0, e.start)
        col = e.start - data.rfind(b"\n", 0, e.start) - 1
        reason = f"invalid UTF-8 ({e.reason} at byte {col} of the line)"
        quarantine({"file": str(path), "line": line, "reason": reason, "record": _shown(block[line - start])})
        return
    yield Doc(source, f"{source}\0{path.name}:{start}", text, str(path), start)


def split_of(key: str, seed: int, val_fraction: float) -> str:
    """'val' for a fixed, seed-dependent fraction of documents (by hash of their key), else 'train'."""
    if val_fraction <= 0:
        return "train"
    u = xxhash.xxh64_intdigest(key.encode("utf-8", "surrogatepass"), seed=seed & 0xFFFFFFFFFFFFFFFF) / 2**64
    return "val" if u < val_fraction else "train"


def source_dir_name(source: str) -> str:
    """A file-system-safe directory name for a source (the index maps it back to the real name)."""
    return _SAFE.sub("_", source).strip("._") or "source"
