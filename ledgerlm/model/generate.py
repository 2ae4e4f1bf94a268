"""Batched sampling with a KV cache: greedy, temperature, top-k, top-p, stop ids/strings, max tokens.

Prompts are left-padded to one length; an attention mask hides the padding and positions are counted per row,
so each row sees exactly what it would see alone. `use_cache=False` recomputes the whole sequence every step with
the same masks, which is the reference the cache must reproduce.

Returned lists hold the new tokens only. A stop token from `stop_ids` is included as the last token (RL needs to see
the model emit EOS). For `stop_strings`, generation of a row stops at the token whose decoding first contains the
string; the tokens are returned unchanged (callers trim the text at the stop string).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sample_next(logits: torch.Tensor, temperature=0.0, top_k=0, top_p=1.0, generator=None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]. temperature 0 = greedy."""
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
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
) -> list[list[int]]:
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if stop_strings and tokenizer is None:
        raise ValueError("generate: stop_strings need a tokenizer to decode with")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    b, plen = len(prompts), max(len(p) for p in prompts)
    total = plen + max_new_tokens
    ids = torch.full((b, total), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((b, total), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, plen - len(p) : plen] = torch.tensor(p, dtype=torch.long, device=device)
        mask[i, plen - len(p) : plen] = 1
    stop_set = set(int(s) for s in stop_ids)
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    cache = model.new_kv_cache(b, total) if use_cache else None
    cur = plen
    for _ in range(max_new_tokens):
        if cache is not None:
            start = cache.pos
            logits = model(ids[:, start:cur], kv_cache=cache, attention_mask=mask[:, :cur])
        else:
            logits = model(ids[:, :cur], attention_mask=mask[:, :cur])
        nxt = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
        ids[:, cur] = nxt
        mask[:, cur] = 1
        cur += 1
        for i in range(b):
            if done[i]:
                continue
            tok = int(nxt[i])
            out[i].append(tok)
            if tok in stop_set:
                done[i] = True
            elif stop_strings:
                # decode only a tail window: a stop string ending at this token lies within it
                text = tokenizer.decode(out[i][-32:])
                if any(s in text for s in stop_strings):
                    done[i] = True
        if all(done):
            break
    if was_training:
        model.train()
    return out
