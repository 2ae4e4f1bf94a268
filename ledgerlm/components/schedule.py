"""Learning-rate schedules: warmup-stable-decay (linear or 1-sqrt decay), cosine, constant.

`lr_mult` is the pure function (step -> multiplier of the peak lr) that pretraining uses; `lr_at` is the learning
rate post-training stages set (linear decay HF-style, or the pretraining shapes).
"""

from __future__ import annotations

import math

SCHEDULES = ("wsd", "cosine", "constant")
DECAY_SHAPES = ("linear", "1-sqrt")


def lr_mult(
    step: int,
    total: int,
    warmup: int = 0,
    schedule: str = "wsd",
    decay_frac: float = 0.2,
    decay_shape: str = "linear",
    min_lr_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based) out of `total`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {decay_shape!r}")
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_steps = max(1, round(total * decay_frac)) if decay_frac > 0 else 0
    decay_start = total - decay_steps
    if step < decay_start or decay_steps == 0:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / decay_steps)  # reaches exactly min at the last step
    frac = 1 - progress if decay_shape == "linear" else 1 - math.sqrt(progress)
    return min_lr_ratio + (1 - min_lr_ratio) * frac


def decay_start(total: int, schedule: str, decay_frac: float, warmup: int = 0) -> int:
    """First step of the decay phase (EMA/checkpoint averaging window). Cosine: the second half."""
    if schedule == "wsd":
        return total - max(1, round(total * decay_frac))
    if schedule == "cosine":
        return warmup + (total - warmup) // 2
    return total


def lr_at(step: int, total: int, lr: float, warmup: int = 0, schedule: str = "linear", min_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total`: linear warmup, then constant, cosine (the
    pretraining schedule code) or linear decay towards `min_ratio * lr` (HF-style: the last step is not wasted at 0)."""
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r} (constant, linear, cosine)")
    if schedule != "linear" or step < warmup:
        return lr * lr_mult(
            step, total, warmup, "constant" if schedule == "linear" else schedule, min_lr_ratio=min_ratio
        )
    frac = 1.0 - (step - warmup) / max(1, total - warmup)
    return lr * (min_ratio + (1.0 - min_ratio) * frac)
