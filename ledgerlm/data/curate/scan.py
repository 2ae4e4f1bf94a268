"""The curate step scan (T tasks): read this task's share of every source in chunks of `chunk_docs` documents; quarantine
malformed records; run the quality filters; for each surviving document write its text, id, origin, score, LSH band
keys, segment hashes and benchmark n-gram hits to disk. A killed task resumes after its last completed chunk."""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter

import numpy as np

from ledgerlm.data import segdedup
from ledgerlm.data.curate.base import (
    Counters,
    CurateStep,
    Drop,
    count_words,
    excluded_record,
    kill_point_for_tests,
    load_bench_cache,
    save_npy,
    save_npz,
    shard_of,
    trim_heap,
)
from ledgerlm.data.curate.config import FINE_BITS, FINE_BUCKETS, source_gates
from ledgerlm.data.decontam import Matcher
from ledgerlm.data.minhash import MinHasher, band_keys
from ledgerlm.data.quality import DocView
from ledgerlm.data.runs import keyed_line, write_run
from ledgerlm.data.sources import Record, iter_records
from ledgerlm.data.workdir import Chunk
from ledgerlm.io import atomic_write_json


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
        line = keyed_line(excluded_record(rec, why.reason, details))
        self.text_bytes += len(line)
        self.excl.setdefault(shard_of(rec.id, self.cfg.shards), []).append(line)

    def add(self, rec: Record) -> None:
        s, cfg = self.step, self.cfg
        self.consumed += 1
        view = None if rec.reason else DocView(rec.text)  # viewed once: every gate reads it (tokens on first use)
        words = view.ws_words if view else count_words(rec.text) if rec.text else 0
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
        save_npz(
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
        save_npy(wd.scan(c, "seg-h.npy"), h[order])
        save_npy(wd.scan(c, "seg-d.npy"), d[order])
        bounds = np.arange(FINE_BUCKETS, dtype=np.uint64) << np.uint64(64 - FINE_BITS)
        save_npy(wd.scan(c, "seg-starts.npy"), np.append(np.searchsorted(h[order], bounds), len(h)))
        m_doc = np.array([x[0] for x in self.match for _ in x[2]], dtype=np.int32)
        m_b = np.array([x[1] for x in self.match for _ in x[2]], dtype=np.int16)
        m_h = np.concatenate([x[2] for x in self.match]) if self.match else np.zeros(0, np.uint64)
        save_npz(wd.scan(c, "match.npz"), doc=m_doc, bench=m_b, h=m_h)
        for shard, lines in self.excl.items():
            write_run(wd.scan_excluded(c, shard), lines)
        if self.edits:
            write_run(wd.scan(c, "edits.run"), self.edits)
        atomic_write_json(
            wd.scan(c, "done.json"),
            {"n": n, "consumed": self.consumed, "files": list(self.files), "counters": self.counters.to_dict()},
        )


class ScanStep(CurateStep):
    name = "curate: scan (read, quality, signatures)"

    def run_task(self, rank: int, world: int) -> None:
        cfg, wd = self.cfg, self.wd
        self.gates = source_gates(cfg)  # chosen once per source: the per-document path is unchanged
        self.hasher = MinHasher(cfg.near_dedup.params()) if cfg.near_dedup.enabled else None
        benchmarks = load_bench_cache(wd)
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
                trim_heap()
                kill_point_for_tests("scan-chunk")
                chunk = _ScanChunk(self, Chunk(rank, chunk.chunk.chunk + 1))
        if chunk.consumed:
            chunk.write()
        else:
            chunk.docs.close()
            chunk.docs_path.unlink()
