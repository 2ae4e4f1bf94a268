"""The pretraining loop: build the model and optimizer (`setup`), step with gradient accumulation, evaluate held-out
loss per source and phase mixture, checkpoint and resume bit-identically, and pick the final weights (last, EMA or
averaged). `train(cfg, source, out_dir, ...)` runs it all; the stage (`ledgerlm.train.pretrain`) calls it."""

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
from ledgerlm.device import autocast as bf16_autocast
from ledgerlm.device import peak_flops
from ledgerlm.model.hf import load_model, save_model
from ledgerlm.model.llama import ModelConfig, build_model, model_config
from ledgerlm.train.data import WindowSource, doc_ids_from_eot
from ledgerlm.train.pretrain_config import Config, config_error, resolve_lengths


class TrainingDiverged(RuntimeError):
    pass


# test hook: called as _STEP_HOOK(step, model) after each completed step (tests raise from it to simulate a kill)
_STEP_HOOK = None

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
            raise config_error("init_from", f"{cfg.init_from} has config {src.cfg}, recipe model is {mcfg}")
        model.load_state_dict(src.state_dict())
    return model.train()


def setup(cfg: Config, source: WindowSource, vocab_size: int, seed: int, info: DistInfo) -> Trainer:
    """Check the config against the data, then build the model, optimizer, schedule, EMA / averaging, val batches."""
    dev = info.device
    if cfg.parallel == "fsdp" and cfg.optimizer == "muon":
        raise config_error("optimizer", "muon is not supported with parallel=fsdp (it needs whole matrices); use ddp")
    if cfg.seq_len != source.seq_len:
        raise config_error("seq_len", f"{cfg.seq_len} but the data source cuts windows of {source.seq_len}")
    L = resolve_lengths(cfg, info.world, source.n_tokens, getattr(source, "phase_tokens", 0))
    if getattr(source, "phase_tokens", 0) and L["tokens"] > source.phase_tokens:
        raise config_error("tokens", f"{L['tokens']:,} training tokens exceed the phases' {source.phase_tokens:,}")
    source.doc_ids = cfg.doc_mask
    steps = L["steps"]
    try:
        mcfg = model_config(cfg.model, vocab_size=vocab_size, dropout=cfg.dropout or None)
    except ValueError as e:
        raise config_error("model", str(e)) from None
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
        raise config_error(
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
        raise config_error("val_on", f"{name!r} is neither a phase nor a source (phases and sources: {', '.join(names)})")
    missing = [s for s in weights if s not in val]
    if missing:
        raise config_error(
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
        raise config_error("select_final", f"{cfg.select_final!r} is not available (enabled: {sorted(candidates)})")
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
