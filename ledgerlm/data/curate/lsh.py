"""The curate step lsh (B tasks): one task per LSH band: that band's keys sorted per chunk and merged the same way; candidate edges."""

from __future__ import annotations

import numpy as np

from ledgerlm.data.curate.base import CurateStep, chunk_starts, merge_rows, save_npy
from ledgerlm.data.extsort import merged_blocks, pack

LSH_KEY = np.dtype([("key", ">u8"), ("g", ">u8")])  # one band's key; in a bucket the first document is the head


class _Buckets:
    """Candidate edges (bucket head, member) from one band's keys arriving in order, block by block."""

    def __init__(self):
        self.last = np.zeros(0, LSH_KEY)  # the open bucket: its key and head, carried into the next block
        self.parts: list[np.ndarray] = []

    def add(self, keys: np.ndarray) -> None:
        k = np.concatenate([self.last, keys.view(LSH_KEY)])
        g = k["g"].astype(np.int64)
        start = np.concatenate([[True], k["key"][1:] != k["key"][:-1]])
        head = np.maximum.accumulate(np.where(start, np.arange(len(k)), 0))
        members = np.flatnonzero(~start)
        self.parts.append(np.stack([g[head[members]], g[members]], axis=1))
        self.last = np.array([(k["key"][-1], g[head[-1]])], dtype=LSH_KEY)

    def edges(self) -> np.ndarray:
        e = np.concatenate(self.parts) if self.parts else np.zeros((0, 2), np.int64)
        return np.unique(e, axis=0) if len(e) else e


class LshStep(CurateStep):
    name = "curate: LSH buckets (one task per band: external sort)"

    def run_task(self, rank: int, world: int) -> None:
        wd = self.wd
        chunks, starts = chunk_starts(wd, self.tasks)
        runs = []
        for i, (c, _) in enumerate(chunks):  # this band's keys of every document with shingles, sorted per chunk
            z = np.load(wd.scan(c, "meta.npz"))
            idx = np.flatnonzero(z["valid"])
            runs.append(wd.sort_run(f"band{rank:03d}", i, "keys.npy"))
            save_npy(runs[-1], np.sort(pack(LSH_KEY, {"key": z["keys"][idx, rank], "g": starts[i] + idx})))
        buckets = _Buckets()
        for keys, _, _ in merged_blocks(runs, merge_rows(self.cfg, LSH_KEY)):
            buckets.add(keys)
        save_npy(wd.edges(rank), buckets.edges())
        for p in runs:
            p.unlink()
