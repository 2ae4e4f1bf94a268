"""What every curate step shares: the funnel's drop reasons and counters, the datatrove step base class (a
task reads and writes only the work directory), process plumbing (children die with the stage, heap trimming),
and the small readers of what earlier steps wrote (chunk offsets, near-duplicate drops, the benchmark cache)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep  # the base class only adds stats and a name

from ledgerlm.data.curate.config import FINE_BUCKETS, Config
from ledgerlm.data.decontam import Benchmark
from ledgerlm.data.extsort import NpyRows
from ledgerlm.data.sources import Record
from ledgerlm.data.workdir import Chunk, WorkDir
from ledgerlm.io import atomic_path, atomic_write_json

SEGMENT_BYTES = 100  # a boilerplate task holds each of its segments as ~100 bytes (hash, document, rank, sort indices)


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


def count_words(text: str) -> int:
    return len(text.split())


def shard_of(doc_id: str, shards: int) -> int:
    return int(doc_id[:8], 16) % shards if shards > 1 and not doc_id.startswith("bad-") else 0


def save_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_npy(path: Path, a: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, a)


def _set_pdeathsig() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers may outlive a killed main process
        pass


def trim_heap() -> None:
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


@contextmanager
def children_die_with_this_process():
    """While the executors run: every process forked from here (datatrove's Manager, pool workers) dies with it."""
    global _GUARD_PID
    _GUARD_PID = os.getpid()
    try:
        yield
    finally:
        _GUARD_PID = 0


class CurateStep(PipelineStep):
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
        trim_heap()  # one process may run several steps: what this one freed goes back now
        return data

    def run_task(self, rank: int, world: int) -> None:
        raise NotImplementedError


def excluded_record(rec: Record, reason: str, details: dict) -> dict:
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


def kill_point_for_tests(name: str) -> None:
    """Tests kill the process (-9) at a named point to check every resume window (LEDGERLM_TEST_KILL_AT=name)."""
    if os.environ.get("LEDGERLM_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def chunk_starts(wd: WorkDir, tasks: int) -> tuple[list[tuple[Chunk, dict]], np.ndarray]:
    chunks = wd.scan_chunks(tasks)
    return chunks, np.concatenate([[0], np.cumsum([d["n"] for _, d in chunks])]).astype(np.int64)


def merge_rows(cfg: Config, key: np.dtype) -> int:
    """Keys an external merge may hold at once so that it stays within `sort_buffer_mb`: each row is held about three
    times (buffers, concatenation, sorted copy) plus ~40 bytes of indices."""
    return max(1, (cfg.sort_buffer_mb << 20) // (3 * key.itemsize + 40))


DUP_KEYS = {
    "doc": np.int64,
    "rep": np.int64,
    "jaccard": np.float64,
    "size": np.int64,
    "cluster": np.int64,
    "kept_id": "S32",
    "kept_source": np.int16,
    "cluster_id": "S32",
}


def load_dups(wd: WorkDir, tasks: int) -> dict[str, np.ndarray]:
    zs = [np.load(p) for r in range(tasks) if (p := wd.dups(r)).exists()]  # none: near-dedup is off
    if not zs:
        return {k: np.zeros(0, t) for k, t in DUP_KEYS.items()} | {"candidate_edges": 0}
    out = {k: np.concatenate([z[k] for z in zs]) for k in DUP_KEYS}
    out["candidate_edges"] = int(zs[0]["candidate_edges"][0]) if zs else 0
    return out


def alive_docs(wd: WorkDir, n: int, tasks: int) -> np.ndarray:
    alive = np.ones(n, dtype=bool)
    alive[load_dups(wd, tasks)["doc"]] = False
    return alive


def segment_tasks(cfg: Config, wd: WorkDir, tasks: int) -> int:
    """Boilerplate tasks: `segment_buckets`, or more so that one holds at most ~`sort_buffer_mb` of segments."""
    total = sum(NpyRows(wd.scan(c, "seg-h.npy")).n for c, _ in wd.scan_chunks(tasks))
    per_task = max(1, (cfg.sort_buffer_mb << 20) // SEGMENT_BYTES)
    return min(FINE_BUCKETS, max(cfg.segment_buckets, -(-total // per_task)))


def save_bench_cache(wd: WorkDir, benchmarks: list[Benchmark]) -> None:
    arrays = {}
    info = []
    for i, b in enumerate(benchmarks):
        info.append({"name": b.name, "n": b.n, "n_items": b.n_items, "short_items": b.short_items})
        arrays[f"h{i}"], arrays[f"ph{i}"], arrays[f"pi{i}"] = b.hashes, b.pair_hash, b.pair_item
    save_npz(wd.benchmarks_npz, **arrays)
    atomic_write_json(wd.benchmarks_json, info)


def load_bench_cache(wd: WorkDir) -> list[Benchmark]:
    if not wd.benchmarks_json.exists():
        return []
    info = json.loads(wd.benchmarks_json.read_text())
    z = np.load(wd.benchmarks_npz)
    return [
        Benchmark(d["name"], d["n"], d["n_items"], d["short_items"], z[f"h{i}"], z[f"ph{i}"], z[f"pi{i}"])
        for i, d in enumerate(info)
    ]
