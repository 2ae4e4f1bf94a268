"""The `pretrain` recipe section (`Config`) and the one length dial it resolves: batch tokens, gradient
accumulation and steps (`resolve_lengths`, also used by `ledgerlm plan`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ledgerlm.config import ConfigError, ranged
from ledgerlm.model.loss import DEFAULT_CHUNK


@dataclass
class Config:
    # old key -> new key: read with a warning for one release (the other stages call it micro_batch_size too)
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"micro_batch": "micro_batch_size"}  # rewrite_imports: keep

    model: str | dict = "tiny"  # size name (tiny, small, smollm-135m, ...) or a dict of ModelConfig fields
    seq_len: int = ranged(256, ge=2)  # tokens per training window
    micro_batch_size: int = ranged(8, ge=1)  # windows per forward pass on each device
    batch_tokens: int = ranged(0, ge=0)  # global tokens per step; 0 = micro_batch_size * seq_len * world (no accumulation)
    steps: int = ranged(0, ge=0)  # length dial 1: optimizer steps
    tokens: int = ranged(0, ge=0)  # length dial 2: training tokens (steps = tokens // batch_tokens)
    epochs: float = ranged(0.0, ge=0)  # length dial 3: passes over the (possibly data_tokens-limited) training data
    data_tokens: int = ranged(0, ge=0)  # unique training tokens (0 = all); tokens > data_tokens trains several epochs
    phases: list[dict] = field(default_factory=list)  # [{name, tokens, mixture}] for the loader (empty = by size)
    align_to_docs: bool = False  # windows start at document starts (loader option)
    lr: float = ranged(3e-3, gt=0)  # peak learning rate (AdamW; Muon's matrices use muon_lr)
    min_lr_ratio: float = ranged(0.0, ge=0, le=1)  # the schedule ends at this fraction of lr
    warmup: int = ranged(0, ge=0)  # steps
    schedule: Literal["wsd", "cosine", "constant"] = "wsd"  # lr after warmup: warmup-stable-decay, cosine or constant
    decay_frac: float = ranged(0.2, ge=0, le=1)  # wsd: fraction of the steps spent decaying
    decay_shape: Literal["linear", "1-sqrt"] = "linear"  # wsd: shape of the decay
    optimizer: Literal["adamw", "muon"] = "adamw"  # adamw, or muon for matrices (AdamW for the rest)
    muon_lr: float = ranged(0.02, gt=0)  # Muon's learning rate (optimizer=muon)
    weight_decay: float = ranged(0.1, ge=0)  # decoupled weight decay on matrices (never on vectors)
    beta1: float = ranged(0.9, ge=0, lt=1)  # AdamW beta1
    beta2: float = ranged(0.95, ge=0, lt=1)  # AdamW beta2
    grad_clip: float = ranged(1.0, ge=0)  # clip the global gradient norm to this (0 = no clipping)
    dropout: float = ranged(0.0, ge=0, lt=1)  # dropout probability (a data-efficiency switch for many epochs)
    ema: float = ranged(0.0, ge=0, lt=1)  # EMA decay over the decay phase (0 = off)
    average_last_k: int = ranged(0, ge=0)  # average k evenly spaced snapshots of the decay phase (0 = off)
    select_final: Literal["best", "raw", "ema", "avg"] = "best"  # which weights become model/ (best = lowest val)
    doc_mask: bool = False  # block-diagonal attention within packed documents (disables flash kernels)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False  # torch.compile the model
    # output head + loss over chunks of this many tokens, never the whole [B, T, V] logits (0 = the plain path)
    loss_chunk_size: int = DEFAULT_CHUNK
    eval_every: int = ranged(100, ge=0)  # steps between validation losses (0 = none while training)
    val_batches: int = ranged(8, ge=0)  # held-out batches of each source in a validation loss (0 = no validation)
    # what `val_loss` (the headline, the curve, select_final: best) measures: a phase name (its mixture, the
    # per-source losses weighted by it) or a source name; "" = the first phase's mixture
    val_on: str = ""
    ckpt_every: int = ranged(500, ge=0)  # steps between checkpoints (0 = only at the end)
    keep_ckpts: int = ranged(2, ge=1)  # newest checkpoints kept
    log_every: int = ranged(10, ge=1)  # steps between log lines
    parallel: Literal["none", "ddp", "fsdp"] = "none"  # none, or ddp / fsdp under torchrun
    cpu_threads: int = ranged(0, ge=0)  # CPU intra-op threads (0 = torch's default); 1 is often fastest when busy
    init_from: str = ""  # optional HF Llama dir to continue from (e.g. a downloaded SmolLM-135M)
    # What each source can supply, for `ledgerlm plan` before curate and tokenize have run (their records replace
    # it): {source: {tokens_per_doc: N, docs: N}} (docs only where the curate source has no limit)
    supply_estimate: dict = field(default_factory=dict)
    # a phase schedule drawing more passes than this over any source is refused (plan and run); 0 = no limit
    max_source_passes: float = ranged(4.0, ge=0)
    extra: dict = field(default_factory=dict)  # free-form notes recorded in the ledger

def config_error(key: str, msg: str):
    return ConfigError(f"pretrain.{key}", msg)


def resolve_lengths(cfg: Config, world: int, data_tokens_available: int, phase_tokens: int = 0) -> dict:
    """batch_tokens, grad accumulation and steps from the one length dial that is set."""
    micro = cfg.micro_batch_size * cfg.seq_len
    bt = cfg.batch_tokens or micro * world
    if bt % (micro * world):
        raise config_error("batch_tokens", f"{bt} is not a multiple of micro_batch_size*seq_len*world = {micro}*{world}")
    dials = [n for n in ("steps", "tokens", "epochs") if getattr(cfg, n)]
    if not dials and phase_tokens:  # the phases' budget is the length
        return resolve_lengths(dataclasses.replace(cfg, tokens=phase_tokens), world, data_tokens_available)
    if len(dials) != 1:
        raise config_error("steps", f"set exactly one of steps, tokens, epochs (got {dials or 'none'})")
    if cfg.steps:
        steps = cfg.steps
    elif cfg.tokens:
        steps = cfg.tokens // bt
    else:
        steps = int(cfg.epochs * data_tokens_available) // bt
    if steps < 1:
        raise config_error(dials[0], f"gives {steps} optimizer steps at batch_tokens={bt}; need at least 1")
    return {"batch_tokens": bt, "grad_accum": bt // (micro * world), "steps": steps, "tokens": steps * bt}
