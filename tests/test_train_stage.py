"""The pretrain stage through the real spine (tokenize -> pretrain), resume after a kill, and `ledgerlm export`."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from ledgerlm.model import export
from ledgerlm.model.hf import load_model
from ledgerlm.train import loop

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # one intra-op thread: on a busy shared CPU, OpenMP spin-waits make 2-thread steps 10-30x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    src = DATA / "text" / "tinyshakespeare.txt"
    if not src.exists():
        pytest.skip("shared data not available")
    p = tmp_path_factory.mktemp("txt") / "shake.txt"
    p.write_bytes(src.read_bytes()[:200_000])
    return p


def _recipe(text_file, **pre):
    from ledgerlm.pipeline import build_recipe

    p = {"model": "tiny", "seq_len": 64, "micro_batch_size": 4, "steps": 6, "eval_every": 3, "val_batches": 2}
    p.update(pre)
    raw = {
        "name": "t",
        "seed": 1,
        "device": "cpu",
        "stages": ["tokenize", "pretrain"],
        "tokenize": {"input": [str(text_file)], "vocab_size": 512, "val_fraction": 0.1, "workers": 1},
        "pretrain": p,
    }
    return build_recipe(raw, None, need_all=False)


def test_stage_runs_resumes_and_exports(tmp_path, text_file, monkeypatch):
    from ledgerlm.pipeline import run_pipeline

    recipe = _recipe(text_file, ckpt_every=2, ema=0.8, average_last_k=2)
    ref = tmp_path / "ref"
    assert run_pipeline(recipe, ref, echo=lambda *a: None) == 0
    rec = json.loads((ref / "ledger" / "pretrain.json").read_text())
    assert rec["status"] == "ok" and rec["counters"]["steps"] == 6
    assert set(rec["metrics"]["val_loss_by_weights"]) == {"raw", "ema", "avg"}
    assert (ref / "pretrain" / "model" / "tokenizer.json").exists()

    # kill the stage at step 3, re-run the pipeline: it resumes from the step-2 checkpoint and ends identical
    run = tmp_path / "run"

    def kill(step, model):
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_STEP_HOOK", kill)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(recipe, run, echo=lambda *a: None)
    monkeypatch.setattr(loop, "_STEP_HOOK", None)
    assert run_pipeline(recipe, run, echo=lambda *a: None) == 0
    rec2 = json.loads((run / "ledger" / "pretrain.json").read_text())
    assert rec2["extra"]["resumed_from_step"] == 2
    a = (ref / "pretrain" / "model" / "model.safetensors").read_bytes()
    assert a == (run / "pretrain" / "model" / "model.safetensors").read_bytes()

    # export the EMA weights of the newest checkpoint, checked against transformers
    pytest.importorskip("transformers")
    ap = argparse.ArgumentParser()
    export.add_args(ap)
    out = tmp_path / "exported"
    assert export.main(ap.parse_args([str(run), str(out), "--weights", "ema", "--verify"])) == 0
    assert (out / "tokenizer.json").exists()
    m = load_model(out)
    from safetensors.torch import load_file

    ck = sorted((run / "pretrain" / "ckpt").glob("step_*"))[-1]
    ema = {k[4:]: v for k, v in load_file(str(ck / "extra.safetensors")).items() if k.startswith("ema.")}
    assert torch.equal(m.embed_tokens.weight, ema["embed_tokens.weight"])
    shutil.rmtree(tmp_path)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_train_stage import _recipe
from ledgerlm.pipeline import run_pipeline
run_pipeline(_recipe(Path({text!r}), steps=40, ckpt_every=5), Path({run!r}), echo=lambda *a: None)
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bitwise(tmp_path, text_file):
    """A real kill (SIGKILL, possibly mid-checkpoint-write) of a child process, then a resume in this one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from ledgerlm.pipeline import run_pipeline

    run = tmp_path / "run"
    code = _CHILD.format(tests=str(Path(__file__).parent), text=str(text_file), run=str(run))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 300
    while not (run / "pretrain" / "ckpt" / "step_00000015").exists():
        assert child.poll() is None, "child exited before the kill"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    recipe = _recipe(text_file, steps=40, ckpt_every=5)
    assert run_pipeline(recipe, run, echo=lambda *a: None) == 0
    assert json.loads((run / "ledger" / "pretrain.json").read_text())["extra"]["resumed_from_step"] >= 15
    ref = tmp_path / "ref"
    assert run_pipeline(recipe, ref, echo=lambda *a: None) == 0
    for name in ("model.safetensors", "config.json"):
        assert (ref / "pretrain" / "model" / name).read_bytes() == (run / "pretrain" / "model" / name).read_bytes()
