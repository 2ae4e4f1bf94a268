"""Optimizers: AdamW (fused where available) with decoupled weight decay on matrices only, and Muon for the
hidden matrices (AdamW keeps embeddings, head and norms), as in modded-nanogpt / nanochat.

Every param group carries `base_lr`; the schedule multiplies it (`set_lr`), so one multiplier drives all groups.
"""

from __future__ import annotations

import torch
from torch import nn


def _get(cfg, name, default):
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def zeropower_via_newtonschulz5(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise g (U S V^T -> ~U V^T) with the quintic Newton-Schulz iteration of Muon."""
    a, b, c = 3.4445, -4.7750, 2.0315
    # bf16 on GPU is what Muon was tuned with; fp32 on CPU keeps runs bitwise reproducible and fast enough.
    x = g.bfloat16() if g.is_cuda else g.float()
    transpose = x.size(-2) > x.size(-1)
    if transpose:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        m = x @ x.mT
        x = a * x + (b * m + c * m @ m) @ x
    if transpose:
        x = x.mT
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz, for 2-D weight matrices only (nesterov momentum).

    The update is scaled by sqrt(max(1, rows/cols)) so tall and wide matrices get comparable per-element steps.
    Under DDP every rank holds the full, already averaged gradient and computes the same update.
    """

    def __init__(self, params, lr=0.02, momentum=0.95, weight_decay=0.0, ns_steps=5):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.ndim != 2:
                    raise ValueError(f"Muon only handles 2-D parameters, got shape {tuple(p.shape)}")
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = st["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"])  # nesterov
                u = zeropower_via_newtonschulz5(g, group["ns_steps"])
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(u, alpha=-group["lr"] * max(1.0, p.size(0) / p.size(1)) ** 0.5)


class Combined:
    """Several optimizers stepped as one (Muon + AdamW); the state dict nests each one's by index."""

    def __init__(self, optimizers):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {str(i): o.state_dict() for i, o in enumerate(self.optimizers)}

    def load_state_dict(self, sd):
        for i, o in enumerate(self.optimizers):
            o.load_state_dict(sd[str(i)])


def _adamw(groups, lr, betas, eps, params_for_device, fused_cpu=True):
    dev = params_for_device[0].device if params_for_device else torch.device("cpu")
    # fused AdamW exists for CUDA, and for CPU since torch 2.4; fall back to foreach otherwise
    fused = dev.type == "cuda" or (fused_cpu and dev.type == "cpu")
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def build_optimizer(model: nn.Module, cfg=None, fused_cpu: bool = True):
    """The optimizer of every training stage. cfg fields (attribute or dict, all optional): optimizer (adamw|muon),
    lr, weight_decay, beta1 and beta2 (or betas), eps, muon_lr, muon_momentum. Weight decay applies to matrices
    (embeddings included), never to norm weights. fused_cpu: the fused AdamW kernel on CPU too (pretraining; the
    post-training stages keep torch's default CPU kernel, which rounds differently, so their CPU curves stay put)."""
    name = _get(cfg, "optimizer", "adamw")
    lr = float(_get(cfg, "lr", 3e-3))
    wd = float(_get(cfg, "weight_decay", 0.1))
    betas = tuple(float(b) for b in _get(cfg, "betas", (_get(cfg, "beta1", 0.9), _get(cfg, "beta2", 0.95))))
    eps = float(_get(cfg, "eps", 1e-8))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied weights appear once
    if name == "adamw":
        decay = [p for n, p in named if p.ndim >= 2]
        no_decay = [p for n, p in named if p.ndim < 2]
        groups = [
            dict(params=decay, weight_decay=wd, base_lr=lr, name="decay"),
            dict(params=no_decay, weight_decay=0.0, base_lr=lr, name="no_decay"),
        ]
        return _adamw([g for g in groups if g["params"]], lr, betas, eps, [p for _, p in named], fused_cpu)
    if name == "muon":
        mlr = float(_get(cfg, "muon_lr", 0.02))
        is_hidden = lambda n, p: p.ndim == 2 and "embed_tokens" not in n and "lm_head" not in n  # noqa: E731
        hidden = [p for n, p in named if is_hidden(n, p)]
        emb = [p for n, p in named if not is_hidden(n, p) and p.ndim >= 2]
        norms = [p for n, p in named if p.ndim < 2]
        muon = Muon(
            [dict(params=hidden, base_lr=mlr, name="muon")],
            lr=mlr,
            momentum=float(_get(cfg, "muon_momentum", 0.95)),
            weight_decay=wd,
        )
        groups = [
            dict(params=emb, weight_decay=wd, base_lr=lr, name="embed"),
            dict(params=norms, weight_decay=0.0, base_lr=lr, name="no_decay"),
        ]
        adam = _adamw([g for g in groups if g["params"]], lr, betas, eps, [p for _, p in named], fused_cpu)
        return Combined([muon, adam])
    raise ValueError(f"optimizer must be 'adamw' or 'muon', got {name!r}")


def set_lr(optimizer, mult: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * mult


def clip_grad(model: nn.Module, max_norm: float) -> float:
    """Clip the global grad norm (no-op clip when max_norm <= 0) and return the pre-clip norm as a float."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # FSDP2 DTensor
        norm = norm.full_tensor()
    return float(norm)
