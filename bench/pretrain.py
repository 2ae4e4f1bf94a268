"""Pretraining benchmarks. Each subcommand prints its numbers and records a section of BENCHMARKS.md.

  python -m bench.pretrain cpu       # CPU, small size: our train step vs transformers.LlamaForCausalLM, same shapes
  python -m bench.pretrain gpu       # GPU: smollm-135m, seq 2048, bf16 + compile: tokens/s and MFU vs HF + SDPA
  python -m bench.pretrain data      # CPU: data-efficient recipe vs plain recipe on real text, several seeds
  python -m bench.pretrain memory    # CPU: peak memory of the output head + loss, plain vs chunked (measured)
  python -m bench.pretrain gpu-mfu   # GPU: largest micro-batch that fits and its MFU, plain vs chunked loss

Both sides of a throughput comparison use the same optimizer (our fused AdamW), the same data and the same step
(forward, loss, backward, clip, optimizer step); timings are interleaved rounds and we report medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench._record import record
from ledgerlm.components.optimizer import build_optimizer
from ledgerlm.io import iter_jsonl
from ledgerlm.model.llama import build_model, model_config
from ledgerlm.model.loss import DEFAULT_CHUNK

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def hf_model(cfg, device, attn="sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    hc = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        max_position_embeddings=cfg.max_seq_len,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=True,
    )
    hc._attn_implementation = attn
    torch.manual_seed(0)
    return LlamaForCausalLM(hc).to(device)


def make_step(kind, model, opt, x, y, autocast, compiled, loss_chunk_size: int = DEFAULT_CHUNK):
    fwd = torch.compile(model) if compiled else model

    def step():
        with autocast():
            if kind == "ours":
                loss = fwd(x, targets=y, loss_chunk_size=loss_chunk_size)
            else:
                loss = fwd(input_ids=x, labels=y).loss  # HF shifts labels internally; same FLOPs
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_variants(variants, rounds, steps_per_round, device):
    """Interleaved timing: every round runs each variant for steps_per_round steps. -> {name: [sec/step,...]}

    On CPU the clock is this process's CPU time: with one thread it counts the step's own work and not the time
    other jobs on a shared machine take the core away (wall time there varied 2-5x between identical steps)."""
    if device == "cuda":

        def clock():
            torch.cuda.synchronize()
            return time.perf_counter()
    else:
        clock = time.process_time
    times = {n: [] for n in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            t = clock()
            for _ in range(steps_per_round):
                step()
            times[name].append((clock() - t) / steps_per_round)
    return times


def gemm_profile(step, cfg, tokens: int, steps: int = 3) -> tuple[float, float]:
    """Profiled steps: (share of CPU time in matrix multiplies, their GFLOP/s). FLOPs: forward + backward of every
    linear layer = 6 x tokens x (matrix parameters, output head included) per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev)
    mm = sum(e.self_cpu_time_total for e in ev if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    matrix_params = cfg.num_params() - cfg.d_model * (2 * cfg.n_layer + 1)  # minus the RMSNorm weights
    return mm / total, 6 * tokens * matrix_params * steps / (mm * 1e-6) / 1e9


def peak_gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """This core's fp32 GEMM rate on a large square matmul: what any implementation's matmuls can reach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.process_time()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.process_time() - t) / 1e9


def build_variants(cfg, device, B, T, compile_modes, autocast):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (B, T), generator=g).to(device)
    y = torch.randint(0, cfg.vocab_size, (B, T), generator=g).to(device)
    variants, warm = {}, {}
    for compiled in compile_modes:
        torch.manual_seed(0)
        ours = build_model(cfg, device=device)
        hf = hf_model(cfg, device)
        for kind, m in (("ours", ours), ("hf", hf)):
            opt = build_optimizer(m, {"lr": 1e-4, "weight_decay": 0.1})
            name = f"{kind}{'+compile' if compiled else ''}"
            step = make_step(kind, m, opt, x, y, autocast, compiled)
            t = time.perf_counter()
            try:
                for _ in range(3):  # warm-up / compilation
                    step()
                if device == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - report a variant that cannot run instead of losing the others
                print(f"variant {name} failed: {type(e).__name__}: {e}", flush=True)
                continue
            warm[name] = time.perf_counter() - t
            variants[name] = step
    return variants, warm


def cmd_cpu(args):
    torch.set_num_threads(args.threads)  # 1 thread: OpenMP spin-waits make multi-thread timings erratic on a busy CPU
    torch.manual_seed(0)
    cfg = model_config(args.size)
    B, T = args.batch, args.seq
    modes = [False, True] if args.compile else [False]
    variants, warm = build_variants(cfg, "cpu", B, T, modes, lambda: torch.autocast("cpu", enabled=False))
    times = time_variants(variants, args.rounds, args.steps, "cpu")
    med = {n: statistics.median(v) for n, v in times.items()}
    rows = ["| variant | median CPU s/step | tokens/s | min..max s/step | vs HF eager |", "|---|---|---|---|---|"]
    for n, v in times.items():
        rows.append(
            f"| {n} | {med[n]:.3f} | {B * T / med[n]:,.0f} | {min(v):.3f}..{max(v):.3f} | {med['hf'] / med[n]:.2f}x |"
        )
    ratio_eager = [h / o for h, o in zip(times["hf"], times["ours"])]
    prof = {n: gemm_profile(variants[n], cfg, B * T) for n in ("ours", "hf")}
    peak = peak_gemm_gflops()
    body = (
        f"Model `{args.size}` ({cfg.num_params():,} params), batch {B} x seq {T}, fp32, fused AdamW on both sides; "
        f"{args.rounds} interleaved rounds of {args.steps} steps, `torch.get_num_threads()`={torch.get_num_threads()}; "
        "seconds are this process's CPU time.\n\n"
        + "\n".join(rows)
        + f"\n\nPer-round speed-up of ours over HF (eager vs eager): median {statistics.median(ratio_eager):.2f}x, "
        f"range {min(ratio_eager):.2f}..{max(ratio_eager):.2f}x."
    )
    if args.compile:
        rc = [h / o for h, o in zip(times["hf"], times["ours+compile"])]
        rcc = [h / o for h, o in zip(times["hf+compile"], times["ours+compile"])]
        body += (
            f" Ours+compile over HF eager: median {statistics.median(rc):.2f}x; "
            f"ours+compile over HF+compile: median {statistics.median(rcc):.2f}x. "
            f"Compile + warm-up seconds: {', '.join(f'{k} {v:.0f}' for k, v in warm.items())}."
        )
    body += (
        "\n\nWhere the time goes (3 profiled eager steps each): matrix multiplies take "
        + ", ".join(f"{prof[n][0]:.0%} of {n}'s step at {prof[n][1]:.0f} GFLOP/s" for n in prof)
        + f"; a 2048x2048 fp32 matmul runs at {peak:.0f} GFLOP/s on this core. Both sides run the same GEMMs at "
        "about the core's fp32 rate, so at these shapes and precision no implementation can beat the other by more "
        "than 1 / (its matmul share), and only by shrinking what lies outside the matmuls."
    )
    print(body)
    if args.record:
        record("pretrain-cpu-throughput", body, "python -m bench.pretrain cpu " + " ".join(sys.argv[2:]))


def cmd_gpu(args):
    from ledgerlm.device import peak_flops

    if not torch.cuda.is_available():
        body = "No GPU was available in this session; the GPU row is unmeasured."
        print(body)
        if args.record:
            record("pretrain-gpu-throughput", body, "python -m bench.pretrain gpu")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    cfg = model_config("smollm-135m")
    B, T = args.batch, args.seq
    ac = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    variants, warm = build_variants(cfg, "cuda", B, T, [True], ac)
    times = time_variants(variants, args.rounds, args.steps, "cuda")
    peak = peak_flops("cuda")
    fpt = cfg.flops_per_token(T)
    rows = ["| variant | median s/step | tokens/s | MFU |", "|---|---|---|---|"]
    out = {}
    for n, v in times.items():
        m = statistics.median(v)
        tps = B * T / m
        mfu = fpt * tps / peak if peak else float("nan")
        out[n] = {"s_per_step": m, "tok_s": tps, "mfu": mfu}
        rows.append(f"| {n} | {m:.4f} | {tps:,.0f} | {mfu:.1%} |")
    body = (
        f"`smollm-135m` ({cfg.num_params():,} params), micro-batch {B} x seq {T} = {B * T:,} tokens/step, bf16 "
        f"autocast, torch.compile, fused AdamW, SDPA (flash) attention; {torch.cuda.get_device_name()}, torch "
        f"{torch.__version__}. MFU = (6N + 12·L·d·T) FLOPs/token x tokens/s / {peak / 1e12:.0f} TFLOP/s "
        f"(dense bf16 peak); {args.rounds} interleaved rounds of {args.steps} steps.\n\n"
        + "\n".join(rows)
        + (
            f"\n\nOurs vs HF: {out['hf+compile']['s_per_step'] / out['ours+compile']['s_per_step']:.2f}x."
            if "hf+compile" in out and "ours+compile" in out
            else "\n\n(a variant failed; see the log)"
        )
        + f" Compile + warm-up seconds: {', '.join(f'{k} {v:.0f}' for k, v in warm.items())}."
    )
    if args.loop_steps:
        body += "\n\n" + _gpu_loop(args, cfg, B, T)
    print(body)
    print(json.dumps(out))
    if args.record:
        record("pretrain-gpu-throughput", body, "python -m bench.pretrain gpu " + " ".join(sys.argv[2:]))


def _gpu_loop(args, cfg, B, T) -> str:
    """The real training loop (ledgerlm.train.pretrain.train) on random tokens: its logged tokens/s and MFU."""
    import logging
    import tempfile

    from ledgerlm.train.data import WindowSource
    from ledgerlm.train.pretrain import Config, train

    logging.basicConfig(level=logging.INFO)
    n = B * T * (args.loop_steps + 2) + 1
    arr = np.random.default_rng(0).integers(0, cfg.vocab_size, n).astype(np.uint16)
    val = arr[: B * T * 2 + 1]
    src = WindowSource([arr], T, seed=0, val_arrays=[val], eot_id=None)
    c = Config(
        model="smollm-135m",
        seq_len=T,
        micro_batch_size=B,
        steps=args.loop_steps,
        compile=True,
        eval_every=0,
        val_batches=0,
        ckpt_every=0,
        log_every=5,
        lr=1e-3,
    )
    with tempfile.TemporaryDirectory() as d:
        train(c, src, d, vocab_size=cfg.vocab_size, device="cuda")
        rows = [rec for _, rec in iter_jsonl(Path(d) / "metrics.jsonl")]
    rows = rows[3:]  # after compilation
    tps = statistics.median(r["tok_s"] for r in rows)
    mfu = statistics.median(r["mfu"] for r in rows)
    return (
        f"Full training loop (`ledgerlm.train.pretrain.train`, compile=true, bf16 autocast, logging every step, "
        f"loss sync per step): median over steps 4..{args.loop_steps}: {tps:,.0f} tokens/s, MFU {mfu:.1%}, "
        f"peak memory {max(r['mem_gb'] for r in rows):.1f} GiB."
    )


# ----------------------------------------------------------------------------- data efficiency


def _tokens(vocab: int):
    from ledgerlm.data.tokenizer import eot_id, train_tokenizer

    text = (DATA / "text" / "tinyshakespeare.txt").read_text()
    paras = [p for p in text.split("\n\n") if p.strip()]
    tok = train_tokenizer(paras, vocab_size=vocab)
    eot = eot_id(tok)
    ids = []
    for e in tok.encode_batch(paras):
        ids.extend(e.ids)
        ids.append(eot)
    arr = np.array(ids, dtype=np.uint16)
    cut = int(len(arr) * 0.9)  # the tail of the play is held out
    return arr[:cut], arr[cut:], eot, tok.get_vocab_size()


def _run(cfg_kw, train, val, eot, vocab, seed, out):
    from ledgerlm.train.data import WindowSource
    from ledgerlm.train.pretrain import Config
    from ledgerlm.train.pretrain import train as train_fn

    cfg = Config(**cfg_kw)
    src = WindowSource([train], cfg.seq_len, seed=seed, data_tokens=cfg.data_tokens, val_arrays=[val], eot_id=eot)
    res = train_fn(cfg, src, out, vocab_size=vocab, device="cpu", seed=seed)
    return res


def token_ratios(baseline: list[float], eff: dict[float, list[float]], fracs: list[float]) -> list[float | None]:
    """Per seed: the data fraction at which the efficient recipe's loss crosses the baseline's (log-interpolated)."""
    out = []
    for s, target in enumerate(baseline):
        pts = sorted((f, eff[f][s]) for f in fracs)
        ratio = pts[0][0] if pts[0][1] <= target else None  # better already at the smallest fraction: a bound
        for (f0, l0), (f1, l1) in zip(pts, pts[1:]):
            if ratio is None and l0 > target >= l1:
                w = (l0 - target) / (l0 - l1)
                ratio = float(np.exp(np.log(f0) + w * (np.log(f1) - np.log(f0))))
        out.append(ratio)
    return out


def cmd_data(args):
    import shutil
    import tempfile

    torch.set_num_threads(args.threads)
    train, val, eot, vocab = _tokens(args.vocab)
    model = {"size": "tiny", "n_layer": 4, "d_model": 128, "n_head": 4, "n_kv_head": 2, "d_ff": 384, "max_seq_len": 128}
    base = dict(
        model=model,
        seq_len=128,
        micro_batch_size=16,
        lr=3e-3,
        warmup=10,
        eval_every=0,
        val_batches=args.val_batches,
        ckpt_every=0,
        log_every=10**9,
        schedule="wsd",
        decay_frac=0.3,
    )
    D = args.data_tokens
    bt = base["seq_len"] * base["micro_batch_size"]
    plain = dict(base, data_tokens=D, tokens=D, weight_decay=0.1)  # one epoch, standard AdamW
    eff = dict(
        base,
        epochs=float(args.epochs),
        dropout=0.1,
        weight_decay=args.wd,
        ema=args.ema,
        average_last_k=4,
        optimizer="muon",
        muon_lr=0.02,
    )
    fracs = [float(f) for f in args.fractions.split(",")]
    tmp = Path(tempfile.mkdtemp())
    results = {"plain": [], "eff": {f: [] for f in fracs}, "plain_same_compute": []}
    t0 = time.time()
    for seed in range(args.seeds):
        r = _run(plain, train, val, eot, vocab, seed, tmp / f"p{seed}")
        results["plain"].append(r["val_loss"])
        r = _run(dict(plain, tokens=0, epochs=float(args.epochs)), train, val, eot, vocab, seed, tmp / f"pc{seed}")
        results["plain_same_compute"].append(r["val_loss"])
        for f in fracs:
            kw = dict(eff, data_tokens=int(D * f) // bt * bt)
            r = _run(kw, train, val, eot, vocab, seed, tmp / f"e{seed}_{f}")
            results["eff"][f].append(r["val_loss"])
            print(
                f"seed {seed} frac {f}: eff {r['val_loss']:.4f} ({r['final']}) plain {results['plain'][-1]:.4f}",
                flush=True,
            )
    shutil.rmtree(tmp, ignore_errors=True)
    ratios = token_ratios(results["plain"], results["eff"], fracs)
    ratios_sc = token_ratios(results["plain_same_compute"], results["eff"], fracs)
    ms = lambda xs: f"{np.mean(xs):.4f} ± {np.std(xs):.4f}"  # noqa: E731
    rows = ["| recipe | unique tokens | epochs | val loss (mean ± sd over seeds) |", "|---|---|---|---|"]
    rows.append(f"| plain (AdamW, wd 0.1, 1 epoch) | {D:,} | 1 | {ms(results['plain'])} |")
    rows.append(f"| plain, same compute as efficient | {D:,} | {args.epochs} | {ms(results['plain_same_compute'])} |")
    for f in fracs:
        rows.append(f"| data-efficient | {int(D * f):,} | {args.epochs} | {ms(results['eff'][f])} |")

    def describe(rs):
        valid = [r for r in rs if r is not None]
        txt = ", ".join("n/a" if r is None else f"{r:.3f}" for r in rs)
        return txt + (f"; mean {np.mean(valid):.3f} ± {np.std(valid):.3f}" if valid else "")

    summary = (
        "Token ratio = unique tokens the data-efficient recipe needs to reach the baseline's final val loss / the "
        "baseline's unique tokens (log-linear interpolation between the fractions tried), per seed. "
        f"Against the plain 1-epoch recipe: {describe(ratios)} (goal <= 0.5). "
        f"Against plain AdamW trained for the same {args.epochs} epochs (same compute, no regularisation): "
        f"{describe(ratios_sc)}. The second baseline separates the recipe from the extra epochs: at this tiny "
        "scale the 1-epoch baseline is far from converged, so most of the first ratio is repetition, not the "
        "regularisers."
    )
    body = (
        f"Tiny-Shakespeare, byte-level BPE vocab {vocab}, last 10% held out ({len(val):,} val tokens, "
        f"{args.val_batches} x 16 x 128 tokens evaluated). Model: 4 layers, width 128 "
        f"({model_config(model, vocab_size=vocab).num_params():,} params), seq 128, batch {bt} tokens, WSD schedule "
        f"(30% decay), lr 3e-3. Data-efficient recipe = {args.epochs} epochs over the unique tokens, dropout 0.1, "
        f"weight decay {args.wd}, Muon for hidden matrices, EMA {args.ema} and 4-snapshot averaging over the decay "
        f"phase (final weights chosen on val loss). {args.seeds} seeds; CPU, {time.time() - t0:.0f} s in all.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + summary
    )
    print(body)
    if args.record:
        record("pretrain-data-efficiency", body, "python -m bench.pretrain data " + " ".join(sys.argv[2:]))


# ----------------------------------------------------------------------------- output-head memory


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _loss_peak_child(n: int, d: int, v: int, chunk: int, tied: bool) -> dict:
    """In a fresh process: bytes of resident memory one forward + backward of the head + loss adds on top of its
    inputs (hidden states, weight, targets), measured as the peak RSS (VmHWM, reset through clear_refs) minus the
    RSS before the call. Allocations of this size go straight to mmap, so the RSS follows torch's live tensors."""
    from ledgerlm.model.loss import linear_cross_entropy

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(n, d, generator=g) * 0.5).requires_grad_(True)
    w = (torch.randn(v, d, generator=g) * 0.02).requires_grad_(True)
    t = torch.randint(0, v, (n,), generator=g)
    linear_cross_entropy(h[:8], w, t[:8], chunk_size=chunk).backward()  # load kernels, allocate grad buffers
    w.grad = h.grad = None
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    base = _rss_kib("VmRSS")
    t0 = time.process_time()
    loss = linear_cross_entropy(h, w, t, chunk_size=chunk)
    loss.backward()
    cpu_s = time.process_time() - t0
    peak = _rss_kib("VmHWM")
    # the gradients of the inputs are outputs either way (3.6 MB + 113 MB here): reported, not subtracted
    return {"chunk": chunk, "peak_extra_bytes": (peak - base) * 1024, "cpu_s": cpu_s, "loss": float(loss)}


def cmd_memory(args):
    import os
    import subprocess

    n, d, v = args.batch * args.seq, args.d_model, args.vocab
    rows, out = [], []
    for chunk in [0, *args.chunks]:
        if args.child is not None:
            break
        cp = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.pretrain",
                "memory",
                "--child",
                str(chunk),
                "--batch",
                str(args.batch),
                "--seq",
                str(args.seq),
                "--d-model",
                str(d),
                "--vocab",
                str(v),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if cp.returncode:
            raise SystemExit(f"memory child (chunk {chunk}) failed:\n{cp.stderr[-2000:]}")
        out.append(json.loads(cp.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), flush=True)
    if args.child is not None:
        print(json.dumps(_loss_peak_child(n, d, v, args.child, tied=True)))
        return
    plain = out[0]["peak_extra_bytes"]
    logits_gb = n * v * 4 / 1e9
    rows = ["| loss path | peak memory above inputs | vs plain | loss | CPU s (fwd+bwd) |", "|---|---:|---:|---:|---:|"]
    for r in out:
        name = "plain (full fp32 logits + F.cross_entropy)" if r["chunk"] == 0 else f"chunked, {r['chunk']} tokens"
        rows.append(
            f"| {name} | {r['peak_extra_bytes'] / 1e9:.2f} GB | {r['peak_extra_bytes'] / plain:.3f} | "
            f"{r['loss']:.6f} | {r['cpu_s']:.1f} |"
        )
    body = (
        f"One forward + backward of the output head + cross-entropy (`ledgerlm.model.loss.linear_cross_entropy`), "
        f"fp32 on the CPU, vocab {v:,}, d {d}, {args.batch} x {args.seq} = {n:,} tokens (the full logits alone: "
        f"{logits_gb:.2f} GB). Peak resident memory of a fresh process per row (VmHWM after a reset through "
        "/proc/self/clear_refs) minus its resident memory just before the call: inputs (hidden states, weight) "
        "excluded, their gradients included. CPU time = process CPU time (1 thread); load "
        f"`{Path('/proc/loadavg').read_text().strip()}`.\n\n" + "\n".join(rows)
    )
    print(body)
    if args.record:
        record("pretrain-loss-memory", body, "python -m bench.pretrain memory " + " ".join(sys.argv[2:]))


def cmd_gpu_mfu(args):
    """For the plain and the chunked loss: micro-batch 16 and the largest that fits, tokens/s, peak memory and MFU
    under both attention conventions -- `bench.gpu_check mfu`, each point in its own process (this command's first
    version called build_optimizer wrongly, divided by a missing peak off the GPU table and recompiled ~9 times in one
    process). Without a GPU it says so."""
    name = "pretrain-gpu-mfu-loss"
    if not torch.cuda.is_available():
        body = (
            "| loss path | largest micro-batch that fits (seq 2048) | tokens/s | MFU |\n|---|---:|---:|---:|\n"
            "| plain | not measured (no GPU in this session) | — | — |\n"
            "| chunked (4096 tokens) | not measured (no GPU in this session) | — | — |\n\n"
            "The measurement is `bash bench/gpu_check.sh` (section `gpu-check-mfu` once run on a GPU); its CPU dry "
            "run is in the default tests."
        )
        print(body)
        if args.record:
            record(name, body, "python -m bench.pretrain gpu-mfu")
        return
    from bench import gpu_check

    argv = ["mfu", "--seq", str(args.seq), "--batches", ",".join(map(str, args.batches))]
    argv += ["--chunk", str(args.chunk), "--steps", str(args.steps)] + (["--record"] if args.record else [])
    gpu_check.main(argv)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cpu")
    p.add_argument("--size", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", dest="record", action="store_false")
    p = sub.add_parser("gpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--loop-steps", type=int, default=0, help="also run the real training loop this many steps")
    p.add_argument("--no-record", dest="record", action="store_false")
    p = sub.add_parser("data")
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--data-tokens", type=int, default=98304)
    p.add_argument("--fractions", default="0.125,0.25,0.5,1.0")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--wd", type=float, default=0.5)
    p.add_argument("--ema", type=float, default=0.95)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--val-batches", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", dest="record", action="store_false")
    p = sub.add_parser("gpu-mfu")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 48, 64])
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-record", dest="record", action="store_false")
    p = sub.add_parser("memory")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--chunks", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 1024])
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-record", dest="record", action="store_false")
    args = ap.parse_args()
    cmds = {"cpu": cmd_cpu, "gpu": cmd_gpu, "data": cmd_data, "memory": cmd_memory, "gpu-mfu": cmd_gpu_mfu}
    cmds[args.cmd](args)


if __name__ == "__main__":
    main()
