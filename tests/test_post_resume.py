"""Resume of the dpo, reward and rl stages after a real kill: a child process runs the stage through the pipeline
and is SIGKILLed mid-stage (after a checkpoint, before the end); the re-run in this process resumes from the newest
checkpoint and ends with the same weights, metrics curve and stage metrics as an uninterrupted run (CPU, bitwise)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ledgerlm.tasks import arith

STEPS = {"dpo": 8, "reward": 8, "rl": 6}
KILL_AT = 5  # the child stops for good after step 5; checkpoints every 2 steps -> it resumes from step 4


def _recipe(stage: str):
    from ledgerlm.pipeline import build_recipe

    sections = {
        "dpo": {"init": "sft", "n_train": 32, "n_heldout": 8, "batch_size": 4, "max_steps": STEPS["dpo"], "lr": 1e-3},
        "reward": {"init": "sft", "n_train": 32, "n_heldout": 8, "batch_size": 4, "max_steps": STEPS["reward"]},
        "rl": {
            "init": "sft",
            "n_train": 20,
            "n_eval": 4,
            "steps": STEPS["rl"],
            "prompts_per_step": 2,
            "group_size": 4,
            "max_new_tokens": 8,
            "passk_problems": 2,
            "lr": 1e-3,
            "mask_truncated": False,
        },
    }
    cfg = {**sections[stage], "ckpt_every": 2}
    return build_recipe({"name": "t", "seed": 0, "device": "cpu", "stages": [stage], stage: cfg}, need_all=False)


def _base_run(run: Path) -> Path:
    """RUN/sft/model: a random tiny Llama with a BPE tokenizer trained on arith text."""
    from ledgerlm.data.tokenizer import train_tokenizer
    from ledgerlm.model.hf import save_model
    from ledgerlm.model.llama import Llama, model_config

    texts = [p.question + "\n" + p.solution for p in arith.generate(300, "train", 0)] + ["user\nassistant\n"]
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    save_model(Llama(model_config("tiny", vocab_size=tok.get_vocab_size())), run / "sft" / "model", tokenizer=tok)
    return run


def _digit_reward(text, gold, extract="strict", format_bonus=0.0):
    """rl's reward in these tests: the share of digits in the completion (a random model is never right, and an
    all-zero reward would give no update: the test could not tell a wrong resume from a right one)."""
    share = sum(ch.isdigit() for ch in text) / max(1, len(text))
    return share, share > 0.5


_CHILD = """
import sys, time, torch
from pathlib import Path
torch.set_num_threads({threads})
sys.path.insert(0, {tests!r})
from test_post_resume import _digit_reward, _recipe
from ledgerlm.pipeline import run_stage
from ledgerlm.post import {stage} as mod

def hook(step, model):
    if step == {kill_at}:
        Path({marker!r}).write_text("stopped")
        time.sleep(600)  # wait here for the SIGKILL

mod._STEP_HOOK = hook
if {stage!r} == "rl":
    mod.verifiable_reward = _digit_reward
run_stage(_recipe({stage!r}), {stage!r}, Path({run!r}), echo=lambda *a: None)
"""


def _curve(run: Path, stage: str) -> list[dict]:
    rows = [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "step_s")} for r in rows]


def _weights(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / stage / "model" / "model.safetensors"))


@pytest.mark.parametrize("stage", ["dpo", "reward", "rl"])
def test_sigkill_mid_stage_then_resume_matches_uninterrupted(tmp_path, monkeypatch, stage):
    from ledgerlm.pipeline import run_stage
    from ledgerlm.post import rl

    monkeypatch.setattr(rl, "verifiable_reward", _digit_reward)

    quiet = lambda *_: None  # noqa: E731
    part = _base_run(tmp_path / "part")
    full = tmp_path / "full"
    shutil.copytree(part, full)
    marker = tmp_path / "stopped"
    code = _CHILD.format(
        threads=torch.get_num_threads(),
        tests=str(Path(__file__).parent),
        stage=stage,
        kill_at=KILL_AT,
        marker=str(marker),
        run=str(part),
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert child.poll() is None, f"child exited ({child.returncode}) before the kill"
            assert time.time() < deadline, "child never reached the kill step"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    ckpts = sorted(p.name for p in (part / stage / "ckpt").iterdir() if p.name.startswith("step_"))
    assert ckpts[-1] == "step_00000004"
    assert [r["step"] for r in _curve(part, stage)][-1] == KILL_AT  # step 5 was logged, and will be redone

    torch.manual_seed(999)  # a fresh process has other RNG state: the checkpoint must restore what matters
    said = []
    status, rec = run_stage(_recipe(stage), stage, part, echo=said.append)
    assert status == "ran" and said[0].startswith(f"[{stage}] resuming"), said
    _, ref = run_stage(_recipe(stage), stage, full, echo=quiet)
    if stage == "rl":
        assert rec["extra"]["resumed_from_step"] == 4 and ref["extra"]["resumed_from_step"] == 0
        assert (part / "rl" / "samples.jsonl").read_bytes() == (full / "rl" / "samples.jsonl").read_bytes()
        assert sum(r.get("updates", 0) for r in _curve(full, "rl")) == STEPS["rl"]  # every step moved the weights
    assert f"{stage}: resumed from" in (part / "logs" / f"{stage}.log").read_text()
    assert not (part / stage / "ckpt").exists() and not (full / stage / "ckpt").exists()

    a, b = _weights(full, stage), _weights(part, stage)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _curve(part, stage) == _curve(full, stage) and len(_curve(full, stage)) >= STEPS[stage]
    drop = lambda m: {k: v for k, v in m.items() if k not in ("seconds", "ref_seconds")}  # noqa: E731
    assert drop(rec["metrics"]) == drop(ref["metrics"])
    if stage == "reward":
        head = "model/reward_head.safetensors"
        assert (part / stage / head).read_bytes() == (full / stage / head).read_bytes()
