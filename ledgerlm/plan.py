"""Cost estimates for `ledgerlm plan`: tokens, FLOPs, GPU memory and hours per training stage on a named GPU.

FLOPs per token are 6N + attention (the model's `flops_per_token`); hours = FLOPs / (peak x MFU). The MFU is the
one given with --mfu, else a stated default per GPU (the numbers we measured are in BENCHMARKS.md).
"""

from __future__ import annotations

from ledgerlm.device import GPUS


def train_memory_gib(n_params: int, n_layer: int, d_model: int, vocab: int, seq_len: int, micro_batch: int) -> float:
    """AdamW with fp32 master weights (16 B/param) + bf16 activations (~40·s·b·d bytes per layer with flash
    attention and SwiGLU) + logits (bf16, their fp32 upcast and fp32 gradient). Calibrated to be conservative
    against the H100 runs in BENCHMARKS.md (33 GiB measured at micro_batch 16 x 2048; 32 x 2048 did not fit)."""
    states = 16 * n_params
    acts = 40 * seq_len * micro_batch * d_model * n_layer
    logits = micro_batch * seq_len * vocab * (2 + 4 + 4)
    return (states + acts + logits) / 2**30


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
            mem = train_memory_gib(m.num_params(), m.n_layer, m.d_model, m.vocab_size, cfg.seq_len, cfg.micro_batch)
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
            ]
    lines.append(f"  total training compute: ~{total_h:.1f} GPU-hours (post-training and eval are small next to it)")
    return lines
