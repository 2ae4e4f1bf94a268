"""Document sources: JSONL (plain/.gz/.zst), Parquet, plain text, and Hugging Face datasets (streaming).

`iter_records(spec, rank, world)` yields one `Record` per input record — a good one with text, or a bad one with a
`reason` (malformed:json, malformed:utf8, malformed:missing_field, malformed:type, malformed:empty,
malformed:truncated for a file cut short or not of its suffix's format, malformed:corrupt for an unreadable Parquet
page) and its file and line — so the caller can quarantine it; nothing is skipped silently. Every record goes to
exactly one of the `world` tasks: JSONL and text records by their position in the source (position % world == rank;
every task reads the lines, which is cheap), Parquet by whole row groups and Hugging Face streams by whole shards
(see `_share`), so a task decodes only its own part. `limit` is always the first N records of the source in file order, and every
document's id is a hash of (source, text), so no decision depends on file order, sharding or the number of tasks.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
import zstandard

from ledgerlm import hub
from ledgerlm.config import ConfigError, from_dict
from ledgerlm.data.filters import QualityConfig
from ledgerlm.demo.corpus import generate_demo_corpus
from ledgerlm.io import CorruptInput, has_content, iter_chunks, iter_lines

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".ndjson")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.zst", ".md")
PARQUET_SUFFIXES = (".parquet",)


@dataclass
class SourceSpec:
    """One named input of a curation run."""

    name: str = "default"
    path: str | None = None  # file or directory (directories are read recursively, files in sorted order)
    format: str = "auto"  # auto | jsonl | parquet | text | hf | demo (the built-in generated corpus)
    text_field: str = "text"  # "*" = every string value of the record joined by newlines (chat, DPO pairs);
    # "a,b,c" = the strings of these fields (and of the lists/structs in them), in this order, joined by newlines
    id_field: str | None = "id"  # kept as orig_id when the record has it; the document id is always content-derived
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

    def fields(self) -> list[str] | None:
        """The fields whose strings make a document's text; None = all of them ("*")."""
        return None if self.text_field == "*" else [f.strip() for f in self.text_field.split(",")]

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
            # the stage-wide section's own check: a bad gate name or type is a ConfigError naming
            # `<this source>.quality.<field>`; keep the coerced values (YAML strings -> numbers, n-gram keys -> int)
            part = from_dict(QualityConfig, self.quality, prefix="quality")
            self.quality = {k: getattr(part, k) for k in self.quality}


@dataclass
class Record:
    source: str
    file: str
    line: int  # 1-based line (JSONL), row in the file (Parquet), block (text), or item (hf: in the shard named
    # by `file` when the stream is read by shards, else in the whole stream)
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


def _has_content(path: Path, fmt: str) -> bool:
    """Whether a file holds anything but whitespace (Parquet: any row); reads only up to the first such byte. A file
    that cannot be read is 'not empty' here: its reader quarantines it with the line where it broke."""
    if fmt == "parquet":
        try:
            return pq.read_metadata(path).num_rows > 0
        except Exception:  # noqa: BLE001 - a corrupt footer is the reader's error to report
            return True
    return has_content(path)


def check_sources(specs: list[SourceSpec], key: str = "curate.sources") -> None:
    """Before any compute: every file source exists, has a known format and holds something. Raises ConfigError
    (one line, exit 2) naming the source and the file."""
    for i, spec in enumerate(specs):
        if spec.format in ("hf", "demo") or (spec.format == "auto" and spec.hf_name and not spec.path):
            continue
        where = f"{key}[{i}].path"
        try:
            files = [(f, detect_format(f) if spec.format == "auto" else spec.format) for f in source_files(spec)]
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(where, str(e)) from None
        if not any(_has_content(f, fmt) for f, fmt in files):
            what = files[0][0] if len(files) == 1 else f"{spec.path} ({len(files)} files)"
            raise ConfigError(where, f"source {spec.name!r}: input is empty: {what}")


def _open_bytes(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _from_obj(spec: SourceSpec, file: str, line: int, obj, raw: str = "") -> Record:
    if not isinstance(obj, dict):
        return Record(spec.name, file, line, reason="malformed:json", detail="not a JSON object", raw=raw[:200])
    fields = spec.fields()
    missing = [f for f in fields or () if f not in obj]
    if fields is None:
        text = all_string_values(obj)
    elif missing:
        return Record(
            spec.name,
            file,
            line,
            reason="malformed:missing_field",
            detail=f"no field {missing[0]!r} (has {sorted(obj)[:8]})",
            raw=raw[:200],
        )
    elif len(fields) > 1:
        text = "\n".join(s for f in fields if (s := all_string_values(obj[f])))
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
    try:
        text.encode("utf-8")  # a "\\ud800" escape is valid JSON but not text: no UTF-8 output could hold it
    except UnicodeEncodeError as e:
        return Record(
            spec.name, file, line, reason="malformed:utf8", detail=f"lone surrogate ({e.reason})", raw=raw[:200]
        )
    oid = obj.get(spec.id_field) if spec.id_field else None
    return Record(spec.name, file, line, text=text, orig_id=None if oid is None else str(oid))


def _truncated(spec: SourceSpec, e: CorruptInput, counter: list[int], rank: int, world: int) -> Iterator[Record]:
    """A compressed file that ends early: one quarantined record where it broke (the lines before it are kept)."""
    i = counter[0]
    counter[0] += 1
    if (spec.limit is None or i < spec.limit) and i % world == rank:
        yield Record(spec.name, e.path, e.line, reason="malformed:truncated", detail=e.why)


def _my_share(spec: SourceSpec, items: Iterator, counter: list[int], rank: int, world: int) -> Iterator:
    """This task's items of one file: every item takes the next source-wide position (which `limit` cuts and whose
    remainder mod `world` picks the task). A file that breaks (CorruptInput) ends with one quarantined Record."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except CorruptInput as e:
            yield from _truncated(spec, e, counter, rank, world)
            return
        i = counter[0]
        counter[0] += 1
        if spec.limit is not None and i >= spec.limit:
            return
        if i % world == rank:
            yield item


def _jsonl(spec: SourceSpec, path: Path, counter: list[int], rank: int, world: int) -> Iterator[Record]:
    # split on b"\n" only: U+2028/U+2029/U+0085 are legal inside JSON strings; blank lines are layout, not records
    lines = ((lineno, line) for lineno, line in iter_lines(path) if line.strip())
    for item in _my_share(spec, lines, counter, rank, world):
        if isinstance(item, Record):
            yield item
            continue
        lineno, line = item
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


def _text_blocks(spec: SourceSpec, path: Path) -> Iterator[tuple[int, bytes]]:
    """(first line, bytes) of each document of a text file: the whole file, or each blank-line-separated block."""
    if spec.text_split == "file":
        yield 1, b"".join(iter_chunks(path))
        return
    cur, start = [], 1
    for lineno, ln in iter_lines(path):
        if ln.decode("utf-8", "replace").strip():
            if not cur:
                start = lineno
            cur.append(ln)
        elif cur:
            yield start, b"\n".join(cur)
            cur = []
    if cur:
        yield start, b"\n".join(cur)


def _text(spec: SourceSpec, path: Path, counter: list[int], rank: int, world: int) -> Iterator[Record]:
    for item in _my_share(spec, _text_blocks(spec, path), counter, rank, world):
        if isinstance(item, Record):
            yield item
            continue
        lineno, data = item
        try:
            block = data.decode("utf-8")
        except UnicodeDecodeError as e:  # quarantined at the line of the first bad byte
            line = lineno + data.count(b"\n", 0, e.start)
            raw = data[max(0, e.start - 100) : e.start + 100].decode("utf-8", "replace")
            yield Record(spec.name, str(path), line, reason="malformed:utf8", detail=str(e), raw=raw)
            continue
        if not block.strip():
            yield Record(spec.name, str(path), lineno, reason="malformed:empty", detail="empty text")
        else:
            yield Record(spec.name, str(path), lineno, text=block)


def _share(unit: int, units: int, rank: int, world: int) -> tuple[int, int] | None:
    """Task `rank`'s part of work unit `unit` of `units` (a Parquet row group, a Hugging Face shard): (k, j) = the
    unit's items whose index in it is j mod k; None = nothing.

    With at least as many units as tasks, unit u goes whole to task u % world: a task reads only its own units.
    The balance is by units, so a task may get one unit more than another (or nothing, see below). With fewer units
    than tasks (a few big files written with one row group each, a dataset of 4 shards over 256 tasks), unit u is
    shared by the tasks t with t % units == u, which split its items by index: each task decodes one unit (not the
    whole source, as a split by position would) and keeps its share, so no task idles while others decode. Writing
    files with smaller row groups balances better.
    """
    if units >= world:
        return (1, 0) if unit % world == rank else None
    if rank % units != unit % units:
        return None
    return len(range(unit % units, world, units)), rank // units


@dataclass
class _RowGroups:
    """The Parquet row groups of one source: each file's footer and the source-wide index of its first row group."""

    files: dict[Path, tuple[Any, int]]
    units: int  # row groups that start within the limit (counting Parquet rows only; an upper bound when mixed)
    broken: dict[Path, str]  # files whose footer cannot be read (cut short, not Parquet): why


def _row_groups(spec: SourceSpec, paths: list[Path]) -> _RowGroups:
    """Read the footers (no data) of the source's Parquet files, in file order, up to the limit.

    Every task computes the same layout, so the row-group -> task assignment agrees between tasks. In a directory
    that mixes formats, other files' records also count towards the limit: counting Parquet rows only here can
    only include more row groups (a balance question, never a correctness one), and every file a task reaches
    before the limit is in the layout.
    """
    files, units, rows, broken = {}, 0, 0, {}
    for path in paths:
        if spec.limit is not None and rows >= spec.limit:
            break
        try:
            md = pq.read_metadata(path)
        except (pa.ArrowException, OSError) as e:  # every task sees the same footers: the layout still agrees
            broken[path] = f"unreadable Parquet footer (cut short or not Parquet): {e}"
            continue
        files[path] = (md, units)
        for i in range(md.num_row_groups):
            if spec.limit is None or rows < spec.limit:
                units += 1
            rows += md.row_group(i).num_rows
    return _RowGroups(files, units, broken)


def _parquet(
    spec: SourceSpec, path: Path, counter: list[int], rank: int, world: int, layout: _RowGroups
) -> Iterator[Record]:
    """This task's rows of one Parquet file: only its row groups (see `_share`) are read; the others are counted
    from the footer. Rows are numbered in the file (1-based) and `limit` cuts at the source-wide position."""

    if path in layout.broken:  # one quarantined record for the file, at one source-wide position
        yield from _truncated(spec, CorruptInput(path, 0, layout.broken[path]), counter, rank, world)
        return
    md, first = layout.files[path]
    pf = pq.ParquetFile(path, metadata=md)
    names = pf.schema_arrow.names
    fields = spec.fields()
    for f in fields or ():
        if f not in names:
            raise ValueError(f"{path}: no column {f!r} (columns: {names})")
    cols = None if fields is None else list(fields)
    if cols and spec.id_field and spec.id_field in names:
        cols.append(spec.id_field)
    start = counter[0]  # source-wide position of the file's first row
    counter[0] += md.num_rows
    row0 = 0  # rows of this file before row group i
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        pos, base = start + row0, row0
        row0 += n
        if spec.limit is not None:
            if pos >= spec.limit:
                return
            n = min(n, spec.limit - pos)
        share = _share(first + i, layout.units, rank, world)
        if share is None or n <= 0:
            continue
        k, j = share
        done = 0  # rows of this row group already seen
        batches = pf.iter_batches(batch_size=4096, row_groups=[i], columns=cols)
        while done < n:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:  # a corrupt page: the rest of the row group is lost
                if j == 0:  # every task sharing the row group hits it: the first one reports it
                    detail = f"row group {i}, rows {base + done + 1}-{base + n} unreadable: {e}"
                    yield Record(spec.name, str(path), base + done + 1, reason="malformed:corrupt", detail=detail)
                break
            if done + batch.num_rows > n:
                batch = batch.slice(0, n - done)
            if k == 1:
                idx = range(batch.num_rows)
                objs = batch.to_pylist()
            else:  # a shared row group: this task's rows only are converted
                idx = range((j - done) % k, batch.num_rows, k)
                objs = batch.take(pa.array(idx, type=pa.int64())).to_pylist() if len(idx) else []
            for x, obj in zip(idx, objs, strict=True):
                row = base + done + x + 1
                if fields is not None and len(fields) == 1 and obj.get(spec.text_field) is None:
                    yield Record(spec.name, str(path), row, reason="malformed:missing_field", detail="null text")
                    continue
                yield _from_obj(spec, str(path), row, obj)
            done += batch.num_rows


def _hf(spec: SourceSpec, rank: int, world: int) -> Iterator[Record]:
    """A streamed Hugging Face dataset.

    Without a limit, the stream is read by shards (usually its data files): shard s alone is
    `split_dataset_by_node(ds, rank=s, world_size=n_shards)` (n_shards % n_shards == 0, so datasets splits by
    shards, not by skipping examples), and a task reads only its shards (see `_share`). Records are then located
    as `file` = "hf:name[/config]:split#shard=s/n" with `line` = the item's 1-based index in that shard (a dataset
    of one shard keeps the plain "hf:name:split" name: its shard is the stream). With a limit, the first N records
    need the whole stream's order, so every task streams up to the limit and keeps position % world == rank, and
    `line` is the index in the stream.
    """
    from datasets import load_dataset  # optional dependency, only for Hub sources

    kw = {"data_files": spec.hf_data_files} if spec.hf_data_files else {}
    ds = load_dataset(hub.dataset(spec.hf_name), spec.hf_config, split=spec.hf_split, streaming=True, **kw)
    where = f"hf:{spec.hf_name}" + (f"/{spec.hf_config}" if spec.hf_config else "") + f":{spec.hf_split}"
    n = getattr(ds, "num_shards", None) or getattr(ds, "n_shards", None) or 1  # n_shards: datasets < 3
    if spec.limit is None:
        from datasets.distributed import split_dataset_by_node

        for s in range(n):
            share = _share(s, n, rank, world)
            if share is None:
                continue
            k, j = share
            shard = ds if n == 1 else split_dataset_by_node(ds, rank=s, world_size=n)
            file = where if n == 1 else f"{where}#shard={s}/{n}"
            for i, obj in enumerate(shard):
                if i % k == j:
                    yield _from_obj(spec, file, i + 1, obj)
        return
    for i, obj in enumerate(ds):
        if i >= spec.limit:
            return
        if i % world != rank:
            continue
        yield _from_obj(spec, where, i + 1, obj)


def _demo(spec: SourceSpec, rank: int, world: int) -> Iterator[Record]:
    """The built-in corpus, generated in memory (deterministic for a seed); its `planted` labels are not read."""

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
    files = [(path, detect_format(path) if fmt == "auto" else fmt) for path in source_files(spec)]
    parquet = [path for path, f in files if f == "parquet"]
    layout = _row_groups(spec, parquet) if parquet else None
    counter = [0]  # record position across all files of the source
    for path, f in files:
        if spec.limit is not None and counter[0] >= spec.limit:
            return  # files past the limit are not opened (nor in the Parquet layout)
        if f == "parquet":
            yield from _parquet(spec, path, counter, rank, world, layout)
        else:
            yield from {"jsonl": _jsonl, "text": _text}[f](spec, path, counter, rank, world)


def all_string_values(obj) -> str:
    """Every string inside a JSON value, joined by newlines (for datasets whose text is spread over fields)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\n".join(s for v in obj.values() if (s := all_string_values(v)))
    if isinstance(obj, list):
        return "\n".join(s for v in obj if (s := all_string_values(v)))
    return ""
