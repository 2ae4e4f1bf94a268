"""The GPU check cannot rot: its CPU dry run runs the same code (one process per point, the Trainer's kill and
resume, eval and generation) on a tiny model; MFU under both conventions; a GPU off the table is "unknown"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check
from ledgerlm.estimate import recorded_mfu
from ledgerlm.model.llama import model_config

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_measures_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "gc.json"
    cmd = [sys.executable, "-m", "bench.gpu_check", "all", "--dry-run", "--batches", "2,4", "--json", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    pts = r["mfu"]["points"]
    assert [(x["loss"], x["micro_batch"]) for x in pts] == [("plain", 2), ("plain", 4), ("chunked", 2), ("chunked", 4)]
    assert all(x["ok"] and x["tok_s"] > 0 and x["peak_gib"] > 0 for x in pts)
    # the same loss on the same batch whatever the path (chunked = plain within float tolerance)
    assert pts[0]["loss_value"] == pytest.approx(pts[2]["loss_value"], rel=1e-5)
    assert r["mfu"]["largest"] == {"plain": 4, "chunked": 4}
    assert "| plain | 2 | yes |" in r["mfu"]["body"] and "unknown" in r["mfu"]["body"]  # no peak on a CPU
    t = r["trainer"]
    assert t["grad_accum"] == 2 and t["resumed_from"] == 2 and t["resumed_max_weight_diff"] == 0.0
    assert t["tok_s_median"] > 0 and t["final_val_loss"] > 0
    g = r["generate"]
    assert g["new_tokens"] == 2 * 8 and g["gen_new_tok_s"] > 0 and g["eval_tok_s"] > 0
    assert "not recorded" not in p.stdout  # nothing asked to record


def test_record_refuses_a_cpu_run(tmp_path, capsys):
    assert gpu_check.main(["generate", "--dry-run", "--record"]) == 0
    assert "not recorded: BENCHMARKS.md takes GPU measurements only" in capsys.readouterr().out


@pytest.mark.parametrize("name, known", [("NVIDIA B200", True), ("NVIDIA H100 NVL", True), ("Tesla T4", False)])
def test_mfu_under_both_conventions_and_unknown_gpus(monkeypatch, name, known):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    cfg = model_config("smollm-135m")
    m = gpu_check.mfu_both(cfg, 2048, 300_000.0, "cuda")
    if not known:
        assert m["mfu_causal"] is None and m["mfu_full"] is None and gpu_check._pct(None) == "unknown"
        return
    # causal halves the attention term: 12*L*d*T -> 6*L*d*T
    assert cfg.flops_per_token(2048) - cfg.flops_per_token(2048, causal=True) == 6 * 30 * 576 * 2048
    assert m["mfu_causal"] == pytest.approx(
        m["mfu_full"] * cfg.flops_per_token(2048, causal=True) / cfg.flops_per_token(2048)
    )
    assert 0 < m["mfu_causal"] < m["mfu_full"]


def test_the_old_h100_number_under_the_causal_convention():
    # 294,651 tokens/s measured on an H100 SXM (BENCHMARKS.md): 36.7% full; the causal count reads ~30%
    cfg = model_config("smollm-135m")
    full = cfg.flops_per_token(2048) * 294_651 / 989e12
    causal = cfg.flops_per_token(2048, causal=True) * 294_651 / 989e12
    assert round(full, 3) == 0.367 and round(causal, 3) == 0.304


def test_plan_reads_a_recorded_mfu_else_says_assumed(tmp_path, capsys):
    from ledgerlm.cli import main
    from ledgerlm.device import GPUS

    nums = {"device": "NVIDIA H100 80GB HBM3", "mfu_full_chunked_b16": 0.41}
    md = tmp_path / "B.md"
    md.write_text(
        "<!-- bench:gpu-check-mfu:start -->\n### x\n\nbody\n\n<!-- numbers: " + json.dumps(nums) + " -->\n"
        "<!-- bench:gpu-check-mfu:end -->\n"
    )
    assert recorded_mfu(GPUS["h100"], md) == 0.41
    assert recorded_mfu(GPUS["a100"], md) is None  # measured on another GPU
    assert recorded_mfu(GPUS["h100"], tmp_path / "none.md") is None
    assert main(["plan", "smollm-135m-1gpu", "--gpu", "a100"]) == 0
    out = capsys.readouterr().out
    assert "(assumed, not measured" in out and "measured, BENCHMARKS.md" not in out


def test_gpu_check_needs_neither_zstandard_nor_datatrove():
    """A fresh GPU machine may lack both: everything the check imports must load without them."""
    code = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def imp(name, *a, **k):\n"
        "    if name.split('.')[0] in ('zstandard', 'datatrove'):\n"
        "        raise ImportError('blocked ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = imp\n"
        "import bench.gpu_check, ledgerlm.train.pretrain, ledgerlm.train.data, ledgerlm.model.generate\n"
        "import sys; assert 'zstandard' not in sys.modules and 'datatrove' not in sys.modules\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
