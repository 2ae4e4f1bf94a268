"""The curate step apply (T tasks): apply every decision chunk by chunk, writing sorted runs per output shard."""

from __future__ import annotations

import json

import numpy as np

from ledgerlm.data import segdedup
from ledgerlm.data.curate.base import (
    DUP_KEYS,
    NEAR_DUP,
    TOO_SHORT,
    Counters,
    CurateStep,
    Drop,
    chunk_starts,
    count_words,
    excluded_record,
    kill_point_for_tests,
    load_bench_cache,
    load_dups,
    segment_tasks,
    shard_of,
    trim_heap,
)
from ledgerlm.data.decontam import Benchmark, Matcher, cut_spans
from ledgerlm.data.extsort import NpyRows
from ledgerlm.data.runs import keyed_line, write_run
from ledgerlm.data.sources import Record
from ledgerlm.data.workdir import Chunk
from ledgerlm.io import atomic_write_json


class ApplyStep(CurateStep):
    name = "curate: apply decisions"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = chunk_starts(wd, self.tasks)
        mine = [(i, c) for i, (c, _) in enumerate(chunks) if c.rank == rank]
        if not mine:
            return
        lo, hi = int(starts[mine[0][0]]), int(starts[mine[-1][0] + 1])
        dups = load_dups(wd, self.tasks)
        self.dups = {k: v[(dups["doc"] >= lo) & (dups["doc"] < hi)] for k, v in dups.items() if k in DUP_KEYS}
        self.reps = np.unique(dups["rep"][(dups["rep"] >= lo) & (dups["rep"] < hi)])
        bz = (
            [np.load(wd.boiler(b)) for b in range(segment_tasks(cfg, wd, self.tasks))]
            if cfg.segment_dedup.enabled
            else []
        )
        boiler = np.concatenate([z["h"] for z in bz]) if bz else np.zeros(0, np.uint64)
        order = np.argsort(boiler)
        self.boiler = boiler[order]
        self.owner = (np.concatenate([z["owner"] for z in bz]) if bz else np.zeros(0, np.int64))[order]
        self.boiler_docs = (np.concatenate([z["docs"] for z in bz]) if bz else np.zeros(0, np.int64))[order]
        self.id_rank = NpyRows(wd.plan("id_rank.npy"))
        plan = np.load(wd.plan("contam.npz"))
        ignore = {k.split(":", 1)[1]: plan[k] for k in plan.files}
        benchmarks = load_bench_cache(wd)
        self.matcher = Matcher(benchmarks, ignore) if benchmarks else None
        self.by_name = {b.name: b for b in benchmarks}
        for i, c in mine:
            if not wd.apply(c, "done.json").exists():
                self.apply_chunk(c, int(starts[i]))
                trim_heap()
                kill_point_for_tests("apply-chunk")

    def _near_dup_details(self, removed: dict, i: int) -> dict:
        jaccard = float(removed["jaccard"][i])
        return {
            "cluster": removed["cluster_id"][i].decode(),
            "kept_id": removed["kept_id"][i].decode(),
            "kept_source": self.cfg.sources[int(removed["kept_source"][i])].name,
            "jaccard": None if jaccard != jaccard else jaccard,  # NaN: unverified (exact_jaccard null)
            "cluster_size": int(removed["size"][i]),
        }

    def apply_chunk(self, c: Chunk, base: int) -> None:
        cfg, wd = self.cfg, self.wd
        counters = Counters()
        kept: dict[int, list[bytes]] = {}
        excl: dict[int, list[bytes]] = {}
        owned: list[bytes] = []  # boilerplate segments this chunk's documents own: (hash, text), for `inspect`
        matched = set(np.load(wd.scan(c, "match.npz"))["doc"].tolist())
        n_words = np.load(wd.scan(c, "meta.npz"))["words"]
        # this chunk's near-dup drops (by position in the chunk) and the representatives it holds
        in_chunk = (self.dups["doc"] >= base) & (self.dups["doc"] < base + len(n_words))
        removed = {k: v[in_chunk] for k, v in self.dups.items()}
        removed_at = dict(zip((removed["doc"] - base).tolist(), range(len(removed["doc"]))))
        reps = set((self.reps[(self.reps >= base) & (self.reps < base + len(n_words))] - base).tolist())
        id_rank = self.id_rank.read(base, base + len(n_words))
        seg_h, seg_d = np.load(wd.scan(c, "seg-h.npy")), np.load(wd.scan(c, "seg-d.npy"))
        has_boiler = set(seg_d[np.isin(seg_h, self.boiler)].tolist()) if len(self.boiler) else set()  # to re-split

        def drop(rec, why: Drop, details: dict, words: int, j: int) -> None:
            counters.drop(why, words)
            excl.setdefault(shard_of(rec.id, cfg.shards), []).append(
                keyed_line(excluded_record(rec, why.reason, details))
            )
            if j in reps:  # the document kept for a near-dup cluster is gone: the cluster lost every member
                counters.totals["near_dup_clusters_lost"] += 1

        with open(wd.scan(c, "docs.jsonl"), "rb") as f:  # our own JSONL: split on b"\n" only
            for j, line in enumerate(f):
                d = json.loads(line)
                rec = Record(d["source"], d["file"], d["line"], text=d["text"], orig_id=d["orig_id"], _id=d["id"])
                words = int(n_words[j])
                if j in removed_at:
                    counters.drop(NEAR_DUP, words)
                    details = self._near_dup_details(removed, removed_at[j])
                    line = keyed_line(excluded_record(rec, NEAR_DUP.reason, details))
                    excl.setdefault(shard_of(rec.id, cfg.shards), []).append(line)
                    continue
                text = d["text"]
                if j in has_boiler:
                    mine: list = []
                    gone: list = []
                    my_rank = int(id_rank[j])
                    text, k = segdedup.apply(
                        text, cfg.segment_dedup, self.boiler, self.owner, my_rank, owned=mine, removed_segments=gone
                    )
                    for h, s in mine:
                        docs = int(self.boiler_docs[np.searchsorted(self.boiler, np.uint64(h))])
                        owned.append(keyed_line({"id": f"{h:016x}", "segment": s, "docs": docs, "owner": rec.id}))
                    if k:
                        left = words - sum(map(count_words, gone))
                        counters.totals["segments_removed"] += k
                        counters.totals["docs_changed"] += 1
                        if left < cfg.segment_dedup.min_words:
                            details = {
                                "segments_removed": k,
                                "words_left": left,
                                "threshold": cfg.segment_dedup.min_words,
                            }
                            drop(rec, TOO_SHORT, details, words, j)
                            continue
                        counters.totals["segment_words_removed"] += words - left
                        words = left  # later drops count only what segment dedup left
                if self.matcher is not None and j in matched:
                    cut, verdict = self._decontaminate(text, counters)
                    if verdict is not None:
                        drop(rec, Drop("decontaminate", verdict[0]), verdict[1], words, j)
                        continue
                    words, text = (words, text) if cut is text else (count_words(cut), cut)
                out = {"id": rec.id, "source": rec.source, "text": text}
                if rec.orig_id is not None:
                    out["orig_id"] = rec.orig_id
                counters.totals["kept"] += 1
                counters.totals["kept_words"] += words  # what segment dedup and decontamination left
                kept.setdefault(shard_of(rec.id, cfg.shards), []).append(keyed_line(out))
        for sub, by_shard in (("kept", kept), ("excl", excl)):
            for shard, lines in by_shard.items():
                write_run(wd.apply_run(c, sub, shard), lines)
        write_run(wd.apply_run(c, "boiler", 0), owned)
        atomic_write_json(wd.apply(c, "done.json"), {"counters": counters.to_dict()})

    def _decontaminate(self, text, counters: Counters):
        """Returns (text, None) when the document stays (possibly cut), or (text, (reason, details)) to drop it."""
        dc, matcher, by_name = self.cfg.decontam, self.matcher, self.by_name
        found, pos, starts, ends = matcher.match(text, with_positions=True)
        if not found:
            return text, None
        names = sorted(found)
        first = names[0]
        i0 = int(pos[first][0])
        bm: Benchmark = by_name[first]
        ngram = text[int(starts[i0]) : int(ends[i0 + bm.n - 1])]
        details = {
            "benchmark": first,
            "benchmarks": names,
            "n": bm.n,
            "ngram": ngram,
            "matches": {k: len(v) for k, v in found.items()},
        }
        if dc.action == "drop":
            return text, (f"contaminated:{first}", details)
        for name in names:  # cut every benchmark's spans, one benchmark after another
            found2, pos2, s2, e2 = matcher.match(text, with_positions=True)
            if name not in found2:
                continue
            new, nspans = cut_spans(text, pos2[name], by_name[name].n, s2, e2, dc)
            if new is None:
                return text, (
                    f"contaminated:{name}",
                    {**details, "action": "cut", "spans": nspans, "why": "nothing usable left after cutting"},
                )
            counters.totals[f"cut:{name}"] += 1
            counters.totals["words_cut"] += count_words(text) - count_words(new)
            text = new
        return text, None
