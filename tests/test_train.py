"""Training acceptance tests (CPU, tiny model): schedules, Muon, kill-and-resume bitwise, NaN stop, DDP = 1 process."""

import json
import os
import socket

import numpy as np
import pytest
import torch

from ledgerlm.components.checkpoint import latest_checkpoint
from ledgerlm.components.optimizer import build_optimizer, zeropower_via_newtonschulz5
from ledgerlm.components.schedule import lr_mult
from ledgerlm.train import loop
from ledgerlm.train.data import WindowSource, doc_ids_from_eot
from ledgerlm.train.loop import TrainingDiverged
from ledgerlm.train.pretrain import Config, resolve_lengths, train

VOCAB = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # one intra-op thread: on a busy shared CPU, OpenMP spin-waits make 2-thread steps 10-30x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _source(seq_len=32, seed=0, n=40_000, data_tokens=0):
    # learnable synthetic stream: noisy arithmetic progressions mod VOCAB, end-of-text (0) every ~50 tokens
    rng = np.random.default_rng(123)
    step = rng.integers(1, 5, n // 50 + 1).repeat(50)[:n]
    x = (np.cumsum(step) % (VOCAB - 1) + 1).astype(np.uint16)
    x[rng.random(n) < 0.02] = 0
    cut = int(n * 0.9)
    return WindowSource([x[:cut]], seq_len, seed=seed, data_tokens=data_tokens, val_arrays=[x[cut:]], eot_id=0)


def _cfg(**kw):
    base = dict(
        model="tiny",
        seq_len=32,
        micro_batch_size=4,
        steps=8,
        lr=3e-3,
        warmup=2,
        eval_every=4,
        val_batches=2,
        ckpt_every=2,
        log_every=100,
    )
    base.update(kw)
    return Config(**base)


def _curve(d):
    keys = ("step", "tokens", "loss", "val_loss", "lr", "grad_norm")
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    return [{k: r.get(k) for k in keys} for r in rows]


def _files(d):
    return {p.name: p.read_bytes() for p in (d / "model").iterdir()}


def test_schedules():
    wsd = [lr_mult(s, 100, warmup=10, schedule="wsd", decay_frac=0.2) for s in range(100)]
    assert wsd[0] == pytest.approx(0.1) and wsd[9] == 1.0 and wsd[50] == 1.0 and wsd[79] == 1.0
    assert wsd[80] < 1.0 and wsd[-1] == 0.0 and all(a >= b for a, b in zip(wsd[80:], wsd[81:]))
    sq = [lr_mult(s, 100, schedule="wsd", decay_frac=0.2, decay_shape="1-sqrt") for s in range(80, 100)]
    lin = [lr_mult(s, 100, schedule="wsd", decay_frac=0.2) for s in range(80, 100)]
    assert sq[0] < lin[0] and sq[-1] == lin[-1] == 0.0  # 1-sqrt drops faster at first
    cos = [lr_mult(s, 100, warmup=0, schedule="cosine", min_lr_ratio=0.1) for s in range(101)]
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.55) and cos[100] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_mult(0, 10, schedule="linear")


def test_length_dials_and_accumulation():
    L = resolve_lengths(_cfg(steps=0, tokens=4096, batch_tokens=512), world=1, data_tokens_available=10_000)
    assert L == {"batch_tokens": 512, "grad_accum": 4, "steps": 8, "tokens": 4096}
    L = resolve_lengths(_cfg(steps=0, epochs=2.0, batch_tokens=256), world=2, data_tokens_available=1024)
    assert L["steps"] == 8 and L["grad_accum"] == 1
    with pytest.raises(Exception, match="batch_tokens"):
        resolve_lengths(_cfg(batch_tokens=100), 1, 1)
    with pytest.raises(Exception, match="exactly one"):
        resolve_lengths(_cfg(tokens=100), 1, 1)


def test_muon_orthogonalises_and_trains(tmp_path):
    g = torch.randn(64, 32)
    s = torch.linalg.svdvals(zeropower_via_newtonschulz5(g))
    assert s.min() > 0.5 and s.max() < 1.3
    res = train(_cfg(optimizer="muon", steps=30, ckpt_every=0, lr=1e-2), _source(), tmp_path, vocab_size=VOCAB)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    assert res["val_loss"] < rows[0]["loss"]


def test_doc_ids_from_eot():
    x = torch.tensor([[5, 0, 7, 8, 0, 9]])
    assert doc_ids_from_eot(x, 0).tolist() == [[0, 0, 1, 1, 1, 2]]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_kill_and_resume_is_bitwise(tmp_path, monkeypatch, optimizer):
    kw = dict(optimizer=optimizer, dropout=0.1, ema=0.9, average_last_k=2, batch_tokens=256, data_tokens=1024)
    full = tmp_path / "full"
    ref = train(_cfg(**kw), _source(data_tokens=1024), full, vocab_size=VOCAB)
    assert ref["data_epochs"] > 1  # the limited data is revisited

    def kill(step, model):
        if step == 5:
            raise KeyboardInterrupt("simulated kill")

    part = tmp_path / "part"
    monkeypatch.setattr(loop, "_STEP_HOOK", kill)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(**kw), _source(data_tokens=1024), part, vocab_size=VOCAB)
    assert latest_checkpoint(part / "ckpt").name == "step_00000004"
    monkeypatch.setattr(loop, "_STEP_HOOK", None)
    torch.manual_seed(999)  # a fresh process would have different RNG; the checkpoint must restore it
    res = train(_cfg(**kw), _source(data_tokens=1024), part, vocab_size=VOCAB)
    assert res["resumed_from"] == 4
    assert _curve(full) == _curve(part) and len(_curve(full)) == 8
    assert _files(full) == _files(part)
    assert res["val_loss_by_weights"] == ref["val_loss_by_weights"]


def test_trim_metrics_keeps_rows_up_to_the_checkpoint(tmp_path):
    from ledgerlm.components.checkpoint import trim_metrics

    p = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": i, "note": "a\u2028b"}, ensure_ascii=False) for i in range(1, 6)]
    p.write_text("\n".join(rows) + '\n{"step": 6, "lo')  # the kill cut the last line short
    trim_metrics(p, 3)
    assert p.read_text(encoding="utf-8") == "".join(r + "\n" for r in rows[:3])
    trim_metrics(tmp_path / "absent.jsonl", 3)  # nothing logged yet: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


def test_resume_refuses_a_changed_config(tmp_path):
    train(_cfg(steps=2), _source(), tmp_path, vocab_size=VOCAB)
    with pytest.raises(RuntimeError, match="different pretrain config"):
        train(_cfg(steps=2, lr=1e-3), _source(), tmp_path, vocab_size=VOCAB)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    def poison(step, model):
        if step == 4:
            with torch.no_grad():
                model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")

    monkeypatch.setattr(loop, "_STEP_HOOK", poison)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 4.*step_00000004"):
        train(_cfg(), _source(), tmp_path, vocab_size=VOCAB)
    last = latest_checkpoint(tmp_path / "ckpt")
    assert last.name == "step_00000004"
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(str(last / "model.safetensors")).values())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, cfg_kw):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        train(_cfg(**cfg_kw), _source(), out, vocab_size=VOCAB, device="cpu")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_ddp_two_processes_match_one(tmp_path, parallel):
    kw = dict(steps=4, batch_tokens=256, micro_batch_size=2, ckpt_every=0, parallel=parallel, val_batches=2)
    one = train(_cfg(**kw), _source(), tmp_path / "one", vocab_size=VOCAB)
    assert one["grad_accum"] == 4
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "two", kw), nprocs=2, join=True)
    from ledgerlm.model.hf import load_model

    a, b = load_model(tmp_path / "one" / "model"), load_model(tmp_path / "two" / "model")
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n
    ra = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x)["loss"] for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert np.allclose(ra, rb, atol=1e-5)


def test_optimizer_groups_no_decay_on_norms():
    from ledgerlm.model.llama import build_model, model_config

    m = build_model(model_config("tiny"))
    opt = build_optimizer(m, {"weight_decay": 0.3})
    by = {g["name"]: g for g in opt.param_groups}
    assert by["decay"]["weight_decay"] == 0.3 and by["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in by["no_decay"]["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == m.num_params()
