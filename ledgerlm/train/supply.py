"""Data supply vs demand: what each pretraining phase asks of each source, what curation can supply, and the passes
over a source that implies (a source asked for more than it holds is repeated by the loader).

    demand(phases)                          -> [(phase, source, tokens asked)]
    table(phases, available)                -> rows: phase, source, asked, available, basis, passes (cumulative)
    repeats(rows) / over_limit(rows, limit) -> the sources the phases would repeat / repeat more than `limit` times
    lines(rows)                             -> the table as text (`ledgerlm plan`, the pretrain summary)
    plan_available(recipe, run_dir)         -> {source: (tokens or None, basis)} before pretraining runs

Available tokens, best first: the tokenize record (exact train tokens per source), the curate record (documents
read per source x the estimated tokens per document x the share of documents curation kept), the recipe's
`pretrain.supply_estimate` (documents and tokens per document) with the curate `limit`s, else unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ledgerlm import ledger
from ledgerlm.data.mixture import Phase

DEFAULT_TOKENS_PER_DOC = 1000  # a web document (FineWeb-Edu averages about a thousand SmolLM tokens)


@dataclass
class Row:
    phase: str
    source: str
    asked: int  # tokens this phase draws from the source
    available: int | None  # training tokens the source holds (None = unknown)
    basis: str  # where `available` comes from
    passes: float | None  # cumulative passes over the source after this phase (asked so far / available)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("phase", "source", "asked", "available", "basis", "passes")}


def demand(phases: list[Phase]) -> list[tuple[str, str, int]]:
    return [(p.name, s, int(p.tokens * w)) for p in phases for s, w in p.mixture.items()]


def table(phases: list[Phase], available: dict[str, tuple[int | None, str]]) -> list[Row]:
    rows, used = [], {}
    for phase, s, asked in demand(phases):
        used[s] = used.get(s, 0) + asked
        have, basis = available.get(s, (None, "unknown"))
        passes = used[s] / have if have else (None if have is None else float("inf"))
        rows.append(Row(phase, s, asked, have, basis, passes))
    return rows


def repeats(rows: list[Row]) -> dict[str, float]:
    """Sources the phases draw more than once through, with their total passes."""
    last = {r.source: r.passes for r in rows}
    return {s: p for s, p in last.items() if p is not None and p > 1.0}


def over_limit(rows: list[Row], limit: float) -> dict[str, float]:
    return {s: p for s, p in repeats(rows).items() if limit and p > limit}


def _fmt(n: int | None) -> str:
    if n is None:
        return "unknown"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def lines(rows: list[Row]) -> list[str]:
    out = ["data supply vs demand (tokens asked by each phase of each source, and the passes over it so far):"]
    for r in rows:
        passes = "?" if r.passes is None else "no tokens" if r.passes == float("inf") else f"{r.passes:.2f}"
        flag = "  REPEATS" if r.passes is not None and r.passes > 1.0 else ""
        out.append(
            f"  {r.phase:>10} {r.source:<14} asks {_fmt(r.asked):>7} of {_fmt(r.available):>7} "
            f"({r.basis}): {passes} passes{flag}"
        )
    return out


def warnings(rows: list[Row], limit: float) -> list[str]:
    """One message per source the phases would repeat, saying by how much and what to change."""
    out = []
    for s, p in repeats(rows).items():
        asked = sum(r.asked for r in rows if r.source == s)
        have = next(r.available for r in rows if r.source == s)
        what = "no training tokens" if p == float("inf") else f"{_fmt(have)} tokens"
        out.append(
            f"source {s!r} runs dry: the phases ask {_fmt(asked)} tokens of it and curation supplies {what}, so the "
            f"loader repeats it ({p:.2f} passes; the limit is pretrain.max_source_passes={limit:g}): raise its "
            "curate limit or lower its mixture weight"
        )
    return out


# ----------------------------------------------------------------------------- before pretraining: records or estimates


def plan_available(recipe, run_dir: Path, estimate: dict) -> dict[str, tuple[int | None, str]]:
    """{source: (training tokens or None, basis)} from the run's records when it has them, else from estimates."""
    out: dict[str, tuple[int | None, str]] = {}
    tok = ledger.read_record(run_dir, "tokenize") if Path(run_dir).exists() else None
    if tok:
        for s, v in (tok.get("counters", {}).get("tokens") or {}).items():
            out[s] = (int(v.get("train", 0)), "tokenize record")
    cur = ledger.read_record(run_dir, "curate") if Path(run_dir).exists() else None
    sources = recipe.section("curate").sources if "curate" in recipe.stages else []
    kept_frac, read_by = None, {}
    if cur:
        c = cur.get("counters", {})
        if c.get("read"):
            kept_frac = c.get("kept", 0) / c["read"]
        read_by = c.get("by_source") or {}
    for src in sources:
        name = src.name
        if name in out:
            continue
        est = dict(estimate.get(name) or {})
        per_doc = int(est.get("tokens_per_doc", DEFAULT_TOKENS_PER_DOC))
        per_note = "" if "tokens_per_doc" in est else " (default per-document estimate)"
        if name in read_by and kept_frac is not None:
            n = int(read_by[name] * per_doc * kept_frac)
            out[name] = (n, f"curate record: {read_by[name]:,} docs read x {kept_frac:.0%} kept x {per_doc:,}/doc")
            continue
        docs = src.limit if src.limit is not None else est.get("docs")
        if docs is None:
            out[name] = (None, "unknown: no curate limit and no supply_estimate docs")
            continue
        whence = "limit" if src.limit is not None else "estimated docs"
        out[name] = (int(docs * per_doc), f"{whence} {int(docs):,} x {per_doc:,}/doc{per_note}, before curation")
    return out
