"""The data stages' `ledgerlm plan` estimates: curate's and tokenize's CPU-hours, memory and disk on the target host
(`ctx.target`: its cores and RAM), from the costs `python -m bench.scale` fitted. Declared in their SPECs
(`plan=partial(curate_plan.curate, describe=plan)`, likewise `tokenize`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ledgerlm.config import ConfigError
from ledgerlm.estimate import Estimate

SCALE_COSTS = Path(__file__).resolve().parent / "scale_costs.json"  # written by `python -m bench.scale`
DOC_BYTES = 4000  # mean document size of the scale benchmark's web-like corpus (FineWeb-Edu is ~4.5 KB)
BYTES_PER_TOKEN = 4.2  # English web text, 49k-vocab BPE
WORK_COPIES = 2  # the work directory holds the text twice at its peak (scan's copy and apply's sorted runs)
NO_COSTS = (
    "cost: not estimated (no measured costs: run `python -m bench.scale` to write ledgerlm/data/scale_costs.json)"
)


def corpus_docs(cfg) -> tuple[int, int, list[str]]:
    """(documents, bytes, notes) the curate stage will read: `limit` where set, else local file sizes / DOC_BYTES."""
    docs = size = 0
    notes = []
    for s in cfg.sources:
        if s.limit is not None:
            docs += s.limit
            size += s.limit * DOC_BYTES
        elif s.path and Path(s.path).exists():
            p = Path(s.path)
            b = sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
            docs += max(b // DOC_BYTES, 1)
            size += b
        else:
            notes.append(s.name)
    return docs, size, notes


def _costs() -> dict | None:
    return json.loads(SCALE_COSTS.read_text()) if SCALE_COSTS.exists() else None


def curate(cfg, ctx, describe: Callable) -> Estimate:
    """What curation would do (`describe`: curate.plan), then its cost on the host. Raises ConfigError naming the
    setting to change when one process, or all the workers, would not fit the host's RAM."""
    out = Estimate(describe(cfg, ctx))
    t, c = ctx.target, _costs()
    if t is None:
        return out
    if c is None:
        out.lines.append(NO_COSTS)
        return out
    docs, size, unknown = corpus_docs(cfg)
    if unknown:
        out.lines.append(f"curate: size of {', '.join(unknown)} unknown (no limit, not local): not counted")
    workers = min(cfg.executor.workers, cfg.executor.datatrove_tasks)
    cpu_h = docs * c["curate_cpu_s_per_doc"] / 3600
    per_proc = (c["curate_rss_base_bytes"] + c["curate_rss_bytes_per_doc"] * docs) / 2**30
    out.lines += [
        f"curate: {docs:,} documents (~{size / 1e9:.0f} GB of text): {cpu_h:.1f} CPU-hours, "
        f"~{cpu_h / min(workers, t.cpus):.1f} h on {min(workers, t.cpus)} workers",
        f"curate memory: <= {per_proc:.1f} GiB per worker process, {per_proc * workers:.1f} GiB for "
        f"{workers} workers; disk: outputs ~{size / 1e9:.0f} GB + work directory ~"
        f"{size * WORK_COPIES / 1e9:.0f} GB while it runs",
    ]
    if per_proc > t.ram_gib:
        raise ConfigError(
            "curate.sources[*].limit",
            f"one curate process needs ~{per_proc:.0f} GiB for {docs:,} documents, the host has {t.ram_gib:.0f} GiB",
        )
    if per_proc * workers > t.ram_gib:
        raise ConfigError(
            "curate.executor.workers",
            f"{workers} workers x {per_proc:.1f} GiB = {per_proc * workers:.0f} GiB > {t.ram_gib:.0f} GiB RAM; "
            f"use at most {max(int(t.ram_gib // per_proc), 1)}",
        )
    return out


def tokenize(cfg, ctx, describe: Callable) -> Estimate:
    """What tokenisation would do (`describe`: tokenize.plan), then its cost on the host for the documents the
    recipe's curate stage keeps (its only estimate of the corpus: without curate in the recipe, not estimated)."""
    out = Estimate(describe(cfg, ctx))
    t, c, recipe = ctx.target, _costs(), ctx.recipe
    if t is None:
        return out
    docs = size = 0
    if c is not None and "curate" in recipe.stages:
        docs, size, _ = corpus_docs(recipe.section("curate"))
    if c is None or "tokenize_cpu_s_per_doc" not in c or not docs:
        out.lines.append(NO_COSTS if c is None else "cost: not estimated (corpus size unknown without curate)")
        return out
    workers = getattr(cfg, "workers", None) or t.cpus
    cpu_h = docs * c["tokenize_cpu_s_per_doc"] / 3600
    tokens = size / BYTES_PER_TOKEN
    out.lines.append(
        f"tokenize: {cpu_h:.1f} CPU-hours, ~{cpu_h / min(workers, t.cpus):.1f} h on {min(workers, t.cpus)} workers; "
        f"~{tokens / 1e9:.1f}B tokens -> ~{tokens * 2 / 1e9:.0f} GB of uint16 shards; "
        f"peak {c['tokenize_rss_bytes'] / 2**30:.1f} GiB per worker measured"
    )
    return out
