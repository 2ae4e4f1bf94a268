"""The training data loader: packs documents from token shards into fixed-length windows, by phase and mixture.

    loader = TokenLoader(tokenize_dir, phases=None, seq_len=1024, batch_size=8, seed=0, rank=0, world_size=1,
                         split="train", align_to_docs=False, return_doc_ids=False)
    x, y = loader.next_batch()          # LongTensor[B, T] each; y is x shifted by one (windows of T+1 tokens)
    x, y, doc_ids = loader.next_batch() # when return_doc_ids=True: LongTensor[B, T], per-row document index
    loader.state_dict() -> dict[str, int];  loader.load_state_dict(d)   # resume exactly
    loader.phase_at(step) -> Phase;  loader.phase (current name);  loader.total_steps (sum over phases)
    loader.drawn() -> {source: {epoch: tokens}};  loader.dropped() -> {source: tokens}   # for the ledger
    loader.val_batches(n_batches=None, sources=None, mixture=None) -> finite, deterministic batches of the val split
                                        (sources interleaved row by row in the mixture's proportions)

How data is drawn. Each source is an endless stream: epoch e is all its documents in a permutation seeded by
(seed, source, e), each document followed by end-of-text, epochs concatenated. A source's position in its stream
(its cursor) is the only thing that moves. Each step draws `batch_size * world_size` windows; window j goes to rank
j // batch_size and comes from the source the schedule assigns to it (see mixture.PhaseSchedule); it takes T+1 tokens at
that source's cursor, and the cursor moves on by T (every token is a target once). Every rank tracks all cursors, so
ranks read disjoint windows and every rank holds the same state. The state is the step plus two integers per source.

align_to_docs=True makes windows begin at document starts: when a window ends inside a document that began within
that window, the rest of that document is skipped and the next window starts at the following document (skipped
tokens are counted in `dropped()`); a document longer than a window is not skipped but continues in the next windows.

doc_ids: document index within the row (0, 1, ...). The end-of-text token after a document belongs to the *next*
document, so it acts like a beginning-of-sequence token: with block-diagonal masking, the first token of every
document is predicted from the separator alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import torch
import xxhash

from ledgerlm.data.mixture import Phase, PhaseSchedule, proportional_phase
from ledgerlm.data.token_index import DocTable, TokenIndex


class _Stream:
    """A source's endless token stream: epochs of its documents, reshuffled each epoch."""

    def __init__(self, table: DocTable, seed: int, name: str, shuffle: bool = True):
        if table.n_tokens == 0:
            raise ValueError(f"source {name!r} has no tokens in this split")
        self.table, self.shuffle, self.N = table, shuffle, table.n_tokens
        self._key = [seed & 0xFFFFFFFF, xxhash.xxh32_intdigest(name.encode())]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(document order, cumulative start offsets of length n_docs + 1) of epoch e."""
        if e not in self._cache:
            n = self.table.n_docs
            order = np.random.default_rng([*self._key, e]).permutation(n) if self.shuffle else np.arange(n)
            cum = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(self.table.doc_len[order], out=cum[1:])
            if len(self._cache) >= 3:  # windows straddle at most two epochs
                self._cache.pop(min(self._cache))
            self._cache[e] = (order, cum)
        return self._cache[e]

    def read(self, a: int, b: int) -> tuple[np.ndarray, list[int]]:
        """Tokens at stream positions [a, b), and the positions (relative to a) of end-of-text separators."""
        pieces, eots, pos = [], [], a
        while pos < b:
            e, r = divmod(pos, self.N)
            order, cum = self.epoch(e)
            k = int(np.searchsorted(cum, r, side="right")) - 1
            while pos < b and k < self.table.n_docs:
                d = int(order[k])
                lo = r - int(cum[k])
                n = int(self.table.doc_len[d])
                hi = min(n, lo + (b - pos))
                pieces.append(self.table.doc(d, lo, hi))
                if hi == n:
                    eots.append(pos - a + hi - lo - 1)
                pos += hi - lo
                k += 1
                r = int(cum[k])
        out = np.concatenate(pieces).astype(np.int64)
        return out, eots

    def doc_start_at(self, x: int) -> int:
        """Stream position where the document containing position x starts."""
        e, r = divmod(x, self.N)
        _, cum = self.epoch(e)
        return e * self.N + int(cum[int(np.searchsorted(cum, r, side="right")) - 1])

    def next_doc_start(self, x: int) -> int:
        """The first document start at or after stream position x."""
        e, r = divmod(x, self.N)
        _, cum = self.epoch(e)
        k = int(np.searchsorted(cum, r, side="left"))
        return e * self.N + int(cum[k]) if k < self.table.n_docs else (e + 1) * self.N


class TokenLoader:
    """Packed training windows by phase and mixture; see the module docstring for the whole API."""

    def __init__(
        self,
        tokenize_dir: str | os.PathLike,
        phases: list[Phase] | None = None,
        seq_len: int = 1024,
        batch_size: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
        align_to_docs: bool = False,
        return_doc_ids: bool = False,
    ):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1 (got {seq_len}, {batch_size})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size (got rank={rank}, world_size={world_size})")
        self.index = TokenIndex(tokenize_dir)
        self.T, self.B, self.seed, self.rank, self.world = seq_len, batch_size, seed, rank, world_size
        self.split, self.align, self.return_doc_ids = split, align_to_docs, return_doc_ids
        sizes = {s: self.index.n_tokens(s, split) for s in self.index.sources}
        self.phases = list(phases) if phases else [proportional_phase(sizes)]
        self.sources = sorted({s for p in self.phases for s in p.mixture})
        unknown = [s for s in self.sources if s not in sizes]
        if unknown:
            raise ValueError(
                f"mixture names unknown source(s) {unknown}; the token index has: {', '.join(self.index.sources)}"
            )
        empty = [s for s in self.sources if sizes[s] == 0]
        if empty:
            raise ValueError(f"source(s) {empty} have no {split} tokens in {tokenize_dir}")
        self.global_batch = batch_size * world_size
        self.schedule = PhaseSchedule(self.phases, self.sources, self.global_batch * seq_len, seed)
        self.streams = [_Stream(self.index.table(s, split), seed, s) for s in self.sources]
        plan = json.dumps([[p.name, p.tokens, p.mixture] for p in self.phases], sort_keys=True)
        self._plan_hash = xxhash.xxh64_intdigest(plan.encode()) >> 1  # fits a signed int64
        self.step = 0
        self.cursor = [0] * len(self.sources)
        self._dropped = [0] * len(self.sources)

    # ------------------------------------------------------------------ training batches

    @property
    def total_steps(self) -> int:
        return self.schedule.total_steps

    def phase_at(self, step: int) -> Phase:
        return self.phases[self.schedule.phase_index(step)]

    @property
    def phase(self) -> str:
        return self.phase_at(self.step).name

    def next_batch(self):
        p = self.schedule.phase_index(self.step)
        first = (self.step - int(self.schedule.starts[p])) * self.global_batch
        srcs = self.schedule.sources_for(p, first, self.global_batch)
        lo, hi = self.rank * self.B, (self.rank + 1) * self.B
        rows, eots = [], []
        for j, s in enumerate(srcs.tolist()):
            c, stream = self.cursor[s], self.streams[s]
            if lo <= j < hi:  # only this rank's windows are read; all ranks advance every cursor
                toks, e = stream.read(c, c + self.T + 1)
                rows.append(toks)
                eots.append(e)
            if self.align:
                end = c + self.T
                # Continue a document that began at or before this window; else skip to the next document start.
                nxt = end if stream.doc_start_at(end) <= c else stream.next_doc_start(end)
                self._dropped[s] += nxt - (c + self.T)
                self.cursor[s] = nxt
            else:
                self.cursor[s] = c + self.T
        self.step += 1
        return self._pack(rows, eots)

    def _pack(self, rows: list[np.ndarray], eots: list[list[int]]):
        buf = np.stack(rows)
        x, y = torch.from_numpy(np.ascontiguousarray(buf[:, :-1])), torch.from_numpy(np.ascontiguousarray(buf[:, 1:]))
        if not self.return_doc_ids:
            return x, y
        mark = np.zeros((len(rows), self.T + 1), dtype=np.int64)
        for i, e in enumerate(eots):
            mark[i, e] = 1
        doc_ids = torch.from_numpy(np.cumsum(mark, axis=1)[:, : self.T])
        return x, y, doc_ids

    def __iter__(self):
        while True:
            yield self.next_batch()

    # ------------------------------------------------------------------ state and accounting

    def state_dict(self) -> dict[str, int]:
        d = {
            "step": self.step,
            "seed": self.seed,
            "seq_len": self.T,
            "global_batch": self.global_batch,
            "align_to_docs": int(self.align),
            "plan_hash": self._plan_hash,
        }
        for i, s in enumerate(self.sources):
            d[f"cursor.{s}"] = self.cursor[i]
            d[f"dropped.{s}"] = self._dropped[i]
        return d

    def load_state_dict(self, d: dict[str, int]) -> None:
        mine = self.state_dict()
        for k in ("seed", "seq_len", "global_batch", "align_to_docs", "plan_hash"):
            if int(d.get(k, -1)) != mine[k]:
                what = "phases/mixture" if k == "plan_hash" else k
                raise ValueError(f"loader state does not match this loader: {what} differs ({d.get(k)} vs {mine[k]})")
        missing = [k for k in mine if k not in d]
        if missing:
            raise ValueError(f"loader state lacks {missing}")
        self.step = int(d["step"])
        self.cursor = [int(d[f"cursor.{s}"]) for s in self.sources]
        self._dropped = [int(d[f"dropped.{s}"]) for s in self.sources]

    def drawn(self) -> dict[str, dict[int, int]]:
        """Tokens consumed per source and epoch (in align_to_docs mode this includes the dropped tails)."""
        out = {}
        for s, c, st in zip(self.sources, self.cursor, self.streams):
            full, rest = divmod(c, st.N)
            per = dict.fromkeys(range(full), st.N)
            if rest:
                per[full] = rest
            out[s] = per
        return out

    def dropped(self) -> dict[str, int]:
        return dict(zip(self.sources, self._dropped))

    # ------------------------------------------------------------------ validation

    def val_batches(
        self, n_batches: int | None = None, sources: list[str] | None = None, mixture: dict[str, float] | None = None
    ) -> Iterator:
        """Deterministic, finite batches over the val split: each source's documents in stored order, the sources
        interleaved row by row in the proportions of `mixture` (default: of their val sizes) by the same
        low-discrepancy assignment as training, so every batch of a mixture is mixed (never all code first).

        Windows are spread over ranks like training windows, so ranks see disjoint data. Only full batches are
        yielded; iteration stops after `n_batches` or when the next window's source runs out.
        """
        if mixture is None:
            names = sorted(sources) if sources else self.index.sources
            sizes = {s: self.index.n_tokens(s, "val") for s in names}
            mixture = {s: float(n) for s, n in sizes.items() if n > self.T}
            if not mixture:
                raise ValueError(f"val split of {names} has no source with more than seq_len + 1 tokens")
        phase = Phase("val", 1, dict(mixture))  # normalises, drops zero weights, sorts by name
        names = list(phase.mixture)
        unknown = [s for s in names if s not in self.index.sources]
        if unknown:
            raise ValueError(f"val mixture names unknown source(s) {unknown}")
        tables = [self.index.table(s, "val") for s in names]
        cap = [max(0, (t.n_tokens - 1) // self.T) for t in tables]  # whole windows of T+1 tokens per source
        short = [s for s, c in zip(names, cap) if c == 0]
        if short:
            raise ValueError(f"val split of {short} has fewer than seq_len + 1 = {self.T + 1} tokens")
        streams = [_Stream(t, self.seed, "val", shuffle=False) for t in tables]
        total = sum(cap)
        assign = PhaseSchedule([phase], names, self.T, 0).sources_for(0, 0, total)  # window -> source
        pos = np.zeros(total, dtype=np.int64)  # window -> its index within its source
        for j in range(len(names)):
            hit = assign == j
            pos[hit] = np.arange(int(hit.sum()))
        i = 0
        while n_batches is None or i < n_batches:
            first = (i * self.world + self.rank) * self.B
            ws = range(first, first + self.B)
            if first + self.B > total or any(pos[w] >= cap[assign[w]] for w in ws):
                return
            rows, eots = [], []
            for w in ws:
                a = int(pos[w]) * self.T
                toks, e = streams[int(assign[w])].read(a, a + self.T + 1)
                rows.append(toks)
                eots.append(e)
            yield self._pack(rows, eots)
            i += 1
