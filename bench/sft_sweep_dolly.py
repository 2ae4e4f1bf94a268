"""`ledgerlm sweep` (LR x batch size of the sft stage) and `interpolate` end to end on real data
(sft/dolly_hhrlhf_train_small.jsonl; PIQA validation for the benchmark metric).

    python -m bench.sft_sweep_dolly                                      # CPU: tiny model
    python -m bench.sft_sweep_dolly --size smollm-135m --vocab 8192 --seq-len 2048 --steps 40 \\
        --lrs 2e-4,6e-4,2e-3 --batch-sizes 4,8 --piqa-limit 500              # GPU

The base is a randomly initialised model (no Hub access), so PIQA stays near chance: the bench measures the sweep and
interpolation machinery on real data (cells, timings, tables, plots), not model quality.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

from bench._record import record
from ledgerlm.components import chat
from ledgerlm.data.tokenizer import train_tokenizer
from ledgerlm.device import resolve_device
from ledgerlm.model.hf import save_model
from ledgerlm.model.llama import build_model, model_config
from ledgerlm.pipeline import build_recipe, run_stage
from ledgerlm.post import sweep

LOAD = os.getloadavg()[0]  # before this script adds its own load
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=SHARED, help="folder with sft/ and piqa/")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
    ap.add_argument("--batch-sizes", default="4,8")
    ap.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--piqa-limit", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-sft-sweep")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    data = args.data_dir / "sft" / "dolly_hhrlhf_train_small.jsonl"
    if not data.is_file():
        sys.exit(f"data not found: {data}")
    device = resolve_device(args.device)
    run = args.out
    shutil.rmtree(run, ignore_errors=True)
    torch.manual_seed(0)
    convs = chat.load_conversations(data)
    tok = train_tokenizer([chat.render_text(c) for c in convs.messages], vocab_size=args.vocab)
    cfg = model_config(args.size, vocab_size=tok.get_vocab_size(), max_seq_len=args.seq_len)
    save_model(build_model(cfg, device="cpu"), run / "pretrain" / "model", tokenizer=tok)

    sft = {"data": str(data), "seq_len": args.seq_len, "max_steps": args.steps, "eval_every": args.steps}
    recipe = run / "recipe.yaml"
    raw = {"name": "bench-sft-sweep", "device": device, "stages": ["sft", "interpolate"], "sft": sft}
    raw["interpolate"] = {
        "alphas": [float(a) for a in args.alphas.split(",")],
        "metrics": ["sft_val_loss", "piqa"],
        "choose": "sft_val_loss",
        "eval_limit": args.piqa_limit,
        "eval_data_dir": str(args.data_dir),
    }
    recipe.write_text(yaml.safe_dump(raw))

    # 1. the grid
    grid = sweep.parse_grid([f"sft.lr={args.lrs}", f"sft.batch_size={args.batch_sizes}"])
    t0 = time.perf_counter()
    summary = sweep.run_sweep(recipe, "sft", grid, run, metrics=["final_val_loss", "initial_val_loss"])
    t_sweep = time.perf_counter() - t0
    best = min(summary["rows"], key=lambda r: r["final_val_loss"])

    # 2. sft at the best cell, then interpolate base <-> sft
    raw["sft"].update(lr=best["sft.lr"], batch_size=best["sft.batch_size"])
    r = build_recipe(raw, recipe, need_all=False)
    run_stage(r, "sft", run, force=True)
    t0 = time.perf_counter()
    _, rec = run_stage(r, "interpolate", run, force=True)
    t_interp = time.perf_counter() - t0

    sweep_md = (run / "sweep" / "sweep.md").read_text().split("\n", 2)[2].split("![")[0].strip()
    interp_md = (run / "interpolate" / "sweep.md").read_text().split("\n", 2)[2].strip()
    n_params = cfg.num_params()
    body = f"""Model `{args.size}` ({n_params / 1e6:.1f}M parameters, random init, BPE vocab {tok.get_vocab_size()}
trained on the data), seq_len {args.seq_len}, device `{device}`, {args.steps} SFT steps per cell. Machine load (1-min average) at start: {LOAD:.1f} on {os.cpu_count()} cores
(timings on a shared machine vary with it).

**LR x batch size sweep** of the sft stage ({len(summary["rows"])} cells, each its own run with a ledger record; {t_sweep:.0f}s
in all; contour plots `RUN/sweep/final_val_loss.png|svg`):

{sweep_md}

**Interpolation** base (random init) <-> sft at the best cell (lr {best["sft.lr"]:g}, batch {best["sft.batch_size"]}),
PIQA on the first {args.piqa_limit} validation items (acc_norm), {t_interp:.0f}s for {len(raw["interpolate"]["alphas"])} alphas:

{interp_md}
"""
    print(body)
    if not args.no_record:
        record(f"sft-sweep-interpolate-{device}", body)


if __name__ == "__main__":
    main()
