"""Weight averaging for data-efficient training: an EMA of the weights, and a uniform average of snapshots taken
at evenly spaced steps over the decay phase ("checkpoint averaging"). Both keep fp32 shadows on the model's device
and expose their tensors for checkpointing, so a resumed run continues them exactly."""

from __future__ import annotations

import torch
from torch import nn


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)
    return {n: p for n, p in model.named_parameters()}


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in _params(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in _params(model).items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    def reset(self, model: nn.Module) -> None:
        """Restart from the current weights (done at the start of the decay phase)."""
        self.shadow = {n: p.detach().float().clone() for n, p in _params(model).items()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {n: _full(t) for n, t in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n in self.shadow:
            self.shadow[n].copy_(tensors[n])

    def weights(self) -> dict[str, torch.Tensor]:
        return self.shadow


class SnapshotAverage:
    """Uniform average of the weights at the steps added (a running sum, so memory is one model copy)."""

    def __init__(self, model: nn.Module):
        self.sum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in _params(model).items()}
        self.count = 0

    @torch.no_grad()
    def add(self, model: nn.Module) -> None:
        for n, p in _params(model).items():
            self.sum[n].add_(p.detach().float())
        self.count += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {n: _full(t) for n, t in self.sum.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        for n in self.sum:
            self.sum[n].copy_(tensors[n])
        self.count = count

    def weights(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("no snapshot was added to the average")
        return {n: s / self.count for n, s in self.sum.items()}


def snapshot_steps(decay_start: int, total: int, k: int) -> list[int]:
    """k steps evenly spaced over [decay_start, total), the last one being the final step (total - 1)."""
    if k <= 0:
        return []
    span = total - decay_start
    if span <= 0:
        return [total - 1]
    k = min(k, span)
    return sorted({total - 1 - round(i * span / k) for i in range(k)})


@torch.no_grad()
def load_weights_into(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    for n, p in _params(model).items():
        p.copy_(weights[n].to(p.dtype))
