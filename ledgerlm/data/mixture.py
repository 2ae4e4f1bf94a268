"""Phases and mixtures: which source each training sequence is drawn from.

A recipe declares phases, each a token budget and a weighted mixture of named sources (the `source` names in the
token index), e.g. the seed recipe:

    phases:
      - {name: stable, tokens: 10B, mixture: {web: 0.7, edu: 0.3}}
      - {name: decay,  tokens: 3B,  mixture: {edu: 0.4, math: 0.2, code: 0.2, reasoning: 0.2}}

API:
    Phase(name, tokens, mixture)              mixture weights are normalised; tokens may be written '10B', '500M'
    phases_from_config(list_of_dicts) -> list[Phase]
    PhaseSchedule(phases, tokens_per_step, seed)   step -> phase; (phase, sequence index) -> source index
    mixture_plan(phases, source_tokens)       expected tokens and epochs per source (for `ledgerlm plan`)

Sources are assigned to sequences with a low-discrepancy (golden-ratio Weyl) sequence pushed through the cumulative
weights: deterministic, stateless in the sequence index (so resuming needs no extra state), and the share of every
source over any run of N sequences is within a few sequences of weight * N — far tighter than random sampling.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import xxhash

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMbBtT]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_tokens(value: int | float | str) -> int:
    """10_000, 1e9, '10B', '500M', '2.5k' -> int."""
    if isinstance(value, bool):
        raise ValueError(f"not a token count: {value!r}")
    if isinstance(value, int | float):
        if value != int(value):
            raise ValueError(f"not a whole token count: {value!r}")
        return int(value)
    m = _COUNT.match(str(value))
    if not m:
        raise ValueError(f"not a token count: {value!r} (use e.g. 10000, '500M', '10B')")
    n = float(m.group(1)) * _SCALE[m.group(2).lower()]
    return int(round(n))


@dataclass
class Phase:
    name: str
    tokens: int
    mixture: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens = parse_tokens(self.tokens)
        if self.tokens <= 0:
            raise ValueError(f"phase {self.name!r}: tokens must be > 0, got {self.tokens}")
        if not self.mixture:
            raise ValueError(f"phase {self.name!r}: mixture is empty")
        for src, w in self.mixture.items():
            if not isinstance(w, int | float) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ValueError(f"phase {self.name!r}: weight of {src!r} must be a number >= 0, got {w!r}")
        total = float(sum(self.mixture.values()))
        if total <= 0:
            raise ValueError(f"phase {self.name!r}: mixture weights sum to 0")
        # Normalised, zero weights dropped, sorted by name so the assignment does not depend on YAML key order.
        self.mixture = {s: float(w) / total for s, w in sorted(self.mixture.items()) if w > 0}


def phases_from_config(items: list[dict] | None) -> list[Phase] | None:
    """Recipe list of {name, tokens, mixture} -> Phases (None/empty -> None: draw in proportion to source size)."""
    if not items:
        return None
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Phase):
            out.append(item)
            continue
        if not isinstance(item, dict):
            raise ValueError(f"phases[{i}]: expected a mapping with name, tokens, mixture; got {item!r}")
        unknown = set(item) - {"name", "tokens", "mixture"}
        if unknown:
            raise ValueError(f"phases[{i}]: unknown key(s) {sorted(unknown)} (known: name, tokens, mixture)")
        if "tokens" not in item or "mixture" not in item:
            raise ValueError(f"phases[{i}]: needs 'tokens' and 'mixture'")
        if not isinstance(item["mixture"], dict):
            raise ValueError(f"phases[{i}].mixture: expected a mapping source -> weight")
        try:
            out.append(Phase(str(item.get("name", f"phase{i + 1}")), item["tokens"], dict(item["mixture"])))
        except ValueError as e:
            raise ValueError(f"phases[{i}]: {e}") from None
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"phase names must be unique, got {names}")
    return out


class PhaseSchedule:
    """Maps training steps to phases and sequences to sources.

    `tokens_per_step` = global batch (all ranks) * seq_len. A phase lasts ceil(tokens / tokens_per_step) steps;
    steps after the last phase keep drawing from the last phase's mixture.
    """

    def __init__(self, phases: list[Phase], sources: list[str], tokens_per_step: int, seed: int = 0):
        self.phases, self.sources = phases, list(sources)
        pos = {s: i for i, s in enumerate(self.sources)}
        for p in phases:
            missing = [s for s in p.mixture if s not in pos]
            if missing:
                raise ValueError(
                    f"phase {p.name!r}: unknown source(s) {missing} (sources in the token index: {', '.join(sources)})"
                )
        self.steps = [max(1, -(-p.tokens // tokens_per_step)) for p in phases]
        self.starts = np.concatenate([[0], np.cumsum(self.steps)]).astype(np.int64)
        self.total_steps = int(self.starts[-1])
        self._ids = [np.array([pos[s] for s in p.mixture], dtype=np.int64) for p in phases]
        self._cdf = [np.cumsum(list(p.mixture.values())) for p in phases]
        for c in self._cdf:
            c[-1] = 1.0  # guard against float round-off leaving a gap at the top
        # A per-phase, per-seed offset so different seeds interleave sources differently.
        self._offset = [xxhash.xxh64_intdigest(f"{seed}/{i}/{p.name}".encode()) / 2**64 for i, p in enumerate(phases)]

    def phase_index(self, step: int) -> int:
        return min(int(np.searchsorted(self.starts, step, side="right")) - 1, len(self.phases) - 1)

    def sources_for(self, phase: int, first: int, n: int) -> np.ndarray:
        """Source indices (into `sources`) of sequences first .. first+n-1 of `phase`."""
        g = np.arange(first, first + n, dtype=np.float64)
        u = np.mod(self._offset[phase] + g * _GOLDEN, 1.0)
        k = np.searchsorted(self._cdf[phase], u, side="right")
        return self._ids[phase][np.minimum(k, len(self._ids[phase]) - 1)]


def proportional_phase(source_tokens: dict[str, int], name: str = "all") -> Phase:
    """One phase over every source in proportion to its size, lasting one pass over the data."""
    sizes = {s: n for s, n in source_tokens.items() if n > 0}
    if not sizes:
        raise ValueError("no training tokens in any source")
    return Phase(name, sum(sizes.values()), {s: float(n) for s, n in sizes.items()})


def mixture_plan(phases: list[Phase], source_tokens: dict[str, int]) -> list[str]:
    """Human-readable plan: per phase and source, tokens to draw and how many epochs over the source that is."""
    lines, used = [], dict.fromkeys(source_tokens, 0)
    for p in phases:
        lines.append(f"phase {p.name}: {p.tokens:,} tokens")
        for s, w in p.mixture.items():
            want = int(p.tokens * w)
            have = source_tokens.get(s, 0)
            used[s] = used.get(s, 0) + want
            ep = f"{used[s] / have:.2f} epochs so far" if have else "SOURCE HAS NO TOKENS"
            lines.append(f"  {s}: {w:.1%} = {want:,} tokens of {have:,} ({ep})")
    return lines
