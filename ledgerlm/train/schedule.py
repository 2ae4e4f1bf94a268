"""Learning-rate schedules: warmup-stable-decay (linear or 1-sqrt decay), cosine, constant.

`lr_mult` is the pure function (step -> multiplier of the peak lr); `lr_at(step, cfg)` reads the fields off any
config object (lr, warmup, schedule, decay_frac, decay_shape, min_lr_ratio, and the total steps).
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


def lr_at(step: int, cfg, total: int | None = None) -> float:
    return cfg.lr * lr_mult(
        step,
        total if total is not None else cfg.steps,
        getattr(cfg, "warmup", 0),
        getattr(cfg, "schedule", "wsd"),
        getattr(cfg, "decay_frac", 0.2),
        getattr(cfg, "decay_shape", "linear"),
        getattr(cfg, "min_lr_ratio", 0.0),
    )
