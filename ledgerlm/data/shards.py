"""Token shards: read documents, encode them in parallel, write memory-mappable shards and an index.

Layout under a tokenize directory (all paths in index.json are relative to it):

    tokenizer.json
    index.json                               the commit point: written last, atomically
    shards/<source>/train-00000.bin          tokens, uint16 when the vocabulary fits, else uint32 (little endian)
    shards/<source>/train-00000.idx          int64 document offsets into the .bin (n_docs + 1 values, first is 0)
    shards/<source>/val-00000.bin / .idx     the validation split, held out by document
    quarantine.jsonl                         malformed input records: file, line, reason

Each document is its tokens followed by one end-of-text token; documents never straddle shards. Which split a document
goes to is a hash of (source, id) — or of its text when it has no id — so it does not depend on input order or on the
number of workers. Output bytes depend only on the inputs, the tokenizer and the seed.

API: `expand_inputs(paths)`, `iter_documents(files, ...)`, `split_of(key, seed, val_fraction)`,
`write_shards(docs, tok, out_dir, ...) -> dict` (the index), `TokenIndex(tokenize_dir)` (read side: `.table(source,
split) -> DocTable`), `DocTable` (documents of one source/split over memory-mapped shards).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xxhash
from tokenizers import Tokenizer

from ledgerlm.data.documents import source_dir_name
from ledgerlm.data.token_index import INDEX_FORMAT, token_dtype
from ledgerlm.io import _fsync_dir, atomic_write_json

# ----------------------------------------------------------------------------- writing shards


class ShardWriter:
    """Writes one (source, split) as a sequence of shards; each shard is renamed into place only once complete."""

    def __init__(self, out_dir: Path, rel_dir: str, source: str, split: str, dtype: np.dtype, shard_tokens: int):
        self.out_dir, self.rel_dir, self.source, self.split = out_dir, rel_dir, source, split
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.entries: list[dict] = []
        self.done_bytes = 0  # UTF-8 bytes of the documents in completed shards (for resuming the statistics)
        self._f = None

    def _open(self) -> None:
        n = len(self.entries)
        self._rel = f"{self.rel_dir}/{self.split}-{n:05d}"
        self._bin = self.out_dir / f"{self._rel}.bin"
        self._bin.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._bin.with_name(f".{self._bin.name}.tmp")
        self._f = open(self._tmp, "wb")
        self._sha = hashlib.sha256()
        self._offsets = [0]
        self._n = 0
        self._bytes = 0

    def append(self, tokens: np.ndarray, doc_lengths: np.ndarray, doc_bytes: list[int] | None = None) -> bool:
        """Append whole documents (`tokens` is their concatenation, each already ending with end-of-text); returns
        whether a shard was completed.

        A shard closes right after the document that brings it to shard_tokens, whatever the batching, so shard
        boundaries (and hashes) do not depend on batch size or worker count.
        """
        closed = False
        doc_bytes = list(doc_bytes) if doc_bytes is not None else [0] * doc_lengths.size
        while doc_lengths.size:
            if self._f is None:
                self._open()
            ends = self._n + np.cumsum(doc_lengths)
            k = int(np.searchsorted(ends, self.shard_tokens, side="left")) + 1  # docs that go into this shard
            k = min(k, doc_lengths.size)
            n = int(ends[k - 1] - self._n)
            data = tokens[:n].astype(self.dtype, copy=False).tobytes()
            try:
                self._f.write(data)
            except OSError as e:  # write() does not say which file (a full disk): name it
                e.filename = e.filename or str(self._bin)
                raise
            self._sha.update(data)
            self._offsets.extend(ends[:k].tolist())
            self._n += n
            self._bytes += sum(doc_bytes[:k])
            if self._n >= self.shard_tokens:
                self._close_shard()
                closed = True
            tokens, doc_lengths, doc_bytes = tokens[n:], doc_lengths[k:], doc_bytes[k:]
        return closed

    def _close_shard(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._f = None
        os.replace(self._tmp, self._bin)
        idx = np.asarray(self._offsets, dtype="<i8").tobytes()
        idx_path = self.out_dir / f"{self._rel}.idx"
        tmp = idx_path.with_name(f".{idx_path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(idx)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, idx_path)
        _fsync_dir(self._bin.parent)
        self.entries.append(
            {
                "path": f"{self._rel}.bin",
                "idx": f"{self._rel}.idx",
                "source": self.source,
                "split": self.split,
                "dtype": self.dtype.name,
                "n_tokens": self._n,
                "n_docs": len(self._offsets) - 1,
                "sha256": self._sha.hexdigest(),
                "idx_sha256": hashlib.sha256(idx).hexdigest(),
            }
        )
        self.done_bytes += self._bytes

    def close(self) -> list[dict]:
        if self._f is not None and self._n > 0:
            self._close_shard()
        return self.entries

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._tmp.unlink(missing_ok=True)
            self._f = None


def _encode(tok: Tokenizer, texts: list[str], eot: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch -> (concatenated tokens with end-of-text after each document, per-document lengths)."""
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)  # releases the GIL; parallel inside too
    ids = [e.ids for e in encs]
    lengths = np.fromiter((len(i) + 1 for i in ids), dtype=np.int64, count=len(ids))
    sep = [eot]
    # One pass through C iterators: faster than filling a preallocated array slice by slice.
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable((i, sep) for i in ids))
    return np.fromiter(flat, dtype=dtype, count=int(lengths.sum())), lengths


def split_pieces(text: str, size: int) -> Iterator[str]:
    """Cut a long document into pieces of at most `size` characters, each cut just before a single space between
    two non-space characters. A GPT-2-style pre-tokenizer (byte-level BPE, ours and SmolLM's) never joins across
    such a space, so encoding the pieces one by one gives exactly the tokens of the whole document, in bounded
    memory. A stretch of `size` characters with no such space is cut where it is (the tokens may then differ at
    that one cut)."""
    start, n = 0, len(text)
    while n - start > size:
        cut = start + size
        i = text.rfind(" ", start + size // 2, cut)
        while i > start + size // 2:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                cut = i
                break
            i = text.rfind(" ", start + size // 2, i)
        yield text[start:cut]
        start = cut
    yield text[start:]


def _encode_long(tok: Tokenizer, text: str, eot: int, dtype: np.dtype, piece_chars: int, batch_chars: int):
    """One long document, encoded piece by piece (a few pieces at a time): memory is bounded by `batch_chars`, not
    by the document, whose tokens are kept as one compact array."""
    parts, group, size = [], [], 0
    for piece in itertools.chain(split_pieces(text, piece_chars), [None]):
        if piece is not None:
            group.append(piece)
            size += len(piece)
        if group and (piece is None or size >= batch_chars):
            encs = tok.encode_batch_fast(group, add_special_tokens=False)
            parts += [np.asarray(e.ids, dtype=dtype) for e in encs]
            group, size = [], 0
    parts.append(np.asarray([eot], dtype=dtype))
    tokens = np.concatenate(parts)
    return tokens, np.asarray([tokens.size], dtype=np.int64)


def _batches(
    docs: Iterable[tuple[str, str, str]], batch_bytes: int, long_chars: int
) -> Iterator[tuple[list[tuple[str, str, str]], bool]]:
    """(batch, long): batches of about batch_bytes of text; a document over long_chars is a batch of its own."""
    batch, size = [], 0
    for d in docs:
        if len(d[2]) > long_chars:
            if batch:
                yield batch, False
                batch, size = [], 0
            yield [d], True
            continue
        batch.append(d)
        size += len(d[2])
        if size >= batch_bytes:
            yield batch, False
            batch, size = [], 0
    if batch:
        yield batch, False


def encode_stream(
    tok: Tokenizer,
    docs: Iterable[tuple[str, str, str]],
    eot: int,
    dtype: np.dtype,
    workers: int = 0,
    batch_bytes: int = 1 << 20,
    long_chars: int = 4 << 20,
) -> Iterator[tuple[list[tuple[str, str, str]], np.ndarray, np.ndarray]]:
    """Encode (source, split, text) items in batches on `workers` threads; yields batches in input order.

    Reading and JSON parsing of the next batches overlap with encoding (tokenizers releases the GIL). At most
    `workers` + 1 batches are in flight, and a document longer than `long_chars` characters is encoded in pieces
    (see split_pieces), so memory does not grow with the corpus or with the longest document.
    """
    workers = workers or os.cpu_count() or 1
    # A private copy: literal special-token strings in documents are encoded as plain text, not as separators,
    # and flipping that flag must not race with anyone else using `tok`.
    tok = Tokenizer.from_str(tok.to_str())
    tok.encode_special_tokens = True
    piece = max(1, min(long_chars, batch_bytes // 16))
    # Parallelism is our `workers` threads, each encoding its batch on its own core: tokenizers' own thread pool
    # (rayon, one thread per core whatever `workers` says) is switched off meanwhile, so `workers` means what it
    # says and the threads do not oversubscribe the cores (spinning pool threads cost CPU time on a busy machine).
    was = os.environ.get(_PARALLEL)
    os.environ[_PARALLEL] = "false"
    try:
        with ThreadPoolExecutor(workers) as ex:
            pending: deque = deque()
            for batch, long in _batches(docs, batch_bytes, long_chars):
                if long:
                    fut = ex.submit(_encode_long, tok, batch[0][2], eot, dtype, piece, batch_bytes)
                else:
                    fut = ex.submit(_encode, tok, [d[2] for d in batch], eot, dtype)
                pending.append((batch, fut))
                while len(pending) > workers:
                    b, fut = pending.popleft()
                    yield (b, *fut.result())
            while pending:
                b, fut = pending.popleft()
                yield (b, *fut.result())
    finally:
        if was is None:
            os.environ.pop(_PARALLEL, None)
        else:
            os.environ[_PARALLEL] = was


_PARALLEL = "TOKENIZERS_PARALLELISM"


def write_shards(
    docs: Iterable[tuple[str, str, str]],
    tok: Tokenizer,
    out_dir: str | os.PathLike,
    eot: int,
    shard_tokens: int = 100_000_000,
    workers: int = 0,
    batch_bytes: int = 1 << 20,
    progress: Callable | None = None,
    long_chars: int = 4 << 20,
    state_path: str | os.PathLike | None = None,
) -> dict:
    """Tokenize (source, split, text) items into shards under out_dir/shards; return the index (not yet written).

    The returned dict has 'shards' (per-shard entries) and 'sources' (per source and split: n_docs, n_tokens,
    n_bytes = UTF-8 bytes of the text). Writing index.json is the caller's commit step.

    With `state_path`, every completed shard is recorded there (atomically, after the shard is renamed into place);
    if the file exists when this starts, the shards it lists are kept and their documents skipped before encoding,
    so a killed run resumes from its last completed shard and writes byte-identical shards. Skipping is by
    position within each (source, split), which is exactly what a completed shard holds: documents never straddle
    shards and a shard closes right after the document that fills it.
    """
    out_dir = Path(out_dir)
    dtype = token_dtype(tok.get_vocab_size())
    state_path = Path(state_path) if state_path else None
    saved = _read_state(state_path)
    writers, dirs, stats, skip = _resumed_writers(saved, out_dir, dtype, shard_tokens)
    try:
        stream = encode_stream(
            tok, _unskipped(docs, skip), eot, dtype, workers=workers, batch_bytes=batch_bytes, long_chars=long_chars
        )
        for batch, tokens, lengths in progress(stream) if progress else stream:
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for i, j in _runs(batch):  # route runs of consecutive documents with the same (source, split)
                source, split = batch[i][0], batch[i][1]
                w = writers.get((source, split))
                if w is None:
                    w = writers[(source, split)] = ShardWriter(
                        out_dir, f"shards/{_dir_of(source, dirs)}", source, split, dtype, shard_tokens
                    )
                n_bytes = [len(batch[k][2].encode("utf-8", "surrogatepass")) for k in range(i, j)]
                if w.append(tokens[offsets[i] : offsets[j]], lengths[i:j], n_bytes) and state_path is not None:
                    _save_state(state_path, writers, dirs, saved.get("progress", {}))
                s = stats.setdefault(source, {}).setdefault(split, _empty())
                s["n_docs"] += j - i
                s["n_tokens"] += int(offsets[j] - offsets[i])
                s["n_bytes"] += sum(n_bytes)
        shards = []
        for key in sorted(writers):
            shards += writers[key].close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    sources = {
        name: {"dir": f"shards/{dirs[name]}", **{sp: stats[name].get(sp, _empty()) for sp in ("train", "val")}}
        for name in sorted(stats)
    }
    return {
        "format": INDEX_FORMAT,
        "vocab_size": tok.get_vocab_size(),
        "dtype": dtype.name,
        "eot_id": eot,
        "shards": shards,
        "sources": sources,
    }


def _resumed_writers(saved: dict, out_dir: Path, dtype: np.dtype, shard_tokens: int):
    """The writers of a killed run's progress record (`saved`, {} for a fresh start), holding its completed shards
    -> (writers by (source, split), shard directory by source, statistics so far, documents to skip per writer)."""
    writers: dict[tuple[str, str], ShardWriter] = {}
    dirs: dict[str, str] = {}
    stats: dict[str, dict[str, dict[str, int]]] = {}
    skip: dict[tuple[str, str], int] = {}
    if saved:
        dirs.update(saved["dirs"])
        for w in saved["writers"]:
            key = (w["source"], w["split"])
            writers[key] = ShardWriter(out_dir, f"shards/{dirs[w['source']]}", *key, dtype, shard_tokens)
            writers[key].entries = w["entries"]
            writers[key].done_bytes = w["n_bytes"]
            skip[key] = sum(e["n_docs"] for e in w["entries"])
            stats.setdefault(key[0], {})[key[1]] = {
                "n_docs": skip[key],
                "n_tokens": sum(e["n_tokens"] for e in w["entries"]),
                "n_bytes": w["n_bytes"],
            }
    return writers, dirs, stats, skip


def _save_state(state_path: Path, writers: dict, dirs: dict, progress: dict) -> None:
    """Record every completed shard (and the caller's `progress`) so that a killed run can resume after them."""
    rows = [
        {"source": k[0], "split": k[1], "entries": w.entries, "n_bytes": w.done_bytes}
        for k, w in sorted(writers.items())
        if w.entries
    ]
    atomic_write_json(state_path, {"dirs": dirs, "writers": rows, "progress": progress})


def _unskipped(items: Iterable[tuple[str, str, str]], skip: dict) -> Iterator[tuple[str, str, str]]:
    """The items after the first skip[(source, split)] of each (source, split): those already in completed shards."""
    left = dict(skip)
    for item in items:
        k = (item[0], item[1])
        if left.get(k):
            left[k] -= 1
            continue
        yield item


def _runs(batch: list[tuple[str, str, str]]) -> Iterator[tuple[int, int]]:
    """(i, j) of each run batch[i:j] of consecutive items with the same (source, split)."""
    i = 0
    while i < len(batch):
        source, split = batch[i][0], batch[i][1]
        j = i + 1
        while j < len(batch) and batch[j][0] == source and batch[j][1] == split:
            j += 1
        yield i, j
        i = j


def _dir_of(source: str, dirs: dict[str, str]) -> str:
    """The source's shard directory name, chosen the first time it is seen (a hash suffix when two names clash)."""
    if source not in dirs:
        d = source_dir_name(source)
        if d in dirs.values():
            d = f"{d}-{xxhash.xxh32_hexdigest(source)}"
        dirs[source] = d
    return dirs[source]


def _read_state(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text())


def _empty() -> dict:
    return {"n_docs": 0, "n_tokens": 0, "n_bytes": 0}


def write_index(out_dir: str | os.PathLike, index: dict) -> Path:
    path = Path(out_dir) / "index.json"
    atomic_write_json(path, index)
    return path
