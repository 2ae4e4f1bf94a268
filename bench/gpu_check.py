"""The GPU check: what the real recipe will spend, measured in minutes on a fresh GPU machine (bench/gpu_check.sh).

    python -m bench.gpu_check point --loss chunked --micro-batch 16     # one (loss path, micro-batch) point, this process
    python -m bench.gpu_check mfu                  # plain vs chunked at micro-batch 16 and at the largest that fits
    python -m bench.gpu_check trainer              # the Trainer: accumulation, checkpoint, kill, resume
    python -m bench.gpu_check generate             # eval (forward) and generation throughput
    python -m bench.gpu_check all [--dry-run]      # all three; --dry-run: the same code on the CPU, tiny model

Every (loss path, micro-batch) point runs in its own process: an out-of-memory leaves nothing behind for the next
point, and each compiles once (the old in-process search recompiled ~9 times). `mfu` reports MFU under both
conventions, labelled: `causal` counts attention FLOPs halved for the causal mask (PaLM, nanochat: the work really
done, the lower number) and `full` counts every query against every key (nanoGPT, our earlier 36.7%). A GPU not in
ledgerlm.device's table has an "unknown" peak and MFU, never a crash. Imports only torch and ledgerlm's model and
training code (no zstandard, datatrove or network). On a GPU, `--record` writes BENCHMARKS.md sections
`gpu-check-mfu` (read by `ledgerlm plan` as the measured MFU), `gpu-check-trainer` and `gpu-check-generate`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mem_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (Linux: KiB)


def _setup(device: str, threads: int) -> None:
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif threads:
        torch.set_num_threads(threads)


def mfu_both(cfg, seq: int, tok_s: float, device: str) -> dict:
    """MFU under both conventions against the device's dense bf16 peak; None (unknown) off the table or on CPU."""
    from ledgerlm.device import peak_flops

    peak = peak_flops(device) if device.startswith("cuda") else None
    out = {"peak_flops": peak, "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"}
    for conv, causal in (("causal", True), ("full", False)):
        out[f"mfu_{conv}"] = cfg.flops_per_token(seq, causal=causal) * tok_s / peak if peak else None
    return out


def point(args) -> dict:
    """One training step configuration, measured: build, compile, warm up, time `steps` optimizer steps."""
    from ledgerlm.components.optimizer import build_optimizer
    from ledgerlm.model.llama import build_model, model_config

    dev = args.device
    _setup(dev, args.threads)
    cfg = model_config(args.size)
    chunk = 0 if args.loss == "plain" else args.chunk
    res = {"loss": args.loss, "micro_batch": args.micro_batch, "seq": args.seq, "size": args.size, "chunk": chunk}
    try:
        torch.manual_seed(0)
        model = build_model(cfg, device=dev).train()
        opt = build_optimizer(model, {"lr": 1e-4, "weight_decay": 0.1})
        fwd = torch.compile(model, backend=args.backend) if args.compile else model
        x = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq), device=dev)
        ac = (lambda: torch.autocast(dev.split(":")[0], dtype=torch.bfloat16)) if args.bf16 else None

        def step():
            import contextlib

            with ac() if ac else contextlib.nullcontext():
                loss = fwd(x, targets=x, loss_chunk_size=chunk)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        _sync(dev)
        res["compile_warmup_s"] = round(time.perf_counter() - t0, 2)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            loss = step()
            _sync(dev)
            times.append(time.perf_counter() - t)
        s = statistics.median(times)
        tok_s = args.micro_batch * args.seq / s
        res.update(ok=True, s_per_step=s, tok_s=tok_s, peak_gib=_peak_mem_gib(dev), loss_value=float(loss))
        res.update(mfu_both(cfg, args.seq, tok_s, dev))
    except (torch.OutOfMemoryError, RuntimeError) as e:  # a compiled graph may wrap the OOM
        if not isinstance(e, torch.OutOfMemoryError) and "out of memory" not in str(e).lower():
            raise
        res.update(ok=False, oom=True, peak_gib=_peak_mem_gib(dev))
    return res


def _child(args, loss: str, b: int, timeout: float) -> dict:
    """`point` in a fresh process; its last stdout line is the JSON result."""
    cmd = [sys.executable, "-m", "bench.gpu_check", "point", "--loss", loss, "--micro-batch", str(b)]
    cmd += ["--seq", str(args.seq), "--size", args.size, "--device", args.device, "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup), "--chunk", str(args.chunk), "--threads", str(args.threads)]
    cmd += ["--backend", args.backend] + (["--compile"] if args.compile else []) + ([] if args.bf16 else ["--fp32"])
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"loss": loss, "micro_batch": b, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"loss": loss, "micro_batch": b, "ok": False, "error": f"exit {p.returncode}: {tail[0][:200]}"}
    return json.loads(lines[-1])


def _pct(x) -> str:
    return "unknown" if x is None else f"{x:.1%}"


def cmd_mfu(args) -> dict:
    """Per loss path: micro-batch 16 (the recipe's), then larger ones until one does not fit (each its own process)."""
    points, t0 = [], time.perf_counter()
    for loss in ("plain", "chunked"):
        for b in args.batches:
            if b != args.batches[0] and time.perf_counter() - t0 > args.mfu_budget:
                points.append({"loss": loss, "micro_batch": b, "ok": False, "error": "not tried (time budget)"})
                break
            r = _child(args, loss, b, args.point_timeout)
            points.append(r)
            print(json.dumps(r), flush=True)
            if not r.get("ok"):
                break
    rows = [
        "| loss path | micro-batch | fits | peak GiB | tokens/s | MFU (causal attention) | MFU (full attention) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in points:
        fits = "yes" if r.get("ok") else ("out of memory" if r.get("oom") else r.get("error", "failed"))
        ok = r.get("ok")
        rows.append(
            f"| {r['loss']} | {r['micro_batch']} | {fits} | {r.get('peak_gib', 0):.1f} | "
            f"{r['tok_s']:,.0f} | {_pct(r.get('mfu_causal'))} | {_pct(r.get('mfu_full'))} |"
            if ok
            else f"| {r['loss']} | {r['micro_batch']} | {fits} | — | — | — | — |"
        )
    largest = {
        loss: max([r["micro_batch"] for r in points if r["loss"] == loss and r.get("ok")], default=0)
        for loss in ("plain", "chunked")
    }
    out = {"points": points, "largest": largest}
    first = next((r for r in points if r.get("ok")), {})
    out["body"] = (
        f"`{args.size}`, seq {args.seq}, {'bf16 autocast' if args.bf16 else 'fp32'}, "
        f"{'torch.compile (' + args.backend + ')' if args.compile else 'eager'}, fused AdamW, one optimizer step per "
        f"micro-batch, median of {args.steps} steps after {args.warmup} warm-up; each point in its own process; "
        f"{first.get('device_name', args.device)}, torch {torch.__version__}, peak "
        f"{(first.get('peak_flops') or 0) / 1e12:.0f} TFLOP/s dense bf16"
        f"{'' if first.get('peak_flops') else ' (unknown: not in ledgerlm.device.GPUS)'}. MFU counts 6N FLOPs per "
        "token plus attention: *causal* halves attention for the causal mask (PaLM, nanochat), *full* does not "
        f"(nanoGPT; our earlier 36.7%). Largest micro-batch that ran: plain {largest['plain']}, chunked "
        f"{largest['chunked']}.\n\n" + "\n".join(rows)
    )
    return out


def cmd_trainer(args) -> dict:
    """`ledgerlm.train.pretrain.train` as the stage runs it (accumulation 2, checkpoints), killed after a checkpoint
    and resumed: the resumed run must end on the same weights as an uninterrupted one."""
    import logging

    import numpy as np

    from ledgerlm.model.llama import model_config
    from ledgerlm.train import loop
    from ledgerlm.train import pretrain as P
    from ledgerlm.train.data import WindowSource

    logging.basicConfig(level=logging.WARNING)
    dev = args.device
    _setup(dev, args.threads)
    cfg = model_config(args.size)
    B, T, steps = args.micro_batch_trainer, args.seq, args.trainer_steps
    n = B * T * 2 * (steps + 2) + 1
    arr = np.random.default_rng(0).integers(0, cfg.vocab_size, n).astype(np.uint16)
    val = np.random.default_rng(1).integers(0, cfg.vocab_size, B * T * 2 + 1).astype(np.uint16)

    def source():
        return WindowSource([arr], T, seed=0, val_arrays=[val], eot_id=None)

    c = P.Config(
        model=args.size,
        seq_len=T,
        micro_batch_size=B,
        batch_tokens=2 * B * T,
        steps=steps,
        compile=args.compile,
        precision="bf16" if args.bf16 else "fp32",
        eval_every=steps,
        val_batches=1,
        ckpt_every=steps // 2,
        log_every=steps,
        lr=1e-3,
    )
    os.environ.setdefault("LEDGERLM_COMPILE_BACKEND", args.backend)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        ref = P.train(c, source(), Path(d) / "ref", vocab_size=cfg.vocab_size, device=dev)
        ref_s = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(d) / "ref" / "metrics.jsonl").read_text().splitlines()]

        class Killed(Exception):
            pass

        def kill(step, model):
            if step == steps // 2:
                raise Killed

        loop._STEP_HOOK = kill
        try:
            P.train(c, source(), Path(d) / "res", vocab_size=cfg.vocab_size, device=dev)
        except Killed:
            pass
        finally:
            loop._STEP_HOOK = None
        t0 = time.perf_counter()
        res = P.train(c, source(), Path(d) / "res", vocab_size=cfg.vocab_size, device=dev)
        resume_s = time.perf_counter() - t0
        from safetensors.torch import load_file

        a = load_file(str(Path(d) / "ref" / "model" / "model.safetensors"))
        b = load_file(str(Path(d) / "res" / "model" / "model.safetensors"))
        max_diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    after = rows[1:] or rows
    out = {
        "steps": steps,
        "grad_accum": ref["grad_accum"],
        "resumed_from": res["resumed_from"],
        "tok_s_median": statistics.median(r["tok_s"] for r in after),
        "mem_gib_max": max(r["mem_gb"] for r in rows),
        "uninterrupted_s": round(ref_s, 2),
        "resume_s": round(resume_s, 2),
        "resumed_max_weight_diff": max_diff,
        "final_val_loss": ref["val_loss"],
        **{k: v for k, v in mfu_both(cfg, T, statistics.median(r["tok_s"] for r in after), dev).items()},
    }
    out["body"] = (
        f"`ledgerlm.train.pretrain.train`, `{args.size}`, {B} x {T} per micro-batch, accumulation "
        f"{out['grad_accum']}, {steps} steps, checkpoint every {steps // 2}; killed after step {steps // 2} and "
        f"resumed from step {out['resumed_from']}: final weights differ from the uninterrupted run by at most "
        f"{max_diff:.3g}. Median {out['tok_s_median']:,.0f} tokens/s after the first step, MFU "
        f"{_pct(out['mfu_causal'])} (causal) / {_pct(out['mfu_full'])} (full), peak memory "
        f"{out['mem_gib_max']:.1f} GiB; uninterrupted run {ref_s:.1f} s, resume {resume_s:.1f} s."
    )
    return out


def cmd_generate(args) -> dict:
    """Eval (forward over a batch, as log-likelihood scoring does) and sampling throughput (KV cache)."""
    from ledgerlm.model.generate import generate
    from ledgerlm.model.llama import build_model, model_config

    dev = args.device
    _setup(dev, args.threads)
    cfg = model_config(args.size)
    torch.manual_seed(0)
    model = build_model(cfg, device=dev).eval()
    ac = (lambda: torch.autocast(dev.split(":")[0], dtype=torch.bfloat16)) if args.bf16 else None
    import contextlib

    ctx = ac if ac else contextlib.nullcontext
    x = torch.randint(0, cfg.vocab_size, (args.eval_batch, args.eval_len), device=dev)
    with torch.no_grad(), ctx():
        model(x[:1])
        _sync(dev)
        t = time.perf_counter()
        for _ in range(args.steps):
            model(x)
        _sync(dev)
    eval_tok_s = args.eval_batch * args.eval_len * args.steps / (time.perf_counter() - t)
    g = torch.Generator(device="cpu").manual_seed(0)
    prompts = [
        torch.randint(3, cfg.vocab_size, (args.prompt_len,), generator=g).tolist() for _ in range(args.gen_batch)
    ]
    with ctx():
        _sync(dev)
        t = time.perf_counter()
        outs = generate(
            model, prompts, args.new_tokens, temperature=1.0, generator=torch.Generator(device=dev).manual_seed(0)
        )
        _sync(dev)
    gen_s = time.perf_counter() - t
    new = sum(len(o) for o in outs)
    out = {
        "eval_tok_s": eval_tok_s,
        "gen_new_tok_s": new / gen_s,
        "gen_seconds": gen_s,
        "gen_batch": args.gen_batch,
        "new_tokens": new,
        "peak_gib": _peak_mem_gib(dev),
    }
    out["body"] = (
        f"`{args.size}`, {'bf16 autocast' if args.bf16 else 'fp32'}: forward (eval scoring) {args.eval_batch} x "
        f"{args.eval_len}: {eval_tok_s:,.0f} tokens/s; sampling (KV cache, temperature 1) {args.gen_batch} prompts "
        f"of {args.prompt_len} tokens x {args.new_tokens} new tokens: {new / gen_s:,.0f} new tokens/s "
        f"({gen_s:.1f} s, the RL step's generation at 32 prompts x 8 samples x 256 tokens is ~8 such batches); "
        f"peak {out['peak_gib']:.1f} GiB."
    )
    return out


DRY = {  # the CPU dry run: the same code, tiny sizes (tests/test_gpu_check.py)
    "size": "tiny",
    "seq": 64,
    "batches": [2, 4],
    "steps": 2,
    "warmup": 1,
    "chunk": 32,
    "micro_batch_trainer": 2,
    "trainer_steps": 4,
    "eval_batch": 2,
    "eval_len": 32,
    "gen_batch": 2,
    "prompt_len": 8,
    "new_tokens": 8,
    "threads": 1,
    "compile": False,
    "bf16": False,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["point", "mfu", "trainer", "generate", "all"])
    ap.add_argument("--dry-run", action="store_true", help="the CPU dry run: tiny model, no GPU needed")
    ap.add_argument("--device", default=None)
    ap.add_argument("--size", default="smollm-135m")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--loss", choices=["plain", "chunked"], default="chunked")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[16, 32, 48, 64])
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--point-timeout", type=float, default=120.0, help="seconds for one point's process")
    ap.add_argument("--mfu-budget", type=float, default=270.0, help="seconds after which no larger batch is tried")
    ap.add_argument("--micro-batch-trainer", type=int, default=16)
    ap.add_argument("--trainer-steps", type=int, default=8)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--eval-len", type=int, default=512)
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--backend", default=os.environ.get("LEDGERLM_COMPILE_BACKEND", "inductor"))
    ap.add_argument("--compile", dest="compile", action="store_true", default=None)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--fp32", dest="bf16", action="store_false", default=None)
    ap.add_argument("--record", action="store_true", help="write the BENCHMARKS.md sections (GPU runs only)")
    ap.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    args = ap.parse_args(argv)
    if args.dry_run:
        for k, v in DRY.items():
            if k in ("compile", "bf16") and getattr(args, k) is not None:
                continue
            setattr(args, k, v)
        args.device = args.device or "cpu"
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.compile = args.device.startswith("cuda") if args.compile is None else args.compile
    args.bf16 = args.device.startswith("cuda") if args.bf16 is None else args.bf16
    if args.cmd == "point":
        print(json.dumps(point(args)), flush=True)
        return 0
    results = {}
    for name, fn in (("mfu", cmd_mfu), ("trainer", cmd_trainer), ("generate", cmd_generate)):
        if args.cmd in (name, "all"):
            t = time.perf_counter()
            results[name] = fn(args)
            results[name]["wall_s"] = round(time.perf_counter() - t, 1)
            print(f"\n## {name} ({results[name]['wall_s']} s)\n\n{results[name]['body']}\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.record:
        if not args.device.startswith("cuda") or args.dry_run:
            print("not recorded: BENCHMARKS.md takes GPU measurements only (this was a CPU run)")
            return 0
        _record(args, results)
    return 0


def _record(args, results: dict) -> None:
    from bench._record import record

    cmd = "bash bench/gpu_check.sh"
    if "mfu" in results:
        pts = results["mfu"]["points"]
        at16 = {r["loss"]: r for r in pts if r.get("ok") and r["micro_batch"] == 16}
        nums = {"device": pts[0].get("device_name") if pts else None}
        for loss, r in at16.items():
            nums[f"mfu_causal_{loss}_b16"] = r.get("mfu_causal")
            nums[f"mfu_full_{loss}_b16"] = r.get("mfu_full")
            nums[f"peak_gib_{loss}_b16"] = r.get("peak_gib")
        nums.update({f"largest_micro_batch_{k}": v for k, v in results["mfu"]["largest"].items()})
        record("gpu-check-mfu", results["mfu"]["body"], cmd, numbers=nums)
    if "trainer" in results:
        t = results["trainer"]
        record("gpu-check-trainer", t["body"], cmd, numbers={"tok_s": t["tok_s_median"], "mfu_causal": t["mfu_causal"]})
    if "generate" in results:
        g = results["generate"]
        record(
            "gpu-check-generate",
            g["body"],
            cmd,
            numbers={"eval_tok_s": g["eval_tok_s"], "gen_tok_s": g["gen_new_tok_s"]},
        )


if __name__ == "__main__":
    sys.exit(main())
