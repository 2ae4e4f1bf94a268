"""The `curate` stage: read sources -> quality gates -> cross-source near-dedup -> segment dedup -> decontamination.

Four datatrove pipeline steps, run by a datatrove executor (local by default, Slurm or Ray by `executor.kind`):

  scan  (T tasks)  read this task's share of every source, quarantine malformed records, run the quality gates, and
                   for each surviving document write its text, MinHash signature, segment hashes and benchmark n-gram
                   matches to a work directory;
  plan  (1 task)   the global decisions, from signatures and hashes only (memory = the dedup index, not the corpus):
                   LSH clusters and which copy each keeps, boilerplate segments and their owner, n-grams too common
                   to count as leaks, and the contamination table;
  apply (T tasks)  apply the decisions to each task's documents, routing each to kept/ or excluded/ output shards;
  merge (S tasks)  write each output shard sorted by document id.

Documents are routed to output shards by id and every decision depends only on content (ids, signatures), so the
outputs are byte-identical whatever the number of tasks or workers. kept + excluded = read, always.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep  # the base class only adds stats and a name

from ledgerlm.config import ConfigError, to_dict
from ledgerlm.data import segdedup
from ledgerlm.data.decontam import (
    COLUMNS,
    Benchmark,
    DecontamConfig,
    Matcher,
    cut_spans,
    load_benchmarks,
    table_rows,
    to_csv,
    to_markdown,
)
from ledgerlm.data.minhash import MinHasher, MinHashParams, band_keys, components, lsh_edges_from_keys
from ledgerlm.data.quality import QualityConfig, QualityGates, overlay
from ledgerlm.data.segdedup import SegDedupConfig
from ledgerlm.data.sources import Record, SourceSpec, check_sources, iter_records
from ledgerlm.io import atomic_write_json, atomic_write_text, iter_jsonl
from ledgerlm.stage import StageResult, StageSpec


@dataclass
class NearDedupConfig:
    enabled: bool = True
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    exact_jaccard: float | None = None  # if set, a candidate pair must have exact shingle Jaccard >= this
    exact_batch_docs: int = 200_000  # bucket heads whose shingle sets are held at once by the exact check
    batch_docs: int = 256  # documents hashed together (amortises numpy overhead)

    def params(self) -> MinHashParams:
        return MinHashParams(self.ngram, self.bands, self.rows, self.seed)


@dataclass
class ExecutorConfig:
    kind: str = "local"  # local | slurm | ray
    tasks: int = 1
    workers: int = 1
    slurm_partition: str = ""
    slurm_time: str = "04:00:00"
    slurm_cpus_per_task: int = 1
    slurm_mem_per_cpu_gb: int = 4
    poll_seconds: int = 30  # how often to check whether Slurm jobs finished

    def validate(self) -> None:
        if self.kind not in ("local", "slurm", "ray"):
            raise ValueError(f"executor.kind must be local|slurm|ray, got {self.kind!r}")
        if self.tasks < 1 or self.workers < 1:
            raise ValueError("executor.tasks and executor.workers must be >= 1")
        if self.kind == "slurm" and not self.slurm_partition:
            raise ValueError("executor.slurm_partition is required for kind slurm")


@dataclass
class Config:
    sources: list[SourceSpec] = field(default_factory=list)
    quality: QualityConfig = field(default_factory=QualityConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    segment_dedup: SegDedupConfig = field(default_factory=SegDedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    shards: int = 1  # output shards of kept/ and excluded/ (by document id)
    keep_work: bool = False  # keep the intermediate work directory (.work/) for debugging

    def validate(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if self.shards < 1:
            raise ValueError("shards must be >= 1")


def quality_configs(cfg: Config) -> dict[str, QualityConfig]:
    """The gates each source's documents go through: `curate.quality` with the source's `quality:` laid over it."""
    out = {}
    for i, s in enumerate(cfg.sources):
        try:
            out[s.name] = overlay(cfg.quality, s.quality)
        except ConfigError as e:  # a Config built in code (recipes are checked when they are read)
            raise ConfigError(f"sources[{i}].{e.key}", e.message, e.file) from None
    return out


def source_gates(cfg: Config) -> dict[str, QualityGates]:
    """One QualityGates per distinct effective config (sources with the same gates share one), by source name."""
    built: dict[str, QualityGates] = {}
    out = {}
    for name, q in quality_configs(cfg).items():
        key = json.dumps(to_dict(q), sort_keys=True)
        if key not in built:
            built[key] = QualityGates(q)
        out[name] = built[key]
    return out


def quality_by_source(cfg: Config) -> dict[str, dict]:
    """For each source whose gates differ from `curate.quality`: the fields that differ and the whole effective
    config. Sources not listed used `curate.quality` as it is."""
    base = to_dict(cfg.quality)
    out = {}
    for name, q in quality_configs(cfg).items():
        eff = to_dict(q)
        if eff != base:
            out[name] = {"changed": {k: v for k, v in eff.items() if v != base[k]}, "effective": eff}
    return out


KEEP_RULE = "highest source priority, then highest quality score, then smallest id (then file position)"


def _words(text: str) -> int:
    return len(text.split())


def _shard_of(doc_id: str, shards: int) -> int:
    return int(doc_id[:8], 16) % shards if shards > 1 else 0


class _Shards:
    """Append-only JSONL writers, one per output shard, opened lazily."""

    def __init__(self, pattern: str, shards: int):
        self.pattern, self.shards, self.files = pattern, shards, {}

    def write(self, rec: dict) -> None:
        s = _shard_of(rec["id"], self.shards)
        if s not in self.files:
            self.files[s] = open(self.pattern.format(shard=s), "w", encoding="utf-8")
        self.files[s].write(json.dumps(rec, ensure_ascii=False) + "\n")

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _counter_add(stats: dict, key: str, words: int) -> None:
    stats.setdefault(key, [0, 0])
    stats[key][0] += 1
    stats[key][1] += words


# ----------------------------------------------------------------------------- step 1: scan


class ScanStep(PipelineStep):
    name = "curate: read + quality + signatures"
    type = "ledgerlm"

    def __init__(self, cfg: Config, work: str):
        super().__init__()
        self.cfg, self.work = cfg, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        cfg, w = self.cfg, Path(self.work)
        gates_of = source_gates(cfg)
        hasher = MinHasher(cfg.near_dedup.params()) if cfg.near_dedup.enabled else None
        benchmarks = _load_bench_cache(w)
        matcher = Matcher(benchmarks) if benchmarks else None
        prio = {s.name: s.priority for s in cfg.sources}
        stats: dict = {"read": [0, 0], "by_source": {}, "quality_dropped_by_source": {}}
        meta = {"id": [], "file": [], "line": [], "source": [], "priority": [], "score": [], "words": []}
        sigs, seg_h, seg_d, matches = [], [], [], {}
        batch: list[str] = []
        excl = _Shards(str(w / f"excl1-{rank:05d}-{{shard:05d}}.jsonl"), cfg.shards)
        docs = open(w / f"docs-{rank:05d}.jsonl", "w", encoding="utf-8")

        def flush():
            if hasher is not None and batch:
                sigs.append(hasher.signatures(batch))
            batch.clear()

        try:
            for spec in cfg.sources:
                gates = gates_of[spec.name]  # chosen once per source: the per-document path is unchanged
                for rec in iter_records(spec, rank, world_size):
                    words = _words(rec.text) if rec.text else 0
                    stats["read"][0] += 1
                    stats["read"][1] += words
                    stats["by_source"].setdefault(spec.name, 0)
                    stats["by_source"][spec.name] += 1
                    self.stat_update("read")
                    if rec.reason:
                        _counter_add(stats, rec.reason, 0)
                        excl.write(_excluded(rec, rec.reason, {"detail": rec.detail, "raw": rec.raw}))
                        continue
                    reason, details, score = gates.check(rec.text)
                    if reason:
                        _counter_add(stats, reason, words)
                        q = stats["quality_dropped_by_source"].setdefault(spec.name, {})
                        q[reason] = q.get(reason, 0) + 1
                        excl.write(_excluded(rec, reason, details))
                        continue
                    i = len(meta["id"])
                    for k, v in (
                        ("id", rec.id),
                        ("file", rec.file),
                        ("line", rec.line),
                        ("source", rec.source),
                        ("priority", prio.get(rec.source, 0)),
                        ("score", score),
                        ("words", words),
                    ):
                        meta[k].append(v)
                    docs.write(
                        json.dumps(
                            {
                                "id": rec.id,
                                "source": rec.source,
                                "text": rec.text,
                                "orig_id": rec.orig_id,
                                "file": rec.file,
                                "line": rec.line,
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
                    if cfg.segment_dedup.enabled:
                        h = segdedup.doc_segment_hashes(rec.text, cfg.segment_dedup)
                        seg_h.append(h)
                        seg_d.append(np.full(len(h), i, dtype=np.int64))
                    if matcher is not None and (m := matcher.match(rec.text)):
                        matches[i] = {k: v.tolist() for k, v in m.items()}
                    batch.append(rec.text)
                    if len(batch) >= cfg.near_dedup.batch_docs:
                        flush()
            flush()
        finally:
            docs.close()
            excl.close()
        n = len(meta["id"])
        num_perm = cfg.near_dedup.bands * cfg.near_dedup.rows
        sig = np.concatenate(sigs) if sigs else np.zeros((n, num_perm), np.uint64)
        np.save(w / f"sig-{rank:05d}.npy", sig)
        # the plan step loads only the band keys (bands x 8 bytes per document), not the signatures
        np.savez(
            w / f"bk-{rank:05d}.npz",
            keys=band_keys(sig, cfg.near_dedup.params()),
            valid=~np.all(sig == MinHasher.EMPTY, axis=1),
        )
        np.savez(
            w / f"seg-{rank:05d}.npz",
            h=np.concatenate(seg_h) if seg_h else np.zeros(0, np.uint64),
            d=np.concatenate(seg_d) if seg_d else np.zeros(0, np.int64),
        )
        atomic_write_json(w / f"meta-{rank:05d}.json", {**meta, "matches": {str(k): v for k, v in matches.items()}})
        atomic_write_json(w / f"stats1-{rank:05d}.json", stats)
        return data


def _excluded(rec: Record, reason: str, details: dict) -> dict:
    out = {
        "id": rec.id,
        "source": rec.source,
        "reason": reason,
        "details": details,
        "file": rec.file,
        "line": rec.line,
        "text": rec.text,
    }
    if rec.text is None:
        out["words"] = 0
    return out


# ----------------------------------------------------------------------------- step 2: plan


class PlanStep(PipelineStep):
    name = "curate: global plan (clusters, boilerplate, leaks)"
    type = "ledgerlm"

    def __init__(self, cfg: Config, work: str, tasks: int):
        super().__init__()
        self.cfg, self.work, self.tasks = cfg, work, tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        cfg, w = self.cfg, Path(self.work)
        metas = [json.loads((w / f"meta-{r:05d}.json").read_text()) for r in range(self.tasks)]
        sizes = [len(m["id"]) for m in metas]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        n = int(offsets[-1])
        ids = [x for m in metas for x in m["id"]]
        origin = [(f, ln) for m in metas for f, ln in zip(m["file"], m["line"])]
        priority = np.array([x for m in metas for x in m["priority"]], dtype=np.int64)
        score = np.array([x for m in metas for x in m["score"]], dtype=np.float64)
        # id order (ties between exact copies of the same source broken by file position): the canonical order
        order = sorted(range(n), key=lambda i: (ids[i], origin[i]))
        id_rank = np.empty(n, dtype=np.int64)
        id_rank[order] = np.arange(n)

        removed: dict[int, dict] = {}
        stats = {"near_dup_clusters": 0, "candidate_edges": 0}
        if cfg.near_dedup.enabled and n:
            bk = [np.load(w / f"bk-{r:05d}.npz") for r in range(self.tasks)]
            edges = lsh_edges_from_keys(
                np.concatenate([z["keys"] for z in bk]), np.concatenate([z["valid"] for z in bk])
            )
            sig_files = [np.load(w / f"sig-{r:05d}.npy", mmap_mode="r") for r in range(self.tasks)]

            def sig(g: int) -> np.ndarray:
                r = int(np.searchsorted(offsets, g, side="right") - 1)
                return sig_files[r][g - int(offsets[r])]

            # identical documents of one source share an id: always one cluster, even without shingles
            same = [(order[k - 1], order[k]) for k in range(1, n) if ids[order[k]] == ids[order[k - 1]]]
            if same:
                edges = np.unique(np.sort(np.concatenate([edges, np.array(same, dtype=np.int64)]), axis=1), axis=0)
            stats["candidate_edges"] = len(edges)
            if cfg.near_dedup.exact_jaccard is not None and len(edges):
                edges = self._exact_filter(edges, ids, offsets, cfg)
            labels = components(n, edges)
            # keep rule: priority desc, score desc, id asc, position asc -> the first in this order
            keep_order = np.lexsort((id_rank, -score, -priority))
            first_of: dict[int, int] = {}
            for i in keep_order.tolist():
                first_of.setdefault(int(labels[i]), i)
            sizes_c = np.bincount(labels, minlength=n)
            # a cluster is named by its smallest member id, independent of which copy is kept
            min_rank = np.full(n, n, dtype=np.int64)
            np.minimum.at(min_rank, labels, id_rank)
            for i in range(n):
                k = first_of[int(labels[i])]
                if k != i:
                    removed[i] = {
                        "cluster": ids[order[min_rank[labels[i]]]],
                        "kept_id": ids[k],
                        "kept_source": metas_source(metas, k, offsets),
                        "jaccard_est": round(float(np.mean(sig(i) == sig(k))), 4),
                        "cluster_size": int(sizes_c[labels[i]]),
                    }
            stats["near_dup_clusters"] = int((sizes_c > 1).sum())
        alive = np.ones(n, dtype=bool)
        alive[list(removed)] = False

        # segment dedup: count over the documents that survived near-dedup
        boiler, owner = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        if cfg.segment_dedup.enabled and n:
            hs, ds = [], []
            for r in range(self.tasks):
                z = np.load(w / f"seg-{r:05d}.npz")
                hs.append(z["h"])
                ds.append(z["d"] + offsets[r])
            h, d = np.concatenate(hs), np.concatenate(ds)
            keep = alive[d]
            boiler, owner_rank = segdedup.plan(h[keep], id_rank[d[keep]], cfg.segment_dedup.min_docs)
            owner = np.asarray(order, dtype=np.int64)[owner_rank] if len(owner_rank) else owner
        stats["boilerplate_segments"] = len(boiler)

        # decontamination: n-grams in too many surviving documents are ignored; the table is computed here
        benchmarks = _load_bench_cache(w)
        ignore, rows = {}, []
        if benchmarks:
            per: dict[str, list[np.ndarray]] = {}
            doc_hits: dict[int, dict[str, np.ndarray]] = {}
            for r, m in enumerate(metas):
                for k, v in m["matches"].items():
                    g = int(k) + int(offsets[r])
                    if alive[g]:
                        doc_hits[g] = {b: np.array(h, dtype=np.uint64) for b, h in v.items()}
                        for b, arr in doc_hits[g].items():
                            per.setdefault(b, []).append(arr)
            for b, hs in per.items():
                u, c = np.unique(np.concatenate(hs), return_counts=True)
                ignore[b] = u[c > cfg.decontam.max_doc_freq]
            items_hit, docs_hit = {}, {}
            for bm in benchmarks:
                ig = ignore.get(bm.name, np.zeros(0, np.uint64))
                valid = [hh[~np.isin(hh, ig)] for m in doc_hits.values() if (hh := m.get(bm.name)) is not None]
                valid = [v for v in valid if len(v)]
                docs_hit[bm.name] = len(valid)
                items_hit[bm.name] = len(bm.items_with(np.unique(np.concatenate(valid)) if valid else valid))
            rows = table_rows(benchmarks, items_hit, docs_hit, {k: len(v) for k, v in ignore.items()})
        np.savez(
            w / "plan.npz", boiler=boiler, owner=owner, offsets=offsets, **{f"ignore:{k}": v for k, v in ignore.items()}
        )
        for r in range(self.tasks):
            lo, hi = int(offsets[r]), int(offsets[r + 1])
            atomic_write_json(w / f"removed-{r:05d}.json", {str(i - lo): v for i, v in removed.items() if lo <= i < hi})
        atomic_write_json(w / "plan.json", {"stats": stats, "contamination": rows})
        return data

    def _docs(self, offsets: np.ndarray, need: set[int]):
        """Stream (global index, text) of the documents in `need`, in file order."""
        w = Path(self.work)
        for r in range(self.tasks):
            with open(w / f"docs-{r:05d}.jsonl", encoding="utf-8") as f:
                for j, line in enumerate(f):
                    if j + int(offsets[r]) in need:
                        yield j + int(offsets[r]), json.loads(line)["text"]

    def _exact_filter(self, edges, ids, offsets, cfg) -> np.ndarray:
        """Keep only candidate edges whose exact shingle Jaccard reaches the threshold.

        Memory stays bounded: bucket heads are taken `exact_batch_docs` at a time; their shingle sets are held while
        the documents linked to them stream past once.
        """
        from ledgerlm.data.minhash import exact_jaccard

        hasher = MinHasher(cfg.near_dedup.params())
        thr = cfg.near_dedup.exact_jaccard
        ok = np.zeros(len(edges), dtype=bool)
        heads = np.unique(edges[:, 0])
        for lo in range(0, len(heads), cfg.near_dedup.exact_batch_docs):
            batch = set(heads[lo : lo + cfg.near_dedup.exact_batch_docs].tolist())
            sel = np.flatnonzero(np.isin(edges[:, 0], list(batch)))
            held = {g: np.unique(hasher.shingles([t])[0]) for g, t in self._docs(offsets, batch)}
            by_member: dict[int, list[int]] = {}
            for e in sel.tolist():
                by_member.setdefault(int(edges[e, 1]), []).append(e)
            for g, t in self._docs(offsets, set(by_member)):
                sh = hasher.shingles([t])[0]
                for e in by_member[g]:
                    a = int(edges[e, 0])
                    ok[e] = ids[a] == ids[g] or exact_jaccard(held[a], sh) >= thr
        return edges[ok]


def metas_source(metas: list[dict], g: int, offsets: np.ndarray) -> str:
    r = int(np.searchsorted(offsets, g, side="right") - 1)
    return metas[r]["source"][g - int(offsets[r])]


# ----------------------------------------------------------------------------- step 3: apply


class ApplyStep(PipelineStep):
    name = "curate: apply decisions"
    type = "ledgerlm"

    def __init__(self, cfg: Config, work: str):
        super().__init__()
        self.cfg, self.work = cfg, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        cfg, w = self.cfg, Path(self.work)
        plan = np.load(w / "plan.npz")
        boiler, owner, offsets = plan["boiler"], plan["owner"], plan["offsets"]
        ignore = {k.split(":", 1)[1]: plan[k] for k in plan.files if k.startswith("ignore:")}
        removed = json.loads((w / f"removed-{rank:05d}.json").read_text())
        meta = json.loads((w / f"meta-{rank:05d}.json").read_text())
        benchmarks = _load_bench_cache(w)
        matcher = Matcher(benchmarks, ignore) if benchmarks else None
        by_name = {b.name: b for b in benchmarks}
        stats: dict = {
            "segment_dedup:segments_removed": 0,
            "segment_dedup:words_removed": 0,
            "segment_dedup:docs_changed": 0,
        }
        kept = _Shards(str(w / f"kept-{rank:05d}-{{shard:05d}}.jsonl"), cfg.shards)
        excl = _Shards(str(w / f"excl2-{rank:05d}-{{shard:05d}}.jsonl"), cfg.shards)
        base = int(offsets[rank])
        try:
            with open(w / f"docs-{rank:05d}.jsonl", encoding="utf-8") as f:
                for j, line in enumerate(f):
                    d = json.loads(line)
                    rec = Record(d["source"], d["file"], d["line"], text=d["text"], orig_id=d["orig_id"], _id=d["id"])
                    words = _words(d["text"])
                    if str(j) in removed:
                        _counter_add(stats, "near_dup", words)
                        excl.write(_excluded(rec, "near_dup", removed[str(j)]))
                        continue
                    text = d["text"]
                    if cfg.segment_dedup.enabled and len(boiler):
                        text, k = segdedup.apply(text, cfg.segment_dedup, boiler, owner, base + j)
                        if k:
                            left = _words(text)
                            stats["segment_dedup:segments_removed"] += k
                            stats["segment_dedup:docs_changed"] += 1
                            if left < cfg.segment_dedup.min_words:
                                _counter_add(stats, "segment_dedup:too_short", words)
                                excl.write(
                                    _excluded(
                                        rec,
                                        "segment_dedup:too_short",
                                        {
                                            "segments_removed": k,
                                            "words_left": left,
                                            "threshold": cfg.segment_dedup.min_words,
                                        },
                                    )
                                )
                                continue
                            stats["segment_dedup:words_removed"] += words - left
                            words = left  # later drops count only what segment dedup left
                    if matcher is not None and str(j) in meta["matches"]:
                        text, verdict = self._decontaminate(text, matcher, by_name, stats)
                        if verdict is not None:
                            reason, details = verdict
                            _counter_add(stats, reason, words)
                            excl.write(_excluded(rec, reason, details))
                            continue
                    out = {"id": rec.id, "source": rec.source, "text": text}
                    if rec.orig_id is not None:
                        out["orig_id"] = rec.orig_id
                    _counter_add(stats, "kept", _words(text))
                    kept.write(out)
        finally:
            kept.close()
            excl.close()
        atomic_write_json(w / f"stats2-{rank:05d}.json", stats)
        return data

    def _decontaminate(self, text, matcher, by_name, stats):
        """Returns (text, None) when the document stays (possibly cut), or (text, (reason, details)) to drop it."""
        dc = self.cfg.decontam
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
            stats[f"cut:{name}"] = stats.get(f"cut:{name}", 0) + 1
            stats["decontam:words_cut"] = stats.get("decontam:words_cut", 0) + _words(text) - _words(new)
            text = new
        return text, None


# ----------------------------------------------------------------------------- step 4: merge


class MergeStep(PipelineStep):
    name = "curate: write output shards sorted by id"
    type = "ledgerlm"

    def __init__(self, work: str, out: str, tasks: int):
        super().__init__()
        self.work, self.out, self.tasks = work, out, tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        w, out = Path(self.work), Path(self.out)
        kept = []
        for r in range(self.tasks):
            p = w / f"kept-{r:05d}-{rank:05d}.jsonl"
            if p.exists():
                kept += [rec for _, rec in iter_jsonl(p)]
        kept.sort(key=lambda d: d["id"])
        excl = []
        for prefix in ("excl1", "excl2"):
            for r in range(self.tasks):
                p = w / f"{prefix}-{r:05d}-{rank:05d}.jsonl"
                if p.exists():
                    excl += [rec for _, rec in iter_jsonl(p)]
        excl.sort(key=lambda d: (d["id"], d["file"], d["line"]))
        for sub, recs in (("kept", kept), ("excluded", excl)):
            (out / sub).mkdir(parents=True, exist_ok=True)
            body = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in recs)
            atomic_write_text(out / sub / f"part-{rank:05d}.jsonl", body)
        return data


# ----------------------------------------------------------------------------- running


def _save_bench_cache(work: Path, benchmarks: list[Benchmark]) -> None:
    arrays = {}
    info = []
    for i, b in enumerate(benchmarks):
        info.append({"name": b.name, "n": b.n, "n_items": b.n_items, "short_items": b.short_items})
        arrays[f"h{i}"], arrays[f"ph{i}"], arrays[f"pi{i}"] = b.hashes, b.pair_hash, b.pair_item
    np.savez(work / "benchmarks.npz", **arrays)
    atomic_write_json(work / "benchmarks.json", info)


def _load_bench_cache(work: Path) -> list[Benchmark]:
    p = work / "benchmarks.json"
    if not p.exists():
        return []
    info = json.loads(p.read_text())
    z = np.load(work / "benchmarks.npz")
    return [
        Benchmark(d["name"], d["n"], d["n_items"], d["short_items"], z[f"h{i}"], z[f"ph{i}"], z[f"pi{i}"])
        for i, d in enumerate(info)
    ]


def _execute(cfg: Config, step, tasks: int, logs: Path, resume: bool) -> None:
    """Run one step on the configured datatrove executor and wait for it."""
    ex = cfg.executor
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        LocalPipelineExecutor(
            [step], tasks=tasks, workers=min(ex.workers, tasks), logging_dir=str(logs), skip_completed=resume
        ).run()
    elif ex.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        RayPipelineExecutor(
            [step],
            tasks=tasks,
            workers=min(ex.workers, tasks),
            logging_dir=str(logs),
            skip_completed=resume,
            cpus_per_task=ex.slurm_cpus_per_task,
        ).run()
    else:
        from datatrove.executor import SlurmPipelineExecutor

        job = SlurmPipelineExecutor(
            [step],
            tasks=tasks,
            workers=min(ex.workers, tasks),
            time=ex.slurm_time,
            partition=ex.slurm_partition,
            cpus_per_task=ex.slurm_cpus_per_task,
            mem_per_cpu_gb=ex.slurm_mem_per_cpu_gb,
            logging_dir=str(logs),
            skip_completed=resume,
            job_name=f"curate-{logs.name}",
            venv_path=os.environ.get("VIRTUAL_ENV"),
        )
        job.run()
        # sbatch returns at once: wait for every task's completion marker before the next step reads its outputs
        while job.get_incomplete_ranks(skip_completed=True):
            time.sleep(ex.poll_seconds)
    for r in range(tasks):
        if not (logs / "completions" / f"{r:05d}").exists():
            raise RuntimeError(f"curate step {logs.name}: task {r} did not complete (see {logs}/logs)")


def curate(
    cfg: Config, out_dir: Path, log=None, resume: bool = False, logs_dir: Path | None = None, progress=None
) -> dict:
    """Run the four steps into `out_dir` (kept/, excluded/, contamination.md/.csv); returns counters and the table.

    datatrove's task logs and completion markers go to `logs_dir` (default: inside the work directory, removed at the
    end); the stage keeps them under RUN/logs/curate-datatrove/. `progress(total=4)` shows the steps
    (StageContext.progress).
    """
    if not cfg.sources:
        raise ValueError("curate: no sources (give --input PATH or curate.sources in the recipe)")
    quality_configs(cfg)  # a bad per-source gate override fails here, before anything is written
    if not resume:  # (a resumed run has the same inputs: the ledger compared their hashes)
        check_sources(cfg.sources)  # a missing, unknown-format or empty input: one line, exit 2
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    logs = Path(logs_dir) if logs_dir is not None else work / "logs"
    for d in (work, logs):
        if not resume and d.exists():
            shutil.rmtree(d)
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("kept", "excluded"):
        if (out_dir / sub).exists() and not resume:
            shutil.rmtree(out_dir / sub)
    t0 = time.time()
    tasks = cfg.executor.tasks
    if cfg.decontam.active and not (work / "benchmarks.json").exists():
        _save_bench_cache(work, load_benchmarks(cfg.decontam))
    timings = {}
    view = progress(total=4, unit="step") if progress else None
    for name, step, n in (
        ("scan", ScanStep(cfg, str(work)), tasks),
        ("plan", PlanStep(cfg, str(work), tasks), 1),
        ("apply", ApplyStep(cfg, str(work)), tasks),
        ("merge", MergeStep(str(work), str(out_dir), tasks), cfg.shards),
    ):
        t = time.time()
        if view:
            view.update(0, now=name)
        _execute(cfg, step, n, logs / name, resume)
        timings[name] = round(time.time() - t, 3)
        if view:
            view.update(1, now=None, **{name: f"{timings[name]:.1f}s"})
        if log:
            log.info("curate step %s done in %.1fs", name, timings[name])
    if view:
        view.close()
    result = _summarise(cfg, work, tasks)
    result["quality_by_source"] = quality_by_source(cfg)
    result["timings_s"] = {**timings, "total": round(time.time() - t0, 3)}
    rows = result["contamination"]
    if cfg.decontam.active:
        atomic_write_text(out_dir / "contamination.md", to_markdown(rows))
        atomic_write_text(out_dir / "contamination.csv", to_csv(rows))
    if not cfg.keep_work:
        shutil.rmtree(work)
    return result


def _summarise(cfg: Config, work: Path, tasks: int) -> dict:
    """Merge the per-task counters into the ledger's funnel: documents and tokens (whitespace words) per reason and
    per step."""
    s1 = [json.loads((work / f"stats1-{r:05d}.json").read_text()) for r in range(tasks)]
    s2 = [json.loads((work / f"stats2-{r:05d}.json").read_text()) for r in range(tasks)]
    docs, words = Counter(), Counter()
    by_source = Counter()
    q_by_source: dict[str, Counter] = {}
    for s in s1 + s2:
        for k, v in s.items():
            if k == "quality_dropped_by_source":
                for src, reasons in v.items():
                    q_by_source.setdefault(src, Counter()).update(reasons)
            elif isinstance(v, list):
                docs[k] += v[0]
                words[k] += v[1]
            elif isinstance(v, dict):
                by_source.update(v)
            else:
                words[k] += v
    read, kept = docs.pop("read"), docs.pop("kept", 0)
    read_w, kept_w = words.pop("read"), words.pop("kept", 0)
    dropped = {k: docs[k] for k in sorted(docs)}
    dropped_w = {k: words[k] for k in sorted(docs)}
    if kept + sum(dropped.values()) != read:  # the invariant the whole stage is built around
        raise RuntimeError(f"curate lost documents: read {read}, kept {kept}, excluded {sum(dropped.values())}")

    def step(name: str, prefixes: tuple[str, ...], prev: dict | None, removed: int = 0, extra: dict | None = None):
        """One funnel row; tokens are whitespace words. `removed`: tokens cut from documents that stay."""
        n_in = prev["kept"] if prev else read
        t_in = prev["tokens_kept"] if prev else read_w
        d = {k: v for k, v in dropped.items() if k.startswith(prefixes)}
        t_out = sum(dropped_w[k] for k in d)
        return {
            "step": name,
            "in": n_in,
            "kept": n_in - sum(d.values()),
            "dropped": d,  # documents per reason
            "dropped_docs": sum(d.values()),
            "tokens_in": t_in,
            "tokens_kept": t_in - t_out - removed,
            "tokens_dropped": t_out,
            **(extra or {}),
        }

    steps = [step("read", ("malformed:",), None)]
    steps.append(step("quality", ("quality:",), steps[-1]))
    steps.append(step("near_dedup", ("near_dup",), steps[-1]))
    seg_removed = words["segment_dedup:words_removed"]
    seg_extra = {
        "segments_removed": words["segment_dedup:segments_removed"],
        "docs_changed": words["segment_dedup:docs_changed"],
        "tokens_removed": seg_removed,
    }
    steps.append(step("segment_dedup", ("segment_dedup:",), steps[-1], seg_removed, seg_extra))
    cut = {k: words[k] for k in words if k.startswith("cut:")}
    cut_w = words.get("decontam:words_cut", 0)
    steps.append(step("decontaminate", ("contaminated:",), steps[-1], cut_w, {"docs_cut": cut, "tokens_cut": cut_w}))
    if steps[-1]["kept"] != kept or steps[-1]["tokens_kept"] != kept_w:
        raise RuntimeError(f"curate funnel does not add up: {steps[-1]} vs kept {kept} ({kept_w} tokens)")
    plan = json.loads((work / "plan.json").read_text())
    rows = [
        {
            **{c: r[c] for c in COLUMNS},
            "action": cfg.decontam.action,
            "docs_dropped": dropped.get(f"contaminated:{r['benchmark']}", 0),
            "docs_cut": cut.get(f"cut:{r['benchmark']}", 0),
        }
        for r in plan["contamination"]
    ]
    return {
        "counters": {
            "read": read,
            "kept": kept,
            "dropped": dropped,
            "tokens_read": read_w,
            "tokens_kept": kept_w,
            "dropped_tokens": dropped_w,
            "by_source": dict(sorted(by_source.items())),
            "quality_dropped_by_source": {s: dict(sorted(q_by_source[s].items())) for s in sorted(q_by_source)},
            "by_step": steps,
            **plan["stats"],
        },
        "contamination": rows,
    }


# ----------------------------------------------------------------------------- the stage protocol


def inputs(cfg: Config, ctx) -> dict:
    out = {}
    for s in cfg.sources:
        if s.format == "demo":
            continue  # generated by our own code from the recorded config: nothing external to hash
        out[f"source:{s.name}"] = f"hub:{s.hf_name}" if (s.format == "hf" or not s.path) else Path(s.path)
    for spec in cfg.decontam.files:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        out[f"benchmark:{name or Path(path).name.split('.')[0]}"] = Path(path)
    if cfg.decontam.tasks and cfg.decontam.data_dir:
        out["benchmark_data_dir"] = Path(cfg.decontam.data_dir)
    return out


def run(cfg: Config, ctx):
    res = curate(
        cfg,
        ctx.out_dir,
        log=ctx.log,
        resume=getattr(ctx, "resuming", False),
        logs_dir=ctx.run_dir / "logs" / "curate-datatrove",
        progress=ctx.progress,
    )
    c = res["counters"]
    ctx.log.info("curate: read %d, kept %d, dropped %s", c["read"], c["kept"], c["dropped"])
    outputs = {"kept": ctx.out_dir / "kept", "excluded": ctx.out_dir / "excluded"}
    if cfg.decontam.active:
        outputs["contamination_md"] = ctx.out_dir / "contamination.md"
        outputs["contamination_csv"] = ctx.out_dir / "contamination.csv"
    return StageResult(
        outputs=outputs,
        counters=c,
        metrics={"contamination": res["contamination"], "timings_s": res["timings_s"]},
        extra={
            "keep_rule": KEEP_RULE,
            "executor": asdict(cfg.executor),
            # which gates applied to which source's documents (sources not listed: config.quality)
            "quality_by_source": res["quality_by_source"],
        },
        summary=curate_summary(c),
    )


def curate_summary(c: dict) -> list[str]:
    """Kept and dropped documents, the drops by reason (largest first)."""
    read, kept = c["read"], c["kept"]
    reasons = sorted(c["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [
        f"kept {kept:,} of {read:,} documents ({kept / read:.1%})" if read else "read no documents",
        "dropped: " + (", ".join(f"{k} {v:,}" for k, v in reasons[:6]) if reasons else "none"),
    ]
    if len(reasons) > 6:  # the full list is in the record and the report
        lines[-1] += f", and {sum(v for _, v in reasons[6:]):,} documents for {len(reasons) - 6} other reasons"
    if c.get("tokens_read"):
        lines.append(
            f"words kept {c['tokens_kept']:,} of {c['tokens_read']:,} ({c['tokens_kept'] / c['tokens_read']:.1%})"
        )
    return lines


def plan(cfg: Config, ctx) -> list[str]:
    lines = [
        f"sources: {', '.join(s.name for s in cfg.sources) or '(none)'}; executor {cfg.executor.kind} "
        f"x{cfg.executor.tasks} tasks"
    ]
    own = quality_by_source(cfg)
    if own:
        lines.append(
            "quality: stage-wide gates; own gates for "
            + ", ".join(f"{k} ({len(v['changed'])} changed)" for k, v in own.items())
        )
    if cfg.near_dedup.enabled:
        nd = cfg.near_dedup
        lines.append(f"near-dedup: MinHash {nd.ngram}-grams, {nd.bands}x{nd.rows}; keep {KEEP_RULE}")
    if cfg.decontam.active:
        lines.append(f"decontaminate against {cfg.decontam.tasks + cfg.decontam.files} ({cfg.decontam.action})")
    return lines


def _input_source(spec: str, text_field: str | None) -> dict:
    name, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
    name = name or Path(path).name.split(".")[0]
    out = {"name": name, "path": path}
    if text_field:
        out["text_field"] = text_field
    return out


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="source file or directory (repeatable); replaces the recipe's sources",
    )
    p.add_argument("--text-field", default=None, help="JSON/Parquet field holding the text ('*' = every string)")
    p.add_argument(
        "--decontaminate",
        action="append",
        default=[],
        metavar="TASK_OR_FILE",
        help="benchmark task name or file to decontaminate against (repeatable)",
    )
    p.add_argument("--decontam-action", choices=["drop", "cut"], default=None, help="decontam.action: drop a matching document or cut the match")
    p.add_argument("--data-dir", default=None, help="local benchmark data for task names (e.g. ../shared/data)")
    p.add_argument("--tasks", type=int, default=None, help="datatrove tasks")
    p.add_argument("--workers", type=int, default=None, help="datatrove workers (processes)")


def cli_overrides(args) -> dict:
    out: dict = {}
    if getattr(args, "input", None):
        out["sources"] = [_input_source(s, args.text_field) for s in args.input]
    if getattr(args, "decontaminate", None):
        files = [x for x in args.decontaminate if Path(x.rpartition("=")[2]).is_file()]
        out["decontam.files"] = files
        out["decontam.tasks"] = [x for x in args.decontaminate if x not in files]
    for flag, key in (
        ("decontam_action", "decontam.action"),
        ("data_dir", "decontam.data_dir"),
        ("tasks", "executor.tasks"),
        ("workers", "executor.workers"),
    ):
        if getattr(args, flag, None) is not None:
            out[key] = getattr(args, flag)
    return out


# ----------------------------------------------------------------------------- `ledgerlm contamination`


def add_contamination_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="+", help="JSONL/Parquet/text file(s) or directories (e.g. an SFT or DPO set)")
    p.add_argument(
        "--against",
        action="append",
        required=True,
        metavar="TASKS",
        help="comma-separated task names or benchmark files (repeatable)",
    )
    p.add_argument("--text-field", default="*", help="field with the text (default '*': every string of a record)")
    p.add_argument("--data-dir", default=None, help="local benchmark data for task names")
    p.add_argument("--max-doc-freq", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="also write contamination.md and .csv into this directory")


def contamination_cmd(args) -> int:
    """Print the contamination table of any dataset; the dataset is only read."""
    from ledgerlm.data.decontam import contamination_table

    against = [x for a in args.against for x in a.split(",") if x]
    files = [x for x in against if Path(x.rpartition("=")[2]).is_file()]
    dc = DecontamConfig(
        tasks=[x for x in against if x not in files],
        files=files,
        data_dir=args.data_dir,
        max_doc_freq=args.max_doc_freq,
    )
    benchmarks = load_benchmarks(dc)
    bad = Counter()

    def texts():
        for i, path in enumerate(args.dataset):
            spec = SourceSpec(name=f"d{i}", path=path, text_field=args.text_field)
            for rec in iter_records(spec):
                if rec.reason:
                    bad[rec.reason] += 1
                    continue
                yield rec.text

    rows = contamination_table(texts(), benchmarks, args.max_doc_freq)
    md = to_markdown(rows)
    print(md, end="")
    if bad:
        print(f"(skipped unreadable records: {dict(bad)})", file=sys.stderr)
    if args.out:
        atomic_write_text(args.out / "contamination.md", md)
        atomic_write_text(args.out / "contamination.csv", to_csv(rows))
    return 0


# ----------------------------------------------------------------------------- `ledgerlm inspect`


def add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="run directory or its curate/ directory")
    p.add_argument(
        "--reason", default=None, help="reason or prefix (e.g. near_dup, quality, quality:gopher_stop_words)"
    )
    p.add_argument("-n", type=int, default=5, help="samples to print")
    p.add_argument("--chars", type=int, default=400, help="characters of text to show per sample")
    p.add_argument("--seed", type=int, default=0, help="which samples (deterministic)")


def _excluded_dir(d: Path) -> Path:
    for cand in (d / "excluded", d / "curate" / "excluded"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"{d}: no excluded/ or curate/excluded/ directory (run `ledgerlm curate` first)")


def inspect_cmd(args, out=None) -> int:
    out = out or sys.stdout
    recs = []
    for p in sorted(_excluded_dir(args.dir).glob("*.jsonl")):
        with open(p, encoding="utf-8") as f:
            recs += [json.loads(x) for x in f if x.strip()]
    counts = Counter(r["reason"] for r in recs)
    if not args.reason:
        print(f"{len(recs)} excluded documents:", file=out)
        for k, v in counts.most_common():
            print(f"  {v:8d}  {k}", file=out)
        return 0
    sel = [r for r in recs if r["reason"] == args.reason or r["reason"].startswith(args.reason.rstrip(":") + ":")]
    if not sel:
        print(f"no documents excluded for {args.reason!r} (reasons: {', '.join(sorted(counts))})", file=out)
        return 1
    rng = np.random.default_rng(args.seed)
    pick = sorted(rng.choice(len(sel), size=min(args.n, len(sel)), replace=False).tolist())
    print(f"{len(sel)} documents excluded for {args.reason!r}; showing {len(pick)}", file=out)
    for i in pick:
        r = sel[i]
        text = r.get("text") or ""
        print(f"\n--- {r['id']}  source={r['source']}  {r['file']}:{r['line']}  reason={r['reason']}", file=out)
        print(f"    details: {json.dumps(r.get('details', {}), ensure_ascii=False)[:400]}", file=out)
        print("    " + (text[: args.chars] + ("…" if len(text) > args.chars else "")).replace("\n", "\n    "), file=out)
    return 0


def inspect_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ledgerlm inspect")
    add_inspect_args(p)
    return inspect_cmd(p.parse_args(argv))


SPEC = StageSpec(
    name="curate",
    config=Config,
    run=run,
    help="quality gates, near-dedup, segment dedup and decontamination of raw text",
    inputs=inputs,
    plan=plan,
    add_cli_args=add_cli_args,
    cli_overrides=cli_overrides,
)
