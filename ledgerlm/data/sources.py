"""Document sources: JSONL (plain/.gz/.zst), Parquet, plain text, and Hugging Face datasets (streaming).

`iter_records(spec, rank, world)` yields one `Record` per input record — a good one with text, or a bad one with a
`reason` (malformed:json, malformed:utf8, malformed:missing_field, malformed:type, malformed:empty) and its file and
line — so the caller can quarantine it; nothing is skipped silently. Records are split between tasks by their
position in the source (position % world == rank), and every document's id is a hash of (source, text), so no
decision depends on file order, sharding or the number of tasks.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.zst", ".md")
PARQUET_SUFFIXES = (".parquet",)


@dataclass
class SourceSpec:
    """One named input of a curation run."""

    name: str = "default"
    path: str | None = None  # file or directory (directories are read recursively, files in sorted order)
    format: str = "auto"  # auto | jsonl | parquet | text | hf | demo (the built-in generated corpus)
    text_field: str = "text"  # "*" = every string value of the record joined by newlines (chat, DPO pairs)
    id_field: str | None = None  # kept as orig_id; the document id is always content-derived
    hf_name: str | None = None  # Hugging Face dataset name (format hf), streamed
    hf_config: str | None = None
    hf_split: str = "train"
    hf_data_files: str | None = None  # for builder datasets such as hf_name "json"/"parquet" over local or remote files
    text_split: str = "file"  # plain text: one document per file, or per blank-line-separated block ("blank_line")
    limit: int | None = None  # first N records of this source only
    priority: int = 0  # near-dup clusters keep the copy from the highest-priority source
    seed: int = 0  # format demo: the generator's seed (limit = number of documents, default 6000)
    # quality gates for this source only: a partial mapping of curate.quality fields laid over it field by field
    # (e.g. {min_stop_words: null, c4_curly_bracket: false} for code); None = the stage-wide gates
    quality: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.format not in ("auto", "jsonl", "parquet", "text", "hf", "demo"):
            raise ValueError(
                f"source {self.name!r}: format must be auto|jsonl|parquet|text|hf|demo, got {self.format!r}"
            )
        if self.format == "hf" and not self.hf_name:
            raise ValueError(f"source {self.name!r}: format hf needs hf_name")
        if self.format not in ("hf", "demo") and not self.path and not self.hf_name:
            raise ValueError(f"source {self.name!r}: needs a path (or hf_name)")
        if self.text_split not in ("file", "blank_line"):
            raise ValueError(f"source {self.name!r}: text_split must be file|blank_line")
        if self.quality:
            from ledgerlm.config import from_dict
            from ledgerlm.data.quality import QualityConfig

            # the stage-wide section's own check: a bad gate name or type is a ConfigError naming
            # `<this source>.quality.<field>`; keep the coerced values (YAML strings -> numbers, n-gram keys -> int)
            part = from_dict(QualityConfig, self.quality, prefix="quality")
            self.quality = {k: getattr(part, k) for k in self.quality}


@dataclass
class Record:
    source: str
    file: str
    line: int  # 1-based line (JSONL), row (Parquet), block (text), or item index (hf)
    text: str | None = None
    orig_id: str | None = None
    reason: str | None = None  # set for malformed input
    detail: str = ""
    raw: str = ""  # a prefix of the offending input, for the quarantine file

    _id: str | None = None

    @property
    def id(self) -> str:
        if self._id is None:  # computed once: hashing the text is not free
            if self.reason is None:
                self._id = doc_id(self.source, self.text)
            else:
                self._id = "bad-" + xxhash.xxh3_64_hexdigest(f"{self.source}\0{self.file}\0{self.line}".encode())
        return self._id


def doc_id(source: str, text: str) -> str:
    """Stable content id: 128-bit xxh3 of source and text."""
    return xxhash.xxh3_128_hexdigest(source.encode("utf-8") + b"\0" + text.encode("utf-8", "surrogatepass"))


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    raise ValueError(f"{path}: cannot tell the format from the name (use format: jsonl|parquet|text)")


def source_files(spec: SourceSpec) -> list[Path]:
    p = Path(spec.path)
    if not p.exists():
        raise FileNotFoundError(f"source {spec.name!r}: path does not exist: {p}")
    if p.is_file():
        return [p]
    # in a directory, plain .json files are metadata (manifests, configs), not data: only JSONL-named files are read
    suffixes = tuple(x for x in JSONL_SUFFIXES if ".jsonl" in x or x == ".ndjson") + TEXT_SUFFIXES + PARQUET_SUFFIXES
    files = sorted(
        f
        for f in p.rglob("*")
        if f.is_file()
        and f.name.lower().endswith(suffixes)
        and not any(part.startswith(".") for part in f.relative_to(p).parts)  # hidden/temporary files
    )
    if not files:
        raise FileNotFoundError(f"source {spec.name!r}: no .jsonl/.parquet/.txt files under {p}")
    return files


def _open_bytes(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _from_obj(spec: SourceSpec, file: str, line: int, obj, raw: str = "") -> Record:
    if not isinstance(obj, dict):
        return Record(spec.name, file, line, reason="malformed:json", detail="not a JSON object", raw=raw[:200])
    if spec.text_field == "*":
        text = all_string_values(obj)
    elif spec.text_field not in obj:
        return Record(
            spec.name,
            file,
            line,
            reason="malformed:missing_field",
            detail=f"no field {spec.text_field!r} (has {sorted(obj)[:8]})",
            raw=raw[:200],
        )
    else:
        text = obj[spec.text_field]
    if not isinstance(text, str):
        return Record(
            spec.name,
            file,
            line,
            reason="malformed:type",
            detail=f"field {spec.text_field!r} is {type(text).__name__}, not a string",
            raw=raw[:200],
        )
    if not text.strip():
        return Record(spec.name, file, line, reason="malformed:empty", detail="empty text", raw=raw[:200])
    oid = obj.get(spec.id_field) if spec.id_field else None
    return Record(spec.name, file, line, text=text, orig_id=None if oid is None else str(oid))


def _jsonl(spec: SourceSpec, path: Path, counter: list[int], rank: int, world: int) -> Iterator[Record]:
    with _open_bytes(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines are layout, not records
            i = counter[0]
            counter[0] += 1
            if spec.limit is not None and i >= spec.limit:
                return
            if i % world != rank:
                continue
            try:
                s = line.decode("utf-8-sig" if lineno == 1 else "utf-8")  # tolerate a byte-order mark
            except UnicodeDecodeError as e:
                yield Record(
                    spec.name,
                    str(path),
                    lineno,
                    reason="malformed:utf8",
                    detail=str(e),
                    raw=line[:200].decode("utf-8", "replace"),
                )
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                yield Record(spec.name, str(path), lineno, reason="malformed:json", detail=e.msg, raw=s[:200])
                continue
            yield _from_obj(spec, str(path), lineno, obj, s)


def _text(spec: SourceSpec, path: Path, counter: list[int], rank: int, world: int) -> Iterator[Record]:
    with _open_bytes(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        blocks = [(1, None, str(e))]
    else:
        if spec.text_split == "file":
            blocks = [(1, text, "")]
        else:  # blank-line separated blocks, numbered by their first line
            blocks, line, cur, start = [], 1, [], 1
            for ln in text.split("\n"):
                if ln.strip():
                    if not cur:
                        start = line
                    cur.append(ln)
                elif cur:
                    blocks.append((start, "\n".join(cur), ""))
                    cur = []
                line += 1
            if cur:
                blocks.append((start, "\n".join(cur), ""))
    for lineno, block, err in blocks:
        i = counter[0]
        counter[0] += 1
        if spec.limit is not None and i >= spec.limit:
            return
        if i % world != rank:
            continue
        if block is None:
            yield Record(spec.name, str(path), lineno, reason="malformed:utf8", detail=err)
        elif not block.strip():
            yield Record(spec.name, str(path), lineno, reason="malformed:empty", detail="empty text")
        else:
            yield Record(spec.name, str(path), lineno, text=block)


def _parquet(spec: SourceSpec, path: Path, counter: list[int], rank: int, world: int) -> Iterator[Record]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if spec.text_field != "*" and spec.text_field not in names:
        raise ValueError(f"{path}: no column {spec.text_field!r} (columns: {names})")
    cols = None if spec.text_field == "*" else [spec.text_field]
    if cols and spec.id_field and spec.id_field in names:
        cols.append(spec.id_field)
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            i = counter[0]
            counter[0] += 1
            if spec.limit is not None and i >= spec.limit:
                return
            if i % world != rank:
                continue
            if spec.text_field != "*" and obj.get(spec.text_field) is None:
                yield Record(spec.name, str(path), row, reason="malformed:missing_field", detail="null text")
                continue
            yield _from_obj(spec, str(path), row, obj)


def _hf(spec: SourceSpec, rank: int, world: int) -> Iterator[Record]:
    from datasets import load_dataset  # optional dependency, only for Hub sources

    kw = {"data_files": spec.hf_data_files} if spec.hf_data_files else {}
    ds = load_dataset(spec.hf_name, spec.hf_config, split=spec.hf_split, streaming=True, **kw)
    where = f"hf:{spec.hf_name}" + (f"/{spec.hf_config}" if spec.hf_config else "") + f":{spec.hf_split}"
    for i, obj in enumerate(ds):
        if spec.limit is not None and i >= spec.limit:
            return
        if i % world != rank:
            continue
        yield _from_obj(spec, where, i + 1, obj)


def _demo(spec: SourceSpec, rank: int, world: int) -> Iterator[Record]:
    """The built-in corpus, generated in memory (deterministic for a seed); its `planted` labels are not read."""
    from ledgerlm.data.demo_corpus import generate_demo_corpus

    records, _ = generate_demo_corpus(spec.seed, spec.limit or 6000)
    for i, rec in enumerate(records):
        if i % world == rank:
            yield Record(spec.name, f"builtin:demo?seed={spec.seed}", i + 1, text=rec["text"], orig_id=rec["id"])


def iter_records(spec: SourceSpec, rank: int = 0, world: int = 1) -> Iterator[Record]:
    """This task's share of the source's records, in file order."""
    fmt = spec.format
    if fmt == "demo":
        yield from _demo(spec, rank, world)
        return
    if fmt == "hf" or (fmt == "auto" and spec.hf_name and not spec.path):
        yield from _hf(spec, rank, world)
        return
    counter = [0]  # record position across all files of the source
    for path in source_files(spec):
        f = detect_format(path) if fmt == "auto" else fmt
        reader = {"jsonl": _jsonl, "text": _text, "parquet": _parquet}[f]
        yield from reader(spec, path, counter, rank, world)
        if spec.limit is not None and counter[0] >= spec.limit:
            return


def all_string_values(obj) -> str:
    """Every string inside a JSON value, joined by newlines (for datasets whose text is spread over fields)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\n".join(s for v in obj.values() if (s := all_string_values(v)))
    if isinstance(obj, list):
        return "\n".join(s for v in obj if (s := all_string_values(v)))
    return ""
