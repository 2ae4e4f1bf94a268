"""External sort for curate's global steps: sorted runs on disk, merged block by block.

The index step needs each document's rank in two global orders (id order, keep order), the LSH step each band's
buckets. Sorting every key of the corpus in one process grows with the corpus; here each scan chunk sorts its own
keys into a run (`np.save`), `merged_blocks` yields them in global order a block at a time, and `rank_runs` merges the runs holding at most `buffer_rows` keys at once: every round it reads a block of each run
whose buffer is empty, emits every buffered key not above the smallest last key of the runs that still have unread
rows, and appends the emitted keys' global ranks to one file per run, in that run's order. Keys are fixed-width
byte strings (numpy `S`), compared like memcmp: encode numbers big-endian with `order_bytes`, and make keys unique
(the merge relies on it for ties; append the global index where keys may repeat).

Reading is by explicit file reads, never `mmap`: mapped pages stay resident and would grow the process with the
corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ledgerlm.io import atomic_path


class NpyWriter:
    """Write a 1-D .npy of `n` rows part by part (atomically): the array is never whole in memory."""

    def __init__(self, path: Path, dtype, n: int):
        self.path, self.dtype, self.n, self.rows = Path(path), np.dtype(dtype), n, 0

    def __enter__(self) -> NpyWriter:
        self._atomic = atomic_path(self.path)
        self.f = open(self._atomic.__enter__(), "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.n,)}
        np.lib.format.write_array_header_1_0(self.f, header)
        return self

    def write(self, part: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(part, dtype=self.dtype).tobytes())
        self.rows += len(part)

    def __exit__(self, kind, value, tb) -> None:
        self.f.close()
        if kind is None and self.rows != self.n:
            value = ValueError(f"{self.path}: wrote {self.rows} rows, declared {self.n}")
            self._atomic.__exit__(type(value), value, None)
            raise value
        self._atomic.__exit__(kind, value, tb)


class NpyRows:
    """Row ranges of a 1-D .npy read from the file (no memory map)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, self.dtype = read_header(f)
            self.data_offset = f.tell()
        self.n = int(shape[0])

    def read(self, lo: int, hi: int) -> np.ndarray:
        hi = min(hi, self.n)
        if hi <= lo:
            return np.zeros(0, self.dtype)
        return np.fromfile(self.path, self.dtype, hi - lo, offset=self.data_offset + lo * self.dtype.itemsize)

    def gather(self, idx: np.ndarray, block_bytes: int = 8 << 20) -> np.ndarray:
        """Rows at sorted indices `idx`, reading the file in blocks (memory: one block and the result)."""
        out = np.empty(len(idx), self.dtype)
        step = max(1, block_bytes // self.dtype.itemsize)
        for lo in range(0, self.n, step):
            a, b = np.searchsorted(idx, [lo, lo + step])
            if a < b:
                out[a:b] = self.read(lo, lo + step)[idx[a:b] - lo]
        return out


def order_bytes(x: np.ndarray, descending: bool = False) -> np.ndarray:
    """uint64 whose big-endian bytes sort like `x` (int or float; NaN last, -0.0 = 0.0), optionally reversed."""
    x = np.asarray(x)
    if x.dtype.kind == "f":
        v = x.astype(np.float64) + 0.0  # -0.0 -> 0.0: equal floats get equal bytes
        b = v.view(np.uint64)
        u = np.where(b >> np.uint64(63), ~b, b | np.uint64(1 << 63))
        u[np.isnan(v)] = np.uint64(2**64 - 1)
        if descending:  # NaN stays last, as a sort of -x puts it
            u = np.where(np.isnan(v), u, ~u)
        return u.astype(">u8")
    u = x.astype(np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    return (~u if descending else u).astype(">u8")


def pack(dtype: np.dtype, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Pack columns into one fixed-width byte-string key per row (`dtype`: structured, most significant field first,
    numbers big-endian); `keys.view(dtype)` unpacks them."""
    out = np.empty(len(next(iter(columns.values()))), dtype=dtype)
    for name, a in columns.items():
        out[name] = a
    return out.view(f"S{dtype.itemsize}")


def merged_blocks(runs: list[Path], buffer_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Merge sorted runs of unique keys; yields (keys in order, run index of each, rank of the first) per round."""
    readers = [NpyRows(p) for p in runs]
    block = max(1, buffer_rows // max(len(runs), 1))
    read = [0] * len(runs)  # rows read from each run
    bufs = [r.read(0, 0) for r in readers]
    rank = 0
    while True:
        for i, r in enumerate(readers):
            if len(bufs[i]) == 0 and read[i] < r.n:
                bufs[i] = r.read(read[i], read[i] + block)
                read[i] += len(bufs[i])
        live = [i for i in range(len(runs)) if len(bufs[i])]
        if not live:
            return
        limits = [bufs[i][-1:] for i in live if read[i] < readers[i].n]
        bound = np.sort(np.concatenate(limits))[0] if limits else None  # no unread row can sort below it
        parts, owner = [], []
        for i in live:
            take = len(bufs[i]) if bound is None else int(np.searchsorted(bufs[i], bound, side="right"))
            parts.append(bufs[i][:take])
            owner.append(np.full(take, i, dtype=np.int32))
            bufs[i] = bufs[i][take:]
        keys = np.concatenate(parts)
        order = np.argsort(keys)
        yield keys[order], np.concatenate(owner)[order], rank
        rank += len(keys)


def rank_runs(
    runs: list[Path],
    rank_files: list[Path],
    buffer_rows: int,
    on_block: Callable[[np.ndarray], None] | None = None,
) -> None:
    """Write, for every run, the global rank (int64) of each of its keys, in the run's order, to `rank_files`."""
    for p in rank_files:
        p.write_bytes(b"")  # a re-run starts the files over
    for keys, owner, rank in merged_blocks(runs, buffer_rows):
        by_run = np.argsort(owner, kind="stable")  # a run's keys arrive in its own order
        ranks = rank + by_run.astype(np.int64)
        bounds = np.searchsorted(owner[by_run], np.arange(len(runs) + 1))
        for i in np.flatnonzero(np.diff(bounds)):
            with open(rank_files[i], "ab") as f:
                ranks[bounds[i] : bounds[i + 1]].tofile(f)
        if on_block is not None:
            on_block(keys)
