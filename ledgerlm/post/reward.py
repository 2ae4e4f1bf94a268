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

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ledgerlm.components.optimizer import build_optimizer
from ledgerlm.components.stats import effect
from ledgerlm.device import autocast
from ledgerlm.io import write_jsonl
from ledgerlm.model.hf import save_tensors
from ledgerlm.post.common import (
    Checkpoints,
    LoopSchedule,
    Shuffled,
    StepLog,
    effect_line,
    effect_metrics,
    init_inputs,
    length_text,
    load_model_and_tokenizer,
    load_start,
    optimizer_step,
    save_model_dir,
    trained_outputs,
    trajectory_key,
    warn_if_worse,
)
from ledgerlm.post.pairwise_report import REWARD_SECTION
from ledgerlm.post.preference import (
    check_pair_config,
    data_hash,
    encode_split,
    heldout_summary,
    pad_batch,
    write_heldout,
)
from ledgerlm.post.start_checks import start_checks
from ledgerlm.stage import StageResult, StageSpec

HEAD_FILE = "reward_head.safetensors"

# test hook: called as _STEP_HOOK(step, model) after each completed step and its checkpoint (the kill tests)
_STEP_HOOK = None


@dataclass
class Config:
    init: str = "sft"  # stage name or model dir for the backbone
    data: str = "arith"  # "arith" | preference JSONL | HF dataset name
    split: str = "train"  # HF split
    subset: str = ""  # HF config name
    n_train: int = 512  # training pairs (0 = all the source has, minus held-out)
    n_heldout: int = 200  # held-out pairs for preference accuracy
    epochs: float = 1.0  # passes over the training pairs
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 16  # pairs per optimizer step
    micro_batch_size: int = 0  # pairs per forward pass (0 = batch_size)
    lr: float = 2e-5  # peak learning rate of the backbone
    head_lr_mult: float = 10.0  # the fresh head learns faster than the pretrained body
    schedule: str = "linear"  # constant | linear | cosine (after warmup)
    warmup_ratio: float = 0.1  # fraction of the steps spent in linear warmup
    weight_decay: float = 0.0  # AdamW weight decay on the backbone's matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    center_coef: float = 0.0  # optional penalty on (r_c + r_r)^2 that keeps rewards centred near 0
    max_len: int = 256  # prompt + response tokens
    max_prompt_len: int = 128  # prompts longer than this keep their last tokens (only when the pair is too long)
    eval_every: int = 0  # steps between held-out evaluations (0 = about 5 per run)
    ckpt_every: int = 0  # steps between checkpoints in ckpt/ for a resume (0 = about 10 per run)
    keep_ckpts: int = 2  # newest checkpoints kept (0 = all)
    eval_batch_size: int = 32  # pairs per forward pass when scoring held-out pairs

    def validate(self) -> None:
        if self.lr <= 0 or self.head_lr_mult <= 0:
            raise ValueError("lr and head_lr_mult must be > 0")
        if self.ckpt_every < 0 or self.keep_ckpts < 0:
            raise ValueError("ckpt_every and keep_ckpts must be >= 0")
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
        # Zero head: the untrained model scores every response 0, so every pair ties and the stage's start is chance
        # by construction. A random head (TRL / HF score heads) can rank format pairs by accident: on the demo's pairs
        # one ranked 79% of them right, and the trained model then looked like no gain. The head still gets a gradient
        # at step 1 (d loss / d w = h), the backbone from step 2 on.
        nn.init.zeros_(self.head.weight)
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
    return init_inputs(SPEC, cfg.init, ctx, data=cfg.data)


def plan(cfg: Config, ctx) -> list[str]:
    return [f"reward model (Bradley-Terry) from {cfg.init} on {cfg.data}: {cfg.n_train} pairs, {length_text(cfg)}"]


def evaluate(cfg: Config, rm: RewardModel, held, device) -> dict:
    rc, rr = score(rm, held, cfg.eval_batch_size, device)
    outcome = pair_outcomes(rc, rr)
    return {
        "acc": float(outcome.mean()),
        "margin": float((rc - rr).mean()),
        "abs_margin": float((rc - rr).abs().mean()),
        "correct": (rc > rr).tolist(),
        "outcome": outcome.tolist(),
        "ties": int((rc == rr).sum()),
    }


def pair_outcomes(rc: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 when chosen scores above rejected, 0 below, 0.5 on a tie. A tie is a coin flip, so a model that
    cannot tell the sides apart (the zero head it starts from, or a collapse to a constant reward) scores exactly
    chance, 0.5, and not 0 (ties as wrong) or 1."""
    return (rc > rr).float() + 0.5 * (rc == rr).float()


def reward_effect(init_eval: dict, final: dict) -> dict:
    """Held-out pair accuracy of the trained reward model against the same backbone with its untrained (zero) head,
    the model the stage starts from, pair by pair with ties as half. Outcomes all 0/1 get McNemar; any tie (the zero
    head ties every pair) makes them scores, and `effect` then runs a paired bootstrap of the mean difference."""
    return effect(
        "heldout_accuracy",
        init_eval["outcome"],
        final["outcome"],
        label="held-out pair accuracy (chosen scored above rejected; a tie counts half)",
    )


def train_step(cfg: Config, rm: RewardModel, opt, pairs: list, lr: float, device) -> dict:
    """One optimizer step on `pairs` (micro-batches accumulate); returns its metrics row (without step)."""
    micro = cfg.micro_batch_size or cfg.batch_size
    loss_sum, corr, marg = 0.0, [], []
    for k in range(0, len(pairs), micro):
        chunk = pairs[k : k + micro]
        r = {}
        for side in ("chosen", "rejected"):  # separate forward passes
            ids, lastpos = _batch(chunk, side)
            with autocast(device):
                r[side] = rm(ids.to(device), lastpos.to(device)).float()
        loss, st = bradley_terry_loss(r["chosen"], r["rejected"])
        if cfg.center_coef:
            loss = loss + cfg.center_coef * ((r["chosen"] + r["rejected"]) ** 2).mean()
        (loss * len(chunk) / len(pairs)).backward()
        loss_sum += float(loss.detach()) * len(chunk) / len(pairs)
        corr.append(st["correct"].cpu())
        marg.append(st["margin"].cpu())
    gnorm = optimizer_step(rm, opt, lr, cfg.grad_clip)
    return {
        "loss": loss_sum,
        "acc": float(torch.cat(corr).mean()),
        "margin": float(torch.cat(marg).mean()),
        "abs_margin": float(torch.cat(marg).abs().mean()),  # -> 0 when the reward stops reading the response
        "lr": lr,
        "grad_norm": gnorm,
    }


def run(cfg: Config, ctx):
    device, out = ctx.device, Path(ctx.out_dir)
    init_dir, backbone, tok = load_start(SPEC, cfg.init, ctx, "reward.init")
    rm = RewardModel(backbone).to(device)
    data = encode_split(cfg, ctx.seed, tok, backbone.cfg.max_seq_len)
    write_jsonl(out / "quarantine.jsonl", data.quarantined)

    sched = LoopSchedule.from_epochs(cfg, len(data.train), evals=5)
    opt = build_optimizer(rm.backbone, cfg, fused_cpu=False)
    opt.add_param_group({"params": list(rm.head.parameters()), "weight_decay": 0.0, "lr_mult": cfg.head_lr_mult})
    batches = Shuffled(len(data.train), torch.Generator().manual_seed(ctx.seed))
    init_eval = evaluate(cfg, rm, data.heldout, device)
    rm.train()
    traj = trajectory_key(cfg, ctx.seed, data=data_hash(data.train + data.heldout))
    ckpts = Checkpoints(ctx, sched.total, cfg.ckpt_every, cfg.keep_ckpts, traj)
    resumed = ckpts.resume_loop(rm, opt, batches) or {}  # after init_eval: that scores the starting model
    first = resumed.get("step", 0)
    t0 = time.time() - resumed.get("elapsed_s", 0.0)
    with StepLog(ctx, sched.total, ("loss", "acc", "heldout_acc"), first, first if resumed else None) as log:
        log.first = resumed.get("first_row", {})
        if not resumed:
            log.write({"step": 0, **{f"heldout_{k}": init_eval[k] for k in ("acc", "margin", "abs_margin")}})
        for step in range(first, sched.total):
            pairs = [data.train[i] for i in batches.take(cfg.batch_size)]
            rec = {"step": step + 1, **train_step(cfg, rm, opt, pairs, sched.lr_at(step), device)}
            rec["elapsed_s"] = round(time.time() - t0, 3)
            if sched.evaluates(step):
                ev = evaluate(cfg, rm, data.heldout, device)
                rec.update({f"heldout_{k}": ev[k] for k in ("acc", "margin", "abs_margin")})
                ctx.log.info(
                    "reward step %d/%d loss %.4f held-out acc %.3f", step + 1, sched.total, rec["loss"], ev["acc"]
                )
            log.step(rec)
            if ckpts.due(step + 1):
                ckpts.save_loop(step + 1, rm, opt, batches, {"first_row": log.first, "elapsed_s": time.time() - t0})
            if _STEP_HOOK is not None:
                _STEP_HOOK(step + 1, rm)
    ckpts.finish()

    final = evaluate(cfg, rm, data.heldout, device)
    eff = reward_effect(init_eval, final)
    warn_if_worse(ctx, "the reward model", eff)
    heldout = write_heldout(
        out / "heldout.json",
        final["correct"],
        ties=final["ties"],
        init_accuracy=init_eval["acc"],
        init_ties=init_eval["ties"],
        effect=eff,
        per_pair_correct_before=init_eval["correct"],
    )
    rm.eval()
    save_model_dir(rm.backbone, tok, out / "model")
    save_head(rm, out / "model")  # after save_model_dir, which replaces the directory wholesale
    ctx.log.info("reward held-out accuracy %.3f (p=%.3g)", heldout["heldout_accuracy"], heldout["heldout_p_binomial"])
    return StageResult(
        outputs=trained_outputs(out, "heldout.json"),
        counters={**data.counters, "steps": sched.total},
        metrics={
            **heldout,
            **effect_metrics(eff),
            "heldout_margin": final["margin"],
            "heldout_abs_margin": final["abs_margin"],
            "init_heldout_accuracy": init_eval["acc"],
            "first_loss": log.first.get("loss"),
            "final_loss": log.last.get("loss"),
        },
        extra={"init_model": str(init_dir)},
        summary=[
            effect_line(eff),
            *heldout_summary(ctx, "reward model", heldout, len(data.heldout), ("before training", init_eval["acc"])),
        ],
    )


SPEC = StageSpec(
    name="reward",
    config=Config,
    run=run,
    help="train a Bradley-Terry reward model",
    inputs=inputs,
    plan=plan,
    produces="reward_model",
    starts_from=("sft",),
    headline=("heldout_accuracy",),
    report=REWARD_SECTION,
    checks=start_checks("reward", "init"),
)
