"""The curate stage's work directory: every intermediate file has one method here, none is named anywhere else.

Layout (all under `RUN/curate/.work/`):

  benchmarks.json/.npz          decontamination benchmarks, hashed once
  scan/RRRRR-CCCCC.*            one scan chunk (task R, chunk C): docs.jsonl (text), meta.npz (fixed-width arrays),
                                seg-h/seg-d/seg-starts.npy (segment hashes sorted, their documents, the
                                bounds of 4,096 hash ranges), match.npz (benchmark n-gram hits),
                                excl-SSSSS.run (excluded records, sorted), done.json (written last: the chunk counts)
  plan/                         index (ids, orders), edges per LSH band, duplicate decisions per cluster task,
                                boilerplate per range of segment hashes, the contamination plan; plan/sort/: the
                                external sorts' runs (removed when their step ends)
  apply/RRRRR-CCCCC.*           kept-SSSSS.run / excl-SSSSS.run (sorted runs) and done.json, per scan chunk
  merge/                        intermediate runs when one shard has too many to merge at once

A "run" is a text file of `KEY \\0 JSON \\n` lines sorted by KEY; the merge step streams all runs of one output
shard through a heap merge, so no step holds a shard in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chunk:
    rank: int
    chunk: int

    @property
    def stem(self) -> str:
        return f"{self.rank:05d}-{self.chunk:05d}"


class WorkDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def make(self) -> WorkDir:
        for sub in ("scan", "plan", "apply", "merge"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    # benchmarks
    @property
    def benchmarks_json(self) -> Path:
        return self.root / "benchmarks.json"

    @property
    def benchmarks_npz(self) -> Path:
        return self.root / "benchmarks.npz"

    # scan
    def scan(self, c: Chunk, kind: str) -> Path:
        """kind: docs.jsonl | meta.npz | seg-h.npy | seg-d.npy | seg-starts.npy | match.npz | done.json"""
        return self.root / "scan" / f"{c.stem}.{kind}"

    def scan_excluded(self, c: Chunk, shard: int) -> Path:
        return self.root / "scan" / f"{c.stem}.excl-{shard:05d}.run"

    def scan_done(self, rank: int) -> list[dict]:
        """The completed chunks of one scan task, in order (a chunk is complete once its done.json exists)."""
        out = []
        while (p := self.scan(Chunk(rank, len(out)), "done.json")).exists():
            out.append(json.loads(p.read_text()))
        return out

    def scan_chunks(self, tasks: int) -> list[tuple[Chunk, dict]]:
        """Every scan chunk with its done record, in (task, chunk) order: the global document order."""
        return [(Chunk(r, i), d) for r in range(tasks) for i, d in enumerate(self.scan_done(r))]

    # plan
    def plan(self, name: str) -> Path:
        """index arrays (`ids.npy`, `keep_pos.npy`, ...), `edges-BB.npy`, `dups-RRRRR.npz`, `boiler-BBBBB.npz`,
        `contam.json`/`contam.npz`"""
        return self.root / "plan" / name

    @property
    def sort_dir(self) -> Path:
        return self.root / "plan" / "sort"

    def sort_run(self, order: str, i: int, kind: str) -> Path:
        """The index step's external sort, per global order (`id`, `keep`) and scan chunk `i`: `keys.npy` (sorted
        keys), `pos.npy` (the chunk's documents in that order), `ranks.bin` (their global ranks, int64)"""
        path = self.sort_dir / f"{order}-{i:05d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def edges(self, band: int) -> Path:
        return self.plan(f"edges-{band:03d}.npy")

    def dups(self, rank: int) -> Path:
        return self.plan(f"dups-{rank:05d}.npz")

    def boiler(self, bucket: int) -> Path:
        return self.plan(f"boiler-{bucket:05d}.npz")

    # apply
    def apply(self, c: Chunk, kind: str) -> Path:
        """kind: done.json"""
        return self.root / "apply" / f"{c.stem}.{kind}"

    def apply_run(self, c: Chunk, sub: str, shard: int) -> Path:
        return self.root / "apply" / f"{c.stem}.{sub}-{shard:05d}.run"

    # merge
    def runs(self, sub: str, shard: int, tasks: int) -> list[Path]:
        """Every sorted run that feeds output shard `shard` of kept/ or excluded/ (`sub` kept | excl)."""
        out = []
        for c, _ in self.scan_chunks(tasks):
            if sub == "excl" and (p := self.scan_excluded(c, shard)).exists():
                out.append(p)
            if (p := self.apply_run(c, sub, shard)).exists():
                out.append(p)
        return out

    def merge_tmp(self, sub: str, shard: int, level: int, i: int) -> Path:
        return self.root / "merge" / f"{sub}-{shard:05d}-L{level}-{i:05d}.run"
