"""The evaluation backends behind `LM` (ledgerlm.eval.harness): a Hugging Face causal LM, a ledgerlm Llama folder
and an ensemble of K models (`EnsembleLM`), each owning its decoding; `load_lm(spec, ...)` picks one."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from ledgerlm.config import ConfigError
from ledgerlm.device import resolve_device
from ledgerlm.eval.harness import LM, Tok, additive, kv_generate, load_tok
from ledgerlm.model.ensemble import Ensemble as KVEnsemble
from ledgerlm.model.ensemble import check_mode, combine
from ledgerlm.model.hf import load_model


class HFCausalLM(LM):
    """Any transformers causal LM (a local folder or a Hub name)."""

    # Rotary Llama-family architectures: logits are exactly lm_head(decoder(...)) (no soft-capping or scaling
    # after the head) and positions come from position_ids.
    _PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3"}

    def __init__(self, model, tok: Tok, name: str = "", device: str = "cpu"):
        self.model = model.eval()
        self.tok = tok
        self.name = name
        self.device = device
        # Llama-family models in transformers take a custom 4D mask + position ids with SDPA (a bool mask) and
        # eager attention (an additive one). Flash-attention kernels take no custom mask, and some architectures
        # derive positions from the 2D mask (OPT) or learn absolute ones: those score one row per request.
        self.attn_impl = getattr(model.config, "_attn_implementation", None) or "eager"
        self.tree = self.attn_impl in ("sdpa", "eager") and model.config.model_type in self._PLAIN_HEAD
        self.max_length = _max_length(model.config, getattr(tok.tok, "model_max_length", None))

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def _kw(self, pos, mask) -> dict:
        kw = {}
        if mask is not None:
            kw["attention_mask"] = mask if self.attn_impl == "sdpa" else additive(mask, self.dtype)
        if pos is not None:
            kw["position_ids"] = pos
        return kw

    @torch.no_grad()
    def logits(self, ids, pos=None, mask=None):
        return self.model(input_ids=ids, **self._kw(pos, mask)).logits

    @torch.no_grad()
    def logits_at(self, ids, pos, mask, bidx, tidx):
        if self.model.config.model_type not in self._PLAIN_HEAD or not hasattr(self.model, "lm_head"):
            return super().logits_at(ids, pos, mask, bidx, tidx)
        h = self.model.model(input_ids=ids, **self._kw(pos, mask)).last_hidden_state
        return self.model.lm_head(h[bidx, tidx])

    def generate_tokens(self, prompts, max_new, stops, lmeval: bool = False):
        """transformers' `generate`: left padding + attention mask, greedy; the stop strings end a row (or, as lm-eval,
        the batch) and are cut from the decoded text afterwards."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok, device = self.tok, self.device
        T = max(len(p) for p in prompts)
        pad = tok.eos_id if tok.eos_id is not None else 0
        if lmeval:
            pad = tok.pad_id
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in prompts], device=device)
        att = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts], device=device)

        class StopOnStrings(StoppingCriteria):
            """Finish a row once its generated tail contains a stop string (decoding a short tail per step, as
            lm-eval's criteria do; transformers' `stop_strings` precomputes tables over the whole vocabulary)."""

            def __init__(self):
                self.done = torch.zeros(len(prompts), dtype=torch.bool, device=device)

            def __call__(self, input_ids, scores, **kw):
                tail = input_ids[:, T:][:, -16:].tolist()
                for i, t in enumerate(tail):
                    if not self.done[i] and any(st in tok.decode(t) for st in stops):
                        self.done[i] = True
                return self.done.clone()

        class StopWhenAllRowsHit(StoppingCriteria):
            """lm-eval's rule (its MultiTokenEOSCriteria): for one stop string, every row has produced it in its last
            len(tokens) + 2 generated tokens (decoded with special tokens); returns one flag for the whole batch."""

            def __init__(self, stop: str):
                self.stop, self.look = stop, len(tok.encode(stop, add_special_tokens=False)) + 2
                self.done = [False] * len(prompts)

            def __call__(self, input_ids, scores, **kw):
                tails = input_ids[:, T:][:, -self.look :].tolist()
                self.done = [d or self.stop in tok.decode(t) for d, t in zip(self.done, tails)]
                return all(self.done)

        crit = [StopWhenAllRowsHit(s) for s in stops] if lmeval else [StopOnStrings()]
        kw = {"stopping_criteria": StoppingCriteriaList(crit)} if stops else {}
        out = self.model.generate(
            input_ids=ids, attention_mask=att, max_new_tokens=max_new, do_sample=False, pad_token_id=pad, **kw
        )
        return [o[T:].tolist() for o in out]


class LedgerLlama(LM):
    """ledgerlm's own `Llama` (ledgerlm.model.llama); tree packing only if its forward takes a mask."""

    def __init__(self, model, tok: Tok, name: str = "", device: str = "cpu"):
        self.model = model.eval()
        self.tok = tok
        self.name = name
        self.device = device
        # Tree packing needs a model that says it takes a 4D [B,1,T,S] bool mask as `attention_mask` (attribute
        # `accepts_4d_mask`, as ledgerlm's Llama); other models score one row per request.
        params = inspect.signature(model.forward).parameters
        self.tree = bool(getattr(model, "accepts_4d_mask", False)) and "position_ids" in params
        cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
        self.max_length = _max_length(cfg, None)

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def logits(self, ids, pos=None, mask=None):
        kw = {}
        if pos is not None:
            kw["position_ids"] = pos
        if mask is not None:
            kw["attention_mask"] = mask
        return self.model(ids, **kw).float()

    @torch.no_grad()
    def logits_at(self, ids, pos, mask, bidx, tidx):
        kw = {}
        if pos is not None:
            kw["position_ids"] = pos
        if mask is not None:
            kw["attention_mask"] = mask
        h = self.model(ids, return_hidden=True, **kw)
        return self.model.lm_head(h[bidx, tidx]).float()

    def generate_tokens(self, prompts, max_new, stops, lmeval: bool = False):
        return kv_generate(self.model, self.tok, prompts, max_new, stops, lmeval)


class EnsembleLM(LM):
    """K models sharing one tokenizer. mode "prob": log of the mean of the members' probabilities (as
    ledgerlm.model.ensemble's default); mode "logit": mean of the members' logits."""

    def __init__(self, members: Sequence[LM], mode: str = "prob"):
        if len({m.tok.vocab_id for m in members}) != 1:
            raise ValueError("ensemble members must share one tokenizer: " + ", ".join(m.name for m in members))
        check_mode(mode)
        self.members = list(members)
        self.mode = mode
        self.tok = members[0].tok
        self.max_length = min(m.max_length for m in members)
        self.device = members[0].device
        self.tree = all(m.tree for m in members)
        self.name = ",".join(m.name for m in members)
        self._kv_model = None  # the members as one KV-cache model, built at the first generation (False: cannot)

    def _combine(self, outs: list[torch.Tensor]) -> torch.Tensor:
        return combine(outs, self.mode)

    @torch.no_grad()
    def logits(self, ids, pos=None, mask=None):
        return self._combine([m.logits(ids, pos, mask).float() for m in self.members])

    @torch.no_grad()
    def logits_at(self, ids, pos, mask, bidx, tidx):
        return self._combine([m.logits_at(ids, pos, mask, bidx, tidx).float() for m in self.members])

    def generate_tokens(self, prompts, max_new, stops, lmeval: bool = False):
        """With a KV cache when every member is a Llama folder ledgerlm can load (ledgerlm.model.ensemble.Ensemble,
        the same combination rule); else by full re-computation."""
        if self._kv_model is None:
            try:
                members = [
                    m.model if isinstance(m, LedgerLlama) else load_model(m.name, self.device, m.dtype)
                    for m in self.members
                ]
                self._kv_model = KVEnsemble(members, mode=self.mode).eval()
            except (ImportError, ValueError, FileNotFoundError, KeyError):
                self._kv_model = False
        if self._kv_model is False:
            return super().generate_tokens(prompts, max_new, stops, lmeval)
        return kv_generate(self._kv_model, self.tok, prompts, max_new, stops, lmeval)


def _max_length(cfg, tok_max) -> int:
    # lm-eval's HFLM order: model config attributes first, then the tokenizer, then 2048.
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len", "seq_len", "block_size"):
        v = getattr(cfg, attr, None) if cfg is not None and not isinstance(cfg, dict) else (cfg or {}).get(attr)
        if isinstance(v, int) and v > 0:
            return v
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        return tok_max
    return 2048


def load_lm(
    spec: str, device: str | None = None, backend: str = "auto", dtype: str | None = None, ensemble_mode: str = "prob"
) -> LM:
    """Load `spec`: a model folder (ours or any transformers causal LM), a Hub name, or "A,B,..." (ensemble).

    backend: "hf" (transformers), "ledgerlm" (ledgerlm.model.hf.load_model) or "auto" (transformers if
    installed: our checkpoints are HF Llama folders, and this is what lm-eval runs).
    Interpolated models are plain folders (written by the interpolate stage).
    """
    device = resolve_device(device)
    parts = [s.strip() for s in str(spec).split(",") if s.strip()]
    if len(parts) > 1:
        return EnsembleLM([load_lm(p, device, backend, dtype) for p in parts], mode=ensemble_mode)
    spec = parts[0]
    if backend == "auto":
        try:
            import transformers  # noqa: F401

            backend = "hf"
        except ImportError:
            backend = "ledgerlm"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, None: None}[dtype]
    if backend == "hf":
        import transformers
        from transformers import AutoModelForCausalLM

        # transformers renamed `torch_dtype` to `dtype` in 4.56
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        try:
            model = AutoModelForCausalLM.from_pretrained(spec, **{key: torch_dtype or torch.float32}).to(device)
        except OSError as e:  # neither a model folder here nor a model the Hub gave (unknown name, or offline)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError("eval.model", f"{spec}: no model folder here, and the Hub gave none ({first})") from e
        return HFCausalLM(model, load_tok(spec), name=spec, device=device)
    if backend == "ledgerlm":
        model = load_model(spec, device)
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return LedgerLlama(model, load_tok(spec), name=spec, device=device)
    raise ValueError(f"unknown backend {backend!r}; expected auto, hf or ledgerlm")
