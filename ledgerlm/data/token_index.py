"""Reading tokenized shards: the index (`TokenIndex`: shards per source and split, documents per shard
(`DocTable`)), the token dtype of a vocabulary, and `verify_shards` (every shard's hash against its index)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

INDEX_FORMAT = 1

def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)

# ----------------------------------------------------------------------------- reading shards


class DocTable:
    """The documents of one (source, split): per document its shard, start offset and length (incl. end-of-text)."""

    def __init__(self, arrays: list[np.ndarray], doc_shard: np.ndarray, doc_start: np.ndarray, doc_len: np.ndarray):
        self.arrays, self.doc_shard, self.doc_start, self.doc_len = arrays, doc_shard, doc_start, doc_len
        self.n_docs = int(doc_len.size)
        self.n_tokens = int(doc_len.sum())

    @classmethod
    def concat(cls, tables: list[DocTable]) -> DocTable:
        arrays, shard, start, length = [], [], [], []
        for t in tables:
            shard.append(t.doc_shard + len(arrays))
            arrays += t.arrays
            start.append(t.doc_start)
            length.append(t.doc_len)
        return cls(arrays, _cat(shard, np.int32), _cat(start, np.int64), _cat(length, np.int64))

    def doc(self, d: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Tokens [lo, hi) of document d (a view into the memory map)."""
        s = int(self.doc_start[d])
        hi = int(self.doc_len[d]) if hi is None else hi
        return self.arrays[int(self.doc_shard[d])][s + lo : s + hi]


def _cat(xs: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(xs).astype(dtype, copy=False) if xs else np.zeros(0, dtype)


class TokenIndex:
    """Read side of a tokenize directory: index.json plus memory-mapped shards, checked against the index."""

    def __init__(self, tokenize_dir: str | os.PathLike):
        self.dir = Path(tokenize_dir)
        path = self.dir / "index.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no token index (run `ledgerlm tokenize` first)")
        self.index = json.loads(path.read_text())
        if self.index.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: unsupported index format {self.index.get('format')!r}")
        self.vocab_size = int(self.index["vocab_size"])
        self.eot_id = int(self.index["eot_id"])
        self.sources = sorted(self.index["sources"])
        self._tables: dict[tuple[str, str], DocTable] = {}

    def n_tokens(self, source: str, split: str = "train") -> int:
        return int(self.index["sources"][source][split]["n_tokens"])

    def table(self, source: str, split: str = "train") -> DocTable:
        if source not in self.index["sources"]:
            raise KeyError(f"unknown source {source!r} in {self.dir}/index.json (sources: {', '.join(self.sources)})")
        key = (source, split)
        if key not in self._tables:
            arrays, shard, start, length = [], [], [], []
            for e in self.index["shards"]:
                if e["source"] != source or e["split"] != split:
                    continue
                bin_path, idx_path = self.dir / e["path"], self.dir / e["idx"]
                # A plain ndarray view of the map: slicing an np.memmap subclass costs ~4x more per document.
                arr = np.memmap(bin_path, dtype=np.dtype(e["dtype"]).newbyteorder("<"), mode="r").view(np.ndarray)
                if arr.size != e["n_tokens"]:
                    raise ValueError(f"{bin_path}: {arr.size} tokens, index says {e['n_tokens']}")
                offs = np.fromfile(idx_path, dtype="<i8")
                if offs.size != e["n_docs"] + 1 or offs[0] != 0 or offs[-1] != arr.size:
                    raise ValueError(f"{idx_path}: document offsets do not match {bin_path}")
                shard.append(np.full(e["n_docs"], len(arrays), dtype=np.int32))
                arrays.append(arr)
                start.append(offs[:-1].astype(np.int64))
                length.append(np.diff(offs).astype(np.int64))
            self._tables[key] = DocTable(arrays, _cat(shard, np.int32), _cat(start, np.int64), _cat(length, np.int64))
        return self._tables[key]


def verify_shards(tokenize_dir: str | os.PathLike) -> list[str]:
    """Re-hash every shard against index.json; returns a list of problems (empty = intact)."""
    d = Path(tokenize_dir)
    index = json.loads((d / "index.json").read_text())
    problems = []
    for e in index["shards"]:
        for key, rel in (("sha256", e["path"]), ("idx_sha256", e["idx"])):
            p = d / rel
            if not p.is_file():
                problems.append(f"{rel}: missing")
                continue
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 24), b""):
                    h.update(chunk)
            if h.hexdigest() != e[key]:
                problems.append(f"{rel}: sha256 mismatch")
    return problems
