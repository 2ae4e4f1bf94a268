"""Batched sampling with a KV cache: greedy, temperature, top-k, top-p, stop ids/strings, max tokens.

Prompts are left-padded to one length; an attention mask hides the padding and positions are counted per row,
so each row sees exactly what it would see alone. `use_cache=False` recomputes the whole sequence every step with
the same masks, which is the reference the cache must reproduce.

Returned lists hold the new tokens only. A stop token from `stop_ids` is included as the last token (RL needs to see
the model emit EOS). For `stop_strings`, generation of a row stops at the token whose decoding first contains the
string; the tokens are returned unchanged (callers trim the text at the stop string). With `batch_stop_strings`
the rule is lm-eval's HF backend's instead (see `generate`).

No position at or past the model's `max_seq_len` is ever used (RoPE would extrapolate past the trained range): a
row generates at most `max_seq_len - len(prompt)` tokens, a prompt that fills the context is refused, and
`fit_prompts` left-truncates prompts to leave room for `max_new_tokens` as lm-eval does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ledgerlm.device import autocast
from ledgerlm.model.decode import Decoder
from ledgerlm.model.llama import Llama


def sample_next(logits: torch.Tensor, temperature=0.0, top_k=0, top_p=1.0, generator=None, u=None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]. temperature 0 = greedy. u [B, 1]: the rows' uniforms in [0, 1), when drawn
    beforehand (`uniforms`); by default drawn here from `generator`."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p (the top-1 token always stays)
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    # inverse-CDF sampling: one uniform per row instead of torch.multinomial's B x V exponentials (20x cheaper on a
    # CPU at B 48, V 2048); a token of probability 0 (top-k / top-p) has an empty interval and is never drawn
    cdf = logits.softmax(-1).cumsum(-1)
    if u is None:
        u = uniforms(cdf.shape[0], generator, cdf.device)
    total = cdf[:, -1:]
    # u rounded up onto the total (probability ~1e-7) would index past the end: keep it just below, where the last
    # token of non-zero probability lies (a [B, 1] clamp, not a second pass over the [B, V] logits)
    u = torch.minimum(u.to(cdf.dtype) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def uniforms(b: int, generator, device) -> torch.Tensor:
    """The [b, 1] uniforms `sample_next` draws for b rows (one per row, fp32)."""
    return torch.rand(b, 1, generator=generator, device=device, dtype=torch.float32)


def max_positions(model) -> int | None:
    """The model's trained context (`cfg.max_seq_len`), or None for a model that does not say."""
    return getattr(getattr(model, "cfg", None), "max_seq_len", None)


def fit_prompts(prompts: list[list[int]], max_new_tokens: int, max_len: int) -> tuple[list[list[int]], int]:
    """lm-eval's rule for generation: each prompt keeps its last `max_len - max_new_tokens` tokens, so prompt plus
    generation fit the model's context. -> (prompts, how many were truncated). A `max_new_tokens` that leaves no
    room for a prompt token is refused."""
    keep = max_len - max_new_tokens
    if keep < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's {max_len} positions "
            f"(at most {max_len - 1})"
        )
    return [p[-keep:] for p in prompts], sum(len(p) > keep for p in prompts)


def _encode_plain(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens, from a `tokenizers.Tokenizer` or a transformers tokenizer."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(getattr(enc, "ids", enc))


@torch.no_grad()
def generate(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (),
    tokenizer=None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    pad_id: int = 0,
    batch_stop_strings: bool = False,
    precision: str = "auto",
    compact_rows: bool = True,
) -> list[list[int]]:
    """batch_stop_strings: lm-eval 0.4.13's stopping rule (its MultiTokenEOSCriteria under transformers' generate):
    a row stops alone only at a stop id (EOS) or its token budget; a stop string ends generation only once, for that
    one string, every row of the batch has produced it (looking at the last len(string's tokens) + 2 generated tokens,
    decoded with special tokens, where a finished row's tail holds `pad_id`s). Until then rows that already produced
    a stop string go on generating, so the batch's composition shapes the completions, as in lm-eval.

    precision: "auto" = bf16 autocast on CUDA, fp32 on CPU (`ledgerlm.device.autocast`); "fp32" = never autocast.

    Our `Llama` decodes through `ledgerlm.model.decode.Decoder` (fused pre-transposed weights, a prefill on the real
    prompt tokens only, a static cache); other models (an ensemble) through their own forward and `new_kv_cache`.
    Without stop strings the loop keeps its state on the device (finished rows, token counts, budgets as tensors):
    one host sync per step (how many rows are done?), none per row; the new tokens are read back once at the end.
    compact_rows: there, drop finished rows from the batch (with the Decoder) once an eighth of it has finished, so
    they stop costing compute; the uniforms are drawn for the whole batch at every step either way, so compaction
    does not change what is sampled."""
    if not prompts:
        return []
    max_len = _check_prompts(model, prompts, stop_strings, tokenizer)
    # per-row budget: the last generated token sits at position max_len - 1 at most
    budget = [max_new_tokens if max_len is None else min(max_new_tokens, max_len - len(p)) for p in prompts]
    max_new_tokens = max(budget)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    b, plen = len(prompts), max(len(p) for p in prompts)
    total = plen + max_new_tokens
    ids, mask = _left_padded(prompts, total, pad_id, device)
    sampling = (temperature, top_k, top_p, generator)
    try:
        with autocast(device, precision):
            logits_fn, compact = _stepper(model, b, total, plen, use_cache)
            if stop_strings:
                rule = (stop_ids, stop_strings, tokenizer, pad_id, batch_stop_strings)
                out = _generate_host(logits_fn, ids, mask, plen, total, budget, sampling, *rule)
            else:
                compact = compact if compact_rows else None
                out = _generate_device(logits_fn, compact, ids, mask, plen, total, budget, sampling, stop_ids)
    finally:
        if was_training:
            model.train()
    return out


def _stepper(model, b: int, total: int, plen: int, use_cache: bool):
    """-> (logits(ids, mask, cur): logits [B, V] after the first `cur` positions of the batch's rows, called for
    cur = plen, plen + 1, ... in turn; compact(keep) that drops rows from its state, or None)."""
    if use_cache and isinstance(model, Llama):
        dec = Decoder(model, b, total)

        def fast(ids, mask, cur):
            if cur == plen:
                return dec.prefill(ids[:, :plen], mask[:, :plen])
            return dec.step(ids[:, cur - 1], mask[:, :cur], cur - 1)

        return fast, dec.compact
    cache = model.new_kv_cache(b, total) if use_cache else None
    return (lambda ids, mask, cur: _last_logits(model, ids, mask, cache, cur)), None


def _generate_device(logits_fn, compact, ids, mask, plen: int, total: int, budget: list[int], sampling, stop_ids):
    """The decode loop with its bookkeeping on the device: a row finishes at a stop id or at its budget; a finished
    row's further positions are padding (masked, positions stop advancing). With `compact`, the working batch
    (`rows`: its rows' indices in `ids`) sheds finished rows; `ids` gets their tokens back."""
    device = ids.device
    b = ids.shape[0]
    rows = torch.arange(b, device=device)
    n_full = torch.zeros(b, dtype=torch.long, device=device)
    w_ids, w_mask = ids, mask
    done = torch.zeros(b, dtype=torch.bool, device=device)
    n_out = torch.zeros(b, dtype=torch.long, device=device)
    limit = torch.tensor(budget, dtype=torch.long, device=device)
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)), dtype=torch.long, device=device)
    temperature, generator = sampling[0], sampling[3]
    for cur in range(plen, total):
        # one uniform per row of the whole batch, whatever its working size: compaction leaves the draws alone
        u = uniforms(b, generator, device)[rows] if temperature > 0 else None
        nxt = sample_next(logits_fn(w_ids, w_mask, cur), *sampling, u=u)
        w_ids[:, cur] = nxt
        live = ~done
        # the token that finishes a row is still its own (mask 1); everything after it is padding
        w_mask[:, cur] = live.to(w_mask.dtype)
        n_out += live.to(n_out.dtype)
        stopped = torch.isin(nxt, stops) if stops.numel() else torch.zeros_like(done)
        done |= live & (stopped | (n_out >= limit))
        n_done = int(done.sum())  # the one host sync of a step
        if n_done == len(rows):
            break
        if compact is not None and n_done >= max(1, len(rows) // 8):
            _put_back(ids, n_full, rows, w_ids, n_out)
            keep = (~done).nonzero().squeeze(-1)
            rows, w_ids, w_mask, n_out, limit = rows[keep], w_ids[keep], w_mask[keep], n_out[keep], limit[keep]
            done = done[keep]
            compact(keep)
    _put_back(ids, n_full, rows, w_ids, n_out)
    out = ids[:, plen:].tolist()
    return [r[:n] for r, n in zip(out, n_full.tolist())]


def _put_back(ids, n_full, rows, w_ids, n_out) -> None:
    """The working batch's tokens and counts into the whole batch's (`ids` is the working batch until compacted)."""
    if w_ids is not ids:
        ids[rows] = w_ids
    n_full[rows] = n_out


def _generate_host(
    logits_fn, ids, mask, plen, total, budget, sampling, stop_ids, stop_strings, tokenizer, pad_id, batch_rule
):
    """The decode loop when stop strings need the decoded text: the step's tokens come to the host once per step
    (one transfer, not one per row) and are checked there."""
    device = ids.device
    b = ids.shape[0]
    stop_set = set(int(s) for s in stop_ids)
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    if batch_rule:
        look = [len(_encode_plain(tokenizer, s)) + 2 for s in stop_strings]
        hit = [[False] * b for _ in stop_strings]
        seen: list[list[int]] = [[] for _ in range(b)]  # generated tokens as lm-eval sees them (pads after EOS)
    for cur in range(plen, total):
        nxt = sample_next(logits_fn(ids, mask, cur), *sampling)
        ids[:, cur] = nxt
        # a finished row's further tokens are padding: its positions stop advancing (never past max_len - 1)
        mask[:, cur] = torch.tensor([not d for d in done], dtype=mask.dtype, device=device)
        toks = nxt.tolist()
        if batch_rule:
            for i in range(b):
                seen[i].append(pad_id if done[i] else toks[i])
        _take_tokens(toks, out, done, budget, stop_set, () if batch_rule else stop_strings, tokenizer)
        if batch_rule and _every_row_hit_one(hit, seen, look, stop_strings, tokenizer):
            break
        if all(done):
            break
    return out


def _check_prompts(model, prompts: list[list[int]], stop_strings: Sequence[str], tokenizer) -> int | None:
    """Refuse what cannot be generated (an empty prompt, stop strings without a tokenizer, a prompt that fills the
    context) -> the model's max_seq_len (None: the model does not say)."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if stop_strings and tokenizer is None:
        raise ValueError("generate: stop_strings need a tokenizer to decode with")
    max_len = max_positions(model)
    longest = max(len(p) for p in prompts)
    if max_len is not None and longest >= max_len:
        raise ValueError(
            f"generate: a prompt of {longest} tokens leaves no room in the model's max_seq_len={max_len} positions; "
            "shorten it or left-truncate it (fit_prompts)"
        )
    return max_len


def _left_padded(prompts: list[list[int]], total: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, total] with each prompt ending at the longest prompt's length (pad_id elsewhere), and the attention
    mask of the prompt tokens."""
    b, plen = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((b, total), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((b, total), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, plen - len(p) : plen] = torch.tensor(p, dtype=torch.long, device=device)
        mask[i, plen - len(p) : plen] = 1
    return ids, mask


def _last_logits(model, ids: torch.Tensor, mask: torch.Tensor, cache, cur: int) -> torch.Tensor:
    """Logits [B, V] after the first `cur` positions: with a cache only the positions it has not seen are run,
    without one the whole prefix (the reference the cache must reproduce). The output head runs on the last position
    only: a prefill of T prompt tokens never builds [B, T, V] logits."""
    kw = {"kv_cache": cache} if cache is not None else {}
    x = ids[:, cache.pos : cur] if cache is not None else ids[:, :cur]
    head = getattr(model, "lm_head", None)
    if head is not None and hasattr(model, "hidden_states"):  # our Llama: the output head at the last position only
        h = model(x, attention_mask=mask[:, :cur], return_hidden=True, **kw)[:, -1]
        return head(h).float()
    return model(x, attention_mask=mask[:, :cur], **kw)[:, -1]


def _take_tokens(toks: list[int], out, done, budget, stop_set, stop_strings, tokenizer) -> None:
    """Append each unfinished row's new token; the row finishes at a stop id, at its budget, or at a stop string
    in its decoded tail (stop_strings: the per-row rule)."""
    for i in range(len(out)):
        if done[i]:
            continue
        tok = toks[i]
        out[i].append(tok)
        if tok in stop_set or len(out[i]) >= budget[i]:
            done[i] = True
        elif stop_strings:
            # decode only a tail window: a stop string ending at this token lies within it; special tokens
            # kept (`tokenizers` would drop them by default), so "<|im_end|>" can be a stop string
            text = tokenizer.decode(out[i][-32:], skip_special_tokens=False)
            if any(s in text for s in stop_strings):
                done[i] = True


def _every_row_hit_one(hit, seen, look, stop_strings, tokenizer) -> bool:
    """lm-eval's batch rule: note which rows have produced each stop string (in their last look[k] tokens) ->
    whether some one stop string has now been produced by every row."""
    for k, s in enumerate(stop_strings):
        for i in range(len(seen)):
            hit[k][i] = hit[k][i] or s in tokenizer.decode(seen[i][-look[k] :], skip_special_tokens=False)
    return any(all(h) for h in hit)
