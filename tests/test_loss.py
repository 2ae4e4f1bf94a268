"""The chunked linear + cross-entropy loss equals the plain path (full logits + F.cross_entropy): loss, per-token
log-probs and every parameter's gradient, with masks / ignore-index, tied and untied heads, temperature."""

import pytest
import torch

from ledgerlm.model.llama import build_model, model_config
from ledgerlm.model.loss import linear_cross_entropy

IGNORE = -100


def _case(n=37, d=16, v=53, seed=0, frac_ignored=0.3):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * 0.5
    t = torch.randint(0, v, (n,), generator=g)
    t[torch.rand(n, generator=g) < frac_ignored] = IGNORE
    return h, w, t


def token_logprobs(h, w, t, **kw):
    return -linear_cross_entropy(h, w, t, reduction="none", **kw)


def _grads(fn, *tensors):
    leaves = [x.clone().requires_grad_(True) for x in tensors]
    out = fn(*leaves)
    # a non-uniform upstream gradient, so per-token weighting is checked too (not only a mean)
    up = torch.linspace(0.5, 1.5, out.numel()).view(out.shape) if out.dim() else torch.tensor(1.0)
    (out * up).sum().backward()
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [1, 8, 10, 64])
def test_chunked_equals_plain_loss_and_grads(reduction, chunk):
    h, w, t = _case()
    ref, (gh_ref, gw_ref) = _grads(lambda a, b: linear_cross_entropy(a, b, t, reduction=reduction, chunk_size=0), h, w)
    out, (gh, gw) = _grads(lambda a, b: linear_cross_entropy(a, b, t, reduction=reduction, chunk_size=chunk), h, w)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gh, gh_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, gw_ref, atol=1e-5, rtol=1e-5)
    if reduction == "none":
        assert bool((out[t == IGNORE] == 0).all()) and bool((gh[t == IGNORE] == 0).all())


def test_temperature_and_batched_shapes_and_logprobs():
    h, w, t = _case(n=24)
    h3, t2 = h.view(2, 12, -1), t.view(2, 12)
    for temp in (1.0, 0.7):
        ref, (gh_ref, gw_ref) = _grads(
            lambda a, b, temp=temp: token_logprobs(a, b, t2, chunk_size=0, temperature=temp), h3, w
        )
        out, (gh, gw) = _grads(lambda a, b, temp=temp: token_logprobs(a, b, t2, chunk_size=5, temperature=temp), h3, w)
        assert out.shape == (2, 12)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gh, gh_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gw, gw_ref, atol=1e-5, rtol=1e-5)
    # the log-probs are the model's: log_softmax(h W^T / T) at the target
    lp = torch.log_softmax(h @ w.t() / 0.7, -1).gather(1, t.clamp(min=0)[:, None])[:, 0].masked_fill(t == IGNORE, 0)
    torch.testing.assert_close(token_logprobs(h, w, t, chunk_size=7, temperature=0.7), lp, atol=1e-5, rtol=1e-5)


def test_all_ignored_mean_is_nan_like_cross_entropy():
    h, w, t = _case(n=6)
    t[:] = IGNORE
    assert torch.isnan(linear_cross_entropy(h, w, t, chunk_size=4))
    assert torch.isnan(linear_cross_entropy(h, w, t, chunk_size=0))
    assert float(linear_cross_entropy(h, w, t, chunk_size=4, reduction="sum")) == 0.0


@pytest.mark.parametrize("tied", [True, False])
def test_model_loss_every_parameter_gradient(tied):
    """Whole model, packed documents (doc_ids) and ignored targets: every parameter's gradient, tied and untied."""
    cfg = model_config("tiny", vocab_size=300, tie_embeddings=tied, max_seq_len=64)
    torch.manual_seed(0)
    x = torch.randint(0, 300, (3, 20))
    y = torch.randint(0, 300, (3, 20))
    y[:, :4] = IGNORE
    y[1, 10:] = IGNORE
    doc = torch.tensor([[0] * 8 + [1] * 12, [0] * 20, [0] * 5 + [1] * 5 + [2] * 10])
    results = []
    for chunk in (0, 7):
        torch.manual_seed(1)
        m = build_model(cfg)
        loss = m(x, doc_ids=doc, targets=y, loss_chunk_size=chunk)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys() and ("lm_head.weight" in g0) != tied
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-5, msg=lambda s, n=name: f"{n}: {s}")


def test_bf16_autocast_close_to_plain():
    h, w, t = _case(n=40, d=32, v=97)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, (gh_ref, gw_ref) = _grads(lambda a, b: linear_cross_entropy(a, b, t, chunk_size=0), h, w)
        out, (gh, gw) = _grads(lambda a, b: linear_cross_entropy(a, b, t, chunk_size=16), h, w)
    assert gh.dtype == h.dtype and gw.dtype == w.dtype  # gradients come back in the parameters' dtype
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gh, gh_ref, atol=2e-2, rtol=5e-2)
    torch.testing.assert_close(gw, gw_ref, atol=2e-2, rtol=5e-2)


def test_torch_compile_whole_model_one_graph():
    """The model's forward with targets (what pretraining compiles) traces as one graph, same loss and gradients."""
    m = build_model(model_config("tiny", vocab_size=300, max_seq_len=64))
    x, y = torch.randint(0, 300, (2, 32)), torch.randint(0, 300, (2, 32))
    y[:, :3] = IGNORE
    ref = m(x, targets=y, loss_chunk_size=0)
    ref.backward()
    g0 = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    out = torch.compile(m, backend="aot_eager", fullgraph=True)(x, targets=y, loss_chunk_size=16)
    out.backward()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, g0[n], atol=1e-5, rtol=1e-5)
