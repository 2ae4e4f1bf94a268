"""The `pretrain` stage: train the Llama model on the tokenize stage's shards, one GPU or `torchrun` DDP/FSDP2.

One dial sets the length (steps, tokens, or epochs over the data); the global token batch is fixed by
`batch_tokens` and gradient accumulation is derived from it, micro_batch_size and the world size. Checkpoints are atomic
and a re-run resumes from the newest one with bitwise-identical results on CPU (weights, optimizer, schedule step,
loader position, RNG, EMA and averaging state are all saved). A NaN/inf loss or gradient stops the run before the
optimizer step, so the newest checkpoint stays the last good state.

Outputs: RUN/pretrain/model/ (HF Llama dir + tokenizer), RUN/pretrain/metrics.jsonl, RUN/pretrain/ckpt/.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ledgerlm.components.distributed import (
    DistInfo,
    init_distributed,
)
from ledgerlm.components.schedule import decay_start
from ledgerlm.data.mixture import phases_from_config
from ledgerlm.data.token_index import TokenIndex
from ledgerlm.model.llama import model_config
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.train import pretrain_plan, supply
from ledgerlm.train.data import LoaderSource, from_tokenize_dir
from ledgerlm.train.loop import train
from ledgerlm.train.pretrain_checks import checks
from ledgerlm.train.pretrain_config import Config, config_error, resolve_lengths
from ledgerlm.train.pretrain_report import SECTION as REPORT

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
            raise config_error("phases", str(e)) from None
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
        raise config_error(
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
            raise config_error("data_tokens", "cannot be combined with phases (limit the data in curate instead)")
        return from_tokenize_dir(tok_dir, cfg.seq_len, seed, cfg.data_tokens)
    try:
        phases = phases_from_config(cfg.phases)
    except ValueError as e:
        raise config_error("phases", str(e)) from None
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
    plan=partial(pretrain_plan.plan, describe=plan, lengths=resolve_lengths),
    produces="model",
    headline=("final_val_loss",),
    report=REPORT,
    checks=checks,
)
