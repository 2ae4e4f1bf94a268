"""Rollout speed: ledgerlm's KV-cache sampler (`ledgerlm.model.generate`) against transformers' `generate` on the same
weights, the same batch of left-padded prompts and the same sampling settings (temperature, no top-k / top-p, no early
stop: every row generates `--new` tokens, so both produce batch x new tokens). Ours runs its whole `generate` call
in the timing, the per-call build of its fused, transposed weights (`ledgerlm.model.decode.Decoder`) included; its
finished-row compaction never acts here (no row stops early), so these numbers do not count it.

    python -m bench.generate                       # CPU, the demo's model shape and a SmolLM-135M-shaped one
    python -m bench.generate --sizes demo --repeats 5

CPU work is timed by process CPU time with one torch thread (the machine is shared; wall clock there varies 2-5x),
each side `--repeats` times, alternating; tokens/s = batch x new tokens / CPU seconds. On CUDA it times wall clock
after a synchronize, under each side's bf16 (ours: autocast; transformers: bf16 weights). Writes its section to
BENCHMARKS.md (`bench/_record.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from bench._record import record
from ledgerlm.model.generate import generate
from ledgerlm.model.llama import Llama, model_config

SIZES = {
    # the demo's model (recipes/demo.yaml: 4 layers, d 128, vocab 2048): RL rollouts in the demo
    "demo": dict(n_layer=4, d_model=128, n_head=4, n_kv_head=2, d_ff=384, vocab_size=2048, max_seq_len=256),
    "smollm-135m": dict(size="smollm-135m", max_seq_len=512),
}


def hf_copy(model: Llama, tmp: str):
    """The same weights as a transformers LlamaForCausalLM (through our HF export)."""
    import transformers

    from ledgerlm.model.hf import save_model

    save_model(model, tmp)
    return transformers.LlamaForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32).eval()


def prompts_for(batch: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(24, 48, (batch,), generator=g).tolist()  # ragged: left padding matters
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lens]


def run_ours(model, prompts, new: int, temperature: float, seed: int) -> int:
    out = generate(model, prompts, new, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    return sum(len(o) for o in out)


def run_hf(hf, prompts, new: int, temperature: float, seed: int) -> int:
    b, plen = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(b, plen, dtype=torch.long)
    mask = torch.zeros(b, plen, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, plen - len(p) :] = torch.tensor(p)
        mask[i, plen - len(p) :] = 1
    torch.manual_seed(seed)
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            pad_token_id=0,
            eos_token_id=None,
        )
    return int(out[:, plen:].numel())


def timed(fn) -> tuple[float, int]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, n
    t0 = time.process_time()
    n = fn()
    return time.process_time() - t0, n


def bench_size(name: str, args) -> dict:
    torch.manual_seed(0)
    model = Llama(model_config(dict(SIZES[name]))).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        hf = hf_copy(model, tmp)
    prompts = prompts_for(args.batch, model.cfg.vocab_size, 0)
    ours, theirs = [], []
    run_ours(model, prompts[:2], 2, args.temperature, 0)  # warm-up (allocator, kernels)
    run_hf(hf, prompts[:2], 2, args.temperature, 0)
    for r in range(args.repeats):
        s, n = timed(lambda r=r: run_ours(model, prompts, args.new, args.temperature, r))
        ours.append(n / s)
        s, n = timed(lambda r=r: run_hf(hf, prompts, args.new, args.temperature, r))
        theirs.append(n / s)
        print(f"{name} repeat {r}: ours {ours[-1]:.0f} tok/s, transformers {theirs[-1]:.0f} tok/s", flush=True)
    return {"ours": ours, "hf": theirs, "params": model.num_params()}


def spread(xs: list[float]) -> str:
    return f"{min(xs):,.0f} / {statistics.median(xs):,.0f} / {max(xs):,.0f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="demo,smollm-135m")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [s for s in args.sizes.split(",") if s]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise SystemExit(f"bench.generate: unknown size(s) {bad}; known: {', '.join(SIZES)}")
    load = os.getloadavg()[0]
    res = {name: bench_size(name, args) for name in sizes}
    load = max(load, os.getloadavg()[0])
    clock = "wall clock (CUDA)" if torch.cuda.is_available() else f"process CPU time, {args.threads} torch thread(s)"
    lines = [
        f"Batch {args.batch} ragged left-padded prompts (24-47 tokens), {args.new} new tokens each, temperature "
        f"{args.temperature:g}, no top-k/top-p, no early stop; same weights (ours exported to `LlamaForCausalLM`), "
        f"fp32 on the CPU; {args.repeats} alternating repeats, timed by {clock}; 1-min load average up to {load:.1f}. "
        "Ours: one `generate` call, its weight fusion and transposition included; it drops finished rows from the "
        "batch, which never happens here (no row stops early). transformers: `generate(do_sample=True)`, "
        "its default cache.",
        "",
        "| model | params | ours tok/s (min / median / max) | transformers tok/s (min / median / max) | ratio of medians |",
        "|---|---:|---:|---:|---:|",
    ]
    numbers = {}
    for name, r in res.items():
        ratio = statistics.median(r["ours"]) / statistics.median(r["hf"])
        lines.append(f"| {name} | {r['params']:,} | {spread(r['ours'])} | {spread(r['hf'])} | {ratio:.2f}x |")
        key = name.replace("-", "_")
        numbers[f"{key}_ours_tok_s"] = [round(x, 1) for x in r["ours"]]
        numbers[f"{key}_hf_tok_s"] = [round(x, 1) for x in r["hf"]]
        numbers[f"{key}_speedup"] = round(ratio, 3)
    record("generate", "\n".join(lines), numbers=numbers)


if __name__ == "__main__":
    main()
