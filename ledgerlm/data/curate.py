"""The `curate` stage: read sources -> quality filters -> cross-source near-dedup -> segment dedup -> decontamination.

Small datatrove pipeline steps, each run by a datatrove executor (local, Slurm or Ray by `executor.kind`), each
spread over tasks, each talking to the next only through the typed work directory (`ledgerlm.data.workdir`):

  scan     (T tasks)  read this task's share of every source in chunks of `chunk_docs` documents; quarantine
                      malformed records; run the quality filters; for each surviving document write its text, id,
                      origin, score, LSH band keys, segment hashes and benchmark n-gram hits to disk. A killed task
                      resumes after its last completed chunk.
  index    (1 task)   each document's rank in id order and in keep order (eligible first), by external sort: each
                      scan chunk's keys sorted into a run, the runs merged in blocks (`ledgerlm.data.extsort`).
  lsh      (B tasks)  one task per LSH band: that band's keys sorted per chunk and merged the same way; edges.
  cluster  (T tasks)  candidate groups split by component; verified greedy clusters (see `ledgerlm.data.dedup`).
  segments (K tasks)  boilerplate lines, one task per range of segment hashes, over documents that survived.
  contam   (1 task)   n-grams too common to count as leaks and the contamination table.
  apply    (T tasks)  apply every decision chunk by chunk, writing sorted runs per output shard.
  merge    (S tasks)  heap-merge the runs of each output shard into kept/ and excluded/ (sorted by id).

Memory per process is bounded by settings, not by the corpus: scan and apply hold one chunk (`chunk_docs`/`chunk_mb`),
index and lsh one merge buffer (`sort_buffer_mb`), segments one hash bucket, cluster its candidates only; what grows
is a byte per document (`alive`) and the near-duplicate candidates and drops. Global columns (ids, ranks, offsets)
live in .npy files read by range or gathered block by block, never memory-mapped (mapped pages stay resident).
Decisions depend only on content (ids, shingles), so outputs are byte-identical whatever the
number of tasks or workers. kept + excluded = read, always.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep  # the base class only adds stats and a name

from ledgerlm import hub
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
from ledgerlm.data.dedup import greedy_clusters
from ledgerlm.data.extsort import NpyRows, NpyWriter, merged_blocks, order_bytes, pack, rank_runs
from ledgerlm.data.filters import QualityGates
from ledgerlm.data.minhash import MinHasher, MinHashParams, band_keys, components
from ledgerlm.data.quality import DocView, QualityConfig, overlay
from ledgerlm.data.runs import keyed_line, merge_runs, write_run
from ledgerlm.data.segdedup import SegDedupConfig
from ledgerlm.data.sources import Record, SourceSpec, check_sources, iter_records
from ledgerlm.data.workdir import Chunk, WorkDir
from ledgerlm.io import atomic_path, atomic_write_json, atomic_write_text
from ledgerlm.stage import StageResult, StageSpec


@dataclass
class NearDedupConfig:
    enabled: bool = True
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1
    # a candidate pair is a duplicate only if its exact shingle Jaccard reaches this (null: unverified LSH groups)
    exact_jaccard: float | None = 0.75
    batch_docs: int = 256  # documents hashed together (amortises numpy overhead)

    def params(self) -> MinHashParams:
        return MinHashParams(self.ngram, self.bands, self.rows, self.seed)

    def validate(self) -> None:
        if self.exact_jaccard is not None and not 0 < self.exact_jaccard <= 1:
            raise ValueError("exact_jaccard must be in (0, 1] or null")


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
    sources: list[SourceSpec] = field(default_factory=list)  # inputs: name, path or hub dataset, format, text field
    quality: QualityConfig = field(default_factory=QualityConfig)  # quality gates (a source's `quality:` overrides)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)  # MinHash/LSH near-duplicates, across sources
    segment_dedup: SegDedupConfig = field(default_factory=SegDedupConfig)  # exact repeated lines/paragraphs
    decontam: DecontamConfig = field(default_factory=DecontamConfig)  # benchmark n-gram decontamination
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # datatrove executor: local, ray or slurm
    shards: int = 1  # output shards of kept/ and excluded/ (by document id)
    # memory bound of the scan and apply processes: a chunk ends at this many documents or megabytes of text
    chunk_docs: int = 20_000
    chunk_mb: int = 128  # a scan/apply chunk ends at this many megabytes of text (or chunk_docs documents)
    segment_buckets: int = 16  # boilerplate tasks at least (more when one would hold over sort_buffer_mb of segments)
    sort_buffer_mb: int = 16  # memory bound of the global steps: index/lsh merge buffers, one boilerplate task
    keep_work: bool = False  # keep the intermediate work directory (.work/) for debugging

    def validate(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if self.shards < 1:
            raise ValueError("shards must be >= 1")
        if min(self.chunk_docs, self.chunk_mb, self.segment_buckets, self.sort_buffer_mb) < 1:
            raise ValueError("chunk_docs, chunk_mb, segment_buckets and sort_buffer_mb must be >= 1")
        if self.segment_buckets > FINE_BUCKETS:
            raise ValueError(f"segment_buckets must be <= {FINE_BUCKETS}")


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


KEEP_RULE = (
    "verified duplicates only (exact shingle Jaccard >= near_dedup.exact_jaccard against the kept copy); kept copy: "
    "a document decontamination will not drop first, then highest source priority, then highest quality score, "
    "then smallest id (then file position)"
)

# The funnel's steps, in order. A drop reason is typed by the step that made it (Drop.step), never by its text.
STEPS = ("read", "quality", "near_dedup", "segment_dedup", "decontaminate")


@dataclass(frozen=True)
class Drop:
    step: str  # one of STEPS
    reason: str  # the name written into excluded/ and the ledger (e.g. quality:gopher_word_count)


NEAR_DUP = Drop("near_dedup", "near_dup")
TOO_SHORT = Drop("segment_dedup", "segment_dedup:too_short")


class Counters:
    """Per-chunk counters: documents and whitespace words per (step, reason), plus named totals. JSON-able."""

    def __init__(self, d: dict | None = None):
        d = d or {}
        self.dropped: dict[str, dict[str, list[int]]] = d.get("dropped", {})
        self.totals: Counter = Counter(d.get("totals", {}))
        self.by_source: Counter = Counter(d.get("by_source", {}))
        self.quality_by_source: dict[str, Counter] = {k: Counter(v) for k, v in d.get("quality_by_source", {}).items()}

    def drop(self, why: Drop, words: int) -> None:
        c = self.dropped.setdefault(why.step, {}).setdefault(why.reason, [0, 0])
        c[0] += 1
        c[1] += words

    def add(self, other: Counters) -> None:
        for step, reasons in other.dropped.items():
            for r, (n, w) in reasons.items():
                c = self.dropped.setdefault(step, {}).setdefault(r, [0, 0])
                c[0] += n
                c[1] += w
        self.totals.update(other.totals)
        self.by_source.update(other.by_source)
        for s, q in other.quality_by_source.items():
            self.quality_by_source.setdefault(s, Counter()).update(q)

    def to_dict(self) -> dict:
        return {
            "dropped": self.dropped,
            "totals": dict(self.totals),
            "by_source": dict(self.by_source),
            "quality_by_source": {k: dict(v) for k, v in self.quality_by_source.items()},
        }


def _words(text: str) -> int:
    return len(text.split())


def _shard_of(doc_id: str, shards: int) -> int:
    return int(doc_id[:8], 16) % shards if shards > 1 and not doc_id.startswith("bad-") else 0


def _save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _save_npy(path: Path, a: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, a)


def _set_pdeathsig() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers may outlive a killed main process
        pass


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS: glibc keeps it, so a chunk's texts would stay in RSS chunk after chunk."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


_GUARD_PID = 0  # the stage's main process while it runs its executors


def _after_fork_in_child() -> None:
    """A process forked by the stage's main process (datatrove's Manager) dies with it, even on kill -9."""
    if _GUARD_PID and os.getppid() == _GUARD_PID:
        _set_pdeathsig()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Step(PipelineStep):
    """One curate step: `run_task(rank, world)` does task `rank`'s share, reading and writing only the work dir."""

    type = "ledgerlm"
    in_pool = False  # set when a local executor runs it in pool workers: they exit when their parent dies

    def __init__(self, cfg: Config, work: str, tasks: int):
        super().__init__()
        self.cfg, self.work, self.tasks = cfg, work, tasks

    @property
    def wd(self) -> WorkDir:
        return WorkDir(self.work)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if self.in_pool:
            if os.getppid() == 1:  # the parent is already gone
                os._exit(1)
            _set_pdeathsig()
        self.run_task(rank, world_size)
        _trim_heap()  # one process may run several steps: what this one freed goes back now
        return data

    def run_task(self, rank: int, world: int) -> None:
        raise NotImplementedError


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


# ----------------------------------------------------------------------------- scan


FINE_BITS = 12  # segment hashes by their top 12 bits: a boilerplate task takes a contiguous range of these buckets
FINE_BUCKETS = 1 << FINE_BITS
SEGMENT_BYTES = 100  # a boilerplate task holds each of its segments as ~100 bytes (hash, document, rank, sort indices)


class _ScanChunk:
    """One chunk of a scan task, built in memory up to `chunk_docs` documents / `chunk_mb` of text, then written."""

    def __init__(self, step: ScanStep, chunk: Chunk):
        self.step, self.chunk, self.cfg = step, chunk, step.cfg
        self.counters = Counters()
        self.consumed = 0
        self.text_bytes = 0
        self.files: dict[str, int] = {}
        self.cols: dict[str, list] = {k: [] for k in ("id", "file", "line", "source", "score", "words", "offset")}
        self.excl: dict[int, list[bytes]] = {}
        self.edits: list[bytes] = []  # C4's line edits of kept documents (keyed lines, for c4_edits.jsonl)
        self.batch: list[np.ndarray] = []  # word hashes of the documents waiting for their signatures
        self.keys: list[np.ndarray] = []
        self.valid: list[bool] = []
        self.seg_h: list[np.ndarray] = []
        self.seg_d: list[np.ndarray] = []
        self.match: list[tuple[int, int, np.ndarray]] = []
        self.docs_path = step.wd.scan(chunk, "docs.jsonl")
        self.docs = open(self.docs_path, "wb")
        self.offset = 0

    def full(self) -> bool:
        """Records read (kept or not) and bytes held (texts written, excluded records kept for the sorted run)."""
        return self.consumed >= self.cfg.chunk_docs or self.text_bytes >= self.cfg.chunk_mb << 20

    def exclude(self, rec: Record, why: Drop, details: dict, words: int) -> None:
        self.counters.drop(why, words)
        line = keyed_line(_excluded(rec, why.reason, details))
        self.text_bytes += len(line)
        self.excl.setdefault(_shard_of(rec.id, self.cfg.shards), []).append(line)

    def add(self, rec: Record) -> None:
        s, cfg = self.step, self.cfg
        self.consumed += 1
        view = None if rec.reason else DocView(rec.text)  # viewed once: every gate reads it (tokens on first use)
        words = view.ws_words if view else _words(rec.text) if rec.text else 0
        self.counters.totals["read"] += 1
        self.counters.totals["read_words"] += words
        self.counters.by_source[rec.source] += 1
        if rec.reason:
            self.exclude(rec, Drop("read", rec.reason), {"detail": rec.detail, "raw": rec.raw}, 0)
            return
        reason, details, score, edit = s.gates[rec.source].check_view(view)
        if reason:
            self.exclude(rec, Drop("quality", reason), details, words)
            self.counters.quality_by_source.setdefault(rec.source, Counter())[reason] += 1
            return
        text = rec.text
        if edit is not None:  # C4 removed lines: the kept text is the edited text; what went, and why, is recorded
            text = edit.text
            view = edit.view or DocView(text)  # the gates' view of the edited text (its words already split)
            left = view.ws_words
            t = self.counters.totals
            t["c4_edited_docs"] += 1
            t["c4_words_removed"] += words - left
            for r, (n_lines, n_chars) in edit.removed.items():
                t[f"c4_lines:{r}"] += n_lines
                t[f"c4_chars:{r}"] += n_chars
            rec_edit = {
                "id": rec.id,
                "source": rec.source,
                "file": rec.file,
                "line": rec.line,
                "removed": edit.removed,
                "words_removed": words - left,
                "lines": edit.lines,
            }
            self.edits.append(keyed_line(rec_edit))
            self.text_bytes += len(self.edits[-1])
            words = left
        i = len(self.cols["id"])
        line = (
            json.dumps(
                {
                    "id": rec.id,
                    "source": rec.source,
                    "text": text,
                    "orig_id": rec.orig_id,
                    "file": rec.file,
                    "line": rec.line,
                },
                ensure_ascii=False,
            )
            + "\n"
        ).encode("utf-8", "surrogatepass")
        self.docs.write(line)
        for k, v in (
            ("id", rec.id),
            ("file", self.files.setdefault(rec.file, len(self.files))),
            ("line", rec.line),
            ("source", s.source_idx[rec.source]),
            ("score", score),
            ("words", words),
            ("offset", self.offset),
        ):
            self.cols[k].append(v)
        self.offset += len(line)
        self.text_bytes += len(line)
        if cfg.segment_dedup.enabled:
            h = segdedup.doc_segment_hashes(text, cfg.segment_dedup)
            self.seg_h.append(h)
            self.seg_d.append(np.full(len(h), i, dtype=np.int32))
        if s.matcher is not None and (m := s.matcher.match(text)):
            for b, hs in m.items():
                self.match.append((i, s.bench_idx[b], hs))
        if s.hasher is not None:
            self.batch.append(view.norm_hashes)
            if len(self.batch) >= cfg.near_dedup.batch_docs:
                self.flush()

    def flush(self) -> None:
        if self.batch:
            hasher = self.step.hasher
            sig = hasher.signatures_from_shingles(*hasher.shingles_of_words(self.batch))
            self.valid.extend((~np.all(sig == MinHasher.EMPTY, axis=1)).tolist())  # no shingle: never a candidate
            self.keys.append(band_keys(sig, self.cfg.near_dedup.params()))
            self.batch.clear()

    def write(self) -> None:
        """Write every artifact of the chunk, then done.json: a chunk with done.json is complete."""
        cfg, wd, c = self.cfg, self.step.wd, self.chunk
        self.flush()
        self.docs.flush()
        os.fsync(self.docs.fileno())
        self.docs.close()
        n = len(self.cols["id"])
        nd = cfg.near_dedup
        keys = np.concatenate(self.keys) if self.keys else np.zeros((n, nd.bands), np.uint64)
        ids = np.array(self.cols["id"], dtype="S32") if n else np.zeros(0, "S32")
        _save_npz(
            wd.scan(c, "meta.npz"),
            ids=ids,
            file_idx=np.array(self.cols["file"], dtype=np.int32),
            line=np.array(self.cols["line"], dtype=np.int64),
            source=np.array(self.cols["source"], dtype=np.int16),
            score=np.array(self.cols["score"], dtype=np.float64),
            words=np.array(self.cols["words"], dtype=np.int64),
            offset=np.array(self.cols["offset"], dtype=np.int64),
            keys=keys,
            valid=np.array(self.valid, dtype=bool) if self.valid else np.zeros(n, bool),
        )
        h = np.concatenate(self.seg_h) if self.seg_h else np.zeros(0, np.uint64)
        d = np.concatenate(self.seg_d) if self.seg_d else np.zeros(0, np.int32)
        order = np.argsort(h, kind="stable")  # by hash: a boilerplate task reads one range of fine buckets
        _save_npy(wd.scan(c, "seg-h.npy"), h[order])
        _save_npy(wd.scan(c, "seg-d.npy"), d[order])
        bounds = np.arange(FINE_BUCKETS, dtype=np.uint64) << np.uint64(64 - FINE_BITS)
        _save_npy(wd.scan(c, "seg-starts.npy"), np.append(np.searchsorted(h[order], bounds), len(h)))
        m_doc = np.array([x[0] for x in self.match for _ in x[2]], dtype=np.int32)
        m_b = np.array([x[1] for x in self.match for _ in x[2]], dtype=np.int16)
        m_h = np.concatenate([x[2] for x in self.match]) if self.match else np.zeros(0, np.uint64)
        _save_npz(wd.scan(c, "match.npz"), doc=m_doc, bench=m_b, h=m_h)
        for shard, lines in self.excl.items():
            write_run(wd.scan_excluded(c, shard), lines)
        if self.edits:
            write_run(wd.scan(c, "edits.run"), self.edits)
        atomic_write_json(
            wd.scan(c, "done.json"),
            {"n": n, "consumed": self.consumed, "files": list(self.files), "counters": self.counters.to_dict()},
        )


def _test_kill_point(name: str) -> None:
    """Tests kill the process (-9) at a named point to check every resume window (LEDGERLM_TEST_KILL_AT=name)."""
    if os.environ.get("LEDGERLM_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class ScanStep(_Step):
    name = "curate: scan (read, quality, signatures)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        self.gates = source_gates(cfg)  # chosen once per source: the per-document path is unchanged
        self.hasher = MinHasher(cfg.near_dedup.params()) if cfg.near_dedup.enabled else None
        benchmarks = _load_bench_cache(wd)
        self.matcher = Matcher(benchmarks) if benchmarks else None
        self.bench_idx = {b.name: i for i, b in enumerate(benchmarks)}
        self.source_idx = {s.name: i for i, s in enumerate(cfg.sources)}
        done = wd.scan_done(rank)  # resume: skip the records of completed chunks
        records = itertools.chain.from_iterable(iter_records(s, rank, world) for s in cfg.sources)
        records = itertools.islice(records, sum(d["consumed"] for d in done), None)
        chunk = _ScanChunk(self, Chunk(rank, len(done)))
        for rec in records:
            chunk.add(rec)
            if chunk.full():
                chunk.write()
                _trim_heap()
                _test_kill_point("scan-chunk")
                chunk = _ScanChunk(self, Chunk(rank, chunk.chunk.chunk + 1))
        if chunk.consumed:
            chunk.write()
        else:
            chunk.docs.close()
            chunk.docs_path.unlink()


# ----------------------------------------------------------------------------- plan: index, lsh, cluster, segments, contam


def _chunk_starts(wd: WorkDir, tasks: int) -> tuple[list[tuple[Chunk, dict]], np.ndarray]:
    chunks = wd.scan_chunks(tasks)
    return chunks, np.concatenate([[0], np.cumsum([d["n"] for _, d in chunks])]).astype(np.int64)


def _merge_rows(cfg: Config, key: np.dtype) -> int:
    """Keys an external merge may hold at once so that it stays within `sort_buffer_mb`: each row is held about three
    times (buffers, concatenation, sorted copy) plus ~40 bytes of indices."""
    return max(1, (cfg.sort_buffer_mb << 20) // (3 * key.itemsize + 40))


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


class IndexStep(_Step):
    name = "curate: index (id order, keep order: external sort)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = _chunk_starts(wd, self.tasks)
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
        _save_npy(wd.plan("edges-same.npy"), same.edges())
        _test_kill_point("index-merge")
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
        _save_npy(self.wd.sort_run(order, i, "keys.npy"), keys[o])
        _save_npy(self.wd.sort_run(order, i, "pos.npy"), o.astype(np.int64))

    def _rank(self, order: str, key: np.dtype, runs: int, on_block=None) -> None:
        keys = [self.wd.sort_run(order, i, "keys.npy") for i in range(runs)]
        ranks = [self.wd.sort_run(order, i, "ranks.bin") for i in range(runs)]
        rank_runs(keys, ranks, _merge_rows(self.cfg, key), on_block)

    def _ranks(self, order: str, i: int) -> np.ndarray:
        """One chunk's ranks in the global order, by document (the merge wrote them in the chunk's sorted order)."""
        o = np.load(self.wd.sort_run(order, i, "pos.npy"))
        out = np.empty(len(o), dtype=np.int64)
        out[o] = np.fromfile(self.wd.sort_run(order, i, "ranks.bin"), dtype=np.int64)
        return out


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


class LshStep(_Step):
    name = "curate: LSH buckets (one task per band: external sort)"

    def run_task(self, rank: int, world: int) -> None:
        wd = self.wd
        chunks, starts = _chunk_starts(wd, self.tasks)
        runs = []
        for i, (c, _) in enumerate(chunks):  # this band's keys of every document with shingles, sorted per chunk
            z = np.load(wd.scan(c, "meta.npz"))
            idx = np.flatnonzero(z["valid"])
            runs.append(wd.sort_run(f"band{rank:03d}", i, "keys.npy"))
            _save_npy(runs[-1], np.sort(pack(LSH_KEY, {"key": z["keys"][idx, rank], "g": starts[i] + idx})))
        buckets = _Buckets()
        for keys, _, _ in merged_blocks(runs, _merge_rows(self.cfg, LSH_KEY)):
            buckets.add(keys)
        _save_npy(wd.edges(rank), buckets.edges())
        for p in runs:
            p.unlink()


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


class ClusterStep(_Step):
    name = "curate: verified near-duplicate clusters (by component)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = _chunk_starts(wd, self.tasks)
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
        _save_npz(
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


_DUP_KEYS = {
    "doc": np.int64,
    "rep": np.int64,
    "jaccard": np.float64,
    "size": np.int64,
    "cluster": np.int64,
    "kept_id": "S32",
    "kept_source": np.int16,
    "cluster_id": "S32",
}


def _load_dups(wd: WorkDir, tasks: int) -> dict[str, np.ndarray]:
    zs = [np.load(p) for r in range(tasks) if (p := wd.dups(r)).exists()]  # none: near-dedup is off
    if not zs:
        return {k: np.zeros(0, t) for k, t in _DUP_KEYS.items()} | {"candidate_edges": 0}
    out = {k: np.concatenate([z[k] for z in zs]) for k in _DUP_KEYS}
    out["candidate_edges"] = int(zs[0]["candidate_edges"][0]) if zs else 0
    return out


def _alive(wd: WorkDir, n: int, tasks: int) -> np.ndarray:
    alive = np.ones(n, dtype=bool)
    alive[_load_dups(wd, tasks)["doc"]] = False
    return alive


def _segment_tasks(cfg: Config, wd: WorkDir, tasks: int) -> int:
    """Boilerplate tasks: `segment_buckets`, or more so that one holds at most ~`sort_buffer_mb` of segments."""
    total = sum(NpyRows(wd.scan(c, "seg-h.npy")).n for c, _ in wd.scan_chunks(tasks))
    per_task = max(1, (cfg.sort_buffer_mb << 20) // SEGMENT_BYTES)
    return min(FINE_BUCKETS, max(cfg.segment_buckets, -(-total // per_task)))


class SegmentStep(_Step):
    name = "curate: boilerplate segments (one task per range of hashes)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = _chunk_starts(wd, self.tasks)
        alive = _alive(wd, int(starts[-1]), self.tasks)
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
        _save_npz(wd.boiler(rank), h=boiler, owner=owner, docs=counts[np.searchsorted(u, boiler)])


class ContamStep(_Step):
    name = "curate: common n-grams and the contamination table"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        benchmarks = _load_bench_cache(wd)
        chunks, starts = _chunk_starts(wd, self.tasks)
        alive = _alive(wd, int(starts[-1]), self.tasks)
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
        _save_npz(wd.plan("contam.npz"), **{f"ignore:{k}": v for k, v in ignore.items()})
        atomic_write_json(wd.plan("contam.json"), rows)


# ----------------------------------------------------------------------------- apply


class ApplyStep(_Step):
    name = "curate: apply decisions"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        chunks, starts = _chunk_starts(wd, self.tasks)
        mine = [(i, c) for i, (c, _) in enumerate(chunks) if c.rank == rank]
        if not mine:
            return
        lo, hi = int(starts[mine[0][0]]), int(starts[mine[-1][0] + 1])
        dups = _load_dups(wd, self.tasks)
        self.dups = {k: v[(dups["doc"] >= lo) & (dups["doc"] < hi)] for k, v in dups.items() if k in _DUP_KEYS}
        self.reps = np.unique(dups["rep"][(dups["rep"] >= lo) & (dups["rep"] < hi)])
        bz = (
            [np.load(wd.boiler(b)) for b in range(_segment_tasks(cfg, wd, self.tasks))]
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
        benchmarks = _load_bench_cache(wd)
        self.matcher = Matcher(benchmarks, ignore) if benchmarks else None
        self.by_name = {b.name: b for b in benchmarks}
        for i, c in mine:
            if not wd.apply(c, "done.json").exists():
                self.apply_chunk(c, int(starts[i]))
                _trim_heap()
                _test_kill_point("apply-chunk")

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
            excl.setdefault(_shard_of(rec.id, cfg.shards), []).append(keyed_line(_excluded(rec, why.reason, details)))
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
                    line = keyed_line(_excluded(rec, NEAR_DUP.reason, details))
                    excl.setdefault(_shard_of(rec.id, cfg.shards), []).append(line)
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
                        left = words - sum(map(_words, gone))
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
                    words, text = (words, text) if cut is text else (_words(cut), cut)
                out = {"id": rec.id, "source": rec.source, "text": text}
                if rec.orig_id is not None:
                    out["orig_id"] = rec.orig_id
                counters.totals["kept"] += 1
                counters.totals["kept_words"] += words  # what segment dedup and decontamination left
                kept.setdefault(_shard_of(rec.id, cfg.shards), []).append(keyed_line(out))
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
            counters.totals["words_cut"] += _words(text) - _words(new)
            text = new
        return text, None


# ----------------------------------------------------------------------------- merge


class MergeStep(_Step):
    name = "curate: merge sorted runs into output shards"

    def __init__(self, cfg: Config, work: str, tasks: int, out: str):
        super().__init__(cfg, work, tasks)
        self.out = out

    def run_task(self, rank: int, world: int) -> None:
        wd, out = self.wd, Path(self.out)
        for sub, name in (("kept", "kept"), ("excl", "excluded")):
            runs = wd.runs(sub, rank, self.tasks)
            merge_runs(
                runs, out / name / f"part-{rank:05d}.jsonl", lambda lv, i, sub=sub: wd.merge_tmp(sub, rank, lv, i)
            )
        if rank == 0:  # the boilerplate lines removed, one line each with the document that kept it
            runs = [p for c, _ in wd.scan_chunks(self.tasks) if (p := wd.apply_run(c, "boiler", 0)).exists()]
            merge_runs(runs, out / "boilerplate.jsonl", lambda lv, i: wd.merge_tmp("boiler", 0, lv, i))
            # C4's line edits of the documents the gates kept, one line each (by id): what was removed and why
            runs = [p for c, _ in wd.scan_chunks(self.tasks) if (p := wd.scan(c, "edits.run")).exists()]
            merge_runs(runs, out / "c4_edits.jsonl", lambda lv, i: wd.merge_tmp("edits", 0, lv, i))


# ----------------------------------------------------------------------------- running


def _save_bench_cache(wd: WorkDir, benchmarks: list[Benchmark]) -> None:
    arrays = {}
    info = []
    for i, b in enumerate(benchmarks):
        info.append({"name": b.name, "n": b.n, "n_items": b.n_items, "short_items": b.short_items})
        arrays[f"h{i}"], arrays[f"ph{i}"], arrays[f"pi{i}"] = b.hashes, b.pair_hash, b.pair_item
    _save_npz(wd.benchmarks_npz, **arrays)
    atomic_write_json(wd.benchmarks_json, info)


def _load_bench_cache(wd: WorkDir) -> list[Benchmark]:
    if not wd.benchmarks_json.exists():
        return []
    info = json.loads(wd.benchmarks_json.read_text())
    z = np.load(wd.benchmarks_npz)
    return [
        Benchmark(d["name"], d["n"], d["n_items"], d["short_items"], z[f"h{i}"], z[f"ph{i}"], z[f"pi{i}"])
        for i, d in enumerate(info)
    ]


def _venv_activate() -> str | None:
    """The activate script of the virtual environment running this process (datatrove `source`s it in each job;
    $VIRTUAL_ENV is unset when ledgerlm runs as .venv/bin/ledgerlm, and is a directory, not a script)."""
    venv = os.environ.get("VIRTUAL_ENV") or (sys.prefix if sys.prefix != sys.base_prefix else None)
    script = Path(venv) / "bin" / "activate" if venv else None
    return str(script) if script is not None and script.is_file() else None


def _execute(cfg: Config, step: _Step, tasks: int, logs: Path, resume: bool) -> None:
    """Run one step on the configured datatrove executor and wait for it."""
    ex = cfg.executor
    workers = min(ex.workers, tasks)
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        step.in_pool = workers > 1
        # fork: pool workers are children of this process (their CPU time and peak memory are accounted to it,
        # and they die with it, see _Step.run)
        LocalPipelineExecutor(
            [step], tasks=tasks, workers=workers, logging_dir=str(logs), skip_completed=resume, start_method="fork"
        ).run()
    elif ex.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        # Ray's workers do not inherit this process's environment: hand them the Hub mirror, if one is in use
        mirror = {"runtime_env": {"env_vars": {hub.ENV: str(hub.mirror())}}} if hub.mirror() else None
        RayPipelineExecutor(
            [step],
            tasks=tasks,
            workers=workers,
            logging_dir=str(logs),
            skip_completed=resume,
            cpus_per_task=ex.slurm_cpus_per_task,
            ray_remote_kwargs=mirror,
        ).run()
    else:
        from datatrove.executor import SlurmPipelineExecutor

        job = SlurmPipelineExecutor(
            [step],
            tasks=tasks,
            workers=workers,
            time=ex.slurm_time,
            partition=ex.slurm_partition,
            cpus_per_task=ex.slurm_cpus_per_task,
            mem_per_cpu_gb=ex.slurm_mem_per_cpu_gb,
            logging_dir=str(logs),
            skip_completed=resume,
            job_name=f"curate-{logs.name}",
            venv_path=_venv_activate(),
        )
        job.run()
        # sbatch returns at once: wait for every task's completion marker before the next step reads its outputs
        while job.get_incomplete_ranks(skip_completed=True):
            time.sleep(ex.poll_seconds)
    for r in range(tasks):
        if not (logs / "completions" / f"{r:05d}").exists():
            raise RuntimeError(f"curate step {logs.name}: task {r} did not complete (see {logs}/logs)")


def steps(cfg: Config, work: str, out_dir: str) -> list[tuple[str, _Step, int | Callable[[], int]]]:
    """(name, step, tasks) in order: each step reads only what the steps before it wrote (tasks may be a function
    of what they wrote)."""
    t = cfg.executor.tasks
    return [
        ("scan", ScanStep(cfg, work, t), t),
        ("index", IndexStep(cfg, work, t), 1),
        ("lsh", LshStep(cfg, work, t), cfg.near_dedup.bands if cfg.near_dedup.enabled else 0),
        ("cluster", ClusterStep(cfg, work, t), t if cfg.near_dedup.enabled else 0),
        # as many boilerplate tasks as the scanned segments need (known once scan is done)
        (
            "segments",
            SegmentStep(cfg, work, t),
            (lambda: _segment_tasks(cfg, WorkDir(work), t)) if cfg.segment_dedup.enabled else 0,
        ),
        ("contam", ContamStep(cfg, work, t), 1),
        ("apply", ApplyStep(cfg, work, t), t),
        ("merge", MergeStep(cfg, work, t, out_dir), cfg.shards),
    ]


RESULT = ".curate-result.json"  # the stage's summary, written before .work is removed (resume after that point)


def curate(cfg: Config, out_dir: Path, log=None, resume: bool = False, logs_dir: Path | None = None, progress=None):
    """Run the steps into `out_dir` (kept/, excluded/, boilerplate.jsonl, contamination.md/.csv); returns counters and
    the table. A run killed at any point resumes with `resume=True` (every step skips its completed tasks, scan and
    apply their completed chunks); datatrove's task logs and completion markers go to `logs_dir`."""
    global _GUARD_PID
    if not cfg.sources:
        raise ValueError("curate: no sources (give --input PATH or curate.sources in the recipe)")
    quality_configs(cfg)  # a bad per-source gate override fails here, before anything is written
    if not resume:  # (a resumed run has the same inputs: the ledger compared their hashes)
        check_sources(cfg.sources)  # a missing, unknown-format or empty input: one line, exit 2
    # absolute paths: Ray's workers do not start in this directory (a relative --out failed there)
    out_dir = Path(out_dir).resolve()
    if cfg.executor.kind == "ray":
        cfg = replace(cfg, sources=[replace(s, path=s.path and os.path.abspath(s.path)) for s in cfg.sources])
    result_path = out_dir / RESULT
    work = out_dir / ".work"
    logs = Path(logs_dir).resolve() if logs_dir is not None else work / "logs"
    if resume and result_path.exists():  # killed after the work directory was removed: nothing left to do
        return json.loads(result_path.read_text())
    if not resume:
        for d in (work, logs, out_dir / "kept", out_dir / "excluded"):
            if d.exists():
                shutil.rmtree(d)
    wd = WorkDir(work).make()
    t0 = time.time()
    if cfg.decontam.active and not wd.benchmarks_json.exists():
        _save_bench_cache(wd, load_benchmarks(cfg.decontam))
    timings = {}
    _GUARD_PID = os.getpid()
    try:
        for name, step, n in steps(cfg, str(work), str(out_dir)):
            n = n() if callable(n) else n
            if n == 0:  # switched off (near-dedup or segment dedup)
                if progress is not None:
                    progress(name)
                continue
            t = time.time()
            _execute(cfg, step, n, logs / name, resume)
            timings[name] = round(time.time() - t, 3)
            if progress is not None:
                progress(name)
            if log:
                log.info("curate step %s done in %.1fs", name, timings[name])
            _test_kill_point(f"after-{name}")
    finally:
        _GUARD_PID = 0
    result = _summarise(cfg, wd, cfg.executor.tasks)
    result["quality_by_source"] = quality_by_source(cfg)
    result["timings_s"] = {**timings, "total": round(time.time() - t0, 3)}
    rows = result["contamination"]
    if cfg.decontam.active:
        atomic_write_text(out_dir / "contamination.md", to_markdown(rows))
        atomic_write_text(out_dir / "contamination.csv", to_csv(rows))
    atomic_write_json(result_path, result)
    if not cfg.keep_work:
        shutil.rmtree(work)
    _test_kill_point("after-cleanup")
    return result


def _summarise(cfg: Config, wd: WorkDir, tasks: int) -> dict:
    """Merge the per-chunk counters into the ledger's funnel: documents and tokens (whitespace words) per reason and
    per step (the step of a reason is the one that made it, not a prefix of its name)."""
    total = Counters()
    for c, d in wd.scan_chunks(tasks):
        total.add(Counters(d["counters"]))
        total.add(Counters(json.loads(wd.apply(c, "done.json").read_text())["counters"]))
    t = total.totals
    read, read_w, kept, kept_w = t["read"], t["read_words"], t["kept"], t["kept_words"]
    dropped = {r: v[0] for step in total.dropped.values() for r, v in step.items()}
    dropped_w = {r: v[1] for step in total.dropped.values() for r, v in step.items()}
    dropped, dropped_w = dict(sorted(dropped.items())), dict(sorted(dropped_w.items()))
    if kept + sum(dropped.values()) != read:  # the invariant the whole stage is built around
        raise RuntimeError(f"curate lost documents: read {read}, kept {kept}, excluded {sum(dropped.values())}")
    cut = {k.split(":", 1)[1]: v for k, v in t.items() if k.startswith("cut:")}
    extra = {
        "segment_dedup": {
            "segments_removed": t["segments_removed"],
            "docs_changed": t["docs_changed"],
            "tokens_removed": t["segment_words_removed"],
        },
        "decontaminate": {"docs_cut": {f"cut:{k}": v for k, v in cut.items()}, "tokens_cut": t["words_cut"]},
    }
    edits = {
        k.split(":", 1)[1]: {"lines": t[k], "chars": t["c4_chars:" + k.split(":", 1)[1]]}
        for k in sorted(t)
        if k.startswith("c4_lines:")
    }
    extra["quality"] = {
        "c4_edits": {"docs_edited": t["c4_edited_docs"], "tokens_removed": t["c4_words_removed"], "removed": edits}
    }
    removed = {
        "quality": t["c4_words_removed"],
        "segment_dedup": t["segment_words_removed"],
        "decontaminate": t["words_cut"],
    }
    rows, n_in, t_in = [], read, read_w
    for step in STEPS:
        d = {r: v[0] for r, v in sorted(total.dropped.get(step, {}).items())}
        t_out = sum(v[1] for v in total.dropped.get(step, {}).values())
        row = {
            "step": step,
            "in": n_in,
            "kept": n_in - sum(d.values()),
            "dropped": d,
            "dropped_docs": sum(d.values()),
            "tokens_in": t_in,
            "tokens_kept": t_in - t_out - removed.get(step, 0),
            "tokens_dropped": t_out,
            **extra.get(step, {}),
        }
        rows.append(row)
        n_in, t_in = row["kept"], row["tokens_kept"]
    if rows[-1]["kept"] != kept or rows[-1]["tokens_kept"] != kept_w:
        raise RuntimeError(f"curate funnel does not add up: {rows[-1]} vs kept {kept} ({kept_w} tokens)")
    stats = {"near_dup_clusters": 0, "candidate_edges": 0, "near_dup_clusters_lost": t["near_dup_clusters_lost"]}
    if cfg.near_dedup.enabled:
        dups = _load_dups(wd, tasks)
        stats["candidate_edges"] = dups["candidate_edges"]
        stats["near_dup_clusters"] = len(np.unique(dups["rep"]))
    stats["boilerplate_segments"] = (
        sum(len(np.load(wd.boiler(b))["h"]) for b in range(_segment_tasks(cfg, wd, tasks)))
        if cfg.segment_dedup.enabled
        else 0
    )
    table = json.loads(wd.plan("contam.json").read_text())
    contamination = [
        {
            **{c: r[c] for c in COLUMNS},
            "action": cfg.decontam.action,
            "docs_dropped": dropped.get(f"contaminated:{r['benchmark']}", 0),
            "docs_cut": cut.get(r["benchmark"], 0),
        }
        for r in table
    ]
    return {
        "counters": {
            "read": read,
            "kept": kept,
            "dropped": dropped,
            "tokens_read": read_w,
            "tokens_kept": kept_w,
            "dropped_tokens": dropped_w,
            "by_source": dict(sorted(total.by_source.items())),
            "quality_dropped_by_source": {
                s: dict(sorted(total.quality_by_source[s].items())) for s in sorted(total.quality_by_source)
            },
            "by_step": rows,
            **stats,
        },
        "contamination": contamination,
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
    bar = ctx.progress(total=len(steps(cfg, "", "")), desc="curate", unit="step")  # scan, index, ... merge

    def step_done(name: str) -> None:
        bar.update(1, step=name)

    with bar:
        res = curate(
            cfg,
            ctx.out_dir,
            log=ctx.log,
            resume=getattr(ctx, "resuming", False),
            logs_dir=ctx.run_dir / "logs" / "curate-datatrove",
            progress=step_done,
        )
    c = res["counters"]
    ctx.log.info("curate: read %d, kept %d, dropped %s", c["read"], c["kept"], c["dropped"])
    outputs = {
        "kept": ctx.out_dir / "kept",
        "excluded": ctx.out_dir / "excluded",
        "boilerplate": ctx.out_dir / "boilerplate.jsonl",  # the segments removed, with their document counts
    }
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
    q = next((s for s in c.get("by_step", []) if s.get("step") == "quality"), {})
    if (e := q.get("c4_edits")) and e.get("docs_edited"):
        lines.append(
            f"C4 edited {e['docs_edited']:,} kept documents ({e['tokens_removed']:,} words removed; "
            "ledgerlm inspect RUN --reason c4_edit)"
        )
    return lines


def plan(cfg: Config, ctx) -> list[str]:
    lines = [
        f"sources: {', '.join(s.name for s in cfg.sources) or '(none)'}; executor {cfg.executor.kind} "
        f"x{cfg.executor.tasks} tasks, {cfg.executor.workers} workers; memory per scan/apply process: chunks of "
        f"{cfg.chunk_docs:,} documents or {cfg.chunk_mb} MB"
    ]
    own = quality_by_source(cfg)
    if own:
        lines.append(
            "quality: stage-wide gates; own gates for "
            + ", ".join(f"{k} ({len(v['changed'])} changed)" for k, v in own.items())
        )
    if cfg.near_dedup.enabled:
        nd = cfg.near_dedup
        check = f"verified at exact Jaccard >= {nd.exact_jaccard}" if nd.exact_jaccard else "UNVERIFIED LSH groups"
        lines.append(f"near-dedup: MinHash {nd.ngram}-grams, {nd.bands}x{nd.rows}, {check}; keep {KEEP_RULE}")
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
    p.add_argument(
        "--decontam-action",
        choices=["drop", "cut"],
        default=None,
        help="decontam.action: drop a matching document or cut the match",
    )
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
