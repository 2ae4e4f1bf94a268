"""Direct Preference Optimisation (the `dpo` stage): sigmoid DPO and the length-normalised variant of Tulu 3.

    implicit reward   r(x, y) = beta * log pi(y|x) / pi_ref(y|x)          ("sigmoid")
                      r(x, y) = beta * log pi(y|x) / pi_ref(y|x) / |y|    ("length_normalized": no bonus for length)
    loss              -log sigmoid(r(x, y_chosen) - r(x, y_rejected))

The reference model is the starting model, frozen. Its log-probabilities never change, so they are computed once,
stored in `RUN/dpo/ref_logps.safetensors` together with the hash of the tokenised data and of the reference weights,
and reused whenever both hashes match (a resumed stage, or `ref_cache:` pointing at an earlier run's file). Chosen
and rejected responses go through the model in separate forward passes (half the peak activation memory of one
concatenated batch). Held-out preference accuracy (fraction of unseen pairs whose implicit reward ranks chosen first)
is reported with an exact binomial test against chance.

Reads `RUN/<init>/model/` (default: `interpolate` if present, else `sft`); writes `RUN/dpo/model/`, `metrics.jsonl`
(per step: loss, reward accuracy, margin, chosen/rejected rewards, lr), `heldout.json` and `quarantine.jsonl`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from ledgerlm.components.optimizer import build_optimizer
from ledgerlm.components.stats import effect
from ledgerlm.device import autocast
from ledgerlm.io import write_jsonl
from ledgerlm.ledger import sha256_file
from ledgerlm.model.hf import save_tensors
from ledgerlm.model.loss import DEFAULT_CHUNK
from ledgerlm.post.common import (
    Checkpoints,
    LoopSchedule,
    Shuffled,
    StepLog,
    effect_line,
    effect_metrics,
    frozen_copy,
    init_inputs,
    length_text,
    load_start,
    optimizer_step,
    save_model_dir,
    trained_outputs,
    trajectory_key,
    warn_if_worse,
)
from ledgerlm.post.pairwise_report import DPO_SECTION
from ledgerlm.post.preference import (
    EncodedSplit,
    check_pair_config,
    data_hash,
    encode_split,
    heldout_summary,
    pad_batch,
    sequence_logps,
    write_heldout,
)
from ledgerlm.post.start_checks import start_checks
from ledgerlm.stage import StageResult, StageSpec

LOSSES = ("sigmoid", "length_normalized")

# test hook: called as _STEP_HOOK(step, policy) after each completed step and its checkpoint (the kill tests)
_STEP_HOOK = None


@dataclass
class Config:
    init: str = "auto"  # stage name or model dir; "auto" = interpolate if it has a model, else sft
    data: str = "arith"  # "arith" (built-in), a JSONL path, or a HF dataset name (e.g. hf:Anthropic/hh-rlhf)
    split: str = "train"  # HF split
    subset: str = ""  # HF config name
    n_train: int = 512  # training pairs (0 = all the source has, minus held-out)
    n_heldout: int = 200  # held-out pairs for preference accuracy
    loss: str = "sigmoid"  # sigmoid | length_normalized
    beta: float = 0.1  # Tulu 3 uses 5 with length_normalized (the /|y| makes ratios ~100x smaller)
    epochs: float = 1.0  # passes over the training pairs
    max_steps: int = 0  # > 0 overrides epochs
    batch_size: int = 16  # pairs per optimizer step
    micro_batch_size: int = 0  # pairs per forward pass (0 = batch_size)
    lr: float = 5e-6  # peak learning rate
    schedule: str = "linear"  # constant | linear | cosine (after warmup)
    warmup_ratio: float = 0.1  # fraction of the steps spent in linear warmup
    weight_decay: float = 0.0  # AdamW weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    max_len: int = 256  # prompt + response tokens
    max_prompt_len: int = 128  # prompts longer than this keep their last tokens (only when the pair is too long)
    eval_every: int = 0  # steps between held-out evaluations (0 = about 5 per run)
    ckpt_every: int = 0  # steps between checkpoints in ckpt/ for a resume (0 = about 10 per run)
    keep_ckpts: int = 2  # newest checkpoints kept (0 = all)
    eval_batch_size: int = 32  # pairs per forward pass when scoring (reference and held-out)
    ref_cache: str = ""  # an earlier ref_logps.safetensors to reuse if its hashes match
    loss_chunk_size: int = DEFAULT_CHUNK  # output head + log-probs over chunks of this many tokens (0 = full logits)

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.beta <= 0 or self.lr <= 0:
            raise ValueError("beta and lr must be > 0")
        if self.ckpt_every < 0 or self.keep_ckpts < 0:
            raise ValueError("ckpt_every and keep_ckpts must be >= 0")
        check_pair_config(self)


# ----------------------------------------------------------------------------------------------------------------------
# the loss (pure tensors)


def dpo_loss(
    pol_chosen: torch.Tensor,
    pol_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    *,
    len_chosen: torch.Tensor | None = None,
    len_rejected: torch.Tensor | None = None,
    length_normalize: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean DPO loss over pairs of summed response log-probs [B]; stats hold per-pair implicit rewards (detached)."""
    lr_c = pol_chosen - ref_chosen
    lr_r = pol_rejected - ref_rejected
    if length_normalize:
        if len_chosen is None or len_rejected is None:
            raise ValueError("length_normalize needs len_chosen and len_rejected")
        lr_c = lr_c / len_chosen.clamp(min=1).to(lr_c.dtype)
        lr_r = lr_r / len_rejected.clamp(min=1).to(lr_r.dtype)
    loss = -F.logsigmoid(beta * (lr_c - lr_r)).mean()
    r_c, r_r = (beta * lr_c).detach(), (beta * lr_r).detach()
    return loss, {"reward_chosen": r_c, "reward_rejected": r_r, "margin": r_c - r_r, "correct": (r_c > r_r).float()}


# ----------------------------------------------------------------------------------------------------------------------
# scoring


@torch.no_grad()
def score_pairs(model, encoded, batch_size: int, device) -> dict[str, torch.Tensor]:
    """Summed log-probs and lengths of every pair's chosen and rejected response -> tensors [N] on CPU."""
    was_training = model.training
    model.eval()
    out = {k: [] for k in ("chosen", "rejected", "chosen_len", "rejected_len")}
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        for side in ("chosen", "rejected"):
            ids, mask = pad_batch([e.prompt for e in chunk], [getattr(e, side) for e in chunk])
            with autocast(device):
                lp, n = sequence_logps(model, ids.to(device), mask.to(device))
            out[side].append(lp.float().cpu())
            out[f"{side}_len"].append(n.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


def reference_logps(
    ref_model, encoded, batch_size: int, device, cache: Path, model_sha: str, extra: Path | None = None, log=None
):
    """Reference log-probs for `encoded`, from `cache` (or `extra`) when its data and model hashes match, else
    computed once and written to `cache`. Returns (tensors, 'hit'|'miss')."""
    want = {"data_sha256": data_hash(encoded), "model_sha256": model_sha}
    for cand in (cache, extra):
        if cand and Path(cand).is_file():
            with safe_open(str(cand), "pt") as f:
                meta = f.metadata() or {}
                if all(meta.get(k) == v for k, v in want.items()):
                    if log:
                        log.info("reference log-probs reused from %s", cand)
                    return {k: f.get_tensor(k) for k in f.keys()}, "hit"  # noqa: SIM118 - safe_open has no items()
    ref = score_pairs(ref_model, encoded, batch_size, device)
    save_tensors(ref, cache, want)
    return ref, "miss"


def implicit_rewards(pol: dict, ref: dict, beta: float, length_normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lc, lr = pol["chosen"] - ref["chosen"], pol["rejected"] - ref["rejected"]
    if length_normalize:
        lc, lr = lc / ref["chosen_len"].clamp(min=1), lr / ref["rejected_len"].clamp(min=1)
    return beta * lc, beta * lr


# ----------------------------------------------------------------------------------------------------------------------
# stage protocol


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    return init_inputs(SPEC, cfg.init, ctx, data=cfg.data)


def plan(cfg: Config, ctx) -> list[str]:
    what = f"{cfg.n_train} pairs, {length_text(cfg)}, {cfg.n_heldout} held out"
    return [f"DPO ({cfg.loss}, beta {cfg.beta:g}) on {cfg.data}: {what}"]


@dataclass
class Reference:
    """The frozen starting model's log-probs of the train and held-out pairs, and how they were obtained."""

    train: dict[str, torch.Tensor]
    heldout: dict[str, torch.Tensor]
    cache: str  # "hit" | "miss"
    seconds: float


def reference(cfg: Config, ctx, ref_model, init_dir: Path, data: EncodedSplit) -> Reference:
    weights = init_dir / "model.safetensors"
    model_sha = sha256_file(weights) if weights.is_file() else "unknown"
    t0 = time.time()
    ref, state = reference_logps(
        ref_model,
        data.train + data.heldout,
        cfg.eval_batch_size,
        ctx.device,
        Path(ctx.out_dir) / "ref_logps.safetensors",
        model_sha,
        Path(cfg.ref_cache) if cfg.ref_cache else None,
        ctx.log,
    )
    n = len(data.train)
    return Reference({k: v[:n] for k, v in ref.items()}, {k: v[n:] for k, v in ref.items()}, state, time.time() - t0)


def own_margin(logps: dict, norm: bool) -> torch.Tensor:
    """A model's own preference for the chosen response, per pair: log p(chosen) - log p(rejected), both per token
    when `norm` (the length-normalised loss) -- the quantity DPO's loss pushes up, without the reference."""
    c = logps["chosen"] / (logps["chosen_len"].clamp(min=1) if norm else 1)
    r = logps["rejected"] / (logps["rejected_len"].clamp(min=1) if norm else 1)
    return c - r


def start_accuracy(ref_ho: dict, norm: bool) -> float:
    """How often the starting model already gives the chosen response the higher (per-token, if normalised) log-prob."""
    return float((own_margin(ref_ho, norm) > 0).float().mean())


def evaluate(cfg: Config, policy, held, ref_ho: dict, device) -> dict:
    """Held-out preference accuracy and mean margin of the policy's implicit rewards; `own_margin` per pair (the
    policy's own log-prob preference for the chosen side, see `own_margin`)."""
    pol = score_pairs(policy, held, cfg.eval_batch_size, device)
    rc, rr = implicit_rewards(pol, ref_ho, cfg.beta, cfg.loss == "length_normalized")
    correct = rc > rr
    own = own_margin(pol, cfg.loss == "length_normalized")
    return {
        "acc": float(correct.float().mean()),
        "margin": float((rc - rr).mean()),
        "correct": correct.tolist(),
        "own_margin": own.tolist(),
    }


def dpo_effects(cfg: Config, ref_ho: dict, final: dict) -> tuple[dict, dict]:
    """What DPO did to its own objective on held-out pairs, start (the reference) vs the trained policy: the share of
    pairs whose chosen side the model itself prefers (per pair right/wrong, McNemar) and the mean log-prob margin
    (paired bootstrap). Per token when the loss is length-normalised."""
    norm = cfg.loss == "length_normalized"
    before, after = own_margin(ref_ho, norm).tolist(), final["own_margin"]
    unit = " per-token" if norm else ""
    pref = effect(
        "heldout_chosen_preference",
        [float(m > 0) for m in before],
        [float(m > 0) for m in after],
        binary=True,
        label=f"held-out chosen-preference (pairs where the model's own{unit} log-probs rank the chosen answer first)",
    )
    margin = effect(
        "heldout_logp_margin",
        before,
        after,
        binary=False,
        label=f"mean held-out{unit} log-prob margin, chosen − rejected",
    )
    return pref, margin


def train_step(cfg: Config, policy, opt, data: EncodedSplit, ref_tr: dict, idx: list[int], lr: float, device) -> dict:
    """One optimizer step on the pairs `idx` (micro-batches accumulate); returns its metrics row (without step)."""
    micro = cfg.micro_batch_size or cfg.batch_size
    stats = {k: [] for k in ("correct", "margin", "reward_chosen", "reward_rejected")}
    loss_sum = 0.0
    for k in range(0, len(idx), micro):
        chunk = idx[k : k + micro]
        pol = {}
        for side in ("chosen", "rejected"):  # separate forward passes
            ids, mask = pad_batch([data.train[i].prompt for i in chunk], [getattr(data.train[i], side) for i in chunk])
            with autocast(device):
                pol[side], _ = sequence_logps(policy, ids.to(device), mask.to(device), cfg.loss_chunk_size)
        r = {key: v[chunk].to(device) for key, v in ref_tr.items()}
        loss, st = dpo_loss(
            pol["chosen"].float(),
            pol["rejected"].float(),
            r["chosen"],
            r["rejected"],
            cfg.beta,
            len_chosen=r["chosen_len"],
            len_rejected=r["rejected_len"],
            length_normalize=cfg.loss == "length_normalized",
        )
        (loss * len(chunk) / len(idx)).backward()
        loss_sum += float(loss.detach()) * len(chunk) / len(idx)
        for key in stats:
            stats[key].append(st[key].cpu())
    gnorm = optimizer_step(policy, opt, lr, cfg.grad_clip)
    st = {k: float(torch.cat(v).mean()) for k, v in stats.items()}
    rec = {"loss": loss_sum, "reward_acc": st["correct"], "margin": st["margin"]}
    rec.update(reward_chosen=st["reward_chosen"], reward_rejected=st["reward_rejected"], lr=lr, grad_norm=gnorm)
    return rec


def run(cfg: Config, ctx):
    device, out = ctx.device, Path(ctx.out_dir)
    init_dir, policy, tok = load_start(SPEC, cfg.init, ctx, "dpo.init")
    ref_model = frozen_copy(init_dir, device)
    data = encode_split(cfg, ctx.seed, tok, policy.cfg.max_seq_len)
    write_jsonl(out / "quarantine.jsonl", data.quarantined)
    ref = reference(cfg, ctx, ref_model, init_dir, data)
    del ref_model
    init_logp_acc = start_accuracy(ref.heldout, cfg.loss == "length_normalized")

    sched = LoopSchedule.from_epochs(cfg, len(data.train), evals=5)
    opt = build_optimizer(policy, cfg, fused_cpu=False)
    batches = Shuffled(len(data.train), torch.Generator().manual_seed(ctx.seed))
    policy.train()
    traj = trajectory_key(cfg, ctx.seed, data=data_hash(data.train + data.heldout))
    ckpts = Checkpoints(ctx, sched.total, cfg.ckpt_every, cfg.keep_ckpts, traj)
    resumed = ckpts.resume_loop(policy, opt, batches) or {}
    first = resumed.get("step", 0)
    t0 = time.time() - resumed.get("elapsed_s", 0.0)
    with StepLog(ctx, sched.total, ("loss", "reward_acc", "heldout_acc"), first, first if resumed else None) as log:
        log.first = resumed.get("first_row", {})
        for step in range(first, sched.total):
            idx = batches.take(cfg.batch_size)
            rec = {"step": step + 1, **train_step(cfg, policy, opt, data, ref.train, idx, sched.lr_at(step), device)}
            rec["elapsed_s"] = round(time.time() - t0, 3)
            if sched.evaluates(step):
                ev = evaluate(cfg, policy, data.heldout, ref.heldout, device)
                rec.update(heldout_acc=ev["acc"], heldout_margin=ev["margin"])
                ctx.log.info(
                    "dpo step %d/%d loss %.4f acc %.3f held-out acc %.3f",
                    step + 1,
                    sched.total,
                    rec["loss"],
                    rec["reward_acc"],
                    ev["acc"],
                )
            log.step(rec)
            if ckpts.due(step + 1):
                ckpts.save_loop(step + 1, policy, opt, batches, {"first_row": log.first, "elapsed_s": time.time() - t0})
            if _STEP_HOOK is not None:
                _STEP_HOOK(step + 1, policy)
    ckpts.finish()

    final = evaluate(cfg, policy, data.heldout, ref.heldout, device)
    pref, margin = dpo_effects(cfg, ref.heldout, final)
    warn_if_worse(ctx, "DPO", pref)
    heldout = write_heldout(
        out / "heldout.json",
        final["correct"],
        init_logp_accuracy=init_logp_acc,
        effect=pref,
        per_pair_own_margin_before=own_margin(ref.heldout, cfg.loss == "length_normalized").tolist(),
        per_pair_own_margin_after=final["own_margin"],
    )
    policy.eval()
    save_model_dir(policy, tok, out / "model")
    ctx.log.info("dpo %s; implicit-reward accuracy %.3f", effect_line(pref), heldout["heldout_accuracy"])
    return StageResult(
        outputs=trained_outputs(out, "heldout.json", "ref_logps.safetensors"),
        counters={**data.counters, "steps": sched.total, "ref_cache": ref.cache},
        metrics={
            **heldout,
            **effect_metrics(pref, margin),
            "heldout_chosen_preference": pref["after"],
            "init_chosen_preference": pref["before"],
            "heldout_margin": final["margin"],
            "init_logp_accuracy": init_logp_acc,
            "first_loss": log.first.get("loss"),
            "final_loss": log.last.get("loss"),
            "final_train_reward_acc": log.last.get("reward_acc"),
            "ref_seconds": round(ref.seconds, 3),
        },
        extra={"init_model": str(init_dir), "loss": cfg.loss, "beta": cfg.beta},
        summary=[
            effect_line(pref),
            effect_line(margin),
            *heldout_summary(ctx, "DPO", heldout, len(data.heldout), what="implicit-reward accuracy", vs_chance=False),
        ],
    )


SPEC = StageSpec(
    name="dpo",
    config=Config,
    run=run,
    help="direct preference optimisation (sigmoid or length-normalised)",
    inputs=inputs,
    plan=plan,
    produces="chat_model",
    starts_from=("interpolate", "sft"),
    headline=("heldout_chosen_preference",),
    report=DPO_SECTION,
    checks=start_checks("dpo", "init"),
)
