"""Batched log-likelihood scoring and greedy generation, numerically matching lm-eval's HFLM.

Tokenisation is lm-eval's: trailing spaces of the context move to the continuation, context+continuation is
encoded as one string and split at the length of the encoded context; sequences longer than max_length + 1 are
truncated on the left; only continuation tokens are scored.

Speed comes from scoring each item once: all of an item's requests (e.g. the 4 HellaSwag endings) are packed into
one row as a shared token prefix plus one branch per request, with a block attention mask and restarted position
ids ("tree" packing). Mathematically this equals scoring every (context, continuation) separately, as lm-eval
does, but the context is computed once. Rows are sorted by length so batches carry little padding. Backends that
cannot take a custom mask get one row per request instead.

A backend (`LM`) maps (input_ids, position_ids, mask) to logits and owns how it decodes; every backend has the
methods `loglikelihood(groups)` and `generate(prompts, ...)`. Backends exist for transformers models (decoding with
transformers' `generate`), ledgerlm's own `Llama` (ledgerlm's KV-cache generator), and ensembles (mean of the
members' probabilities or logits; a KV-cache ensemble when every member is a Llama folder).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ledgerlm.model.generate import generate

GEN_MODES = ("chat", "lm-eval")  # LM.generate: stop like a chat model, or reproduce lm-eval's completions

# ----------------------------------------------------------------------------------------------- tokenizers


class Tok:
    """Minimal tokenizer adapter: `encode` behaves like transformers' `tokenizer.encode(s)` (default special tokens)."""

    def __init__(self, tok, eos_id: int | None, bos_id: int | None, vocab_id: str = ""):
        self.tok = tok
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.vocab_id = vocab_id  # identifies the vocabulary, to refuse ensembles of mismatched tokenizers
        self._hf = callable(tok) and hasattr(tok, "convert_ids_to_tokens")

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        if not texts:
            return []
        if self._hf:
            return self.tok(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.encode_batch([text], add_special_tokens)[0]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    @property
    def pad_id(self) -> int:
        """lm-eval's pad token: the tokenizer's, else EOS (what its configure_pad_token falls back to), else 0."""
        pad = getattr(self.tok, "pad_token_id", None)
        return pad if pad is not None else self.eos_id if self.eos_id is not None else 0

    @property
    def prefix_id(self) -> int:
        """lm-eval's prefix_token_id: BOS if the tokenizer has one, else EOS (used for empty contexts)."""
        return self.bos_id if self.bos_id is not None else self.eos_id


def load_tok(path: str | Path) -> Tok:
    """A model directory's tokenizer: transformers' AutoTokenizer when available (exactly what lm-eval uses)."""
    try:
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(str(path))
        return Tok(t, t.eos_token_id, t.bos_token_id, _vocab_id(path))
    except ImportError:
        pass
    p = Path(path) / "tokenizer.json"
    t = Tokenizer.from_file(str(p))
    eos = bos = None
    cfg = Path(path) / "tokenizer_config.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())
        eos = t.token_to_id(c["eos_token"]) if isinstance(c.get("eos_token"), str) else None
        bos = t.token_to_id(c["bos_token"]) if isinstance(c.get("bos_token"), str) else None
    if eos is None:
        eos = t.token_to_id("<|endoftext|>")
    return Tok(t, eos, bos, _vocab_id(path))


def _vocab_id(path) -> str:
    p = Path(path) / "tokenizer.json"
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return str(path)


# ----------------------------------------------------------------------------------------------- backends


class LM:
    """Backend interface: a backend maps tokens to logits (`logits`, `logits_at`) and may replace how it decodes
    (`generate_tokens`); scoring (`loglikelihood`) and generation (`generate`) are methods every backend has.
    `logits(ids[B,T], pos[B,T] | None, mask[B,1,T,T] bool (True = attend) | None) -> logits[B,T,V]`."""

    tok: Tok
    max_length: int = 2048
    device: str = "cpu"
    tree: bool = False  # accepts position ids + a custom 4D mask
    name: str = ""

    def logits(
        self, ids: torch.Tensor, pos: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def logits_at(self, ids, pos, mask, bidx: torch.Tensor, tidx: torch.Tensor) -> torch.Tensor:
        """Logits [N, V] at positions (bidx[i], tidx[i]) only. Backends that can apply the output head to the
        selected hidden states skip the vocabulary projection for context tokens (most of a LAMBADA row)."""
        return self.logits(ids, pos, mask)[bidx, tidx]

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def loglikelihood(
        self,
        groups: Sequence[Sequence[tuple[str, str]]],
        batch_size: int = 32,
        max_batch_tokens: int = 65536,
        progress: Callable | None = None,
    ) -> list[list[tuple[float, bool, int]]]:
        """Score every (context, continuation) of every group; returns per group a list of
        (sum log-prob of the continuation, whether greedy decoding reproduces it, number of continuation tokens).
        Requests in one group (one item's choices) share their common token prefix when the backend allows it."""
        flat = [pair for g in groups for pair in g]
        reqs = encode_pairs(self.tok, flat, self.max_length)
        rows: list[_Row] = []
        rid = 0
        for g in groups:
            rows += _build_row([(rid + i, reqs[rid + i]) for i in range(len(g))], self.tree)
            rid += len(g)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i].tokens))
        batches, cur = [], []
        for i in order:  # longest first: the first batch shows the peak memory
            if cur:
                first, n = len(rows[cur[0]].tokens), len(rows[i].tokens)
                # a new batch when full, over the token budget, or when this row would be padded by > 25%
                if len(cur) >= batch_size or (len(cur) + 1) * first > max_batch_tokens or n < 0.75 * first:
                    batches.append(cur)
                    cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        results: list[tuple[float, bool, int] | None] = [None] * len(flat)
        it = progress(batches, total=len(batches), desc="loglikelihood") if progress else batches
        for batch in it:
            T = len(rows[batch[0]].tokens)
            B = len(batch)
            ids = torch.zeros(B, T, dtype=torch.long)
            pos = torch.zeros(B, T, dtype=torch.long)
            seg = torch.full((B, T), -1, dtype=torch.long)
            for b, i in enumerate(batch):
                r = rows[i]
                n = len(r.tokens)
                ids[b, :n] = torch.tensor(r.tokens)
                pos[b, :n] = torch.tensor(r.pos)
                seg[b, :n] = torch.tensor(r.seg)
            # The scored positions of all requests in the batch: only there are logits computed and log-softmaxed.
            bidx, tidx, tgt, owner = [], [], [], []
            for b, i in enumerate(batch):
                for rq, where, targets in rows[i].reqs:
                    bidx += [b] * len(where)
                    tidx += where
                    tgt += targets
                    owner.append((rq, len(where)))
            dev = self.device
            bt, tt = torch.tensor(bidx, device=dev), torch.tensor(tidx, device=dev)
            if bool((seg > 0).any()):
                sel = self.logits_at(ids.to(dev), pos.to(dev), _tree_mask(seg.to(dev)), bt, tt)
            else:  # right padding under a causal mask never affects real positions: no mask needed (as lm-eval)
                sel = self.logits_at(ids.to(dev), None, None, bt, tt)
            logp = F.log_softmax(sel.float(), dim=-1)
            tgt_t = torch.tensor(tgt, device=logp.device)
            tok_ll = logp.gather(1, tgt_t[:, None])[:, 0].double().cpu()
            greedy = (logp.argmax(-1) == tgt_t).cpu()
            k = 0
            for rq, n in owner:
                results[rq] = (float(tok_ll[k : k + n].sum()), bool(greedy[k : k + n].all()), n)
                k += n
        out, k = [], 0
        for g in groups:
            out.append(results[k : k + len(g)])
            k += len(g)
        return out

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        stop_strings: Sequence[str],
        batch_size: int = 16,
        mode: str = "chat",
        stats: dict | None = None,
        progress: Callable | None = None,
    ) -> list[str]:
        """Greedy continuation of each prompt, cut at the first stop string (lm-eval's `until`, plus the EOS text).

        Contexts are left-truncated to max_length - max_new_tokens as lm-eval does (so no position past the model's
        context is used; `stats["truncated_prompts"]` counts the prompts that lost tokens), and a max_new_tokens that
        leaves no room for a context is refused, as lm-eval refuses it.
        mode "chat" (default): a row stops at its first stop string or EOS, decoded with special tokens kept, so a chat
        model's `<|im_end|>` ends its answer. mode "lm-eval": lm-eval 0.4.13's HFLM.generate_until -- same batches
        (longest context first, ties by text), rows stop alone only at EOS, a stop string ends the batch only once every
        row produced it, and the text is decoded with skip_special_tokens=True (special tokens deleted, the text after
        them kept) before being cut at the stop strings. See docs/eval.md.
        """
        if mode not in GEN_MODES:
            raise ValueError(f"generation mode must be one of {GEN_MODES}, got {mode!r}")
        tok = self.tok
        eos_text = tok.decode([tok.eos_id]) if tok.eos_id is not None else None
        stops = list(stop_strings) + ([eos_text] if eos_text and eos_text not in stop_strings else [])
        max_ctx = self.max_length - max_new_tokens
        if max_ctx < 1:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} must be less than the model's max_length {self.max_length} "
                "(prompt + generation must fit its positions; lm-eval refuses this too)"
            )
        full = tok.encode_batch(list(prompts))
        enc = [e[-max_ctx:] for e in full]
        if stats is not None:
            stats["truncated_prompts"] = sum(len(e) > max_ctx for e in full)
        if mode == "lm-eval":  # lm-eval's Collator order: the batches (and so the completions) are its own
            order = sorted(range(len(enc)), key=lambda i: (-len(full[i]), prompts[i]))
        else:
            order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
        texts: list[str | None] = [None] * len(enc)
        starts = range(0, len(order), batch_size)
        for s in progress(starts, total=len(starts), desc="generate") if progress else starts:
            idx = order[s : s + batch_size]
            outs = self.generate_tokens([enc[i] for i in idx], max_new_tokens, stops, lmeval=mode == "lm-eval")
            for i, o in zip(idx, outs):
                text = tok.decode(o, skip_special_tokens=mode == "lm-eval")
                texts[i] = truncate_at_stop(text, stops)
        return texts

    def generate_tokens(
        self, prompts: list[list[int]], max_new: int, stops: list[str], lmeval: bool = False
    ) -> list[list[int]]:
        """Greedy continuations (token ids) of one batch of prompts. Here: decoding by full re-computation, one
        prompt at a time (the fallback for backends without a KV cache)."""
        if lmeval:
            raise ValueError(
                f"generation mode lm-eval needs a transformers or ledgerlm model, not {type(self).__name__}"
            )
        return [self._naive_generate(p, max_new, stops) for p in prompts]

    def _naive_generate(self, prompt: list[int], max_new: int, stops: list[str]) -> list[int]:
        out: list[int] = []
        for _ in range(max_new):
            ids = torch.tensor([prompt + out], device=self.device)
            nxt = int(self.logits(ids)[0, -1].argmax())
            out.append(nxt)
            if nxt == self.tok.eos_id:
                break
            if stops and any(s in self.tok.decode(out) for s in stops):
                break
        return out

# ----------------------------------------------------------------------------------------------- log-likelihood


@dataclass
class _Req:
    seq: list[int]  # context+continuation tokens after left truncation to max_length + 1
    n_cont: int  # number of scored (continuation) tokens at the end of seq


@dataclass
class _Row:
    tokens: list[int]
    pos: list[int]
    seg: list[int]  # 0 = shared prefix, i >= 1 = branch of request i-1
    reqs: list[tuple[int, list[int], list[int]]]  # (request id, row index of each scored position, target ids)


def encode_pairs(tok: Tok, pairs: Sequence[tuple[str, str]], max_length: int) -> list[_Req]:
    """lm-eval's `_encode_pair` + left truncation, batched through the tokenizer."""
    ctxs, conts = [], []
    for ctx, cont in pairs:
        n_sp = len(ctx) - len(ctx.rstrip())
        if n_sp:
            ctx, cont = ctx[:-n_sp], ctx[-n_sp:] + cont
        ctxs.append(ctx)
        conts.append(cont)
    nonempty = [i for i, c in enumerate(ctxs) if c]
    whole = tok.encode_batch([ctxs[i] + conts[i] for i in nonempty])
    ctx_enc = tok.encode_batch([ctxs[i] for i in nonempty])
    out: list[_Req | None] = [None] * len(pairs)
    for i, w, c in zip(nonempty, whole, ctx_enc):
        out[i] = (c, w[len(c) :])
    for i, c in enumerate(ctxs):
        if not c:  # empty context: condition on BOS/EOS as lm-eval does
            ce = tok.encode(conts[i], add_special_tokens=False)
            out[i] = ([tok.prefix_id], ce) if tok.prefix_id != ce[0] else (ce[:1], ce[1:])
    reqs = []
    for i, (c, k) in enumerate(out):
        if not k:
            raise ValueError(f"continuation {conts[i]!r} encodes to no tokens")
        if len(k) > max_length:
            raise ValueError(f"continuation of {len(k)} tokens exceeds the model's max_length {max_length}")
        reqs.append(_Req((c + k)[-(max_length + 1) :], len(k)))
    return reqs


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    for j in range(n):
        t = seqs[0][j]
        if any(s[j] != t for s in seqs[1:]):
            return j
    return n


def _build_row(reqs: Sequence[tuple[int, _Req]], tree: bool) -> list[_Row]:
    """One packed row for the group (tree), or one row per request."""
    if not tree or len(reqs) == 1:
        rows = []
        for rid, r in reqs:
            inp = r.seq[:-1]
            start = len(inp) - r.n_cont
            rows.append(
                _Row(
                    inp,
                    list(range(len(inp))),
                    [0] * len(inp),
                    [(rid, list(range(start, len(inp))), r.seq[start + 1 :])],
                )
            )
        return rows
    inps = [r.seq[:-1] for _, r in reqs]
    p = _common_prefix(inps)
    tokens, pos, seg = list(inps[0][:p]), list(range(p)), [0] * p
    row_reqs = []
    for b, ((rid, r), inp) in enumerate(zip(reqs, inps), 1):
        off = len(tokens)
        branch = inp[p:]
        tokens += branch
        pos += range(p, len(inp))
        seg += [b] * len(branch)
        where = [j if j < p else off + (j - p) for j in range(len(inp))]
        start = len(inp) - r.n_cont
        row_reqs.append((rid, where[start:], r.seq[start + 1 :]))
    return [_Row(tokens, pos, seg, row_reqs)]


def _tree_mask(seg: torch.Tensor) -> torch.Tensor:
    """Boolean mask [B,1,T,T] (True = attend): causal, and a branch token sees the shared prefix and its own
    branch only. Padding (seg -1) attends to padding, so no row is empty."""
    T = seg.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    sq, sk = seg[:, :, None], seg[:, None, :]
    return (causal[None] & ((sk == 0) | (sk == sq)))[:, None]


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean attend-mask -> additive float mask (0 where attended, the dtype's minimum elsewhere)."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, torch.finfo(dtype).min)


# ----------------------------------------------------------------------------------------------- generation


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut `text` at the first occurrence of each stop string in turn (lm-eval's post-processing)."""
    for s in stops:
        if s:
            text = text.split(s)[0]
    return text


def kv_generate(model, tok: Tok, prompts: list[list[int]], max_new: int, stops: list[str], lmeval: bool):
    """Greedy decoding with ledgerlm's KV-cache generator (our Llama, or an ensemble of them)."""
    return generate(
        model,
        prompts,
        max_new,
        temperature=0.0,
        stop_ids=(tok.eos_id,) if tok.eos_id is not None else (),
        stop_strings=tuple(stops),
        tokenizer=tok.tok,
        pad_id=tok.pad_id,
        batch_stop_strings=lmeval,
    )
