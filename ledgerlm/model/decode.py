"""Inference-only decoding for our `Llama`: the same maths as `Llama.forward` with a left-padded attention mask and
a KV cache, laid out for many small steps.

- Weights are fused and pre-transposed once per `Decoder` (q|k|v and gate|up as one matrix each, every matrix stored
  [in, out] contiguous): `Llama.forward` concatenates them at every call (a copy of every layer's weights per
  decode step), and on a CPU `x @ w_t` runs ~1.4x faster than `F.linear(x, w)` at batch 48 (MKL's transposed-B
  path). The copy costs one pass over the weights per `generate` call and one extra set of weights in memory.
- The prefill runs the projections and the MLP on the prompts' real tokens only (left padding is dropped, then put
  back for attention): a ragged batch pays for its tokens, not for batch x longest prompt.
- The KV cache is preallocated for the whole generation and written in place.
- `compact(keep)` drops finished rows from the batch (their cache rows included), so rows that stopped at EOS stop
  costing compute.

Attention, RoPE, RMSNorm and the masking rules (padding attends to nothing, a padding query attends to itself) are
`Llama`'s; greedy decoding gives the same tokens (tests/test_generate_parity.py, tests/test_generate_decode.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ledgerlm.model.llama import Llama, _sdpa, apply_rope


class Decoder:
    """A KV-cache decoder of `model` for `batch` rows of up to `total` positions."""

    def __init__(self, model: Llama, batch: int, total: int):
        cfg = model.cfg
        self.model = model
        self.h, self.kvh, self.hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        with torch.no_grad():
            self.layers = [_fused(block) for block in model.layers]
            self.head_t = _transposed(model.lm_head.weight)
        p = model.embed_tokens.weight
        shape = (batch, cfg.n_kv_head, total, cfg.head_dim)
        # uninitialised: every position is written (the prefill writes all P, a step its own) before it is read
        self.k = [torch.empty(shape, device=p.device, dtype=p.dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.empty(shape, device=p.device, dtype=p.dtype) for _ in range(cfg.n_layer)]

    def compact(self, keep: torch.Tensor) -> None:
        """Keep only the batch rows `keep` (indices into the current batch), in that order."""
        self.k = [k.index_select(0, keep) for k in self.k]
        self.v = [v.index_select(0, keep) for v in self.v]

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Left-padded prompts ids, mask [B, P] -> logits [B, V] after each row's last prompt token; fills the cache's
        first P positions (zeros at padding, which the mask hides)."""
        b, plen = ids.shape
        real = mask.bool().reshape(-1).nonzero().squeeze(-1)  # flat indices of the real tokens
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        x = self.model.embed_tokens(ids.reshape(-1)[real])  # [N, D]
        cos, sin = self.model.rotary(pos.reshape(1, -1)[:, real], x.dtype)  # [1, N, 1, hd/2]
        cos, sin = cos[0], sin[0]
        att_mask = Llama._mask(b, plen, 0, None, mask[:, :plen], ids.device)
        for i, w in enumerate(self.layers):
            h = w["in_norm"](x)
            qkv = (h @ w["qkv"]).view(-1, self.h + 2 * self.kvh, self.hd)
            qk = apply_rope(qkv[:, : self.h + self.kvh], cos, sin)
            full = qkv.new_zeros(b * plen, self.h + 2 * self.kvh, self.hd)
            full[real] = torch.cat((qk, qkv[:, self.h + self.kvh :]), dim=1)
            full = full.view(b, plen, -1, self.hd).transpose(1, 2)  # [B, heads, P, hd]
            q, k, v = full.split((self.h, self.kvh, self.kvh), dim=1)
            self.k[i][:, :, :plen] = k
            self.v[i][:, :, :plen] = v
            y = _sdpa(q, k, v, att_mask, is_causal=False, dropout_p=0.0)  # [B, H, P, hd]
            y = y.transpose(1, 2).reshape(b * plen, -1)[real]
            x = self._mlp(x + y @ w["o"], w)
        last = torch.arange(b, device=ids.device) * plen + plen - 1  # left padding: always a real token
        keep = torch.searchsorted(real, last)  # each row's last token among the real ones
        return self._logits(x[keep])

    @torch.no_grad()
    def step(self, tok: torch.Tensor, mask: torch.Tensor, cur: int) -> torch.Tensor:
        """One new token per row at position index `cur` (tok [B]; mask [B, cur + 1] over all positions so far)
        -> logits [B, V]. A row whose mask is 0 at `cur` (finished: padding) attends to that position alone."""
        b = tok.shape[0]
        pos = (mask.long().sum(-1, keepdim=True) - 1).clamp(min=0)  # real tokens before this one
        x = self.model.embed_tokens(tok)  # [B, D]
        cos, sin = self.model.rotary(pos, x.dtype)  # [B, 1, 1, hd/2]
        cos, sin = cos[:, 0], sin[:, 0]
        att = mask.bool().clone()
        att[:, cur] = True
        att = att[:, None, None, :]  # [B, 1, 1, S]
        for i, w in enumerate(self.layers):
            h = w["in_norm"](x)
            qkv = (h @ w["qkv"]).view(b, self.h + 2 * self.kvh, self.hd)
            qk = apply_rope(qkv[:, : self.h + self.kvh], cos, sin)
            self.k[i][:, :, cur] = qk[:, self.h :]
            self.v[i][:, :, cur] = qkv[:, self.h + self.kvh :]
            q = qk[:, : self.h, None]  # [B, H, 1, hd]
            y = _sdpa(q, self.k[i][:, :, : cur + 1], self.v[i][:, :, : cur + 1], att, False, 0.0)
            x = self._mlp(x + y.reshape(b, -1) @ w["o"], w)
        return self._logits(x)

    def _mlp(self, x: torch.Tensor, w: dict) -> torch.Tensor:
        h = w["post_norm"](x)
        gate, up = (h @ w["gate_up"]).chunk(2, dim=-1)
        return x + F.silu(gate, inplace=True).mul_(up) @ w["down"]  # in place: no [N, d_ff] temporaries

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.model.norm(x)
        return (h @ self.head_t).float()


def _fused(block) -> dict:
    """One block's weights for inference: [in, out] contiguous, q|k|v and gate|up fused."""
    a, m = block.self_attn, block.mlp
    return {
        "in_norm": block.input_layernorm,  # the modules: RMSNorm's fp32 / low-precision rules stay its own
        "post_norm": block.post_attention_layernorm,
        "qkv": _transposed(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
        "o": _transposed(a.o_proj.weight),
        "gate_up": _transposed(m.gate_proj.weight, m.up_proj.weight),
        "down": _transposed(m.down_proj.weight),
    }


def _transposed(*ws: torch.Tensor) -> torch.Tensor:
    """[out_i, in] weights -> one contiguous [in, sum out_i] matrix, written in one pass (no concatenated copy)."""
    out = ws[0].new_empty(ws[0].shape[1], sum(w.shape[0] for w in ws))
    at = 0
    for w in ws:
        out[:, at : at + w.shape[0]].copy_(w.t())
        at += w.shape[0]
    return out
