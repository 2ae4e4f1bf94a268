"""Model acceptance tests: parameter count, HF parity + round trip, KV-cache generation, packing, ensemble."""

import json

import pytest
import torch

from ledgerlm.model.ensemble import Ensemble
from ledgerlm.model.generate import generate, sample_next
from ledgerlm.model.hf import load_model, save_model
from ledgerlm.model.llama import SIZES, Llama, build_model, model_config

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # one intra-op thread: on a busy shared CPU, OpenMP spin-waits make 2-thread steps 10-30x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(model_config("tiny", **kw)).eval()


def test_smollm_135m_exact_param_count():
    cfg = model_config("smollm-135m")
    with torch.device("meta"):
        m = Llama(cfg)
    assert m.num_params() == 134_515_008 == cfg.num_params()
    assert m.lm_head.weight is m.embed_tokens.weight
    assert set(SIZES) >= {"tiny", "small", "smollm-135m"}


def test_model_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown size"):
        model_config("nope")
    with pytest.raises(ValueError, match="n_kv_head"):
        model_config({"size": "tiny", "n_kv_head": 3})
    with pytest.raises(ValueError, match="unknown field"):
        model_config({"size": "tiny", "widht": 3})
    assert model_config("tiny", vocab_size=123).vocab_size == 123


@pytest.mark.parametrize("tied", [True, False])
def test_hf_logits_parity_and_round_trip(tmp_path, tied):
    ours = _tiny(tie_embeddings=tied)
    save_model(ours, tmp_path / "m")
    conf = json.loads((tmp_path / "m" / "config.json").read_text())
    assert conf["architectures"] == ["LlamaForCausalLM"] and conf["tie_word_embeddings"] is tied
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "m", torch_dtype=torch.float32).eval()
    x = torch.randint(0, ours.cfg.vocab_size, (3, 40))
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
    assert a.dtype == torch.float32
    assert (a - b).abs().max().item() < 1e-4
    # reverse: HF-written directory -> our model
    hf.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf")
    assert back.cfg.tie_embeddings is tied
    with torch.no_grad():
        assert (back(x) - b).abs().max().item() < 1e-4
    # ours -> ours is exact
    again = load_model(tmp_path / "m")
    for (k, v), (k2, v2) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_load_model_rejects_unsupported(tmp_path):
    save_model(_tiny(), tmp_path / "m")
    conf = json.loads((tmp_path / "m" / "config.json").read_text())
    conf["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (tmp_path / "m" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ValueError, match="rope_scaling"):
        load_model(tmp_path / "m")


def test_doc_ids_equal_separate_documents():
    m = _tiny()
    a = torch.randint(0, 4096, (1, 7))
    b = torch.randint(0, 4096, (1, 9))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        lp = m(packed, doc_ids=doc)
        la, lb = m(a), m(b)
    assert torch.allclose(lp[:, :7], la, atol=1e-5)
    assert torch.allclose(lp[:, 7:], lb, atol=1e-5)
    assert m.hidden_states(a).shape == (1, 7, m.cfg.d_model)


def test_kv_cache_generation_equals_no_cache():
    m = _tiny()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 4096, (n,), generator=g).tolist() for n in (5, 11, 1)]
    a = generate(m, prompts, 12, use_cache=True)
    b = generate(m, prompts, 12, use_cache=False)
    assert a == b and all(len(x) == 12 for x in a)
    # a row generated alone equals the same row in a left-padded batch
    assert generate(m, prompts[:1], 12) == a[:1]
    kw = dict(temperature=0.9, top_k=50, top_p=0.9)
    a = generate(m, prompts, 10, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(m, prompts, 10, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert a == b


def test_stop_ids_included_and_row_stops():
    m = _tiny()
    prompt = [5, 6, 7]
    free = generate(m, [prompt], 8)[0]
    stop = free[3]
    out = generate(m, [prompt, prompt], 8, stop_ids=[stop])
    k = free.index(stop)
    assert out[0] == free[: k + 1] and out[1] == out[0]


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits).item() == 3
    assert all(sample_next(logits, 1.0, top_k=2, generator=g).item() in (2, 3) for _ in range(50))
    # top_p tiny keeps only the argmax
    assert all(sample_next(logits, 1.0, top_p=1e-6, generator=g).item() == 3 for _ in range(20))


def test_ensemble_prob_average_and_generation():
    m1, m2 = _tiny(0), _tiny(1)
    ens = Ensemble([m1, m2]).eval()
    x = torch.randint(0, 4096, (2, 6))
    with torch.no_grad():
        p = (m1(x).softmax(-1) + m2(x).softmax(-1)) / 2
        assert torch.allclose(ens(x).exp(), p, atol=1e-6)
    prompts = [[4, 5, 6], [7]]
    assert generate(ens, prompts, 6) == generate(ens, prompts, 6, use_cache=False)


def test_save_tensors_is_byte_identical_with_several_metadata_keys(tmp_path):
    """safetensors writes metadata in hash order; ours sorts the header so equal tensors give equal bytes (and the
    ledger's sha256), and the file still loads with its metadata."""
    import json

    from safetensors import safe_open

    from ledgerlm.model.hf import save_tensors

    t = {"chosen": torch.arange(5, dtype=torch.float32), "rejected": torch.ones(3)}
    meta = {f"key{i}": str(i) for i in range(12)}
    blobs = set()
    for i in range(4):
        save_tensors(t, tmp_path / f"{i}.safetensors", meta)
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    blob = blobs.pop()
    n = int.from_bytes(blob[:8], "little")
    assert n % 8 == 0
    assert list(json.loads(blob[8 : 8 + n])["__metadata__"]) == sorted(meta)
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata() == meta
        assert torch.equal(f.get_tensor("chosen"), t["chosen"]) and torch.equal(f.get_tensor("rejected"), t["rejected"])


def test_grouped_kv_go_to_sdpa_only_where_the_flash_kernel_takes_them(monkeypatch):
    import torch.nn.functional as F

    from ledgerlm.model import llama

    ok = llama.gqa_in_kernel
    assert ok(True, torch.bfloat16, False, 64) == llama.TORCH_HAS_GQA
    assert not ok(True, torch.float32, False, 64)  # fp32 (RL/eval generation without autocast): expand k/v
    assert not ok(True, torch.bfloat16, True, 64)  # an explicit mask (padding, documents): expand
    assert not ok(False, torch.bfloat16, False, 64)  # CPU
    assert not ok(True, torch.bfloat16, False, 512)  # head dim past flash's limit
    monkeypatch.setattr(llama, "TORCH_HAS_GQA", False)  # torch 2.4: no enable_gqa at all
    assert not ok(True, torch.bfloat16, False, 64)
    # expanded K/V give what grouped K/V give (head h reads KV head h // rep)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 16, 8, generator=g) for n in (6, 2, 2))
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True)
    assert torch.allclose(llama._sdpa(q, k, v, None, True, 0.0), ref, atol=1e-6)
    if tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5):
        assert torch.allclose(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), ref, atol=1e-6)
