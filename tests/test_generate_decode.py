"""The inference decoder (`ledgerlm.model.decode.Decoder`) against `Llama.forward`, and finished-row compaction
against the uncompacted loop: the same logits, the same tokens for the same seed."""

from __future__ import annotations

import torch
from test_generate_parity import _varied  # weights at std 1: continuations vary, top-2 gaps dwarf float noise

from ledgerlm.model import decode
from ledgerlm.model.decode import Decoder
from ledgerlm.model.generate import _left_padded, generate


def _prompts(seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 1, 12, 3, 22, 8)]


@torch.no_grad()
def test_decoder_logits_equal_the_models_forward():
    model = _varied()
    prompts = _prompts()
    plen = max(len(p) for p in prompts)
    ids, mask = _left_padded(prompts, plen + 3, 0, "cpu")
    ids[:, plen:] = torch.randint(3, 97, (len(prompts), 3))
    mask[:, plen:] = 1
    mask[2, plen + 1 :] = 0  # a finished row: padding after its last token
    dec = Decoder(model, len(prompts), plen + 3)
    got = [dec.prefill(ids[:, :plen], mask[:, :plen])]
    got += [dec.step(ids[:, c], mask[:, : c + 1], c) for c in range(plen, plen + 3)]
    for j, logits in enumerate(got):
        cur = plen + j
        want = model(ids[:, :cur], attention_mask=mask[:, :cur])[:, -1]
        live = mask[:, cur - 1].bool()  # a padding query's logits are never used
        torch.testing.assert_close(logits[live], want[live], atol=1e-4, rtol=1e-5)


def test_decoder_and_reference_paths_decode_the_same_greedy_tokens():
    model = _varied()
    prompts = _prompts()
    stop = generate(model, prompts, 20)[1][6]  # a token some rows produce: they stop there, others run on
    fast = generate(model, prompts, 20, stop_ids=(stop,))
    assert any(len(r) < 20 for r in fast) and any(len(r) == 20 for r in fast)
    assert fast == generate(model, prompts, 20, stop_ids=(stop,), use_cache=False)
    assert fast == generate(model, prompts, 20, stop_ids=(stop,), compact_rows=False)


def test_compaction_drops_finished_rows_and_samples_the_same(monkeypatch):
    model = _varied()
    prompts = _prompts(2) * 3  # 27 rows
    sizes: list[int] = []
    real = Decoder.step
    monkeypatch.setattr(Decoder, "step", lambda self, tok, *a: sizes.append(len(tok)) or real(self, tok, *a))
    stop = generate(model, prompts, 24)[3][4]
    runs = {}
    for compact in (True, False):
        sizes.clear()
        g = torch.Generator().manual_seed(7)
        out = generate(model, prompts, 24, temperature=1.0, stop_ids=(stop,), generator=g, compact_rows=compact)
        runs[compact] = (out, list(sizes))
    (out_c, sizes_c), (out_u, sizes_u) = runs[True], runs[False]
    assert out_c == out_u  # the same draws: uniforms come for the whole batch at every step
    assert any(len(r) < 24 for r in out_c) and any(len(r) == 24 for r in out_c)
    assert all(r[-1] == stop for r in out_c if len(r) < 24) and all(stop not in r[:-1] for r in out_c)
    assert set(sizes_u) == {27}  # uncompacted: every row every step
    assert sizes_c[0] == 27 and min(sizes_c) < 27 and sizes_c == sorted(sizes_c, reverse=True)
    assert sum(sizes_c) < sum(sizes_u)


def test_fused_weights_are_transposed_copies():
    model = _varied()
    w = decode._fused(model.layers[0])
    a = model.layers[0].self_attn
    assert w["qkv"].is_contiguous() and w["qkv"].shape == (64, 64 + 2 * 32)
    assert torch.equal(w["qkv"], torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight)).t())
    assert torch.equal(w["down"], model.layers[0].mlp.down_proj.weight.t())
