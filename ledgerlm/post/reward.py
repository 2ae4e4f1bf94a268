"""Reward model (the `reward` stage): the language model with a scalar head, trained with the Bradley-Terry loss.

    r(x, y)  = w . h_last + b      h_last: final-normed hidden state at the response's last token (its <|im_end|>)
    loss     = -log sigmoid(r(x, y_chosen) - r(x, y_rejected))

The whole backbone is fine-tuned with the head (as in InstructGPT / TRL's RewardTrainer). Accuracy on held-out pairs
(chosen scored above rejected) is reported with an exact binomial test against chance.

Budget: a reward model needs many more steps than DPO on the same pairs. DPO's implicit reward is built from the
policy's token log-probs, which already separate correct from corrupted solutions after SFT; a fresh scalar head must
instead get the backbone to *route* that judgement to the last token, which it does not do before fine-tuning (on the
built-in arith pairs a linear probe on the frozen SFT model's last-token state is barely above chance). Training shows
a plateau at loss ln 2 before accuracy rises, and with too high an lr the backbone collapses to a reward that ignores
the response (loss pinned at ln 2, mean |r_c - r_r| -> 0, vanishing gradients). `abs_margin` is logged (train and
held-out) to tell the two apart: a plateau keeps it away from 0, a collapse drives it to 0.

Reads `RUN/<init>/model/` (default `sft`); writes `RUN/reward/model/` (the backbone as an HF Llama dir, plus
`reward_head.safetensors` with the head), `metrics.jsonl`, `heldout.json`, `quarantine.jsonl`.
`load_reward_model(dir)` gives back a `RewardModel` for scoring.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ledgerlm.device import autocast
from ledgerlm.io import write_jsonl
from ledgerlm.model.hf import save_tensors
from ledgerlm.post.common import (
    MetricsLog,
    load_model_and_tokenizer,
    resolve_model_dir,
    save_model_dir,
    seed_everything,
)
from ledgerlm.post.preference import (
    check_pair_config,
    encode_pair,
    heldout_summary,
    load_split,
    pad_batch,
    write_heldout,
)
from ledgerlm.stage import StageResult, StageSpec
from ledgerlm.train.optim import build_optimizer
from ledgerlm.train.schedule import lr_at

HEAD_FILE = "reward_head.safetensors"


@dataclass
class Config:
    init: str = "sft"  # stage name or model dir for the backbone
    data: str = "arith"  # "arith" | preference JSONL | HF dataset name
    split: str = "train"
    subset: str = ""
    n_train: int = 512
    n_heldout: int = 200
    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 16  # pairs per optimizer step
    micro_batch_size: int = 0
    lr: float = 2e-5
    head_lr_mult: float = 10.0  # the fresh head learns faster than the pretrained body
    schedule: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    center_coef: float = 0.0  # optional penalty on (r_c + r_r)^2 that keeps rewards centred near 0
    max_len: int = 256
    max_prompt_len: int = 128
    eval_every: int = 0
    eval_batch_size: int = 32

    def validate(self) -> None:
        if self.lr <= 0 or self.head_lr_mult <= 0:
            raise ValueError("lr and head_lr_mult must be > 0")
        check_pair_config(self)


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-log sigmoid(r_c - r_r): negative log-likelihood of the observed preference under Bradley-Terry."""
    diff = r_chosen - r_rejected
    return -F.logsigmoid(diff).mean(), {"margin": diff.detach(), "correct": (diff > 0).float().detach()}


class RewardModel(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.cfg.d_model, 1)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(backbone.cfg.d_model + 1))  # as TRL / HF score heads
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] (right-padded), last_index [B] = position of each row's last real token -> rewards [B]."""
        h = self.backbone.hidden_states(input_ids)
        h_last = h[torch.arange(h.shape[0], device=h.device), last_index]
        return self.head(h_last.float()).squeeze(-1)


def _batch(encoded, side: str):
    ids, mask = pad_batch([e.prompt for e in encoded], [getattr(e, side) for e in encoded])
    last = torch.tensor([len(e.prompt) + len(getattr(e, side)) - 1 for e in encoded], dtype=torch.long)
    return ids, last


@torch.no_grad()
def score(rm: RewardModel, encoded, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of chosen and rejected for every pair -> ([N], [N]) on CPU."""
    was = rm.training
    rm.eval()
    rc, rr = [], []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        for side, acc in (("chosen", rc), ("rejected", rr)):
            ids, last = _batch(chunk, side)
            with autocast(device):
                acc.append(rm(ids.to(device), last.to(device)).float().cpu())
    rm.train(was)
    return torch.cat(rc), torch.cat(rr)


def save_head(rm: RewardModel, model_dir: Path) -> Path:
    path = Path(model_dir) / HEAD_FILE
    sd = {k: v.detach().cpu().float() for k, v in rm.head.state_dict().items()}
    save_tensors(sd, path, {"format": "pt", "kind": "ledgerlm-reward-head"})
    return path


def load_reward_model(model_dir, device="cpu") -> tuple[RewardModel, object]:
    """(RewardModel, tokenizer) from a directory written by this stage."""
    backbone, tok = load_model_and_tokenizer(Path(model_dir), device)
    rm = RewardModel(backbone)
    head = Path(model_dir) / HEAD_FILE
    if not head.is_file():
        raise FileNotFoundError(f"{model_dir}: no {HEAD_FILE} (not a reward model directory)")
    rm.head.load_state_dict(load_file(str(head)))
    return rm.to(device).eval(), tok


# ----------------------------------------------------------------------------------------------------------------------
# stage protocol


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    out: dict = {"init_model": resolve_model_dir(cfg.init, ctx, "reward.init")}
    if not cfg.data.startswith("arith"):
        p = Path(cfg.data).expanduser()
        out["data"] = p if p.exists() else f"hub:{cfg.data.removeprefix('hf:')}"
    return out


def plan(cfg: Config, ctx) -> list[str]:
    what = f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs:g} epochs"
    return [f"reward model (Bradley-Terry) from {cfg.init} on {cfg.data}: {cfg.n_train} pairs, {what}"]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="arith | preference JSONL | HF dataset name")
    p.add_argument("--init", help="stage name or model dir for the backbone (default: sft)")
    p.add_argument("--lr", type=float)
    p.add_argument("--max-steps", type=int)


def cli_overrides(args) -> dict[str, object]:
    return {k: getattr(args, k) for k in ("data", "init", "lr", "max_steps") if getattr(args, k, None) is not None}


def run(cfg: Config, ctx):
    device = ctx.device
    seed_everything(ctx.seed)
    out = Path(ctx.out_dir)
    init_dir = resolve_model_dir(cfg.init, ctx, "reward.init")
    backbone, tok = load_model_and_tokenizer(init_dir, device)
    rm = RewardModel(backbone).to(device)

    train_pairs, held_pairs, counters, quarantined = load_split(
        cfg.data, cfg.n_train, cfg.n_heldout, ctx.seed, cfg.split, cfg.subset or None
    )
    write_jsonl(out / "quarantine.jsonl", quarantined)
    max_len = min(cfg.max_len, backbone.cfg.max_seq_len)
    enc_tr, enc_ho, truncated = [], [], 0
    for pairs, dest in ((train_pairs, enc_tr), (held_pairs, enc_ho)):
        for p in pairs:
            e, t = encode_pair(p, tok, max_len, cfg.max_prompt_len)
            dest.append(e)
            truncated += t

    micro = cfg.micro_batch_size or cfg.batch_size
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(len(enc_tr) / cfg.batch_size)))
    warmup = int(cfg.warmup_ratio * total)
    eval_every = cfg.eval_every or max(1, total // 5)
    opt = build_optimizer(rm.backbone, cfg, fused_cpu=False)
    opt.add_param_group({"params": list(rm.head.parameters()), "weight_decay": 0.0, "lr_mult": cfg.head_lr_mult})
    gen = torch.Generator().manual_seed(ctx.seed)

    def evaluate():
        rc, rr = score(rm, enc_ho, cfg.eval_batch_size, device)
        correct = rc > rr  # a tie counts as wrong: a collapsed (constant) reward model scores 0, not 0.5
        return {
            "acc": float(correct.float().mean()),
            "margin": float((rc - rr).mean()),
            "abs_margin": float((rc - rr).abs().mean()),
            "correct": correct.tolist(),
        }

    init_eval = evaluate()
    rm.train()
    queue: list[int] = []
    t0 = time.time()
    first = last = {}
    with MetricsLog(out / "metrics.jsonl") as mlog, ctx.steps(total, show=("loss", "acc", "heldout_acc")) as view:
        row0 = {
            "step": 0,
            "heldout_acc": init_eval["acc"],
            "heldout_margin": init_eval["margin"],
            "heldout_abs_margin": init_eval["abs_margin"],
        }
        mlog.write(row0)
        view.log(row0)
        for step in range(total):
            idx = []
            while len(idx) < cfg.batch_size:
                if not queue:
                    queue = torch.randperm(len(enc_tr), generator=gen).tolist()
                idx.append(queue.pop())
            loss_sum, corr, marg = 0.0, [], []
            for k in range(0, len(idx), micro):
                chunk = [enc_tr[i] for i in idx[k : k + micro]]
                r = {}
                for side in ("chosen", "rejected"):  # separate forward passes
                    ids, lastpos = _batch(chunk, side)
                    with autocast(device):
                        r[side] = rm(ids.to(device), lastpos.to(device)).float()
                loss, st = bradley_terry_loss(r["chosen"], r["rejected"])
                if cfg.center_coef:
                    loss = loss + cfg.center_coef * ((r["chosen"] + r["rejected"]) ** 2).mean()
                (loss * len(chunk) / len(idx)).backward()
                loss_sum += float(loss.detach()) * len(chunk) / len(idx)
                corr.append(st["correct"].cpu())
                marg.append(st["margin"].cpu())
            lr = lr_at(step, total, cfg.lr, warmup, cfg.schedule)
            gnorm = _step_with_mult(rm, opt, lr, cfg.grad_clip)
            if not math.isfinite(loss_sum):
                raise FloatingPointError(f"reward: loss is {loss_sum} at step {step + 1}")
            rec = {
                "step": step + 1,
                "loss": loss_sum,
                "acc": float(torch.cat(corr).mean()),
                "margin": float(torch.cat(marg).mean()),
                "abs_margin": float(torch.cat(marg).abs().mean()),  # -> 0 when the reward stops reading the response
                "lr": lr,
                "grad_norm": gnorm,
                "elapsed_s": round(time.time() - t0, 3),
            }
            if (step + 1) % eval_every == 0 or step + 1 == total:
                ev = evaluate()
                rec.update(heldout_acc=ev["acc"], heldout_margin=ev["margin"], heldout_abs_margin=ev["abs_margin"])
                ctx.log.info("reward step %d/%d loss %.4f held-out acc %.3f", step + 1, total, loss_sum, ev["acc"])
            first = first or rec
            last = rec
            mlog.write(rec)
            view.log(rec)

    final = evaluate()
    n_ho = len(enc_ho)
    heldout = write_heldout(out / "heldout.json", final["correct"], init_accuracy=init_eval["acc"])
    rm.eval()
    save_model_dir(rm.backbone, tok, out / "model")
    save_head(rm, out / "model")  # after save_model_dir, which replaces the directory wholesale
    ctx.log.info("reward held-out accuracy %.3f (p=%.3g)", heldout["heldout_accuracy"], heldout["heldout_p_binomial"])
    return StageResult(
        outputs={
            "model": out / "model",
            "metrics": out / "metrics.jsonl",
            "heldout": out / "heldout.json",
            "quarantine": out / "quarantine.jsonl",
        },
        counters={
            "pairs_train": len(enc_tr),
            "pairs_heldout": n_ho,
            "truncated_pairs": truncated,
            "steps": total,
            **{f"data:{k}": v for k, v in dict(counters).items()},
        },
        metrics={
            **heldout,
            "heldout_margin": final["margin"],
            "heldout_abs_margin": final["abs_margin"],
            "init_heldout_accuracy": init_eval["acc"],
            "first_loss": first.get("loss"),
            "final_loss": last.get("loss"),
        },
        extra={"init_model": str(init_dir)},
        summary=heldout_summary(ctx, "reward model", heldout, n_ho, ("before training", init_eval["acc"])),
    )


def _step_with_mult(rm: RewardModel, opt, lr: float, grad_clip: float) -> float:
    """optimizer_step, but groups carrying `lr_mult` (the head) get lr * lr_mult."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    params = [p for p in rm.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip > 0 else torch.tensor(0.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


SPEC = StageSpec(
    name="reward",
    config=Config,
    run=run,
    help="train a Bradley-Terry reward model",
    inputs=inputs,
    plan=plan,
    add_cli_args=add_cli_args,
    cli_overrides=cli_overrides,
    produces="reward_model",
    starts_from=("sft",),
    headline=("val_accuracy",),
)
