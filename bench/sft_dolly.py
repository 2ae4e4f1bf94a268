"""SFT on real data (sft/dolly_hhrlhf_train_small.jsonl): the stage runs end to end and logs its metrics, packed and
unpacked held-out losses agree on real conversations, and packing's training throughput gain is measured.

    python -m bench.sft_dolly                       # CPU: tiny model, 60 steps
    python -m bench.sft_dolly --size smollm-135m --steps 200 --seq-len 2048 --batch-size 16 --vocab 8192   # GPU

The base model is a randomly initialised Llama with a BPE trained on the conversations themselves (no Hub access),
so the absolute losses describe this setup only; what the bench checks is the loop, its logging and its speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from bench._record import record
from ledgerlm.components import chat
from ledgerlm.components.optimizer import build_optimizer
from ledgerlm.data.tokenizer import train_tokenizer
from ledgerlm.device import resolve_device
from ledgerlm.io import iter_jsonl
from ledgerlm.model.hf import save_model
from ledgerlm.model.llama import build_model, model_config
from ledgerlm.pipeline import build_recipe, run_stage
from ledgerlm.post import sft

LOAD = os.getloadavg()[0]  # before this script adds its own load
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sft" / "dolly_hhrlhf_train_small.jsonl"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_throughput(model, examples, rows, batch_size, steps, device, packed: bool) -> tuple[float, float]:
    """(real tokens / s, conversations / s) over `steps` optimizer steps (after one warm-up step)."""
    opt = build_optimizer(model, {"lr": 1e-5, "weight_decay": 0.0}, fused_cpu=False)
    model.train()
    n_tok = n_conv = 0
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            sync(device)
            t0 = time.perf_counter()
        part = rows[(step * batch_size) % len(rows) :][:batch_size]
        batch = sft.collate(examples, part, doc_mask=packed)
        s, n = sft.nll_sum(model, batch, device)
        (s / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 1:
            n_tok += sum(len(examples[i]) for r in part for i in r)
            n_conv += sum(len(r) for r in part)
    sync(device)
    dt = time.perf_counter() - t0
    return n_tok / dt, n_conv / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-sft-dolly")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"data not found: {args.data}")
    device = resolve_device(args.device)
    torch.manual_seed(0)

    convs = chat.load_conversations(args.data)
    t0 = time.perf_counter()
    tok = train_tokenizer([chat.render_text(c) for c in convs.messages], vocab_size=args.vocab)
    tok_s = time.perf_counter() - t0
    cfg = model_config(args.size, vocab_size=tok.get_vocab_size(), max_seq_len=args.seq_len)
    model = build_model(cfg, device=device)
    run = args.out
    save_model(model, run / "pretrain" / "model", tokenizer=tok)

    # 1. packed (document-masked) and unpacked held-out losses of the base model on real conversations
    scfg = sft.Config(data=str(args.data), seq_len=args.seq_len)
    train, val, summary, _ = sft.load_data(scfg, tok, args.seq_len)
    model.eval()
    t0 = time.perf_counter()
    packed = sft.assistant_loss(model, val, args.seq_len, 8, device, packed=True)
    sync(device)
    t_packed = time.perf_counter() - t0
    t0 = time.perf_counter()
    unpacked = sft.assistant_loss(model, val, args.seq_len, 8, device, packed=False)
    sync(device)
    t_unpacked = time.perf_counter() - t0

    # 2. training throughput, packed vs one conversation per row (same model, same examples)
    # rows in a random order: best-fit packing puts the longest conversations first, which would bias a short sample
    g = torch.Generator().manual_seed(0)
    rows_p = sft.pack(train, args.seq_len)
    rows_p = [rows_p[i] for i in torch.randperm(len(rows_p), generator=g).tolist()]
    rows_u = [[i] for i in torch.randperm(len(train), generator=g).tolist()]
    thr_steps = 20 if device == "cuda" else 8
    tp_tok, tp_conv = train_throughput(model, train, rows_p, args.batch_size, thr_steps, device, True)
    tu_tok, tu_conv = train_throughput(model, train, rows_u, args.batch_size, thr_steps, device, False)

    # 3. the sft stage itself, through the pipeline runner, from the saved (untouched) base
    recipe = build_recipe(
        {
            "name": "bench-sft-dolly",
            "device": device,
            "stages": ["sft"],
            "sft": {
                "data": str(args.data),
                "seq_len": args.seq_len,
                "max_steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "eval_every": max(1, args.steps // 6),
            },
        },
        need_all=False,
    )
    _, rec = run_stage(recipe, "sft", run, force=True)
    m, c = rec["metrics"], rec["counters"]
    curve = [rec for _, rec in iter_jsonl(run / "sft" / "metrics.jsonl")]
    evals = [(x["step"], x["val_loss"]) for x in curve if "val_loss" in x]
    n_params = sum(p.numel() for p in model.parameters())
    assistant = sum(x.get("assistant_tokens", 0) for x in curve)

    body = (
        f"""Model `{args.size}` ({n_params / 1e6:.1f}M parameters, random init, BPE vocab {tok.get_vocab_size()} trained on the
data in {tok_s:.1f}s), seq_len {args.seq_len}, device `{device}`. Machine load (1-min average) at start: {LOAD:.1f} on {os.cpu_count()} cores
(timings on a shared machine vary with it). Data: {summary["source"]["rows"]} rows read,
{summary["source"].get("quarantined", 0)} quarantined; {summary["train_conversations"]} train / {summary["val_conversations"]}
held-out conversations (content-hash split); {summary["train"]["truncated"] + summary["val"]["truncated"]} truncated to seq_len, of which
{summary["train"]["dropped_no_assistant_after_truncation"] + summary["val"]["dropped_no_assistant_after_truncation"]} dropped (prompt alone longer than seq_len: no answer token left).

| check | value |
|---|---|
| held-out assistant loss, packed + document mask | {packed:.6f} ({t_packed:.2f}s) |
| held-out assistant loss, one conversation per row | {unpacked:.6f} ({t_unpacked:.2f}s) |
| absolute difference | {abs(packed - unpacked):.2e} |
| packing efficiency (real tokens / row slots) | {summary["train_tokens"] / (len(rows_p) * args.seq_len):.3f} ({len(rows_p)} rows for {len(train)} conversations) |
| train throughput packed | {tp_tok:,.0f} real tok/s, {tp_conv:.1f} conversations/s |
| train throughput unpacked (padded to longest in batch) | {tu_tok:,.0f} real tok/s, {tu_conv:.1f} conversations/s |
| packing speed-up (conversations/s) | {tp_conv / tu_conv:.2f}x |

SFT stage, {c["steps"]} steps x batch {args.batch_size} rows, lr {args.lr:g} (linear decay, 3% warmup),
{assistant:,} assistant tokens trained on, {m["train_seconds"]:.1f}s:

| step | held-out assistant loss |
|---|---|
"""
        + "\n".join(f"| {s} | {v:.4f} |" for s, v in evals)
        + f"""

first / last train loss {m["first_train_loss"]:.4f} / {m["final_train_loss"]:.4f}; metrics log: `RUN/sft/metrics.jsonl`
({len(curve)} lines)."""
    )
    print(body)
    if not args.no_record:
        record(f"sft-dolly-{device}", body)


if __name__ == "__main__":
    main()
