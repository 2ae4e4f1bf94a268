"""Devices, one home for all stages: which device "auto" means, bf16 autocast, and the GPU table (peak FLOP/s for MFU
in the training logs, memory and a default MFU for `ledgerlm plan`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ledgerlm.config import ConfigError


@dataclass(frozen=True)
class GPU:
    name: str
    peak_bf16: float  # dense bf16 FLOP/s (the vendor's number without sparsity)
    memory_gib: float
    default_mfu: float  # assumed for planning (full-attention convention) until `bench.gpu_check` records one
    cuda_name: str | None = None  # found in torch.cuda.get_device_name(); the first entry that matches wins


# Order matters for `peak_flops`: "H100 NVL" and "H100 PCIe" before "H100", "H200 NVL" before "H200", "A100" before
# "A10", "L40S" before "L4", "B200" (which GB200 also matches; its dense bf16 peak is ~2.5 PFLOP/s, close enough for
# an MFU) before nothing. The H100's assumed MFU is what an older trainer measured in the full loop (35.5%, full-
# attention convention, BENCHMARKS.md `pretrain-gpu-throughput`, before the chunked loss was the default).
GPUS = {
    "h100nvl": GPU("H100 NVL", 835e12, 94, 0.35, cuda_name="H100 NVL"),
    "h100pcie": GPU("H100 PCIe", 756e12, 80, 0.35, cuda_name="H100 PCIe"),
    "h100": GPU("H100 SXM", 989e12, 80, 0.355, cuda_name="H100"),
    "h200nvl": GPU("H200 NVL", 835e12, 141, 0.40, cuda_name="H200 NVL"),
    "h200": GPU("H200", 989e12, 141, 0.40, cuda_name="H200"),
    "b200": GPU("B200", 2250e12, 180, 0.35, cuda_name="B200"),
    "a100": GPU("A100 80GB", 312e12, 80, 0.40, cuda_name="A100"),
    "a10": GPU("A10", 125e12, 24, 0.35, cuda_name="A10"),
    "l40s": GPU("L40S", 362e12, 48, 0.35, cuda_name="L40S"),
    "l4": GPU("L4", 121e12, 24, 0.35, cuda_name="L4"),
    "rtx4090": GPU("RTX 4090", 165e12, 24, 0.35, cuda_name="4090"),
    "cpu": GPU("CPU (2 cores)", 0.1e12, 24, 0.5),
}


def gpu_for(cuda_name: str) -> GPU | None:
    """The table's entry for a torch.cuda.get_device_name(); None for a GPU not in the table."""
    return next((g for g in GPUS.values() if g.cuda_name and g.cuda_name in cuda_name), None)


def resolve_device(requested: str | None = "auto") -> str:
    """The device to run on: for "auto" (or nothing) cuda when a GPU is there, else cpu. A named device is kept; one
    naming cuda on a machine without CUDA is a config error."""
    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{requested!r} requested but CUDA is not available")
    return requested


CPU_BF16_ENV = "LEDGERLM_CPU_BF16"  # "0": precision bf16 runs fp32 on this CPU (set by the real-shape rehearsal)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without, bf16 autocast emulates it ~4x slower
    than fp32 (measured on this project's 2-core Xeon: 29 vs 120 GFLOP/s)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device, precision: str = "auto"):
    """A context manager: bf16 autocast for precision "bf16", or for "auto" on CUDA; nothing otherwise (so CPU
    loss curves are exact fp32 and reproducible)."""
    dev_type = torch.device(device).type
    if dev_type == "cpu" and precision == "bf16" and os.environ.get(CPU_BF16_ENV) == "0":
        return contextlib.nullcontext()  # a machine setting: this CPU has no native bf16 (see cpu_has_bf16)
    if precision == "bf16" or (precision == "auto" and dev_type == "cuda"):
        return torch.autocast(dev_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_flops(device: str) -> float | None:
    """Dense bf16 peak FLOP/s of a CUDA device from the GPU table; None on CPU or for a GPU not in it."""
    if not str(device).startswith("cuda"):
        return None
    g = gpu_for(torch.cuda.get_device_name(torch.device(device)))
    return g.peak_bf16 if g else None
