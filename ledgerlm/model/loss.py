"""Output head + cross-entropy over token chunks, so the [tokens, vocab] logits never exist all at once.

At vocab 49,152 the fp32 logits of 16 x 2048 tokens are 6.4 GB, and the plain path keeps two or three tensors of
that size alive at once (logits, log-softmax, their gradient): the largest activation of a SmolLM-135M step. Here
the head's matmul, the log-softmax and the per-token loss run `chunk_size` tokens at a time; only the hidden
states, the weight and one float per token (the log-sum-exp) are kept for the backward pass, which recomputes each
chunk's logits and turns them into the gradient in place (the approach of Liger-Kernel's fused linear
cross-entropy and Apple's cut-cross-entropy, in plain PyTorch: one more head matmul per step, no custom kernel).

The function returns per-token losses, so every reduction the trainers need is ordinary autograd on top of it:
a mean over non-ignored tokens (pretraining, SFT), a sum (SFT's token-weighted accumulation), or per-token
log-probabilities summed per response (DPO, GRPO). Gradients flow to `weight` as to any parameter, so tied
embeddings, DDP and FSDP2 (when called inside the model's forward, where FSDP has the weight unsharded) need
nothing special. Under autocast the matmuls run in the autocast dtype (bf16) and softmax in fp32, as the plain
path does; torch.compile traces the custom Function (its chunk loop unrolls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 4096  # tokens per chunk: 4096 x 49,152 fp32 logits = 0.8 GB, matmuls still large enough for a GPU


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run the head's matmul in (autocast is not active inside backward)."""
    dev = t.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return t.dtype


class _ChunkedLinearCE(torch.autograd.Function):
    """hidden [N, D], weight [V, D], targets [N] -> per-token NLL [N] (0 where targets == ignore_index)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, ignore_index: int, scale: float):
        dtype = _compute_dtype(hidden)
        n = hidden.shape[0]
        nll = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        valid = targets != ignore_index
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        w = weight.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, n, chunk_size):
                logits = F.linear(hidden[s : s + chunk_size].to(dtype), w).float()
                if scale != 1.0:
                    logits = logits * scale
                picked = logits.gather(1, safe[s : s + chunk_size, None])[:, 0]
                # log-sum-exp in place (torch.logsumexp would allocate a second [chunk, V] buffer)
                top = logits.max(dim=-1).values
                lse_c = logits.sub_(top[:, None]).exp_().sum(dim=-1).log_().add_(top)
                lse[s : s + chunk_size] = lse_c
                nll[s : s + chunk_size] = lse_c - picked
                del logits  # free this chunk's buffer before the next one is allocated
        nll = nll.masked_fill(~valid, 0.0)
        ctx.save_for_backward(hidden, weight, safe, valid, lse)
        ctx.chunk_size, ctx.scale, ctx.dtype = chunk_size, scale, dtype
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        hidden, weight, safe, valid, lse = ctx.saved_tensors
        chunk, scale, dtype = ctx.chunk_size, ctx.scale, ctx.dtype
        # d nll_i / d logit_ij = scale * (softmax_ij - [j == target_i]); ignored tokens get no gradient
        g = (grad_nll.float() * valid * scale).contiguous()
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        w = weight.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s : s + chunk].to(dtype)
                logits = F.linear(h, w).float()
                if scale != 1.0:
                    logits.mul_(scale)
                # in place: logits -> softmax -> (softmax - onehot) * g, one [chunk, V] buffer
                probs = logits.sub_(lse[s : s + chunk, None]).exp_()
                rows = torch.arange(probs.shape[0], device=probs.device)
                probs[rows, safe[s : s + chunk]] -= 1.0
                grad_logits = probs.mul_(g[s : s + chunk, None]).to(dtype)
                if need_h:
                    grad_h[s : s + chunk] = (grad_logits @ w).to(hidden.dtype)
                if need_w:
                    if dtype == torch.float32:
                        grad_w.addmm_(grad_logits.t(), h)
                    else:  # bf16 matmul, accumulated in fp32 across chunks
                        grad_w += (grad_logits.t() @ h).float()
                del logits, probs, grad_logits  # free this chunk's buffers before the next one is allocated
        return grad_h, grad_w.to(weight.dtype) if need_w else None, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int = DEFAULT_CHUNK,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy of `F.linear(hidden, weight) / temperature` against `targets`, without materialising the logits.

    hidden [..., D], targets [...] (already shifted; `ignore_index` entries skipped). reduction "mean" (over
    non-ignored tokens, as F.cross_entropy), "sum", or "none" (per-token NLL shaped like targets, 0 where ignored).
    chunk_size <= 0 runs the plain path (full logits, F.cross_entropy) -- the reference, and for comparisons.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    shape = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    if chunk_size and chunk_size > 0:
        nll = _ChunkedLinearCE.apply(h, weight, t, int(chunk_size), int(ignore_index), 1.0 / temperature)
    else:
        logits = F.linear(h, weight).float()
        if temperature != 1.0:
            logits = logits / temperature
        nll = F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="none")
    if reduction == "none":
        return nll.view(shape)
    if reduction == "sum":
        return nll.sum()
    # as F.cross_entropy's mean: NaN when every target is ignored
    return nll.sum() / (t != ignore_index).sum()
