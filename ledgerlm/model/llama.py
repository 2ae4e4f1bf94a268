"""Llama-style decoder (RMSNorm, RoPE, GQA, SwiGLU, no biases, tied embeddings) in one file.

Module and parameter names mirror Hugging Face `LlamaForCausalLM` (minus the leading `model.`), so HF interop is a
key rename, and the maths (rotate_half RoPE, RMSNorm in fp32, repeat-interleaved KV heads) matches HF exactly so fp32
logits agree to ~1e-5.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ledgerlm.model.loss import DEFAULT_CHUNK, linear_cross_entropy


@dataclass
class ModelConfig:
    n_layer: int = 30
    d_model: int = 576
    n_head: int = 9
    n_kv_head: int = 3
    d_ff: int = 1536
    vocab_size: int = 49152
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"model: d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model: n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError(f"model: head dim {self.d_model // self.n_head} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model: dropout={self.dropout} must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def num_params(self) -> int:
        """Exact parameter count (tied embeddings counted once)."""
        d, hd = self.d_model, self.head_dim
        attn = d * self.n_head * hd * 2 + d * self.n_kv_head * hd * 2
        per_layer = attn + 3 * d * self.d_ff + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return emb + self.n_layer * per_layer + d

    def flops_per_token(self, seq_len: int, causal: bool = False) -> float:
        """Training FLOPs per token: 6 x matmul params (lm_head included, embedding lookup not) + attention scores.

        Attention term 12 * n_layer * d_model * seq_len, full (every query against every key, as nanoGPT's MFU and
        our older numbers count it); `causal=True` halves it for the causal mask (PaLM's appendix B, nanochat):
        the work a causal kernel really does, so the lower, stricter MFU.
        """
        d = self.d_model
        n_matmul = self.num_params() - (2 * self.n_layer + 1) * d  # drop norm weights
        if not self.tie_embeddings:
            n_matmul -= self.vocab_size * d  # the input embedding is a lookup, not a matmul
        return 6.0 * n_matmul + (6.0 if causal else 12.0) * self.n_layer * d * seq_len


# Named sizes. `tiny`/`small` are for CPU tests and demos; vocab_size is usually overridden by the tokenizer's.
SIZES: dict[str, dict] = {
    "tiny": dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=192, vocab_size=4096, max_seq_len=256),
    "small": dict(n_layer=6, d_model=256, n_head=4, n_kv_head=2, d_ff=768, vocab_size=8192, max_seq_len=512),
    "smollm-135m": dict(n_layer=30, d_model=576, n_head=9, n_kv_head=3, d_ff=1536, vocab_size=49152, max_seq_len=2048),
    "smollm-360m": dict(n_layer=32, d_model=960, n_head=15, n_kv_head=5, d_ff=2560, vocab_size=49152, max_seq_len=2048),
}


def model_config(name_or_dict: str | dict | ModelConfig, vocab_size: int | None = None, **overrides) -> ModelConfig:
    """Resolve a size name (`SIZES`), a dict (optionally with `size:` as base) or a ModelConfig; apply overrides."""
    if isinstance(name_or_dict, ModelConfig):
        fields = dataclasses.asdict(name_or_dict)
    elif isinstance(name_or_dict, str):
        if name_or_dict not in SIZES:
            raise ValueError(f"model: unknown size {name_or_dict!r}; known sizes: {', '.join(SIZES)}")
        fields = dict(SIZES[name_or_dict])
    elif isinstance(name_or_dict, dict):
        d = dict(name_or_dict)
        base = d.pop("size", None)
        fields = dict(SIZES[base]) if base else {}
        if base and base not in SIZES:
            raise ValueError(f"model: unknown size {base!r}; known sizes: {', '.join(SIZES)}")
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"model: unknown field(s) {bad}; known: {sorted(known)}")
        fields.update(d)
    else:
        raise TypeError(f"model: expected a size name, dict or ModelConfig, got {type(name_or_dict).__name__}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if vocab_size is not None:
        fields["vocab_size"] = int(vocab_size)
    return ModelConfig(**fields)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # fused kernel, same maths as HF's fp32 path
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        # As HF: normalise in fp32, cast back, then scale (order matters for bf16 parity).
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cat(c, c) + rotate_half(x) * cat(s, s), written on the halves: the same floating-point operations as
    HF's form (so bitwise the same), with fewer full-size temporaries."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids [B, T] -> half-width cos, sin [B, T, 1, head_dim/2]; fp32 like HF, then cast.
        freqs = position_ids.float()[..., None] * self.inv_freq.float()
        return freqs.cos().to(dtype)[:, :, None], freqs.sin().to(dtype)[:, :, None]


class KVCache:
    """Preallocated per-layer K/V buffers [B, n_kv_head, max_len, head_dim]; `pos` = tokens already cached."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        if self.pos + t > self.max_len:
            raise ValueError(f"KV cache overflow: {self.pos}+{t} > max_len={self.max_len}")
        self.k[layer][:, :, self.pos : self.pos + t] = k
        self.v[layer][:, :, self.pos : self.pos + t] = v
        return self.k[layer][:, :, : self.pos + t], self.v[layer][:, :, : self.pos + t]


# SDPA's enable_gqa exists from torch 2.5 (pyproject allows 2.4, where it is a TypeError)
TORCH_HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def gqa_in_kernel(is_cuda: bool, dtype: torch.dtype, has_mask: bool, head_dim: int) -> bool:
    """Whether to hand grouped K/V to SDPA (enable_gqa=True) instead of expanding them: only where the flash kernel
    takes them -- CUDA, fp16/bf16, no explicit mask, head dim <= 256, torch >= 2.5. Elsewhere (fp32 generation and
    evaluation, masks) SDPA would skip flash and the memory-efficient kernel, which do not accept enable_gqa there,
    and fall back to the math path that materialises the [B, H, T, S] attention in fp32; expanded K/V keep the
    efficient kernel."""
    return TORCH_HAS_GQA and is_cuda and not has_mask and dtype in (torch.float16, torch.bfloat16) and head_dim <= 256


def _sdpa(q, k, v, mask, is_causal, dropout_p):
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        if gqa_in_kernel(q.is_cuda, q.dtype, mask is not None, q.shape[-1]):
            # the flash kernel takes grouped K/V directly: no copy
            return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, dropout_p=dropout_p, enable_gqa=True)
        if q.shape[2] == 1 and dropout_p == 0.0:
            # one query per row (a KV-cache decode step): the rep query heads of kv head j (heads j*rep..j*rep+rep-1,
            # as HF's repeat_kv pairs them) become rep query rows against that head's K/V, so the cache is never
            # copied rep-fold at every step; exact, each query row sees the same keys, values and mask
            b, h, _, d = q.shape
            qg = q.reshape(b, h // rep, rep, d)
            y = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask, is_causal=False)  # mask [B, 1, 1, S]
            return y.reshape(b, h, 1, d)
        # Same as HF repeat_kv (head h uses kv head h // rep); exact, and every CPU/masked backend accepts it.
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, mask, kv_cache: KVCache | None):
        b, t, _ = x.shape
        h, kvh = self.n_head, self.n_kv_head
        # one GEMM for q, k and v (weights stay separate, named as in HF); RoPE on q and k in one pass
        w = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))
        qkv = F.linear(x, w).view(b, t, h + 2 * kvh, self.head_dim)
        qk = apply_rope(qkv[:, :, : h + kvh], cos, sin)
        q, k = qk[:, :, :h].transpose(1, 2), qk[:, :, h:].transpose(1, 2)
        v = qkv[:, :, h + kvh :].transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
        p = self.dropout if self.training else 0.0
        y = _sdpa(q, k, v, mask, is_causal=mask is None, dropout_p=p)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = F.linear(x, torch.cat((self.gate_proj.weight, self.up_proj.weight))).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x, cos, sin, mask, kv_cache):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 at every document boundary of a packed row ([B, T] -> [B, T])."""
    b, t = doc_ids.shape
    idx = torch.arange(t, device=doc_ids.device).expand(b, t)
    start = torch.ones_like(doc_ids, dtype=torch.bool)
    start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    # index of the most recent document start at or before each position
    first = torch.where(start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - first


class Llama(nn.Module):
    accepts_4d_mask = True  # forward takes a boolean [B, 1, T, S] attention_mask (see forward)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.emb_drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) everywhere; residual output projections scaled by 1/sqrt(2*n_layer) (GPT-2/nanoGPT)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.ndim == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)
        # non-persistent buffer: recompute (needed after building on the meta device and materialising)
        hd = self.cfg.head_dim
        self.rotary.inv_freq.copy_(
            1.0 / (self.cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        )

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # parameters() deduplicates tied weights

    def new_kv_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed_tokens.weight
        return KVCache(self.cfg, batch, max_len, p.device, p.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        doc_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        return_hidden: bool = False,
        targets: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        loss_chunk_size: int = DEFAULT_CHUNK,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """input_ids [B, T] -> float32 logits [B, T, V] (or final-normed hidden states [B, T, D] if return_hidden).

        doc_ids [B, T]: packed documents; attention is block-diagonal causal and positions restart per document.
        attention_mask [B, S]: 1 = real token, 0 = padding, over cached + new tokens (S = cache.pos + T); used for
        left-padded batched generation. Or a boolean [B, 1, T, S] mask (True = attend) used as it is, with
        `position_ids`: e.g. the evaluation harness's shared-prefix ("tree") rows. kv_cache: a `KVCache`; new K/V are appended and `cache.pos` advances by T.
        targets [B, T] (already shifted): return the cross-entropy instead (one graph for torch.compile), computed
        by `ledgerlm.model.loss.linear_cross_entropy` over chunks of `loss_chunk_size` tokens, so the [B, T, V]
        logits never exist (0: the plain path); `reduction` "mean" (over non-ignored targets), "sum", or "none"
        (per-token NLL [B, T], 0 at ignored targets: minus the log-probs DPO and GRPO sum). `temperature` divides
        the logits first (GRPO's sampling distribution).
        """
        b, t = input_ids.shape
        past = kv_cache.pos if kv_cache is not None else 0
        if position_ids is None:
            if doc_ids is not None:
                position_ids = positions_from_doc_ids(doc_ids)
            elif attention_mask is not None and attention_mask.dim() == 2:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past : past + t]
            else:
                position_ids = torch.arange(past, past + t, device=input_ids.device).expand(b, t)
        mask = self._mask(b, t, past, doc_ids, attention_mask, input_ids.device)
        x = self.emb_drop(self.embed_tokens(input_ids))
        cos, sin = self.rotary(position_ids, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += t
        x = self.norm(x)
        if return_hidden:
            return x
        if targets is not None:
            return linear_cross_entropy(
                x,
                self.lm_head.weight,
                targets,
                ignore_index=ignore_index,
                reduction=reduction,
                chunk_size=loss_chunk_size,
                temperature=temperature,
            )
        return self.lm_head(x).float()

    def hidden_states(self, input_ids: torch.Tensor, **kw) -> torch.Tensor:
        """Final-normed last-layer hidden states [B, T, D] (for scalar heads, e.g. the reward model)."""
        return self.forward(input_ids, return_hidden=True, **kw)

    def loss(self, input_ids, targets, *, doc_ids=None, ignore_index: int = -100, **kw) -> torch.Tensor:
        """Mean next-token cross-entropy (targets already shifted; ignore_index entries skipped)."""
        return self(input_ids, doc_ids=doc_ids, targets=targets, ignore_index=ignore_index, **kw)

    @staticmethod
    def _mask(b, t, past, doc_ids, attention_mask, device) -> torch.Tensor | None:
        """Boolean [B, 1, T, S] mask (True = attend), or None for plain causal (lets SDPA pick flash kernels)."""
        if doc_ids is None and attention_mask is None and past == 0:
            return None
        s = past + t
        if attention_mask is not None and attention_mask.dim() == 4:
            if attention_mask.shape != (b, 1, t, s) or attention_mask.dtype != torch.bool or doc_ids is not None:
                raise ValueError(f"a 4D attention_mask must be bool [{b}, 1, {t}, {s}] without doc_ids")
            return attention_mask
        q_pos = torch.arange(past, s, device=device)
        k_pos = torch.arange(s, device=device)
        m = (k_pos[None, :] <= q_pos[:, None])[None].expand(b, t, s)
        if doc_ids is not None:
            if past:
                raise ValueError("doc_ids cannot be combined with a KV cache")
            m = m & (doc_ids[:, :, None] == doc_ids[:, None, :])
        if attention_mask is not None:
            am = attention_mask.bool()
            if am.shape != (b, s):
                raise ValueError(f"attention_mask has shape {tuple(am.shape)}, expected {(b, s)}")
            # padding queries attend to themselves only, so no row is empty (an empty row would give NaN)
            m = (m & am[:, None, :]) | (q_pos[:, None] == k_pos[None, :])[None]
        return m[:, None]


def build_model(cfg: ModelConfig, device="cpu", dtype=torch.float32) -> Llama:
    """Build on the meta device, then materialise on `device` and initialise (fast even for big models)."""
    with torch.device("meta"):
        model = Llama(cfg)
    model = model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.reset_parameters()
    return model.to(dtype)
