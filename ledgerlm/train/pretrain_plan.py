"""The pretrain stage's `ledgerlm plan` estimate: FLOPs and hours on the target GPU, memory at its micro-batch and
the largest micro-batch that fits. Declared in the stage's SPEC (`plan=partial(pretrain_plan.plan, ...)`)."""

from __future__ import annotations

from collections.abc import Callable

from ledgerlm.data.mixture import parse_tokens
from ledgerlm.estimate import Estimate, largest_micro_batch, train_memory_gib
from ledgerlm.model.llama import model_config


def plan(cfg, ctx, describe: Callable, lengths: Callable) -> Estimate:
    """What pretraining would do (`describe(cfg, ctx)`: pretrain.plan), then its cost on `ctx.target`; `lengths` is
    pretrain.resolve_lengths (passed in: this module is imported by pretrain.py)."""
    out = Estimate(describe(cfg, ctx))
    t = ctx.target
    if t is None:
        return out
    m = model_config(cfg.model)
    phase_tokens = sum(parse_tokens(p.get("tokens", 0)) for p in cfg.phases)
    try:
        L = lengths(cfg, 1, cfg.data_tokens or phase_tokens or 1, phase_tokens)
    except Exception as e:  # noqa: BLE001 - a plan reports what it cannot estimate
        out.lines.append(f"cost on {t.gpu.name}: cannot estimate length ({e})")
        return out
    flops = m.flops_per_token(cfg.seq_len) * L["tokens"]
    out.gpu_hours = flops / (t.gpu.peak_bf16 * t.mfu) / 3600
    shape = (m.num_params(), m.n_layer, m.d_model, m.vocab_size, cfg.seq_len)
    chunk = cfg.loss_chunk_size
    mem = train_memory_gib(*shape, cfg.micro_batch_size, chunk)
    g = t.gpu
    fit = "fits" if mem < g.memory_gib * 0.9 else "DOES NOT FIT: lower micro_batch_size (grad accumulation keeps the batch)"
    plain = f"{largest_micro_batch(g.memory_gib, *shape)} with the plain loss (full logits)"
    out.lines += [
        f"cost on {g.name}: {m.num_params():,} params, {L['tokens']:,} tokens in {L['steps']:,} steps, "
        f"{flops:.3g} FLOPs -> {out.gpu_hours:.1f} h",
        f"memory: ~{mem:.1f} GiB of {g.memory_gib:.0f} GiB at micro_batch_size={cfg.micro_batch_size}, "
        f"seq_len={cfg.seq_len} ({fit})",
        f"largest micro_batch_size that fits {g.memory_gib:.0f} GiB at seq_len={cfg.seq_len}: "
        f"{largest_micro_batch(g.memory_gib, *shape, loss_chunk=chunk)}"
        + (
            f" with the chunked loss (loss_chunk_size={chunk}); {plain}"
            if chunk > 0
            else " with the plain loss (loss_chunk_size=0)"
        ),
    ]
    return out
