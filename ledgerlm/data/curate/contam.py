"""The curate step contam (1 task): n-grams too common to count as leaks, and the contamination table."""

from __future__ import annotations

import numpy as np

from ledgerlm.data.curate.base import CurateStep, alive_docs, chunk_starts, load_bench_cache, save_npz
from ledgerlm.data.decontam import table_rows
from ledgerlm.io import atomic_write_json


class ContamStep(CurateStep):
    name = "curate: common n-grams and the contamination table"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        benchmarks = load_bench_cache(wd)
        chunks, starts = chunk_starts(wd, self.tasks)
        alive = alive_docs(wd, int(starts[-1]), self.tasks)
        per: dict[int, list] = {i: [[], []] for i in range(len(benchmarks))}  # bench -> [docs, hashes]
        for i, (c, _) in enumerate(chunks):
            z = np.load(wd.scan(c, "match.npz"))
            g = z["doc"].astype(np.int64) + starts[i]
            keep = alive[g]
            for b in np.unique(z["bench"][keep]).tolist():
                sel = keep & (z["bench"] == b)
                per[b][0].append(g[sel])
                per[b][1].append(z["h"][sel])
        ignore, items_hit, docs_hit = {}, {}, {}
        for i, bm in enumerate(benchmarks):
            g = np.concatenate(per[i][0]) if per[i][0] else np.zeros(0, np.int64)
            h = np.concatenate(per[i][1]) if per[i][1] else np.zeros(0, np.uint64)
            u, cnt = np.unique(h, return_counts=True)  # a document's hashes are unique: count = documents
            ignore[bm.name] = u[cnt > cfg.decontam.max_doc_freq]
            ok = ~np.isin(h, ignore[bm.name])
            docs_hit[bm.name] = len(np.unique(g[ok]))
            items_hit[bm.name] = len(bm.items_with(np.unique(h[ok])))
        rows = table_rows(benchmarks, items_hit, docs_hit, {k: len(v) for k, v in ignore.items()}) if benchmarks else []
        save_npz(wd.plan("contam.npz"), **{f"ignore:{k}": v for k, v in ignore.items()})
        atomic_write_json(wd.plan("contam.json"), rows)
