"""The `curate` recipe section: sources, quality gates, near-dedup, segment dedup, decontamination, executor,
and the gates each source's documents go through."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

from ledgerlm.config import ConfigError, to_dict
from ledgerlm.data.decontam import DecontamConfig
from ledgerlm.data.filters import QualityConfig, QualityGates, overlay
from ledgerlm.data.minhash import MinHashParams
from ledgerlm.data.segdedup import SegDedupConfig
from ledgerlm.data.sources import SourceSpec

FINE_BITS = 12  # segment hashes by their top 12 bits: a boilerplate task takes a contiguous range of these buckets
FINE_BUCKETS = 1 << FINE_BITS


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
    # old key -> new key, read with a warning for one release (`tasks` read like eval's benchmark tasks)
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"tasks": "datatrove_tasks"}

    kind: str = "local"  # local | slurm | ray
    datatrove_tasks: int = 1  # datatrove tasks: the shares scan, cluster and apply split the corpus into
    workers: int = 1
    slurm_partition: str = ""
    slurm_time: str = "04:00:00"
    slurm_cpus_per_task: int = 1
    slurm_mem_per_cpu_gb: int = 4
    poll_seconds: int = 30  # how often to check whether Slurm jobs finished

    def validate(self) -> None:
        if self.kind not in ("local", "slurm", "ray"):
            raise ValueError(f"executor.kind must be local|slurm|ray, got {self.kind!r}")
        if self.datatrove_tasks < 1 or self.workers < 1:
            raise ValueError("executor.datatrove_tasks and executor.workers must be >= 1")
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
