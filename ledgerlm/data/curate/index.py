"""The curate step index (1 task): each document's rank in id order and in keep order (eligible first), by external sort: each
scan chunk's keys sorted into a run, the runs merged in blocks (`ledgerlm.data.extsort`)."""

from __future__ import annotations

import shutil

import numpy as np

from ledgerlm.data.curate.base import CurateStep, chunk_starts, kill_point_for_tests, merge_rows, save_npy
from ledgerlm.data.extsort import NpyWriter, order_bytes, pack, rank_runs

# keys of the two global orders; the global index makes id keys unique (identical records keep input order)
ID_KEY = np.dtype([("id", "S32"), ("file", ">u4"), ("line", ">u8"), ("g", ">u8")])
KEEP_KEY = np.dtype([("ineligible", "u1"), ("priority", ">u8"), ("score", ">u8"), ("id_rank", ">u8")])


class _SameIds:
    """Pairs of documents sharing an id (identical text of one source), adjacent in id order: always candidates."""

    def __init__(self):
        self.prev = np.zeros(0, ID_KEY)
        self.pairs: list[np.ndarray] = []

    def add(self, keys: np.ndarray) -> None:
        k = np.concatenate([self.prev, keys.view(ID_KEY)])
        same = np.flatnonzero(k["id"][1:] == k["id"][:-1])
        g = k["g"].astype(np.int64)
        self.pairs.append(np.sort(np.stack([g[same], g[same + 1]], axis=1), axis=1))
        self.prev = k[-1:]

    def edges(self) -> np.ndarray:
        return np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), np.int64)


class IndexStep(CurateStep):
    name = "curate: index (id order, keep order: external sort)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = chunk_starts(wd, self.tasks)
        n = int(starts[-1])
        names = sorted({f for _, d in chunks for f in d["files"]})
        pos = {f: i for i, f in enumerate(names)}
        prio = np.array([s.priority for s in cfg.sources] or [0], dtype=np.int64)
        # 1. the columns later steps read, written chunk by chunk; each chunk's id keys sorted into a run
        with (
            NpyWriter(wd.plan("ids.npy"), "S32", n) as ids,
            NpyWriter(wd.plan("source.npy"), np.int16, n) as source,
            NpyWriter(wd.plan("offset.npy"), np.int64, n) as offset,
        ):
            for i, (c, d) in enumerate(chunks):
                z = np.load(wd.scan(c, "meta.npz"))
                fmap = np.array([pos[f] for f in d["files"]] or [0], dtype=np.int64)
                columns = {"id": z["ids"], "file": fmap[z["file_idx"]], "line": order_bytes(z["line"])}
                self._save_run("id", i, pack(ID_KEY, columns | {"g": starts[i] + np.arange(d["n"])}))
                ids.write(z["ids"])
                source.write(z["source"])
                offset.write(z["offset"])
        same = _SameIds()
        self._rank("id", ID_KEY, len(chunks), on_block=same.add)
        save_npy(wd.plan("edges-same.npy"), same.edges())
        kill_point_for_tests("index-merge")
        # 2. keep order: eligible first (decontamination would drop or cut the others), priority, score, id
        with NpyWriter(wd.plan("id_rank.npy"), np.int64, n) as id_ranks:
            for i, (c, d) in enumerate(chunks):
                id_rank = self._ranks("id", i)
                id_ranks.write(id_rank)
                z = np.load(wd.scan(c, "meta.npz"))
                eligible = np.ones(d["n"], dtype=bool)
                eligible[np.load(wd.scan(c, "match.npz"))["doc"]] = False
                columns = {
                    "ineligible": ~eligible,
                    "priority": order_bytes(prio[z["source"].astype(np.int64)], descending=True),
                    "score": order_bytes(z["score"], descending=True),
                    "id_rank": id_rank,
                }
                self._save_run("keep", i, pack(KEEP_KEY, columns))
        self._rank("keep", KEEP_KEY, len(chunks))
        with NpyWriter(wd.plan("keep_pos.npy"), np.int64, n) as keep_pos:
            for i in range(len(chunks)):
                keep_pos.write(self._ranks("keep", i))
        shutil.rmtree(wd.sort_dir)

    def _save_run(self, order: str, i: int, keys: np.ndarray) -> None:
        o = np.argsort(keys)
        save_npy(self.wd.sort_run(order, i, "keys.npy"), keys[o])
        save_npy(self.wd.sort_run(order, i, "pos.npy"), o.astype(np.int64))

    def _rank(self, order: str, key: np.dtype, runs: int, on_block=None) -> None:
        keys = [self.wd.sort_run(order, i, "keys.npy") for i in range(runs)]
        ranks = [self.wd.sort_run(order, i, "ranks.bin") for i in range(runs)]
        rank_runs(keys, ranks, merge_rows(self.cfg, key), on_block)

    def _ranks(self, order: str, i: int) -> np.ndarray:
        """One chunk's ranks in the global order, by document (the merge wrote them in the chunk's sorted order)."""
        o = np.load(self.wd.sort_run(order, i, "pos.npy"))
        out = np.empty(len(o), dtype=np.int64)
        out[o] = np.fromfile(self.wd.sort_run(order, i, "ranks.bin"), dtype=np.int64)
        return out
