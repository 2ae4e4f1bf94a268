"""The one home of device facts (ledgerlm.device) and of the post-training LR schedule (train.schedule.lr_at)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from ledgerlm.components.schedule import lr_at
from ledgerlm.config import ConfigError
from ledgerlm.device import GPUS, autocast, peak_flops, resolve_device


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200 NVL", 835e12),
        ("NVIDIA B200", 2250e12),
        ("Tesla T4", None),
    ],
)
def test_peak_flops_finds_the_most_specific_gpu(monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops("cuda") == peak and peak_flops("cuda:1") == peak
    assert peak_flops("cpu") is None
    assert GPUS["h100"].peak_bf16 == 989e12  # the table `ledgerlm plan` reads


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == resolve_device("") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device: 'cuda:1' requested but CUDA is not available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"


def test_autocast_is_bf16_on_cuda_or_when_asked():
    assert isinstance(autocast("cpu"), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cpu"), "fp32"), contextlib.nullcontext)
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert isinstance(autocast("cuda:0", "fp32"), contextlib.nullcontext)


def test_lr_at_warmup_then_linear_decay_to_min_ratio():
    lrs = [lr_at(s, 10, 1.0, warmup=2, min_ratio=0.1) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0]  # warmup reaches the peak on its last step
    assert lrs[2] == 1.0 and all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] == pytest.approx(0.1 + 0.9 / 8)
    assert [lr_at(s, 10, 2.0, schedule="constant") for s in (0, 9)] == [2.0, 2.0]
    assert lr_at(9, 10, 1.0, schedule="cosine") == pytest.approx((1 + torch.cos(torch.tensor(torch.pi * 9 / 10))) / 2)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(0, 10, 1.0, schedule="wsd")
