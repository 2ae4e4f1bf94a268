"""The curate step cluster (T tasks): candidate groups split by component; verified greedy clusters (`ledgerlm.data.dedup`)."""

from __future__ import annotations

import json

import numpy as np

from ledgerlm.data.curate.base import CurateStep, chunk_starts, save_npz
from ledgerlm.data.dedup import greedy_clusters
from ledgerlm.data.extsort import NpyRows
from ledgerlm.data.minhash import MinHasher, components
from ledgerlm.data.workdir import WorkDir


class _Texts:
    """The text of any scanned document by global index and byte offset into its chunk's file."""

    def __init__(self, wd: WorkDir, chunks, starts: np.ndarray):
        self.wd, self.chunks, self.starts = wd, chunks, starts
        self.files: dict[int, object] = {}

    def __call__(self, g: int, offset: int) -> str:
        ci = int(np.searchsorted(self.starts, g, side="right") - 1)
        if ci not in self.files:
            if len(self.files) > 64:
                self.close()
            self.files[ci] = open(self.wd.scan(self.chunks[ci][0], "docs.jsonl"), "rb")
        f = self.files[ci]
        f.seek(offset)
        return json.loads(f.readline())["text"]

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


def _candidate_edges(wd: WorkDir, bands: int) -> np.ndarray:
    parts = [np.load(wd.edges(b)) for b in range(bands)] + [np.load(wd.plan("edges-same.npy"))]
    e = np.concatenate(parts).reshape(-1, 2)
    return np.unique(e, axis=0) if len(e) else e


class ClusterStep(CurateStep):
    name = "curate: verified near-duplicate clusters (by component)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = chunk_starts(wd, self.tasks)
        edges = _candidate_edges(wd, cfg.near_dedup.bands)
        # only candidates are read: every array below is over this task's candidates, never the whole corpus
        candidates = np.unique(edges)
        labels = components(len(candidates), np.searchsorted(candidates, edges))
        mine = np.flatnonzero(labels % world == rank)
        g, labels = candidates[mine], labels[mine]
        ids, id_rank, keep_pos, offset, source = (
            NpyRows(wd.plan(f"{k}.npy")).gather(g) for k in ("ids", "id_rank", "keep_pos", "offset", "source")
        )
        texts = _Texts(wd, chunks, starts)
        hasher = MinHasher(cfg.near_dedup.params())
        local = np.arange(len(g))
        out = list(
            greedy_clusters(
                local,
                labels,
                keep_pos,
                ids,
                lambda i: texts(int(g[i]), int(offset[i])),
                hasher,
                cfg.near_dedup.exact_jaccard,
            )
        )
        texts.close()
        doc = np.array([x[0] for x in out], dtype=np.int64)
        rep = np.array([x[1] for x in out], dtype=np.int64)
        # a cluster is named by its member with the smallest id, independent of which copy is kept
        by_rank = np.lexsort((id_rank, labels))
        first = by_rank[np.concatenate([[True], labels[by_rank][1:] != labels[by_rank][:-1]])] if len(g) else local
        name_of = dict(zip(labels[first].tolist(), first.tolist()))
        cluster = np.array([name_of[int(labels[d])] for d in doc], dtype=np.int64)
        save_npz(
            wd.dups(rank),
            doc=g[doc],
            rep=g[rep],
            jaccard=np.array([x[2] for x in out], dtype=np.float64),
            size=np.array([x[3] for x in out], dtype=np.int64),
            cluster=g[cluster],
            kept_id=ids[rep],
            kept_source=source[rep],
            cluster_id=ids[cluster],
            candidate_edges=np.array([len(edges)]),
        )
