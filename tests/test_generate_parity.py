"""Our KV-cache generator against transformers' `generate` on the same weights (greedy must agree token for token),
and the sampler's distribution (inverse-CDF sampling must draw from softmax(logits / T), never a masked token)."""

from __future__ import annotations

import math

import pytest
import torch

from ledgerlm.model.generate import generate, sample_next
from ledgerlm.model.hf import save_model
from ledgerlm.model.llama import Llama, model_config

transformers = pytest.importorskip("transformers")


def _varied(vocab: int = 97) -> Llama:
    """A small GQA model with weights drawn at std 1: unlike a fresh init (whose greedy output repeats one token) its
    greedy continuations vary along the way, and its top-2 logit gaps (>= 0.02 here) dwarf float noise (~1e-6)."""
    torch.manual_seed(0)
    m = Llama(model_config("tiny", vocab_size=vocab, n_layer=3, max_seq_len=128)).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0)
    return m


def test_greedy_equals_transformers_greedy(tmp_path):
    ours = _varied()
    save_model(ours, tmp_path / "m")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "m", torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 1, 12)]  # ragged
    new = 24
    eos = generate(ours, prompts, new)[1][8]  # a token some rows produce: they stop there, the others run on
    mine = generate(ours, prompts, new, stop_ids=(eos,))
    assert any(len(r) < new for r in mine) and any(len(r) == new for r in mine)
    plen = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), plen, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, plen - len(p) :] = torch.tensor(p)
        mask[i, plen - len(p) :] = 1
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
    theirs = []
    for row in out[:, plen:].tolist():
        cut = row.index(eos) + 1 if eos in row else len(row)  # transformers pads a finished row after its EOS
        theirs.append(row[:cut])
    assert mine == theirs
    assert all(len(set(r)) > 3 for r in mine if len(r) == new)  # not one repeated token


def test_sampler_draws_from_the_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    for temp in (1.0, 0.5):
        draws = sample_next(logits, temp, generator=g)
        want = torch.softmax(logits[0] / temp, -1)
        freq = torch.bincount(draws, minlength=5).double() / len(draws)
        # each frequency within 5 standard errors of its probability
        se = torch.sqrt(want.double() * (1 - want.double()) / len(draws)) + 1e-9
        assert torch.all((freq - want.double()).abs() <= 5 * se + 1e-3), (temp, freq, want)
    # top-k / top-p masked tokens are never drawn, even at a high temperature
    draws = sample_next(logits, 5.0, top_k=2, generator=g)
    assert set(draws.tolist()) == {0, 1}
    draws = sample_next(logits, 1.0, top_p=0.5, generator=g)
    assert set(draws.tolist()) == {0}  # p(0) = 0.64 >= 0.5: the nucleus is token 0 alone
    # the same generator state gives the same draws (RL's reproducibility)
    a = sample_next(logits[:50], 1.0, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits[:50], 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not math.isnan(float(a.float().mean()))
