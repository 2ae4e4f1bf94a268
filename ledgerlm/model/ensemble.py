"""Ensemble of K models behaving like one `Llama` (forward, KV cache, generate, eval).

mode="prob" (default): output = log(mean_k softmax(logits_k)), i.e. probability averaging; the result is a proper
log-distribution, so log-likelihood scoring and sampling use it unchanged.
mode="logit": output = mean_k logits_k (a geometric mean of the distributions, renormalised by softmax).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MODES = ("prob", "logit")


def combine(outs: list[torch.Tensor], mode: str) -> torch.Tensor:
    """The members' logits [..., V] as one: "prob", the log of the mean of their probabilities; "logit", the mean of
    their logits. The one combination rule of every ensemble (this module's and eval's `EnsembleLM`)."""
    stacked = torch.stack(outs)
    if mode == "logit":
        return stacked.mean(0)
    return torch.logsumexp(stacked.log_softmax(-1), dim=0) - math.log(len(outs))


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"ensemble mode must be 'prob' or 'logit', got {mode!r}")


class EnsembleCache:
    def __init__(self, caches):
        self.caches = caches

    @property
    def pos(self) -> int:
        return self.caches[0].pos


class Ensemble(nn.Module):
    def __init__(self, models, mode: str = "prob"):
        super().__init__()
        if not models:
            raise ValueError("Ensemble needs at least one model")
        check_mode(mode)
        vocab = {m.cfg.vocab_size for m in models}
        if len(vocab) != 1:
            raise ValueError(f"Ensemble members disagree on vocab_size: {sorted(vocab)}")
        self.members = nn.ModuleList(models)
        self.mode = mode
        self.cfg = models[0].cfg

    def new_kv_cache(self, batch: int, max_len: int) -> EnsembleCache:
        return EnsembleCache([m.new_kv_cache(batch, max_len) for m in self.members])

    def forward(self, input_ids, *, kv_cache: EnsembleCache | None = None, return_hidden: bool = False, **kw):
        if return_hidden:
            raise ValueError("Ensemble has no single hidden state")
        outs = [
            m(input_ids, kv_cache=kv_cache.caches[i] if kv_cache is not None else None, **kw)
            for i, m in enumerate(self.members)
        ]
        return combine(outs, self.mode)  # outs: K x [B, T, V] fp32
