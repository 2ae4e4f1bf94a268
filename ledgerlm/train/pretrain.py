"""The `pretrain` stage: train the Llama model on the tokenize stage's shards, one GPU or `torchrun` DDP/FSDP2.

One dial sets the length (steps, tokens, or epochs over the data); the global token batch is fixed by
`batch_tokens` and gradient accumulation is derived from it, micro_batch and the world size. Checkpoints are atomic
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ledgerlm.config import ConfigError, ranged
from ledgerlm.data.mixture import phases_from_config
from ledgerlm.data.shards import TokenIndex
from ledgerlm.device import autocast as bf16_autocast
from ledgerlm.device import peak_flops
from ledgerlm.model.hf import load_model, save_model
from ledgerlm.model.llama import build_model, model_config
from ledgerlm.model.loss import DEFAULT_CHUNK
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.train import checkpoint as ckpt_lib
from ledgerlm.train.averaging import EMA, SnapshotAverage, load_weights_into, snapshot_steps
from ledgerlm.train.data import LoaderSource, WindowSource, doc_ids_from_eot, from_tokenize_dir
from ledgerlm.train.dist import (
    DistInfo,
    all_reduce_mean,
    barrier,
    full_state_dicts,
    init_distributed,
    load_full_state_dicts,
    unwrap,
    wrap_model,
)
from ledgerlm.train.optim import build_optimizer, clip_grad, set_lr
from ledgerlm.train.schedule import decay_start, lr_mult


@dataclass
class Config:
    model: str | dict = "tiny"  # size name (tiny, small, smollm-135m, ...) or a dict of ModelConfig fields
    seq_len: int = ranged(256, ge=2)
    micro_batch: int = ranged(8, ge=1)
    batch_tokens: int = ranged(0, ge=0)  # global tokens per step; 0 = micro_batch * seq_len * world (no accumulation)
    steps: int = ranged(0, ge=0)  # length dial 1: optimizer steps
    tokens: int = ranged(0, ge=0)  # length dial 2: training tokens (steps = tokens // batch_tokens)
    epochs: float = ranged(0.0, ge=0)  # length dial 3: passes over the (possibly data_tokens-limited) training data
    data_tokens: int = ranged(0, ge=0)  # unique training tokens (0 = all); tokens > data_tokens trains several epochs
    phases: list[dict] = field(default_factory=list)  # [{name, tokens, mixture}] for the loader (empty = by size)
    align_to_docs: bool = False  # windows start at document starts (loader option)
    lr: float = ranged(3e-3, gt=0)
    min_lr_ratio: float = ranged(0.0, ge=0, le=1)
    warmup: int = ranged(0, ge=0)  # steps
    schedule: Literal["wsd", "cosine", "constant"] = "wsd"
    decay_frac: float = ranged(0.2, ge=0, le=1)  # wsd: fraction of the steps spent decaying
    decay_shape: Literal["linear", "1-sqrt"] = "linear"
    optimizer: Literal["adamw", "muon"] = "adamw"
    muon_lr: float = ranged(0.02, gt=0)
    weight_decay: float = ranged(0.1, ge=0)
    beta1: float = ranged(0.9, ge=0, lt=1)
    beta2: float = ranged(0.95, ge=0, lt=1)
    grad_clip: float = ranged(1.0, ge=0)
    dropout: float = ranged(0.0, ge=0, lt=1)
    ema: float = ranged(0.0, ge=0, lt=1)  # EMA decay over the decay phase (0 = off)
    average_last_k: int = ranged(0, ge=0)  # average k evenly spaced snapshots of the decay phase (0 = off)
    select_final: Literal["best", "raw", "ema", "avg"] = "best"  # which weights become model/ (best = lowest val)
    doc_mask: bool = False  # block-diagonal attention within packed documents (disables flash kernels)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False
    # output head + loss over chunks of this many tokens, never the whole [B, T, V] logits (0 = the plain path)
    loss_chunk_size: int = DEFAULT_CHUNK
    eval_every: int = ranged(100, ge=0)
    val_batches: int = ranged(8, ge=0)
    ckpt_every: int = ranged(500, ge=0)
    keep_ckpts: int = ranged(2, ge=1)
    log_every: int = ranged(10, ge=1)
    parallel: Literal["none", "ddp", "fsdp"] = "none"
    cpu_threads: int = ranged(0, ge=0)  # CPU intra-op threads (0 = torch's default); 1 is often fastest when busy
    init_from: str = ""  # optional HF Llama dir to continue from (e.g. a downloaded SmolLM-135M)
    extra: dict = field(default_factory=dict)  # free-form notes recorded in the ledger


class TrainingDiverged(RuntimeError):
    pass


# test hook: called as _STEP_HOOK(step, model) after each completed step (tests raise from it to simulate a kill)
_STEP_HOOK = None


def _err(key: str, msg: str):
    return ConfigError(f"pretrain.{key}", msg)


def resolve_lengths(cfg: Config, world: int, data_tokens_available: int, phase_tokens: int = 0) -> dict:
    """batch_tokens, grad accumulation and steps from the one length dial that is set."""
    micro = cfg.micro_batch * cfg.seq_len
    bt = cfg.batch_tokens or micro * world
    if bt % (micro * world):
        raise _err("batch_tokens", f"{bt} is not a multiple of micro_batch*seq_len*world = {micro}*{world}")
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


def config_sha(cfg: Config) -> str:
    d = dataclasses.asdict(cfg)
    for k in ("eval_every", "ckpt_every", "keep_ckpts", "log_every", "extra"):  # do not change the trajectory
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


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
    dev = info.device
    if cfg.parallel == "fsdp" and cfg.optimizer == "muon":
        raise _err("optimizer", "muon is not supported with parallel=fsdp (it needs whole matrices); use ddp")
    if cfg.seq_len != source.seq_len:
        raise _err("seq_len", f"{cfg.seq_len} but the data source cuts windows of {source.seq_len}")
    L = resolve_lengths(cfg, info.world, source.n_tokens, getattr(source, "phase_tokens", 0))
    if getattr(source, "phase_tokens", 0) and L["tokens"] > source.phase_tokens:
        raise _err("tokens", f"{L['tokens']:,} training tokens exceed the phases' {source.phase_tokens:,}")
    source.doc_ids = cfg.doc_mask
    steps, accum = L["steps"], L["grad_accum"]
    try:
        mcfg = model_config(cfg.model, vocab_size=vocab_size, dropout=cfg.dropout or None)
    except ValueError as e:
        raise _err("model", str(e)) from None
    if cfg.seq_len > mcfg.max_seq_len:
        mcfg = dataclasses.replace(mcfg, max_seq_len=cfg.seq_len)
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
    model.train()
    wrapped = wrap_model(model, cfg.parallel, info)
    opt = build_optimizer(model, cfg)
    # LEDGERLM_COMPILE_BACKEND=aot_eager traces forward and backward as inductor does but generates no code: the CPU
    # rehearsal (tests/test_rehearsal.py) checks that the model compiles in seconds, not minutes of C++ builds
    backend = os.environ.get("LEDGERLM_COMPILE_BACKEND", "inductor")
    fwd = torch.compile(wrapped, backend=backend) if cfg.compile else wrapped
    autocast = functools.partial(bf16_autocast, dev, cfg.precision)
    sched = dict(
        total=steps,
        warmup=cfg.warmup,
        schedule=cfg.schedule,
        decay_frac=cfg.decay_frac,
        decay_shape=cfg.decay_shape,
        min_lr_ratio=cfg.min_lr_ratio,
    )
    d0 = decay_start(steps, cfg.schedule, cfg.decay_frac, cfg.warmup)
    ema_start = d0 if d0 < steps else 0
    ema = EMA(model, cfg.ema) if cfg.ema else None
    avg = SnapshotAverage(model) if cfg.average_last_k else None
    avg_steps = set(snapshot_steps(d0 if d0 < steps else 0, steps, cfg.average_last_k))
    val = source.val_batches(cfg.val_batches, cfg.micro_batch) if cfg.val_batches else []
    if cfg.val_batches and cfg.eval_every and not val:  # else every validation loss would be NaN
        raise _err(
            "val_batches",
            f"the held-out split has less than one validation batch ({cfg.micro_batch} x {cfg.seq_len + 1} tokens); "
            "raise tokenize.val_fraction, or set pretrain.val_batches=0 to train without a validation loss",
        )
    eot = source.eot_id

    ckpt_dir = out_dir / "ckpt"
    metrics_path = out_dir / "metrics.jsonl"
    sha = config_sha(cfg)
    start, tokens_seen, train_seconds = 0, 0, 0.0
    latest = ckpt_lib.latest_checkpoint(ckpt_dir)
    if latest is not None:
        m_sd, o_sd, st, extra = ckpt_lib.load_checkpoint(latest)
        if st.get("config_sha256") != sha:
            raise RuntimeError(
                f"{latest}: checkpoint was written with a different pretrain config; "
                f"remove {ckpt_dir} to start over, or restore the original config"
            )
        load_full_state_dicts(wrapped, opt, m_sd, o_sd, info, cfg.parallel)
        source.load_state_dict(st["loader"])
        if ema:
            ema.load_state_tensors({k[4:]: v for k, v in extra.items() if k.startswith("ema.")})
        if avg:
            avg.load_state_tensors({k[4:]: v for k, v in extra.items() if k.startswith("avg.")}, st["avg_count"])
        start, tokens_seen, train_seconds = st["step"], st["tokens"], st.get("train_seconds", 0.0)
        log.info("resumed from %s (step %d/%d)", latest, start, steps)
        if info.is_main:
            ckpt_lib.trim_metrics(metrics_path, start)
    out_dir.mkdir(parents=True, exist_ok=True)
    fpt = mcfg.flops_per_token(cfg.seq_len)
    peak = peak_flops(dev)
    log.info(
        "pretrain: %s params, %d steps x %d tokens (accum %d, world %d), device %s",
        f"{mcfg.num_params():,}",
        steps,
        L["batch_tokens"],
        accum,
        info.world,
        dev,
    )

    def save(step: int) -> None:
        m_sd, o_sd = full_state_dicts(wrapped, opt, info, cfg.parallel)
        extra = {}
        if ema:
            extra.update({"ema." + k: v for k, v in ema.state_tensors().items()})
        if avg:
            extra.update({"avg." + k: v for k, v in avg.state_tensors().items()})
        if info.is_main:
            state = {
                "config_sha256": sha,
                "loader": source.state_dict(),
                "tokens": tokens_seen,
                "avg_count": avg.count if avg else 0,
                "train_seconds": train_seconds,
                "model_config": dataclasses.asdict(mcfg),
                "schedule": {**sched, "lr": cfg.lr, "step_lr_mult": lr_mult(step - 1, **sched)},
            }
            ckpt_lib.save_checkpoint(ckpt_dir, step, m_sd, o_sd, state, extra, keep_last=cfg.keep_ckpts)
        barrier(info)

    metrics_f = open(metrics_path, "a") if info.is_main else None  # noqa: SIM115 - closed in finally
    tok_s_hist, mfu_hist, last_val = [], [], None
    view = progress(steps, start=start) if progress and info.is_main else None
    try:
        for step in range(start, steps):
            t0 = time.perf_counter()
            mult = lr_mult(step, **sched)
            set_lr(opt, mult)
            loss_acc = torch.zeros((), device=dev)
            for micro in range(accum):
                x, y, doc = source.next_micro(info.rank, info.world, cfg.micro_batch)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                doc = doc.to(dev, non_blocking=True) if doc is not None else None
                no_sync = cfg.parallel == "ddp" and info.enabled and micro < accum - 1
                with wrapped.no_sync() if no_sync else contextlib.nullcontext():
                    with autocast():
                        loss = fwd(x, doc_ids=doc, targets=y, loss_chunk_size=cfg.loss_chunk_size)
                    (loss / accum).backward()
                loss_acc += loss.detach().float() / accum
            loss_acc = all_reduce_mean(loss_acc, info)
            gnorm = clip_grad(model, cfg.grad_clip)
            loss_v = loss_acc.item()
            if not (math.isfinite(loss_v) and math.isfinite(gnorm)):
                opt.zero_grad(set_to_none=True)
                last = ckpt_lib.latest_checkpoint(ckpt_dir)
                raise TrainingDiverged(
                    f"non-finite {'loss' if not math.isfinite(loss_v) else 'gradient norm'} at step {step} "
                    f"(loss={loss_v}, grad_norm={gnorm}); stopped before the optimizer step. "
                    f"Last good checkpoint: {last or 'none'}. Lower lr, add warmup or check the data."
                )
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema:
                if step == ema_start:
                    ema.reset(model)
                elif step > ema_start:
                    ema.update(model)
            if avg and step in avg_steps:
                avg.add(model)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            train_seconds += dt
            tokens_seen += L["batch_tokens"]
            tok_s = L["batch_tokens"] / dt
            mfu = fpt * tok_s / info.world / peak if peak else None
            if step > start:  # the first step includes compilation/warm-up
                tok_s_hist.append(tok_s)
                if mfu is not None:
                    mfu_hist.append(mfu)
            row = {
                "step": step + 1,
                "tokens": tokens_seen,
                "loss": round(loss_v, 6),
                "lr": mult * cfg.lr,
                "grad_norm": round(gnorm, 6),
                "tok_s": round(tok_s, 1),
                "mfu": round(mfu, 4) if mfu is not None else None,
                "mem_gb": round(_memory_gb(dev), 3),
            }
            done = step + 1
            if val and cfg.eval_every and (done % cfg.eval_every == 0 or done == steps):
                last_val = evaluate(model, val, dev, autocast, cfg.doc_mask, eot, info)
                row["val_loss"] = round(last_val, 6)
            if metrics_f:
                metrics_f.write(json.dumps(row) + "\n")
                metrics_f.flush()
            if view:
                view.log(row)
            if done % max(1, cfg.log_every) == 0 or done == steps:
                log.info(
                    "step %d/%d loss %.4f%s lr %.2e gnorm %.3f tok/s %.0f%s",
                    done,
                    steps,
                    loss_v,
                    f" val {row['val_loss']:.4f}" if "val_loss" in row else "",
                    row["lr"],
                    gnorm,
                    tok_s,
                    f" mfu {mfu:.1%}" if mfu is not None else "",
                )
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == steps:
                save(done)
            if _STEP_HOOK is not None:
                _STEP_HOOK(done, model)
    finally:
        if metrics_f:
            metrics_f.close()
        if view:
            view.close()

    # final weights: raw, EMA or snapshot average, chosen on validation loss unless fixed by select_final.
    # Candidates are compared on a plain (unwrapped / FSDP-gathered) copy of the model.
    if cfg.parallel == "fsdp" and info.enabled:
        m_sd, _ = full_state_dicts(wrapped, opt, info, cfg.parallel)
        final = build_model(mcfg, device=dev)
        final.load_state_dict(m_sd, strict=False)
    else:
        final = unwrap(model)
    candidates = {"raw": None}
    if ema:
        candidates["ema"] = ema.state_tensors()
    if avg and avg.count:
        candidates["avg"] = {k: v / avg.count for k, v in avg.state_tensors().items()}
    if cfg.select_final != "best" and cfg.select_final not in candidates:
        raise _err("select_final", f"{cfg.select_final!r} is not available (enabled: {sorted(candidates)})")
    raw = {n: p.detach().clone() for n, p in final.named_parameters()}
    val_by = {}
    for name, w in candidates.items():
        load_weights_into(final, raw if w is None else w)
        val_by[name] = evaluate(final, val, dev, autocast, cfg.doc_mask, eot, info) if val else float("nan")
    if cfg.select_final == "best":
        chosen = min(val_by, key=lambda k: val_by[k] if math.isfinite(val_by[k]) else float("inf")) if val else "raw"
    else:
        chosen = cfg.select_final
    load_weights_into(final, raw if candidates[chosen] is None else candidates[chosen])
    model_dir = out_dir / "model"
    if info.is_main:
        _save_hf(final, model_dir, tokenizer)
    barrier(info)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "model_dir": model_dir,
        "metrics_path": metrics_path,
        "steps": steps,
        "tokens": tokens_seen,
        "batch_tokens": L["batch_tokens"],
        "grad_accum": accum,
        "world": info.world,
        "params": mcfg.num_params(),
        "model_config": dataclasses.asdict(mcfg),
        "final": chosen,
        "val_loss": val_by[chosen],
        "val_loss_by_weights": val_by,
        "last_val_loss": last_val,
        "tok_s_mean": mean(tok_s_hist),
        "mfu_mean": mean(mfu_hist),
        "train_seconds": train_seconds,
        "resumed_from": start,
        "data_epochs": tokens_seen / source.n_tokens,
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
    return lines


def add_cli_args(p) -> None:
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--model", help="model size name")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")


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
        tok_dir, cfg.seq_len, cfg.micro_batch, seed, info.rank, info.world, phases, cfg.align_to_docs, cfg.doc_mask
    )


def run(cfg: Config, ctx):
    tok_dir = ctx.stage_dir("tokenize")
    vocab = TokenIndex(tok_dir).vocab_size
    info = init_distributed(ctx.device)
    source = make_source(cfg, tok_dir, ctx.seed, info)
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
        f"{loss}validation loss {res['val_loss']:.3f} ({res['final']} weights)",
    ]
    return StageResult(
        outputs={"model": res["model_dir"], "metrics": res["metrics_path"]},
        counters={"steps": res["steps"], "tokens": res["tokens"], "params": res["params"]},
        metrics={
            "val_loss": res["val_loss"],
            "val_loss_by_weights": res["val_loss_by_weights"],
            "tok_s": res["tok_s_mean"],
            "mfu": res["mfu_mean"],
            "train_seconds": res["train_seconds"],
        },
        extra={
            "final_weights": res["final"],
            "batch_tokens": res["batch_tokens"],
            "grad_accum": res["grad_accum"],
            "world": res["world"],
            "data_epochs": res["data_epochs"],
            "unique_train_tokens": source.n_tokens,
            "data_source": type(source).__name__,
            "loader": source.ledger_info() if hasattr(source, "ledger_info") else source.state_dict(),
            "resumed_from_step": res["resumed_from"],
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
    add_cli_args=add_cli_args,
    produces="model",
    headline=("final_val_loss",),
)
