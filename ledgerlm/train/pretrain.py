"""The `pretrain` stage: train the Llama model on the tokenize stage's shards, one GPU or `torchrun` DDP/FSDP2.

One dial sets the length (steps, tokens, or epochs over the data); the global token batch is fixed by
`batch_tokens` and gradient accumulation is derived from it, micro_batch_size and the world size. Checkpoints are atomic
and a re-run resumes from the newest one with bitwise-identical results on CPU (weights, optimizer, schedule step,
loader position, RNG, EMA and averaging state are all saved). A NaN/inf loss or gradient stops the run before the
optimizer step, so the newest checkpoint stays the last good state.

Outputs: RUN/pretrain/model/ (HF Llama dir + tokenizer), RUN/pretrain/metrics.jsonl, RUN/pretrain/ckpt/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import torch

from ledgerlm.components import checkpoint as ckpt_lib
from ledgerlm.components.averaging import EMA, SnapshotAverage, load_weights_into, snapshot_steps
from ledgerlm.components.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    full_state_dicts,
    init_distributed,
    load_full_state_dicts,
    unwrap,
    wrap_model,
)
from ledgerlm.components.optimizer import build_optimizer, clip_grad, set_lr
from ledgerlm.components.schedule import decay_start, lr_mult
from ledgerlm.config import ConfigError, ranged
from ledgerlm.data.mixture import phases_from_config
from ledgerlm.data.shards import TokenIndex
from ledgerlm.device import autocast as bf16_autocast
from ledgerlm.device import peak_flops
from ledgerlm.model.hf import load_model, save_model
from ledgerlm.model.llama import ModelConfig, build_model, model_config
from ledgerlm.model.loss import DEFAULT_CHUNK
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.train import supply
from ledgerlm.train.data import LoaderSource, WindowSource, doc_ids_from_eot, from_tokenize_dir


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


class TrainingDiverged(RuntimeError):
    pass


# test hook: called as _STEP_HOOK(step, model) after each completed step (tests raise from it to simulate a kill)
_STEP_HOOK = None


def _err(key: str, msg: str):
    return ConfigError(f"pretrain.{key}", msg)


def resolve_lengths(cfg: Config, world: int, data_tokens_available: int, phase_tokens: int = 0) -> dict:
    """batch_tokens, grad accumulation and steps from the one length dial that is set."""
    micro = cfg.micro_batch_size * cfg.seq_len
    bt = cfg.batch_tokens or micro * world
    if bt % (micro * world):
        raise _err("batch_tokens", f"{bt} is not a multiple of micro_batch_size*seq_len*world = {micro}*{world}")
    dials = [n for n in ("steps", "tokens", "epochs") if getattr(cfg, n)]
    if not dials and phase_tokens:  # the phases' budget is the length
        return resolve_lengths(dataclasses.replace(cfg, tokens=phase_tokens), world, data_tokens_available)
    if len(dials) != 1:
        raise _err("steps", f"set exactly one of steps, tokens, epochs (got {dials or 'none'})")
    if cfg.steps:
        steps = cfg.steps
    elif cfg.tokens:
        steps = cfg.tokens // bt
    else:
        steps = int(cfg.epochs * data_tokens_available) // bt
    if steps < 1:
        raise _err(dials[0], f"gives {steps} optimizer steps at batch_tokens={bt}; need at least 1")
    return {"batch_tokens": bt, "grad_accum": bt // (micro * world), "steps": steps, "tokens": steps * bt}


@torch.no_grad()
def evaluate(model, batches, device: str, autocast, doc_mask=False, eot_id=None, info: DistInfo | None = None) -> float:
    """Mean loss over fixed batches (averaged over ranks: loader val batches differ per rank)."""
    if not batches:
        return float("nan")
    was = model.training
    model.eval()
    total = torch.zeros((), device=device)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        doc = doc_ids_from_eot(x, eot_id) if doc_mask and eot_id is not None else None
        with autocast():
            total += model(x, doc_ids=doc, targets=y).float()
    model.train(was)
    return all_reduce_mean(total / len(batches), info or DistInfo()).item()


def _memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# settings that do not change the trajectory (and fields added later, so older checkpoints still resume)
NOT_TRAJECTORY = ("eval_every", "ckpt_every", "keep_ckpts", "log_every", "extra", "val_on")
NOT_TRAJECTORY += ("supply_estimate", "max_source_passes")


def config_sha(cfg: Config) -> str:
    d = dataclasses.asdict(cfg)
    for k in NOT_TRAJECTORY:
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Trainer:
    """What a pretraining run holds between steps: built by `setup`, moved on by `train_step`, restored by `resume`."""

    cfg: Config
    source: WindowSource
    info: DistInfo
    mcfg: ModelConfig
    lengths: dict  # resolve_lengths: batch_tokens, grad_accum, steps, tokens
    model: torch.nn.Module  # the plain model (EMA, averaging and the final weights read it)
    wrapped: torch.nn.Module  # the same under DDP / FSDP (itself without)
    fwd: Callable  # `wrapped`, compiled if asked
    opt: torch.optim.Optimizer
    autocast: Callable
    sched: dict  # lr_mult's keyword arguments
    ema: EMA | None
    avg: SnapshotAverage | None
    ema_start: int  # the step the EMA starts from (the decay phase)
    avg_steps: set[int]  # the steps whose weights enter the snapshot average
    val: dict[str, list]  # fixed validation batches per source (one set `all` for a WindowSource)
    val_weights: dict[str, float]  # the declared mixture (val_on) over those sources
    val_mixtures: dict[str, dict[str, float]]  # every phase's mixture (reported beside the declared one)
    peak: float | None  # the device's peak FLOP/s (MFU); None on CPU
    step: int = 0  # optimizer steps done
    first_step: int = 0  # where this process started (0, or the step resumed from)
    tokens_seen: int = 0
    train_seconds: float = 0.0
    tok_s_hist: list[float] = field(default_factory=list)  # per step after the first (which includes warm-up)
    mfu_hist: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.lengths["steps"]

    def val_losses(self, model=None) -> dict:
        """Validation losses of the training model or of `model`: {"val_loss": the declared mixture's,
        "by_source": {source: mean loss over its batches}, "by_mixture": {phase: its mixture's}}. A mixture's loss
        is the mixture-weighted mean of its sources' losses: the expected loss of rows drawn in its proportions."""
        dev, eot = self.info.device, self.source.eot_id
        by_source = {
            s: evaluate(model or self.model, b, dev, self.autocast, self.cfg.doc_mask, eot, self.info)
            for s, b in self.val.items()
        }
        by_mixture = {
            name: sum(w * by_source[s] for s, w in mix.items())
            for name, mix in self.val_mixtures.items()
            if all(s in by_source for s in mix)
        }
        head = sum(w * by_source[s] for s, w in self.val_weights.items()) if self.val else float("nan")
        return {"val_loss": head, "by_source": by_source, "by_mixture": by_mixture}

    def val_loss(self, model=None) -> float:
        """The declared (`val_on`) validation loss of the training model or of `model`."""
        return self.val_losses(model)["val_loss"]


def build(cfg: Config, mcfg: ModelConfig, dev: str, seed: int) -> torch.nn.Module:
    """The model from `seed`, or with the weights of `cfg.init_from` (same architecture)."""
    if dev == "cpu" and cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    if dev.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(seed)
    model = build_model(mcfg, device=dev)
    if cfg.init_from:
        src = load_model(cfg.init_from)
        if dataclasses.replace(src.cfg, dropout=mcfg.dropout, max_seq_len=mcfg.max_seq_len) != mcfg:
            raise _err("init_from", f"{cfg.init_from} has config {src.cfg}, recipe model is {mcfg}")
        model.load_state_dict(src.state_dict())
    return model.train()


def setup(cfg: Config, source: WindowSource, vocab_size: int, seed: int, info: DistInfo) -> Trainer:
    """Check the config against the data, then build the model, optimizer, schedule, EMA / averaging, val batches."""
    dev = info.device
    if cfg.parallel == "fsdp" and cfg.optimizer == "muon":
        raise _err("optimizer", "muon is not supported with parallel=fsdp (it needs whole matrices); use ddp")
    if cfg.seq_len != source.seq_len:
        raise _err("seq_len", f"{cfg.seq_len} but the data source cuts windows of {source.seq_len}")
    L = resolve_lengths(cfg, info.world, source.n_tokens, getattr(source, "phase_tokens", 0))
    if getattr(source, "phase_tokens", 0) and L["tokens"] > source.phase_tokens:
        raise _err("tokens", f"{L['tokens']:,} training tokens exceed the phases' {source.phase_tokens:,}")
    source.doc_ids = cfg.doc_mask
    steps = L["steps"]
    try:
        mcfg = model_config(cfg.model, vocab_size=vocab_size, dropout=cfg.dropout or None)
    except ValueError as e:
        raise _err("model", str(e)) from None
    if cfg.seq_len > mcfg.max_seq_len:
        mcfg = dataclasses.replace(mcfg, max_seq_len=cfg.seq_len)
    model = build(cfg, mcfg, dev, seed)
    wrapped = wrap_model(model, cfg.parallel, info)
    opt = build_optimizer(model, cfg)
    # LEDGERLM_COMPILE_BACKEND=aot_eager traces forward and backward as inductor does but generates no code: the CPU
    # rehearsal (tests/test_rehearsal.py) checks that the model compiles in seconds, not minutes of C++ builds
    backend = os.environ.get("LEDGERLM_COMPILE_BACKEND", "inductor")
    fwd = torch.compile(wrapped, backend=backend) if cfg.compile else wrapped
    sched = dict(
        total=steps,
        warmup=cfg.warmup,
        schedule=cfg.schedule,
        decay_frac=cfg.decay_frac,
        decay_shape=cfg.decay_shape,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    d0 = decay_start(steps, cfg.schedule, cfg.decay_frac, cfg.warmup)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    avg = SnapshotAverage(model) if cfg.average_last_k else None
    avg_steps = set(snapshot_steps(d0 if d0 < steps else 0, steps, cfg.average_last_k))
    val = source.val_sets(cfg.val_batches, cfg.micro_batch_size) if cfg.val_batches else {}
    if cfg.val_batches and cfg.eval_every and not val:  # else every validation loss would be NaN
        raise _err(
            "val_batches",
            f"the held-out split has less than one validation batch ({cfg.micro_batch_size} x {cfg.seq_len + 1} tokens); "
            "raise tokenize.val_fraction, or set pretrain.val_batches=0 to train without a validation loss",
        )
    mixtures = source.mixtures()
    val_weights = resolve_val_on(cfg, mixtures, val) if val else {}
    autocast = functools.partial(bf16_autocast, dev, cfg.precision)
    ema_start = d0 if d0 < steps else 0
    return Trainer(
        cfg,
        source,
        info,
        mcfg,
        L,
        model,
        wrapped,
        fwd,
        opt,
        autocast,
        sched,
        ema,
        avg,
        ema_start,
        avg_steps,
        val,
        val_weights,
        mixtures,
        peak_flops(dev),
    )


def val_on_name(cfg: Config, mixtures: dict) -> str:
    """The name of what the headline validation loss measures: `val_on`, else the first phase's."""
    return cfg.val_on or next(iter(mixtures))


def resolve_val_on(cfg: Config, mixtures: dict[str, dict[str, float]], val: dict[str, list]) -> dict[str, float]:
    """The declared validation mixture {source: weight}: a phase's mixture, or one source. Every source in it must
    have validation batches (else the headline would silently measure a different mixture)."""
    name = val_on_name(cfg, mixtures)
    if name in mixtures:
        weights = dict(mixtures[name])
    elif name in val or name in {s for m in mixtures.values() for s in m}:
        weights = {name: 1.0}
    else:
        names = sorted(set(mixtures) | {s for m in mixtures.values() for s in m})
        raise _err("val_on", f"{name!r} is neither a phase nor a source (phases and sources: {', '.join(names)})")
    missing = [s for s in weights if s not in val]
    if missing:
        raise _err(
            "val_on",
            f"{name!r} draws on {missing}, which have less than one validation batch ({cfg.micro_batch_size} x "
            f"{cfg.seq_len + 1} tokens) in the held-out split; raise tokenize.val_fraction or name another val_on",
        )
    return weights


def val_row(v: dict, mixtures: dict[str, dict[str, float]]) -> dict:
    """A validation result as flat metrics-row keys: val_loss (the declared one), val_src.<source> and
    val_mix.<phase> for each phase mixing several sources (a one-source phase is its source's row)."""
    row = {"val_loss": round(v["val_loss"], 6)}
    row.update({f"val_src.{s}": round(x, 6) for s, x in v["by_source"].items()})
    row.update({f"val_mix.{k}": round(x, 6) for k, x in v["by_mixture"].items() if len(mixtures[k]) > 1})
    return row


def resume(t: Trainer, ckpt_dir: Path, metrics_path: Path, log) -> None:
    """Continue from the newest checkpoint, if any: weights, optimizer, loader position, EMA / averaging, counters;
    metrics.jsonl is cut back to its step. A checkpoint of another config is an error, not silently mixed in."""
    latest = ckpt_lib.latest_checkpoint(ckpt_dir)
    if latest is None:
        return
    m_sd, o_sd, st, extra = ckpt_lib.load_checkpoint(latest)
    if st.get("config_sha256") != config_sha(t.cfg):
        raise RuntimeError(
            f"{latest}: checkpoint was written with a different pretrain config; "
            f"remove {ckpt_dir} to start over, or restore the original config"
        )
    load_full_state_dicts(t.wrapped, t.opt, m_sd, o_sd, t.info, t.cfg.parallel)
    t.source.load_state_dict(st["loader"])
    if t.ema:
        t.ema.load_state_tensors({k[4:]: v for k, v in extra.items() if k.startswith("ema.")})
    if t.avg:
        t.avg.load_state_tensors({k[4:]: v for k, v in extra.items() if k.startswith("avg.")}, st["avg_count"])
    t.step, t.tokens_seen, t.train_seconds = st["step"], st["tokens"], st.get("train_seconds", 0.0)
    log.info("resumed from %s (step %d/%d)", latest, t.step, t.steps)
    if t.info.is_main:
        ckpt_lib.trim_metrics(metrics_path, t.step)


def save(t: Trainer, ckpt_dir: Path) -> None:
    """A checkpoint of step `t.step` (every rank takes part in gathering the state; the main rank writes)."""
    m_sd, o_sd = full_state_dicts(t.wrapped, t.opt, t.info, t.cfg.parallel)
    extra = {}
    if t.ema:
        extra.update({"ema." + k: v for k, v in t.ema.state_tensors().items()})
    if t.avg:
        extra.update({"avg." + k: v for k, v in t.avg.state_tensors().items()})
    if t.info.is_main:
        state = {
            "config_sha256": config_sha(t.cfg),
            "loader": t.source.state_dict(),
            "tokens": t.tokens_seen,
            "avg_count": t.avg.count if t.avg else 0,
            "train_seconds": t.train_seconds,
            "model_config": dataclasses.asdict(t.mcfg),
            "schedule": {**t.sched, "lr": t.cfg.lr, "step_lr_mult": lr_mult(t.step - 1, **t.sched)},
        }
        ckpt_lib.save_checkpoint(ckpt_dir, t.step, m_sd, o_sd, state, extra, keep_last=t.cfg.keep_ckpts)
    barrier(t.info)


def train_step(t: Trainer, ckpt_dir: Path) -> dict:
    """Optimizer step `t.step` (micro-batches accumulate; DDP syncs on the last) -> its metrics row. A non-finite loss
    or gradient raises TrainingDiverged before the optimizer step, so the newest checkpoint stays the last good state."""
    cfg, dev, accum, step = t.cfg, t.info.device, t.lengths["grad_accum"], t.step
    t0 = time.perf_counter()
    mult = lr_mult(step, **t.sched)
    set_lr(t.opt, mult)
    loss_acc = torch.zeros((), device=dev)
    for micro in range(accum):
        x, y, doc = t.source.next_micro(t.info.rank, t.info.world, cfg.micro_batch_size)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        doc = doc.to(dev, non_blocking=True) if doc is not None else None
        no_sync = cfg.parallel == "ddp" and t.info.enabled and micro < accum - 1
        with t.wrapped.no_sync() if no_sync else contextlib.nullcontext():
            with t.autocast():
                loss = t.fwd(x, doc_ids=doc, targets=y, loss_chunk_size=cfg.loss_chunk_size)
            (loss / accum).backward()
        loss_acc += loss.detach().float() / accum
    loss_acc = all_reduce_mean(loss_acc, t.info)
    gnorm = clip_grad(t.model, cfg.grad_clip)
    loss_v = loss_acc.item()
    if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
        t.opt.zero_grad(set_to_none=True)
        last = ckpt_lib.latest_checkpoint(ckpt_dir)
        raise TrainingDiverged(
            f"non-finite {'loss' if not math.isfinite(loss_v) else 'gradient norm'} at step {step} "
            f"(loss={loss_v}, grad_norm={gnorm}); stopped before the optimizer step. "
            f"Last good checkpoint: {last or 'none'}. Lower lr, add warmup or check the data."
        )
    t.opt.step()
    t.opt.zero_grad(set_to_none=True)
    if t.ema:
        if step == t.ema_start:
            t.ema.reset(t.model)
        elif step > t.ema_start:
            t.ema.update(t.model)
    if t.avg and step in t.avg_steps:
        t.avg.add(t.model)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    return step_row(t, loss_v, gnorm, mult, time.perf_counter() - t0)


def step_row(t: Trainer, loss: float, gnorm: float, mult: float, dt: float) -> dict:
    """Count the step just done (time, tokens, throughput) and return its metrics row."""
    bt = t.lengths["batch_tokens"]
    t.train_seconds += dt
    t.tokens_seen += bt
    tok_s = bt / dt
    mfu = t.mcfg.flops_per_token(t.cfg.seq_len) * tok_s / t.info.world / t.peak if t.peak else None
    if t.step > t.first_step:  # the first step includes compilation/warm-up
        t.tok_s_hist.append(tok_s)
        if mfu is not None:
            t.mfu_hist.append(mfu)
    t.step += 1
    return {
        "step": t.step,
        "tokens": t.tokens_seen,
        "loss": round(loss, 6),
        "lr": mult * t.cfg.lr,
        "grad_norm": round(gnorm, 6),
        "tok_s": round(tok_s, 1),
        "mfu": round(mfu, 4) if mfu is not None else None,
        "mem_gb": round(_memory_gb(t.info.device), 3),
    }


def log_line(log, row: dict, steps: int) -> None:
    mfu = f" mfu {row['mfu']:.1%}" if row["mfu"] is not None else ""
    val = f" val {row['val_loss']:.4f}" if "val_loss" in row else ""
    by = [f"{k[8:]} {v:.3f}" for k, v in row.items() if k.startswith("val_src.")]
    val += f" ({', '.join(by)})" if len(by) > 1 else ""
    log.info(
        "step %d/%d loss %.4f%s lr %.2e gnorm %.3f tok/s %.0f%s",
        row["step"],
        steps,
        row["loss"],
        val,
        row["lr"],
        row["grad_norm"],
        row["tok_s"],
        mfu,
    )


def steps_to_end(t: Trainer, ckpt_dir: Path, metrics_path: Path, log, view=None) -> float | None:
    """Train from `t.step` to the last step: validate every `eval_every` steps, append each row to metrics.jsonl
    (main rank) and the live view, log every `log_every`, checkpoint every `ckpt_every` and at the end. Returns the
    last validation loss (None if none was measured)."""
    cfg, steps, last_val = t.cfg, t.steps, None
    metrics_f = open(metrics_path, "a") if t.info.is_main else None  # noqa: SIM115 - closed in finally
    try:
        while t.step < steps:
            row = train_step(t, ckpt_dir)
            done = t.step
            if t.val and cfg.eval_every and (done % cfg.eval_every == 0 or done == steps):
                v = t.val_losses()
                last_val = v["val_loss"]
                row.update(val_row(v, t.val_mixtures))
            if metrics_f:
                metrics_f.write(json.dumps(row) + "\n")
                metrics_f.flush()
            if view:
                view.log(row)
            if done % max(1, cfg.log_every) == 0 or done == steps:
                log_line(log, row, steps)
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == steps:
                save(t, ckpt_dir)
            if _STEP_HOOK is not None:
                _STEP_HOOK(done, t.model)
    finally:
        if metrics_f:
            metrics_f.close()
        if view:
            view.close()
    return last_val


def select_final(t: Trainer) -> tuple[torch.nn.Module, str, dict[str, float], dict]:
    """The final weights -- raw, EMA or snapshot average -- chosen on the declared (`val_on`) validation loss unless
    fixed by select_final, loaded into a plain (unwrapped / FSDP-gathered) model -> (model, chosen, declared
    validation loss by candidate, the chosen weights' validation losses by source and mixture)."""
    cfg = t.cfg
    if cfg.parallel == "fsdp" and t.info.enabled:
        m_sd, _ = full_state_dicts(t.wrapped, t.opt, t.info, cfg.parallel)
        final = build_model(t.mcfg, device=t.info.device)
        final.load_state_dict(m_sd, strict=False)
    else:
        final = unwrap(t.model)
    candidates = {"raw": None}
    if t.ema:
        candidates["ema"] = t.ema.state_tensors()
    if t.avg and t.avg.count:
        candidates["avg"] = {k: v / t.avg.count for k, v in t.avg.state_tensors().items()}
    if cfg.select_final != "best" and cfg.select_final not in candidates:
        raise _err("select_final", f"{cfg.select_final!r} is not available (enabled: {sorted(candidates)})")
    raw = {n: p.detach().clone() for n, p in final.named_parameters()}
    val_by, full = {}, {}
    for name, w in candidates.items():
        load_weights_into(final, raw if w is None else w)
        full[name] = t.val_losses(final) if t.val else {"val_loss": float("nan"), "by_source": {}, "by_mixture": {}}
        val_by[name] = full[name]["val_loss"]
    if cfg.select_final != "best":
        chosen = cfg.select_final
    else:  # the lowest finite validation loss
        chosen = min(val_by, key=lambda k: val_by[k] if math.isfinite(val_by[k]) else float("inf")) if t.val else "raw"
    load_weights_into(final, raw if candidates[chosen] is None else candidates[chosen])
    return final, chosen, val_by, full[chosen]


def train(
    cfg: Config,
    source: WindowSource,
    out_dir,
    *,
    vocab_size: int,
    device: str | None = None,
    seed: int = 0,
    log=None,
    tokenizer=None,
    info: DistInfo | None = None,
    progress=None,  # progress(total, start=...) -> the live view of the steps (StageContext.steps); None: quiet
) -> dict:
    """Train (or resume) into out_dir; returns a summary dict. `source` yields token windows of cfg.seq_len."""
    log = log or logging.getLogger("ledgerlm.pretrain")
    out_dir = Path(out_dir)
    info = info or init_distributed(device)
    t = setup(cfg, source, vocab_size, seed, info)
    ckpt_dir, metrics_path = out_dir / "ckpt", out_dir / "metrics.jsonl"
    resume(t, ckpt_dir, metrics_path, log)
    t.first_step = start = t.step
    out_dir.mkdir(parents=True, exist_ok=True)
    L, steps = t.lengths, t.steps
    log.info(
        "pretrain: %s params, %d steps x %d tokens (accum %d, world %d), device %s",
        f"{t.mcfg.num_params():,}",
        steps,
        L["batch_tokens"],
        L["grad_accum"],
        info.world,
        info.device,
    )
    view = progress(steps, start=start) if progress and info.is_main else None
    last_val = steps_to_end(t, ckpt_dir, metrics_path, log, view)
    final, chosen, val_by, val_full = select_final(t)
    model_dir = out_dir / "model"
    if info.is_main:
        _save_hf(final, model_dir, tokenizer)
    barrier(info)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "model_dir": model_dir,
        "metrics_path": metrics_path,
        "steps": steps,
        "tokens": t.tokens_seen,
        "batch_tokens": L["batch_tokens"],
        "grad_accum": L["grad_accum"],
        "world": info.world,
        "params": t.mcfg.num_params(),
        "model_config": dataclasses.asdict(t.mcfg),
        "final": chosen,
        "val_loss": val_by[chosen],
        "val_loss_by_weights": val_by,
        "val_loss_by_source": val_full["by_source"],
        "val_loss_by_mixture": val_full["by_mixture"],
        "val_on": val_on_name(cfg, t.val_mixtures) if t.val else None,
        "val_weights": t.val_weights,
        "val_mixtures": t.val_mixtures,
        "last_val_loss": last_val,
        "tok_s_mean": mean(t.tok_s_hist),
        "mfu_mean": mean(t.mfu_hist),
        "train_seconds": t.train_seconds,
        "resumed_from": start,
        "data_epochs": t.tokens_seen / source.n_tokens,
    }


def _save_hf(model, model_dir: Path, tokenizer) -> None:
    save_model(model, model_dir, tokenizer=tokenizer, dtype=torch.float32)


# ----------------------------------------------------------------------------- stage protocol


def inputs(cfg: Config, ctx) -> dict:
    tok = ctx.stage_dir("tokenize")
    d = {"tokens": tok / "index.json", "tokenizer": tok / "tokenizer.json"}
    if cfg.init_from:
        d["init_from"] = Path(cfg.init_from)
    return d


def plan(cfg: Config, ctx) -> list[str]:
    mcfg = model_config(cfg.model)
    lines = [f"model {cfg.model if isinstance(cfg.model, str) else 'custom'}: {mcfg.num_params():,} params"]
    try:
        L = resolve_lengths(cfg, 1, 0 if cfg.epochs else 1)
        lines.append(
            f"{L['steps']} steps x {L['batch_tokens']:,} tokens = {L['tokens']:,} tokens, "
            f"~{mcfg.flops_per_token(cfg.seq_len) * L['tokens']:.2e} FLOPs"
        )
    except Exception as e:  # noqa: BLE001 - plan is informational
        lines.append(f"length: {e}")
    lines.append(
        f"optimizer {cfg.optimizer}, schedule {cfg.schedule}, dropout {cfg.dropout}, wd {cfg.weight_decay}, "
        f"ema {cfg.ema or 'off'}, average_last_k {cfg.average_last_k or 'off'}, parallel {cfg.parallel}"
    )
    if cfg.val_batches:
        names = [p.get("name", f"phase{i + 1}") for i, p in enumerate(cfg.phases)] or ["all"]
        lines.append(
            f"validation: {cfg.val_batches} batches of each source; val_loss, select_final and the headline "
            f"measure {cfg.val_on or names[0]!r}" + ("" if cfg.val_on else " (the first phase's mixture)")
        )
    if cfg.phases:
        try:
            phases = phases_from_config(cfg.phases)
        except ValueError as e:
            raise _err("phases", str(e)) from None
        try:
            L = resolve_lengths(cfg, 1, 1, sum(p.tokens for p in phases))
            starts = [0]
            for p in phases[:-1]:
                starts.append(starts[-1] + -(-p.tokens // L["batch_tokens"]))
            d0 = decay_start(L["steps"], cfg.schedule, cfg.decay_frac, cfg.warmup)
            lines.append(
                "schedule: warmup "
                f"{cfg.warmup} steps ({cfg.warmup / L['steps']:.1%}); "
                + ", ".join(f"phase {p.name} from step {s0:,}" for p, s0 in zip(phases, starts))
                + (f"; the LR decays from step {d0:,}" if cfg.schedule == "wsd" else "")
                + ("" if cfg.schedule != "wsd" or d0 in starts else " (not at a phase start)")
            )
        except Exception as e:  # noqa: BLE001 - plan reports what it cannot compute
            lines.append(f"schedule: {e}")
        rows = supply.table(phases, supply.plan_available(ctx.recipe, ctx.run_dir, cfg.supply_estimate))
        lines += supply.lines(rows)
        lines += [f"WARNING: {w}" for w in supply.warnings(rows, cfg.max_source_passes)]
        check_supply(cfg, rows)
    return lines


def check_supply(cfg: Config, rows: list) -> None:
    """Refuse a phase schedule that repeats a source more than `max_source_passes` times."""
    bad = supply.over_limit(rows, cfg.max_source_passes)
    if bad:
        s, p = max(bad.items(), key=lambda kv: kv[1])
        raise _err(
            "max_source_passes",
            f"the phases draw {p:.2f} passes over source {s!r} (limit {cfg.max_source_passes:g}): raise its curate "
            "limit, lower its mixture weight, or raise pretrain.max_source_passes",
        )


def run_supply(cfg: Config, source, ctx) -> list[dict]:
    """Supply vs demand at run time, from the token index (exact): warned per repeated source, refused above the
    limit, and recorded."""
    if not cfg.phases or not isinstance(source, LoaderSource):
        return []
    idx = source.loader.index
    avail = {s: (idx.n_tokens(s, "train"), "token index") for s in idx.sources}
    rows = supply.table(source.loader.phases, avail)
    check_supply(cfg, rows)
    for w in supply.warnings(rows, cfg.max_source_passes):
        ctx.warn("source_repeated", w)
    return [r.as_dict() for r in rows]


def make_source(cfg: Config, tok_dir, seed: int, info: DistInfo):
    """The project TokenLoader (phases, mixtures); a fixed seeded subset of windows when data_tokens is set."""
    if cfg.data_tokens:
        if cfg.phases:
            raise _err("data_tokens", "cannot be combined with phases (limit the data in curate instead)")
        return from_tokenize_dir(tok_dir, cfg.seq_len, seed, cfg.data_tokens)
    try:
        phases = phases_from_config(cfg.phases)
    except ValueError as e:
        raise _err("phases", str(e)) from None
    return LoaderSource(
        tok_dir, cfg.seq_len, cfg.micro_batch_size, seed, info.rank, info.world, phases, cfg.align_to_docs, cfg.doc_mask
    )


def run(cfg: Config, ctx):
    tok_dir = ctx.stage_dir("tokenize")
    vocab = TokenIndex(tok_dir).vocab_size
    info = init_distributed(ctx.device)
    source = make_source(cfg, tok_dir, ctx.seed, info)
    supply_rows = run_supply(cfg, source, ctx)
    tok_file = tok_dir / "tokenizer.json"
    res = train(
        cfg,
        source,
        ctx.out_dir,
        vocab_size=vocab,
        device=ctx.device,
        seed=ctx.seed,
        log=ctx.log,
        tokenizer=tok_file if tok_file.exists() else None,
        info=info,
        progress=ctx.steps,
    )
    rows = [json.loads(x) for x in res["metrics_path"].read_text().split("\n") if x] if info.is_main else []
    loss = f"train loss {rows[0]['loss']:.3f} → {rows[-1]['loss']:.3f}; " if rows else ""
    speed = f", {res['tok_s_mean']:,.0f} tokens/s" if res["tok_s_mean"] else ""
    speed += f", MFU {res['mfu_mean']:.1%}" if res["mfu_mean"] else ""
    summary = [
        f"{res['steps']:,} steps, {res['tokens']:,} tokens ({res['data_epochs']:.2f} epochs), "
        f"{res['params']:,} parameters{speed}",
        f"{loss}validation loss {res['val_loss']:.3f}"
        + (f" on {res['val_on']}" if res["val_on"] else "")
        + f" ({res['final']} weights)",
    ]
    if res["val_loss_by_source"]:
        summary.append(
            "validation loss by source: " + ", ".join(f"{s} {v:.3f}" for s, v in res["val_loss_by_source"].items())
        )
    return StageResult(
        outputs={"model": res["model_dir"], "metrics": res["metrics_path"]},
        counters={"steps": res["steps"], "tokens": res["tokens"], "params": res["params"]},
        metrics={
            "val_loss": res["val_loss"],
            "final_val_loss": res["val_loss"],  # the headline: the declared (val_on) mixture's, of the kept weights
            "val_loss_by_weights": res["val_loss_by_weights"],
            "val_loss_by_source": res["val_loss_by_source"],
            "val_loss_by_mixture": res["val_loss_by_mixture"],
            "tok_s": res["tok_s_mean"],
            "mfu": res["mfu_mean"],
            "train_seconds": res["train_seconds"],
        },
        extra={
            "final_weights": res["final"],
            "val_on": res["val_on"],
            "val_mixture": res["val_weights"],
            "val_mixtures": res["val_mixtures"],
            "batch_tokens": res["batch_tokens"],
            "grad_accum": res["grad_accum"],
            "world": res["world"],
            "data_epochs": res["data_epochs"],
            "unique_train_tokens": source.n_tokens,
            "data_source": type(source).__name__,
            "loader": source.ledger_info() if hasattr(source, "ledger_info") else source.state_dict(),
            "resumed_from_step": res["resumed_from"],
            "supply": supply_rows,  # per phase and source: tokens asked, available (token index), passes
            "model_config": res["model_config"],
            "data_efficiency": {
                "epochs": res["data_epochs"],
                "dropout": cfg.dropout,
                "weight_decay": cfg.weight_decay,
                "ema": cfg.ema,
                "average_last_k": cfg.average_last_k,
                "optimizer": cfg.optimizer,
            },
        },
        summary=summary,
    )


SPEC = StageSpec(
    name="pretrain",
    config=Config,
    run=run,
    help="pretrain the model on the token shards",
    inputs=inputs,
    plan=plan,
    produces="model",
    headline=("final_val_loss",),
)
