"""Cost estimates for `ledgerlm plan`: tokens, FLOPs, GPU memory and hours per training stage on a named GPU.

FLOPs per token are 6N + attention (the model's `flops_per_token`); hours = FLOPs / (peak x MFU). The MFU is the
one given with --mfu, else a stated default per GPU (the numbers we measured are in BENCHMARKS.md).
"""

from __future__ import annotations

from ledgerlm.device import GPUS


def train_memory_gib(
    n_params: int, n_layer: int, d_model: int, vocab: int, seq_len: int, micro_batch: int, loss_chunk: int = 0
) -> float:
    """AdamW with fp32 master weights (16 B/param) + bf16 activations (~40·s·b·d bytes per layer with flash
    attention and SwiGLU) + logits: with the plain loss all of them (bf16, their fp32 upcast and fp32 gradient,
    calibrated to be conservative against the H100 runs in BENCHMARKS.md: 33 GiB measured at micro_batch 16 x 2048,
    32 x 2048 did not fit); with the chunked loss (`loss_chunk` > 0, ledgerlm.model.loss) one chunk's bf16 logits
    and their fp32 copy, which the backward pass turns into the gradient in place."""
    states = 16 * n_params
    tokens = micro_batch * seq_len
    acts = 40 * tokens * d_model * n_layer
    logits = min(loss_chunk, tokens) * vocab * (2 + 4) if loss_chunk > 0 else tokens * vocab * (2 + 4 + 4)
    return (states + acts + logits) / 2**30


def largest_micro_batch(memory_gib: float, *args, loss_chunk: int = 0) -> int:
    """The largest micro-batch whose `train_memory_gib(..., micro_batch, loss_chunk)` stays under 90% of memory_gib
    (args: n_params, n_layer, d_model, vocab, seq_len); 0 if not even 1 fits."""
    b = 0
    while b < 4096 and train_memory_gib(*args, b + 1, loss_chunk) < 0.9 * memory_gib:
        b += 1
    return b


def estimate_lines(recipe, gpu: str = "h100", mfu: float | None = None) -> list[str]:
    from ledgerlm.model.llama import model_config

    key = gpu.lower().replace("-", "").replace(" ", "")
    if key not in GPUS:
        return [f"estimates: unknown GPU {gpu!r} (known: {', '.join(GPUS)})"]
    g = GPUS[key]
    used_mfu = mfu if mfu is not None else g.default_mfu
    source = "given" if mfu is not None else ("measured, BENCHMARKS.md" if g.measured else "stated default")
    lines = [f"estimates on {g.name} at MFU {used_mfu:.1%} ({source}):"]
    total_h = 0.0
    if "pretrain" in recipe.stages:
        from ledgerlm.train.pretrain import resolve_lengths

        cfg = recipe.section("pretrain")
        m = model_config(cfg.model)
        from ledgerlm.data.mixture import parse_tokens

        phase_tokens = sum(parse_tokens(p.get("tokens", 0)) for p in cfg.phases)
        try:
            L = resolve_lengths(cfg, 1, cfg.data_tokens or phase_tokens or 1, phase_tokens)
        except Exception as e:  # noqa: BLE001 - a plan reports what it cannot estimate
            lines.append(f"  pretrain: cannot estimate length ({e})")
        else:
            flops = m.flops_per_token(cfg.seq_len) * L["tokens"]
            hours = flops / (g.peak_bf16 * used_mfu) / 3600
            total_h += hours
            shape = (m.num_params(), m.n_layer, m.d_model, m.vocab_size, cfg.seq_len)
            chunk = cfg.loss_chunk_size
            mem = train_memory_gib(*shape, cfg.micro_batch, chunk)
            fit = (
                "fits"
                if mem < g.memory_gib * 0.9
                else "DOES NOT FIT: lower micro_batch (grad accumulation keeps the batch)"
            )
            lines += [
                f"  pretrain: {m.num_params():,} params, {L['tokens']:,} tokens in {L['steps']:,} steps, "
                f"{flops:.3g} FLOPs -> {hours:.1f} h",
                f"  pretrain memory: ~{mem:.1f} GiB of {g.memory_gib:.0f} GiB at micro_batch={cfg.micro_batch}, "
                f"seq_len={cfg.seq_len} ({fit})",
                f"  largest micro_batch that fits {g.memory_gib:.0f} GiB at seq_len={cfg.seq_len}: "
                f"{largest_micro_batch(g.memory_gib, *shape, loss_chunk=chunk)}"
                + (
                    f" with the chunked loss (loss_chunk_size={chunk}); "
                    f"{largest_micro_batch(g.memory_gib, *shape)} with the plain loss (full logits)"
                    if chunk > 0
                    else " with the plain loss (loss_chunk_size=0)"
                ),
            ]
    lines.append(f"  total training compute: ~{total_h:.1f} GPU-hours (post-training and eval are small next to it)")
    return lines
