"""What `ledgerlm plan` estimates against: the target machine (`Target`: a GPU of device.GPUS at an MFU, and the host's
CPU cores and RAM for the data stages) and what a stage's `plan` may return (`Estimate`: its lines and the GPU-hours
they add up to), with the shared cost models (training memory of a Llama shape, the MFU bench.gpu_check recorded).

Each stage estimates itself (its StageSpec's `plan`, beside its code); this module only holds what several share.
FLOPs per token are 6N + attention (the model's `flops_per_token`); hours = FLOPs / (peak x MFU). The MFU is the
one given with --mfu, else the one `bench/gpu_check.sh` recorded on that GPU (BENCHMARKS.md, `gpu-check-mfu`), else
an assumed default per GPU, said to be assumed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ledgerlm.config import ConfigError
from ledgerlm.device import GPU, GPUS, gpu_for

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
GPU_CHECK_SECTION = "gpu-check-mfu"  # written by bench/gpu_check.py on a GPU


@dataclass(frozen=True)
class Target:
    """The machine a plan is for (need not be this one)."""

    key: str  # the GPUS key ("h100", "cpu")
    gpu: GPU
    mfu: float
    mfu_source: str  # given / measured / assumed, in words
    cpus: int = 16  # host cores, for the data stages
    ram_gib: float = 128.0  # host memory, for the data stages

    @property
    def device(self) -> str:
        """As `plan` prints it: "cpu" or "cuda (H100 SXM)"."""
        return "cpu" if self.key == "cpu" else f"cuda ({self.gpu.name})"


@dataclass
class Estimate:
    """A stage's `plan` with a cost: its lines, and the GPU-hours it adds to the plan's total."""

    lines: list[str] = field(default_factory=list)
    gpu_hours: float = 0.0


def target(gpu: str = "h100", mfu: float | None = None, cpus: int = 16, ram_gib: float = 128.0) -> Target:
    """The Target for `--gpu NAME` (a key of device.GPUS), or a ConfigError naming the known ones."""
    key = gpu.lower().replace("-", "").replace(" ", "")
    if key not in GPUS:
        raise ConfigError("--gpu", f"unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    g = GPUS[key]
    rec = recorded_mfu(g)
    if mfu is not None:
        used, source = mfu, "given"
    elif rec is not None:
        used, source = rec, "measured by bench.gpu_check, BENCHMARKS.md"
    else:
        used, source = g.default_mfu, "assumed, not measured: pass --mfu, or run bench/gpu_check.sh"
    return Target(key, g, used, source, cpus, ram_gib)


def recorded_mfu(g: GPU, path: Path = BENCHMARKS) -> float | None:
    """The MFU (full-attention convention, the one the hours below divide by) that `bench.gpu_check` recorded on this
    GPU for the recipe's path (chunked loss, micro-batch 16), or None when none was recorded."""
    if not path.exists():
        return None
    m = re.search(
        rf"<!-- bench:{GPU_CHECK_SECTION}:start -->.*?<!-- numbers: (\{{.*?\}}) -->.*?<!-- bench:{GPU_CHECK_SECTION}:end -->",
        path.read_text(),
        re.S,
    )
    if not m:
        return None
    nums = json.loads(m.group(1))
    dev, value = nums.get("device"), nums.get("mfu_full_chunked_b16")
    if isinstance(dev, list):
        dev = dev[-1] if dev else None
    if isinstance(value, list):
        value = value[-1] if value else None
    if not dev or not isinstance(value, int | float) or gpu_for(str(dev)) is not g:
        return None
    return float(value)


def train_memory_gib(
    n_params: int, n_layer: int, d_model: int, vocab: int, seq_len: int, micro_batch_size: int, loss_chunk: int = 0
) -> float:
    """AdamW with fp32 master weights (16 B/param) + bf16 activations (~40·s·b·d bytes per layer with flash
    attention and SwiGLU) + logits: with the plain loss all of them (bf16, their fp32 upcast and fp32 gradient,
    calibrated to be conservative against the H100 runs in BENCHMARKS.md: 33 GiB measured at micro_batch_size 16 x 2048,
    32 x 2048 did not fit); with the chunked loss (`loss_chunk` > 0, ledgerlm.model.loss) one chunk's bf16 logits
    and their fp32 copy, which the backward pass turns into the gradient in place."""
    states = 16 * n_params
    tokens = micro_batch_size * seq_len
    acts = 40 * tokens * d_model * n_layer
    logits = min(loss_chunk, tokens) * vocab * (2 + 4) if loss_chunk > 0 else tokens * vocab * (2 + 4 + 4)
    return (states + acts + logits) / 2**30


def largest_micro_batch(memory_gib: float, *args, loss_chunk: int = 0) -> int:
    """The largest micro-batch whose `train_memory_gib(..., micro_batch_size, loss_chunk)` stays under 90% of memory_gib
    (args: n_params, n_layer, d_model, vocab, seq_len); 0 if not even 1 fits."""
    b = 0
    while b < 4096 and train_memory_gib(*args, b + 1, loss_chunk) < 0.9 * memory_gib:
        b += 1
    return b
