"""RL with verifiable rewards (the `rl` stage): GRPO and its DAPO / Dr. GRPO variants on GSM8K-format problems.

One step:
  1. take P prompts, sample G completions each with the KV-cache generator (`ledgerlm.model.generate`);
  2. reward = 1 if the number after `####` equals the reference (the same extractor evaluation uses,
     `ledgerlm.tasks.gsm8k`), plus an optional small bonus for a well-formed `#### N` line;
  3. advantages within each group: r - mean ("mean", Dr. GRPO) or (r - mean) / std ("mean_std", GRPO);
     groups whose G rewards are all equal carry no signal and can be filtered out of the loss;
  4. completions cut off by max_new_tokens can be masked out (their reward says nothing about the answer);
  5. clipped surrogate on completion tokens (clip_low / clip_high, DAPO's "clip higher"), optional k3 KL to the
     frozen reference with weight beta, aggregated per sequence ("grpo"), per token ("dapo") or with a constant
     normaliser ("drgrpo"); `ppo_epochs` x `minibatches` optimiser steps per batch of samples.

Why a small model can lose accuracy under RLVR, and what the logs show: if pass@G at the start is ~0 every group is
zero-variance and there is no gradient; if most completions are truncated, the reward mostly punishes length and the
mean-per-sequence loss biases towards long wrong answers. Each step logs reward mean, zero-std fraction, clipped
fraction, mean length, truncation rate, pass@1 / pass@G and KL; the stage reports held-out greedy exact match before
and after, with a paired (McNemar) test and a CI for the difference.

Reads `RUN/<init>/model/` (default: the latest of dpo / interpolate / sft); writes `RUN/rl/model/`,
`RUN/rl/metrics.jsonl` (per step), `RUN/rl/heldout.json` (per-problem before/after) and `RUN/rl/samples.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch

from ledgerlm.components.optimizer import build_optimizer
from ledgerlm.components.stats import effect
from ledgerlm.io import atomic_write_json, write_jsonl
from ledgerlm.ledger import WARN_P
from ledgerlm.post.common import (
    Checkpoints,
    LoopSchedule,
    Shuffled,
    StepLog,
    frozen_copy,
    init_inputs,
    load_start,
    random_state,
    save_model_dir,
    set_random_state,
    trained_outputs,
    trajectory_key,
)
from ledgerlm.post.grpo import (
    Config,
    Rollout,
    Sampler,
    Setup,
    greedy_exact_match,
    group_advantages,
    keep_mask,
    load_problems,
    paired_exact_match,
    pass_at_k,
    sampled_pass_at_k,
    update,
    verifiable_reward,
)
from ledgerlm.post.rl_report import SECTION as REPORT
from ledgerlm.post.start_checks import start_checks
from ledgerlm.stage import StageResult, StageSpec

# ----------------------------------------------------------------------------------------------------------------------
# stage protocol


def inputs(cfg: Config, ctx) -> dict[str, Path]:
    return init_inputs(SPEC, cfg.init, ctx, task=cfg.task)


def plan(cfg: Config, ctx) -> list[str]:
    return [
        f"RLVR ({cfg.loss_agg}, adv {cfg.advantage}, kl {cfg.kl_beta:g}) on {cfg.task}: {cfg.steps} steps x "
        f"{cfg.prompts_per_step} prompts x {cfg.group_size} samples, eval on {cfg.n_eval} held-out problems"
    ]


# ----------------------------------------------------------------------------------------------------------------------
# the loop: setup, rollout, update, evaluate before and after


def setup(cfg: Config, ctx) -> Setup:
    init_dir, policy, tok = load_start(SPEC, cfg.init, ctx, "rl.init")
    ref = frozen_copy(init_dir, ctx.device) if cfg.kl_beta > 0 or cfg.log_kl else None
    train, held, counters = load_problems(cfg, ctx.seed)
    write_jsonl(Path(ctx.out_dir) / "quarantine.jsonl", counters.pop("quarantine", []))
    sampler = Sampler(tok, cfg.system_prompt, cfg.max_new_tokens)
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
    return Setup(init_dir, policy, ref, tok, train, held, counters, sampler, gen, random.Random(f"rl|{ctx.seed}"))


def rollout(cfg: Config, s: Setup, items: list[dict]) -> Rollout:
    G, P = cfg.group_size, len(items)
    prompts = [s.sampler.prompt(it["question"]) for it in items for _ in range(G)]
    if cfg.greedy_in_group:
        # member 0 of each group is the greedy completion (what held-out exact match scores), the other G - 1 are
        # sampled: the group's advantages then say whether the greedy answer beats the samples, or loses to them
        sampled = [p for i, p in enumerate(prompts) if i % G]
        c_s, t_s, tr_s = s.sampler.sample(s.policy, sampled, cfg.temperature, cfg.top_k, cfg.top_p, s.gen)
        c_g, t_g, tr_g = s.sampler.sample(s.policy, prompts[::G], 0.0, 0, 1.0, None)
        comps, texts, trunc = [], [], []
        for j in range(P):
            k = slice(j * (G - 1), (j + 1) * (G - 1))
            comps += [c_g[j], *c_s[k]]
            texts += [t_g[j], *t_s[k]]
            trunc += [tr_g[j], *tr_s[k]]
    else:
        comps, texts, trunc = s.sampler.sample(s.policy, prompts, cfg.temperature, cfg.top_k, cfg.top_p, s.gen)
    scored = [
        verifiable_reward(t, items[i // G]["answer"], cfg.extract, cfg.format_reward) for i, t in enumerate(texts)
    ]
    rewards = torch.tensor([r for r, _ in scored], dtype=torch.float32).view(P, G)
    correct = torch.tensor([c for _, c in scored], dtype=torch.float32).view(P, G)
    adv, zero_std = group_advantages(rewards, cfg.advantage)
    keep = keep_mask(zero_std, trunc, G, cfg.filter_zero_std, cfg.mask_truncated)
    scorable = [c if c else [s.sampler.im_end] for c in comps]
    return Rollout(items, prompts, comps, scorable, texts, trunc, scored, correct, rewards, adv, zero_std, keep)


def rollout_row(ro: Rollout) -> dict:
    """What a step's samples say: reward, accuracy, zero-variance groups, truncation, length, pass@1 / pass@G."""
    P, G = ro.correct.shape
    return {
        "reward_mean": float(ro.rewards.mean()),
        "accuracy": float(ro.correct.mean()),
        "zero_std_frac": float(ro.zero_std.float().mean()),
        "truncation_rate": sum(ro.trunc) / len(ro.trunc),
        "mean_length": sum(len(c) for c in ro.comps) / len(ro.comps),
        "pass@1": sum(pass_at_k(G, int(c), 1) for c in ro.correct.sum(1)) / P,
        f"pass@{G}": sum(pass_at_k(G, int(c), G) for c in ro.correct.sum(1)) / P,
        "kept_frac": float(ro.keep.mean()),
    }


def select_groups(ros: list[Rollout], G: int, groups: list[tuple[int, int]]) -> Rollout:
    """One Rollout made of the chosen groups (rollout index, group index) of several rollouts, in that order."""
    rows = [(ros[r], j) for r, j in groups]

    def per_comp(name):
        return [x for ro, j in rows for x in getattr(ro, name)[j * G : (j + 1) * G]]

    def per_group(name):
        return torch.stack([getattr(ro, name)[j] for ro, j in rows])

    return Rollout(
        [ro.items[j] for ro, j in rows],
        per_comp("prompts"),
        per_comp("comps"),
        per_comp("scorable"),
        per_comp("texts"),
        per_comp("trunc"),
        per_comp("scored"),
        per_group("correct"),
        per_group("rewards"),
        per_group("adv"),
        per_group("zero_std"),
        torch.cat([ro.keep[j * G : (j + 1) * G] for ro, j in rows]),
    )


def dynamic_rollout(cfg: Config, s: Setup, problems: Shuffled) -> tuple[Rollout, Rollout]:
    """DAPO dynamic sampling: draw batches of P prompts (at most `dynamic_sampling` of them) and keep the groups whose
    samples disagree (0 < pass < 1), until P are kept. -> (the kept groups, every sampled group for the logs). If
    fewer than P informative groups turn up, the batch is what there is (or every group, if none did: nothing to
    learn, the step is skipped as without the filter)."""
    P, G = cfg.prompts_per_step, cfg.group_size
    ros, kept, every = [], [], []
    for r in range(max(1, cfg.dynamic_sampling)):
        ros.append(rollout(cfg, s, [s.train[i] for i in problems.take(P)]))
        every += [(r, j) for j in range(P)]
        kept += [(r, j) for j in range(P) if not bool(ros[r].zero_std[j])]
        if len(kept) >= P:
            break
    return select_groups(ros, G, kept[:P] or every[:P]), select_groups(ros, G, every)


def evaluate(cfg: Config, ctx, s: Setup, when: str) -> tuple[list[bool], float, list[str]]:
    """Greedy exact match on the held-out problems (see greedy_exact_match), with its progress shown."""
    return greedy_exact_match(
        s.policy,
        s.sampler,
        s.held,
        cfg,
        ctx.device,
        lambda it: ctx.progress(it, desc=f"held-out EM {when}", unit="batch"),
    )


def problems_fingerprint(s: Setup) -> str:
    """sha256 of the training and held-out problems (a checkpoint resumes only onto the same ones)."""
    blob = json.dumps([s.train, s.held], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def run(cfg: Config, ctx):
    s = setup(cfg, ctx)
    opt = build_optimizer(s.policy, cfg, fused_cpu=False)
    sched = LoopSchedule(cfg.steps, cfg.lr, int(cfg.warmup_ratio * cfg.steps), cfg.schedule)
    problems = Shuffled(len(s.train), s.rng)
    # eval_batch_size stays in the key: it sets how the start's pass@k batches draw from the sampling generator
    traj = trajectory_key(cfg, ctx.seed, ("ckpt_every", "keep_ckpts", "log_samples"), problems=problems_fingerprint(s))
    ckpts = Checkpoints(ctx, cfg.steps, cfg.ckpt_every, cfg.keep_ckpts, traj)
    resumed = ckpts.resume(s.policy, opt)
    if resumed:
        st, extra = resumed
        s.gen.set_state(extra["rl.gen"])
        set_random_state(s.rng, st["rl_rng"])
        problems.queue, problems.epoch = extra["rl.queue"].tolist(), st["epoch"]
    else:
        st = start_state(cfg, ctx, s)
    t0 = time.time() - st["elapsed_s"]
    first = st["step"]
    with StepLog(
        ctx, cfg.steps, ("reward_mean", "accuracy", "zero_std_frac"), first, first if resumed else None
    ) as log:
        if not resumed:
            row0 = {
                "step": 0,
                "heldout_em": sum(st["before"]) / len(s.held),
                "heldout_truncation": st["before_truncation"],
            }
            log.write({**row0, **{f"start_{k}": v for k, v in st["start_sampled"].items()}})
        for step in range(first, cfg.steps):
            rec = train_step(cfg, ctx, s, opt, problems, sched.lr_at(step), st)
            rec["step"] = step + 1
            log.step(rec)
            st["step"] = step + 1
            if ckpts.due(step + 1):
                state = {**st, "elapsed_s": time.time() - t0, "rl_rng": random_state(s.rng), "epoch": problems.epoch}
                extra = {"rl.gen": s.gen.get_state(), "rl.queue": torch.tensor(problems.queue, dtype=torch.long)}
                ckpts.save(step + 1, s.policy, opt, state, extra)
            if _STEP_HOOK is not None:
                _STEP_HOOK(step + 1, s.policy)

    return finish(cfg, ctx, s, st, ckpts, t0, first)


def start_state(cfg: Config, ctx, s: Setup) -> dict:
    """The run's state at step 0: the start model's held-out greedy answers and its sampled pass@k (the `before`
    of the stage's effects), and empty totals."""
    before, before_trunc, before_texts = evaluate(cfg, ctx, s, "before")
    start, start_pp = (
        sampled_pass_at_k(s.policy, s.sampler, s.held[: cfg.passk_problems], cfg, s.gen)
        if cfg.passk_problems
        else ({}, [])
    )
    totals = {"completions": 0, "truncated": 0, "zero_std_groups": 0, "groups": 0, "skipped_steps": 0}
    st = {
        "step": 0,
        "before": before,
        "before_truncation": before_trunc,
        "before_texts": before_texts,
        "start_sampled": start,
        "start_pass1_per_problem": start_pp,
        "totals": totals,
        "samples": [],
        "elapsed_s": 0.0,
    }
    ctx.log.info(
        "rl start: held-out EM %.3f (greedy truncation %.2f), sampled %s",
        sum(before) / len(s.held),
        before_trunc,
        start,
    )
    return st


def finish(cfg: Config, ctx, s: Setup, st: dict, ckpts: Checkpoints, t0: float, first: int) -> StageResult:
    """After the last step: the trained model's held-out greedy answers and sampled pass@1 against the start's, the
    paired tests, heldout.json and the model (then the checkpoints go)."""
    s.policy.eval()
    after, after_trunc, after_texts = evaluate(cfg, ctx, s, "after")
    end_pp = (
        sampled_pass_at_k(s.policy, s.sampler, s.held[: cfg.passk_problems], cfg, s.gen)[1]
        if cfg.passk_problems
        else []
    )
    before = st["before"]
    test = paired_exact_match(before, after)
    effects = [effect("heldout_greedy_em", before, after, binary=True)]
    if end_pp:
        effects.append(
            effect(f"heldout_sampled_pass@1_T{cfg.temperature:g}", st["start_pass1_per_problem"], end_pp, binary=False)
        )
    out = Path(ctx.out_dir)
    write_jsonl(out / "samples.jsonl", st["samples"])
    per_problem = [
        {"question": p["question"], "before": b, "after": a, "completion_before": tb, "completion_after": t}
        for p, b, a, tb, t in zip(s.held, before, after, st["before_texts"], after_texts)
    ]
    heldout = {
        **test,
        "truncation_before": st["before_truncation"],
        "truncation_after": after_trunc,
        "start_sampled": st["start_sampled"],
        "sampled_pass1_after": sum(end_pp) / len(end_pp) if end_pp else None,
        "effects": effects,
    }
    atomic_write_json(out / "heldout.json", {**heldout, "per_problem": per_problem})
    save_model_dir(s.policy, s.tok, out / "model")
    ckpts.finish()
    ctx.log.info(
        "rl held-out EM %.3f -> %.3f (diff %.3f, CI %s, McNemar p=%.3g)",
        test["before"],
        test["after"],
        test["diff"],
        test["ci95"],
        test["p_mcnemar"],
    )
    return result(cfg, ctx, s, heldout, st["totals"], time.time() - t0, first)


# test hook: called as _STEP_HOOK(step, policy) after each completed step (and its checkpoint, if one was due); the
# kill tests use it to stop a child process at a known step
_STEP_HOOK = None


def train_step(cfg: Config, ctx, s: Setup, opt, problems: Shuffled, lr: float, st: dict) -> dict:
    """One rollout and its update -> the metrics row (without step); the run's totals and samples grow in `st`."""
    ts = time.time()
    if cfg.dynamic_sampling:
        ro, seen = dynamic_rollout(cfg, s, problems)
    else:
        ro = seen = rollout(cfg, s, [s.train[i] for i in problems.take(cfg.prompts_per_step)])
    rec = rollout_row(seen)  # what was sampled (before dynamic sampling's filter)
    if cfg.dynamic_sampling:
        rec.update(sampled_groups=len(seen.items), kept_groups=int((~ro.zero_std).sum()))
    totals = st["totals"]
    totals["completions"] += len(seen.comps)
    totals["truncated"] += sum(seen.trunc)
    totals["zero_std_groups"] += int(seen.zero_std.sum())
    totals["groups"] += len(seen.items)
    if ro.keep.sum() == 0:  # every group uniform or truncated: nothing to learn from this batch
        totals["skipped_steps"] += 1
        rec.update(loss=0.0, clipped_frac=0.0, lr=lr, skipped=True)
    else:
        rec.update(update(cfg, s, opt, ro, lr, ctx.device))
    rec["step_s"] = round(time.time() - ts, 3)
    step = st["step"]
    st["samples"] += sample_rows(cfg, ro, step)
    ctx.log.info(
        "rl step %d/%d reward %.3f zero-std %.2f trunc %.2f len %.1f",
        step + 1,
        cfg.steps,
        rec["reward_mean"],
        rec["zero_std_frac"],
        rec["truncation_rate"],
        rec["mean_length"],
    )
    return rec


def sample_rows(cfg: Config, ro: Rollout, step: int) -> list[dict]:
    """The first `log_samples` completions of a step, for samples.jsonl."""
    G = cfg.group_size
    return [
        {
            "step": step + 1,
            "question": ro.items[i // G]["question"],
            "completion": ro.texts[i],
            "reward": ro.scored[i][0],
            "truncated": ro.trunc[i],
        }
        for i in range(min(cfg.log_samples, len(ro.texts)))
    ]


def result(cfg: Config, ctx, s: Setup, heldout: dict, totals: dict, seconds: float, resumed_from: int) -> StageResult:
    return StageResult(
        outputs=trained_outputs(ctx.out_dir, "heldout.json", "samples.jsonl"),
        counters={**s.counters, **totals, "steps": cfg.steps},
        metrics={
            "heldout_em_before": heldout["before"],
            "heldout_em_after": heldout["after"],
            "heldout_em_diff": heldout["diff"],
            "heldout_em_diff_ci95": heldout["ci95"],
            "heldout_p_mcnemar": heldout["p_mcnemar"],
            "heldout_n": heldout["n"],
            # the stage's effect on its own held-out problems: greedy exact match, start model vs trained model
            "effect": heldout["effects"][0],
            "effects": heldout["effects"],
            **{f"start_{k}": v for k, v in heldout["start_sampled"].items()},
            "zero_std_frac": totals["zero_std_groups"] / max(1, totals["groups"]),
            "truncation_rate": totals["truncated"] / max(1, totals["completions"]),
            "seconds": round(seconds, 3),
        },
        extra={"init_model": str(s.init_dir), "resumed_from_step": resumed_from},
        summary=rl_summary(ctx, heldout, totals, heldout["truncation_after"]),
    )


def rl_summary(ctx, test: dict, totals: dict, truncation: float) -> list[str]:
    """Before/after on the held-out problems with its paired test; warns when most groups gave no learning signal
    (every sample got the same reward) or the held-out change is not significant."""
    n, p = test["n"], test["p_mcnemar"]
    zero = totals["zero_std_groups"] / max(1, totals["groups"])
    lines = [
        f"held-out exact match {test['before']:.1%} → {test['after']:.1%} on {n} problems "
        f"(+{test['gained']} / -{test['lost']}, McNemar p = {p:.2g}); greedy truncation after {truncation:.0%}",
        f"{zero:.0%} of {totals['groups']} training groups had zero reward variance (no learning signal)",
    ]
    if zero > 0.5:
        ctx.warn(
            "zero_variance_groups",
            f"{zero:.0%} of {totals['groups']} groups gave every sample the same reward, so most steps had nothing "
            "to learn from: size the problems to what the model can sometimes solve, or raise group_size/temperature",
        )
    if not p < WARN_P:
        ctx.warn(
            "no_significant_change",
            f"held-out exact match {test['before']:.1%} → {test['after']:.1%} on {n} problems is not a significant "
            f"change (McNemar p = {p:.2g} >= {WARN_P})",
        )
    return lines


SPEC = StageSpec(
    name="rl",
    config=Config,
    run=run,
    help="RLVR / GRPO with verifiable rewards",
    inputs=inputs,
    plan=plan,
    produces="chat_model",
    starts_from=(
        "dpo",
        "interpolate",
        "sft",
    ),
    headline=("heldout_em_after",),
    report=REPORT,
    checks=start_checks("rl", "init"),
)
