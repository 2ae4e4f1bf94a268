"""Token batches for pretraining: fixed-length windows over token arrays (memory-mapped shards or in-memory).

Windows of seq_len+1 tokens are cut end to end from each array (documents are packed; end-of-text separates them)
and visited in a seeded random order, reshuffled each epoch. `data_tokens` restricts training to a fixed seeded
subset of windows, so `tokens > data_tokens` means several epochs over the same unique data (the data-efficiency
setting). The state is (epoch, cursor), so a resumed run continues with exactly the same batches.
"""

from __future__ import annotations

import numpy as np
import torch

from ledgerlm.data.loader import TokenLoader
from ledgerlm.data.token_index import TokenIndex


class WindowSource:
    def __init__(
        self,
        arrays: list[np.ndarray],
        seq_len: int,
        seed: int = 0,
        data_tokens: int = 0,
        val_arrays: list[np.ndarray] | None = None,
        eot_id: int | None = None,
    ):
        self.arrays = [a for a in arrays if len(a) > seq_len]
        self.seq_len, self.seed, self.eot_id = seq_len, seed, eot_id
        counts = [(len(a) - 1) // seq_len for a in self.arrays]
        self.windows = np.concatenate(
            [np.stack([np.full(c, i), np.arange(c) * seq_len], 1) for i, c in enumerate(counts) if c]
            or [np.zeros((0, 2), np.int64)]
        ).astype(np.int64)
        if len(self.windows) == 0:
            raise ValueError(f"no training window of {seq_len + 1} tokens: the training data is too small")
        if data_tokens:
            n = max(1, data_tokens // seq_len)
            if n > len(self.windows):
                raise ValueError(
                    f"data_tokens={data_tokens} exceeds the {len(self.windows) * seq_len} training tokens available"
                )
            pick = np.random.default_rng([seed, 12345]).permutation(len(self.windows))[:n]
            self.windows = self.windows[np.sort(pick)]
        self.val_arrays = [a for a in (val_arrays or []) if len(a) > seq_len]
        self.epoch, self.cursor = 0, 0
        self._order = self._perm(0)
        self.doc_ids = False  # set by the trainer when doc masking is on

    @property
    def n_tokens(self) -> int:
        return len(self.windows) * self.seq_len

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))

    def _window(self, arr: np.ndarray, off: int) -> np.ndarray:
        return np.asarray(arr[off : off + self.seq_len + 1], dtype=np.int64)

    def next_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for _ in range(batch):
            if self.cursor == len(self._order):
                self.epoch += 1
                self.cursor = 0
                self._order = self._perm(self.epoch)
            a, off = self.windows[self._order[self.cursor]]
            self.cursor += 1
            rows.append(self._window(self.arrays[a], int(off)))
        t = torch.from_numpy(np.stack(rows))
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def next_micro(self, rank: int, world: int, batch: int):
        """This rank's micro-batch: every rank reads all `world` micro-batches and keeps its own, so the loader
        state stays identical everywhere and N ranks see exactly what 1 process with N x accumulation sees."""
        for r in range(world):
            xb, yb = self.next_batch(batch)
            if r == rank:
                x, y = xb, yb
        doc = doc_ids_from_eot(x, self.eot_id) if self.doc_ids and self.eot_id is not None else None
        return x, y, doc

    def val_batches(self, n: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first n*batch windows of the validation arrays (fixed across steps and runs)."""
        rows = []
        for arr in self.val_arrays:
            for off in range(0, len(arr) - self.seq_len - 1, self.seq_len):
                rows.append(self._window(arr, off))
                if len(rows) == n * batch:
                    break
            if len(rows) == n * batch:
                break
        out = []
        for i in range(0, len(rows) - batch + 1, batch):
            t = torch.from_numpy(np.stack(rows[i : i + batch]))
            out.append((t[:, :-1].contiguous(), t[:, 1:].contiguous()))
        return out

    def val_sets(self, n: int, batch: int) -> dict[str, list]:
        """Validation batches by name: these arrays are not split by source, so one set, `all`."""
        return {"all": self.val_batches(n, batch)}

    def mixtures(self) -> dict[str, dict[str, float]]:
        return {"all": {"all": 1.0}}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "n_windows": len(self.windows), "seed": self.seed}

    def load_state_dict(self, st: dict) -> None:
        if st["n_windows"] != len(self.windows) or st["seed"] != self.seed:
            raise ValueError(
                f"loader state does not match the data: checkpoint has {st['n_windows']} windows / seed {st['seed']}, "
                f"data has {len(self.windows)} / seed {self.seed}"
            )
        self.epoch, self.cursor = int(st["epoch"]), int(st["cursor"])
        self._order = self._perm(self.epoch)


def doc_ids_from_eot(x: torch.Tensor, eot_id: int) -> torch.Tensor:
    """Document index per position of packed rows: a new document starts right after each end-of-text token."""
    starts = torch.zeros_like(x)
    starts[:, 1:] = (x[:, :-1] == eot_id).long()
    return starts.cumsum(1)


def from_tokenize_dir(tokenize_dir, seq_len: int, seed: int, data_tokens: int = 0) -> WindowSource:
    """All sources' train shards (train) and val shards (validation) of a tokenize output directory."""
    idx = TokenIndex(tokenize_dir)
    train, val = [], []
    for e in sorted(idx.index["shards"], key=lambda e: e["path"]):
        arr = np.memmap(idx.dir / e["path"], dtype=np.dtype(e["dtype"]).newbyteorder("<"), mode="r")
        (train if e["split"] == "train" else val).append(arr)
    return WindowSource(train, seq_len, seed, data_tokens, val, eot_id=idx.eot_id)


class LoaderSource:
    """The project's `TokenLoader` (phases, mixtures, per-rank windows) behind the interface the trainer uses."""

    def __init__(
        self,
        tokenize_dir,
        seq_len: int,
        micro_batch_size: int,
        seed: int,
        rank: int,
        world: int,
        phases=None,
        align_to_docs: bool = False,
        doc_ids: bool = False,
    ):
        self.loader = TokenLoader(
            tokenize_dir,
            phases=phases,
            seq_len=seq_len,
            batch_size=micro_batch_size,
            seed=seed,
            rank=rank,
            world_size=world,
            align_to_docs=align_to_docs,
            return_doc_ids=doc_ids,
        )
        self.seq_len, self.doc_ids = seq_len, doc_ids
        self.eot_id = self.loader.index.eot_id
        idx = self.loader.index
        self.n_tokens = sum(idx.n_tokens(s, "train") for s in idx.sources)
        self.phase_tokens = sum(p.tokens for p in self.loader.phases) if phases else 0

    def next_micro(self, rank: int, world: int, batch: int):
        out = self.loader.next_batch()
        return (out[0], out[1], out[2]) if self.doc_ids else (out[0], out[1], None)

    def val_batches(self, n: int, batch: int):
        """n batches of every source's held-out windows, interleaved in proportion to their val sizes."""
        try:
            return [(b[0], b[1]) for b in self.loader.val_batches(n)]
        except ValueError:  # no (or too small a) validation split
            return []

    def val_sets(self, n: int, batch: int) -> dict[str, list]:
        """n held-out batches of each training source that has a validation split of at least one batch."""
        out = {}
        for s in self.loader.sources:
            try:
                got = [(b[0], b[1]) for b in self.loader.val_batches(n, mixture={s: 1.0})]
            except ValueError:  # no (or too small a) validation split for this source
                got = []
            if got:
                out[s] = got
        return out

    def mixtures(self) -> dict[str, dict[str, float]]:
        """Each phase's mixture by phase name (one proportional phase `all` when the recipe gives none)."""
        return {p.name: dict(p.mixture) for p in self.loader.phases}

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, st: dict) -> None:
        self.loader.load_state_dict(st)

    def ledger_info(self) -> dict:
        return {"drawn": self.loader.drawn(), "dropped": self.loader.dropped()}
