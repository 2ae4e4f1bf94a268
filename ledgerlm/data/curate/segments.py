"""The curate step segments (K tasks): boilerplate lines, one task per range of segment hashes, over documents that survived."""

from __future__ import annotations

import numpy as np

from ledgerlm.data import segdedup
from ledgerlm.data.curate.base import CurateStep, alive_docs, chunk_starts, save_npz
from ledgerlm.data.curate.config import FINE_BUCKETS
from ledgerlm.data.extsort import NpyRows


class SegmentStep(CurateStep):
    name = "curate: boilerplate segments (one task per range of hashes)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = chunk_starts(wd, self.tasks)
        alive = alive_docs(wd, int(starts[-1]), self.tasks)
        lo, hi = rank * FINE_BUCKETS // world, (rank + 1) * FINE_BUCKETS // world
        hs, ds = [], []
        for i, (c, _) in enumerate(chunks):
            a, b = np.load(wd.scan(c, "seg-starts.npy"))[[lo, hi]]
            d = NpyRows(wd.scan(c, "seg-d.npy")).read(a, b).astype(np.int64) + starts[i]
            keep = alive[d]
            hs.append(NpyRows(wd.scan(c, "seg-h.npy")).read(a, b)[keep])
            ds.append(d[keep])
        h = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
        d = np.concatenate(ds) if ds else np.zeros(0, np.int64)
        docs, at = np.unique(d, return_inverse=True)
        boiler, owner = segdedup.plan(h, NpyRows(wd.plan("id_rank.npy")).gather(docs)[at], cfg.segment_dedup.min_docs)
        u, counts = np.unique(h, return_counts=True)
        save_npz(wd.boiler(rank), h=boiler, owner=owner, docs=counts[np.searchsorted(u, boiler)])
