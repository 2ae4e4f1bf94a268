"""Cost estimates for `ledgerlm plan`: tokens, FLOPs, GPU memory and hours per training stage on a named GPU.

FLOPs per token are 6N + attention (the model's `flops_per_token`); hours = FLOPs / (peak x MFU). The MFU is the
one given with --mfu, else the one `bench/gpu_check.sh` recorded on that GPU (BENCHMARKS.md, `gpu-check-mfu`), else
an assumed default per GPU, said to be assumed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ledgerlm.config import ConfigError
from ledgerlm.data.mixture import parse_tokens
from ledgerlm.device import GPUS, gpu_for
from ledgerlm.model.llama import model_config
from ledgerlm.train.pretrain import resolve_lengths

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
GPU_CHECK_SECTION = "gpu-check-mfu"  # written by bench/gpu_check.py on a GPU


def recorded_mfu(g, path: Path = BENCHMARKS) -> float | None:
    """The MFU (full-attention convention, the one the hours below divide by) that `bench.gpu_check` recorded on this
    GPU for the recipe's path (chunked loss, micro-batch 16), or None when none was recorded."""
    if not path.exists():
        return None
    m = re.search(
        rf"<!-- bench:{GPU_CHECK_SECTION}:start -->.*?<!-- numbers: (\{{.*?\}}) -->.*?<!-- bench:{GPU_CHECK_SECTION}:end -->",
        path.read_text(),
        re.S,
    )
    if not m:
        return None
    nums = json.loads(m.group(1))
    dev, value = nums.get("device"), nums.get("mfu_full_chunked_b16")
    if isinstance(dev, list):
        dev = dev[-1] if dev else None
    if isinstance(value, list):
        value = value[-1] if value else None
    if not dev or not isinstance(value, int | float) or gpu_for(str(dev)) is not g:
        return None
    return float(value)


def train_memory_gib(
    n_params: int, n_layer: int, d_model: int, vocab: int, seq_len: int, micro_batch_size: int, loss_chunk: int = 0
) -> float:
    """AdamW with fp32 master weights (16 B/param) + bf16 activations (~40·s·b·d bytes per layer with flash
    attention and SwiGLU) + logits: with the plain loss all of them (bf16, their fp32 upcast and fp32 gradient,
    calibrated to be conservative against the H100 runs in BENCHMARKS.md: 33 GiB measured at micro_batch_size 16 x 2048,
    32 x 2048 did not fit); with the chunked loss (`loss_chunk` > 0, ledgerlm.model.loss) one chunk's bf16 logits
    and their fp32 copy, which the backward pass turns into the gradient in place."""
    states = 16 * n_params
    tokens = micro_batch_size * seq_len
    acts = 40 * tokens * d_model * n_layer
    logits = min(loss_chunk, tokens) * vocab * (2 + 4) if loss_chunk > 0 else tokens * vocab * (2 + 4 + 4)
    return (states + acts + logits) / 2**30


def largest_micro_batch(memory_gib: float, *args, loss_chunk: int = 0) -> int:
    """The largest micro-batch whose `train_memory_gib(..., micro_batch_size, loss_chunk)` stays under 90% of memory_gib
    (args: n_params, n_layer, d_model, vocab, seq_len); 0 if not even 1 fits."""
    b = 0
    while b < 4096 and train_memory_gib(*args, b + 1, loss_chunk) < 0.9 * memory_gib:
        b += 1
    return b


def estimate_lines(recipe, gpu: str = "h100", mfu: float | None = None) -> list[str]:
    key = gpu.lower().replace("-", "").replace(" ", "")
    if key not in GPUS:
        return [f"estimates: unknown GPU {gpu!r} (known: {', '.join(GPUS)})"]
    g = GPUS[key]
    rec = recorded_mfu(g)
    if mfu is not None:
        used_mfu, source = mfu, "given"
    elif rec is not None:
        used_mfu, source = rec, "measured by bench.gpu_check, BENCHMARKS.md"
    else:
        used_mfu, source = g.default_mfu, "assumed, not measured: pass --mfu, or run bench/gpu_check.sh"
    lines = [f"estimates on {g.name} at MFU {used_mfu:.1%} ({source}):"]
    total_h = 0.0
    if "pretrain" in recipe.stages:
        cfg = recipe.section("pretrain")
        m = model_config(cfg.model)
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
            mem = train_memory_gib(*shape, cfg.micro_batch_size, chunk)
            fit = (
                "fits"
                if mem < g.memory_gib * 0.9
                else "DOES NOT FIT: lower micro_batch_size (grad accumulation keeps the batch)"
            )
            lines += [
                f"  pretrain: {m.num_params():,} params, {L['tokens']:,} tokens in {L['steps']:,} steps, "
                f"{flops:.3g} FLOPs -> {hours:.1f} h",
                f"  pretrain memory: ~{mem:.1f} GiB of {g.memory_gib:.0f} GiB at micro_batch_size={cfg.micro_batch_size}, "
                f"seq_len={cfg.seq_len} ({fit})",
                f"  largest micro_batch_size that fits {g.memory_gib:.0f} GiB at seq_len={cfg.seq_len}: "
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


# ----------------------------------------------------------------------------- the data side (curate, tokenize)

SCALE_COSTS = Path(__file__).resolve().parent / "data" / "scale_costs.json"  # written by `python -m bench.scale`
DOC_BYTES = 4000  # mean document size of the scale benchmark's web-like corpus (FineWeb-Edu is ~4.5 KB)
BYTES_PER_TOKEN = 4.2  # English web text, 49k-vocab BPE
WORK_COPIES = 2  # the work directory holds the text twice at its peak (scan's copy and apply's sorted runs)


def _corpus_docs(cfg) -> tuple[int, int, list[str]]:
    """(documents, bytes, notes) the curate stage will read: `limit` where set, else local file sizes / DOC_BYTES."""
    docs = size = 0
    notes = []
    for s in cfg.sources:
        if s.limit is not None:
            docs += s.limit
            size += s.limit * DOC_BYTES
        elif s.path and Path(s.path).exists():
            p = Path(s.path)
            b = sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
            docs += max(b // DOC_BYTES, 1)
            size += b
        else:
            notes.append(s.name)
    return docs, size, notes


def data_lines(recipe, cpus: int = 16, ram_gib: float = 128.0) -> list[str]:
    """Curate and tokenize cost on a host with `cpus` cores and `ram_gib` of memory, from the fitted costs of the
    scale benchmark. Raises ConfigError naming the setting to change when the recipe cannot fit."""
    if "curate" not in recipe.stages and "tokenize" not in recipe.stages:
        return []
    if not SCALE_COSTS.exists():
        return ["data: no measured costs (run `python -m bench.scale` to write ledgerlm/data/scale_costs.json)"]
    c = json.loads(SCALE_COSTS.read_text())
    lines = [f"data stages on {cpus} CPU cores, {ram_gib:.0f} GiB RAM (costs fitted by bench.scale, BENCHMARKS.md):"]
    docs = 0
    size = 0
    if "curate" in recipe.stages:
        cur = recipe.section("curate")
        docs, size, unknown = _corpus_docs(cur)
        if unknown:
            lines.append(f"  curate: size of {', '.join(unknown)} unknown (no limit, not local): not counted")
        workers = min(cur.executor.workers, cur.executor.datatrove_tasks)
        cpu_h = docs * c["curate_cpu_s_per_doc"] / 3600
        per_proc = (c["curate_rss_base_bytes"] + c["curate_rss_bytes_per_doc"] * docs) / 2**30
        lines += [
            f"  curate: {docs:,} documents (~{size / 1e9:.0f} GB of text): {cpu_h:.1f} CPU-hours, "
            f"~{cpu_h / min(workers, cpus):.1f} h on {min(workers, cpus)} workers",
            f"  curate memory: <= {per_proc:.1f} GiB per worker process, {per_proc * workers:.1f} GiB for "
            f"{workers} workers; disk: outputs ~{size / 1e9:.0f} GB + work directory ~"
            f"{size * WORK_COPIES / 1e9:.0f} GB while it runs",
        ]
        if per_proc > ram_gib:
            raise ConfigError(
                "curate.sources[*].limit",
                f"one curate process needs ~{per_proc:.0f} GiB for {docs:,} documents, the host has {ram_gib:.0f} GiB",
            )
        if per_proc * workers > ram_gib:
            raise ConfigError(
                "curate.executor.workers",
                f"{workers} workers x {per_proc:.1f} GiB = {per_proc * workers:.0f} GiB > {ram_gib:.0f} GiB RAM; "
                f"use at most {max(int(ram_gib // per_proc), 1)}",
            )
    if "tokenize" in recipe.stages and "tokenize_cpu_s_per_doc" in c and docs:
        tok = recipe.section("tokenize")
        workers = getattr(tok, "workers", None) or cpus
        cpu_h = docs * c["tokenize_cpu_s_per_doc"] / 3600
        tokens = size / BYTES_PER_TOKEN
        lines.append(
            f"  tokenize: {cpu_h:.1f} CPU-hours, ~{cpu_h / min(workers, cpus):.1f} h on {min(workers, cpus)} workers; "
            f"~{tokens / 1e9:.1f}B tokens -> ~{tokens * 2 / 1e9:.0f} GB of uint16 shards; "
            f"peak {c['tokenize_rss_bytes'] / 2**30:.1f} GiB per worker measured"
        )
    return lines
