"""`ledgerlm export SRC OUT`: write a Hugging Face Llama directory from a training checkpoint, a run, or any
(ours or HF) Llama model directory; optionally check that transformers reproduces our logits.

SRC may be: a model dir (config.json + weights), a checkpoint dir (ckpt/step_*), a ckpt/ dir (newest checkpoint),
or a run dir (its pretrain/ckpt). `--weights ema|avg` exports the EMA or snapshot average kept in a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from ledgerlm.components.checkpoint import latest_checkpoint
from ledgerlm.model.hf import load_model, save_model
from ledgerlm.model.llama import build_model, model_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="model dir, checkpoint dir, ckpt/ dir or run dir")
    p.add_argument("out", type=Path, help="output directory (HF Llama format)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--weights", choices=["raw", "ema", "avg"], default="raw", help="for checkpoints")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json to copy (default: found beside src)")
    p.add_argument("--verify", action="store_true", help="load OUT with transformers and compare fp32 logits")


def _checkpoint_dir(src: Path) -> Path | None:
    if (src / "state.json").exists() and (src / "model.safetensors").exists():
        return src
    for cand in (src, src / "ckpt", src / "pretrain" / "ckpt"):
        last = latest_checkpoint(cand)
        if last is not None:
            return last
    return None


def load_any(src: Path, weights: str = "raw"):
    """-> (model, tokenizer_path or None) from any SRC form described in the module docstring."""
    src = Path(src)
    if (src / "config.json").exists():
        if weights != "raw":
            raise ValueError(f"{src}: --weights {weights} needs a training checkpoint, not a model dir")
        tok = src / "tokenizer.json"
        return load_model(src), tok if tok.exists() else None
    ck = _checkpoint_dir(src)
    if ck is None:
        raise FileNotFoundError(f"{src}: neither a model dir (config.json) nor a checkpoint / run dir")
    state = json.loads((ck / "state.json").read_text())
    if "model_config" not in state:
        raise ValueError(f"{ck}/state.json: no model_config (checkpoint from an older version)")
    model = build_model(model_config(state["model_config"]))
    if weights == "raw":
        sd = load_file(str(ck / "model.safetensors"))
    else:
        extra = load_file(str(ck / "extra.safetensors"))
        pre = weights + "."
        sd = {k[len(pre) :]: v for k, v in extra.items() if k.startswith(pre)}
        if not sd:
            raise ValueError(f"{ck}: the run kept no {weights} weights (enable ema / average_last_k)")
        if weights == "avg":
            n = state.get("avg_count", 0)
            if not n:
                raise ValueError(f"{ck}: no snapshot was averaged yet")
            sd = {k: v / n for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise ValueError(f"{ck}: weights do not match the model config ({missing[:3]}, {unexpected[:3]})")
    # the tokenizer that trained it: RUN/tokenize/tokenizer.json, with ck = RUN/pretrain/ckpt/step_*
    tok = ck.parents[2] / "tokenize" / "tokenizer.json" if len(ck.parents) > 2 else None
    return model, tok if tok is not None and tok.exists() else None


@torch.no_grad()
def verify_with_transformers(model, out: Path, atol: float = 1e-4) -> float:
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    ours = model.float().eval()
    x = torch.randint(
        0, ours.cfg.vocab_size, (2, min(64, ours.cfg.max_seq_len)), generator=torch.Generator().manual_seed(0)
    )
    diff = (ours(x) - hf(x).logits).abs().max().item()
    if diff > atol:
        raise ValueError(f"transformers logits differ from ours by {diff:.3g} > {atol}")
    return diff


def main(args) -> int:
    if args.tokenizer is not None and not args.tokenizer.is_file():  # before any work: one line, like every input
        print(f"error: --tokenizer {args.tokenizer}: no such file (give a tokenizer.json)", file=sys.stderr)
        return 2
    try:
        model, tok = load_any(args.src, args.weights)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_model(model, args.out, tokenizer=args.tokenizer or tok, dtype=DTYPES[args.dtype])
    print(
        f"wrote {args.out} ({model.num_params():,} params, {args.dtype}{', tokenizer' if (args.tokenizer or tok) else ''})"
    )
    if args.verify:
        check = model if args.dtype == "fp32" else load_model(args.out)
        print(f"verified with transformers: max |logit diff| = {verify_with_transformers(check, args.out):.2e}")
    return 0
