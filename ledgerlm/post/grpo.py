"""GRPO's pieces for the `rl` stage (ledgerlm/post/rl.py): the loss math on tensors (group advantages, k3 KL,
the clipped surrogate and its aggregations), pass@k and the paired exact-match test, the verifiable reward, the
problems (built-in arith, a GSM8K-format JSONL or an HF dataset) and the sampling side (prompts, completions and
their token log-probs, greedy exact match and sampled pass@k on held-out problems), and the update on one
rollout (minibatches of micro-batches)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ledgerlm import hub
from ledgerlm.components.chat import render_prompt, special_ids
from ledgerlm.components.stats import mcnemar
from ledgerlm.device import autocast
from ledgerlm.io import open_text
from ledgerlm.model.generate import generate
from ledgerlm.post.common import optimizer_step
from ledgerlm.post.preference import pad_batch, token_logps
from ledgerlm.tasks import arith
from ledgerlm.tasks.gsm8k import extract_strict, is_correct

ADV_MODES = ("mean", "mean_std")
AGG_MODES = ("grpo", "dapo", "drgrpo")


@dataclass
class Config:
    init: str = "auto"  # stage name or model dir; "auto" = the latest of dpo, interpolate, sft that has a model
    task: str = "arith"  # arith[:max_ops=N,max_value=N] (built-in) | GSM8K-format JSONL | HF dataset (openai/gsm8k)
    train_task: str = ""  # arith[:...] for the training prompts only (a curriculum); "" = task. Held-out stays task's
    split: str = "train"  # HF split for the training prompts
    subset: str = "main"  # HF config (openai/gsm8k needs "main")
    n_train: int = 2000  # size of the prompt pool (0 = whole source)
    n_eval: int = 200  # held-out problems for greedy exact match before/after
    system_prompt: str = ""  # system message before each problem (empty = none)
    steps: int = 20  # training steps: a batch of samples each, then ppo_epochs x minibatches optimizer updates
    prompts_per_step: int = 8  # P
    group_size: int = 8  # G
    max_new_tokens: int = 96  # completion length limit while sampling (longer ones are truncated)
    temperature: float = 1.0  # sampling temperature (> 0: G different completions)
    top_k: int = 0  # sample from the k most likely tokens (0 = all)
    top_p: float = 1.0  # nucleus sampling threshold (1 = off)
    lr: float = 1e-5  # peak learning rate
    schedule: str = "constant"  # constant | linear | cosine (after warmup)
    warmup_ratio: float = 0.0  # fraction of the steps spent in linear warmup
    weight_decay: float = 0.0  # AdamW weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = no clipping)
    advantage: str = "mean_std"  # mean | mean_std
    loss_agg: str = "dapo"  # grpo | dapo | drgrpo
    clip_low: float = 0.2  # the ratio is clipped below at 1 - clip_low
    clip_high: float = 0.28  # DAPO "clip higher": room for low-probability tokens to grow
    kl_beta: float = 0.0  # weight of the k3 KL to the reference (0 = no KL term)
    log_kl: bool = True  # keep the reference to log KL even when kl_beta == 0 (one extra forward per step)
    ppo_epochs: int = 1  # passes over each step's samples
    minibatches: int = 1  # optimizer steps per pass over each step's samples
    micro_batch_size: int = 0  # sequences per forward/backward pass (0 = a whole minibatch); gradients accumulate
    filter_zero_std: bool = True  # leave groups whose samples all got the same reward out of the loss
    mask_truncated: bool = True  # leave completions cut off by max_new_tokens out of the loss (DAPO overlong filtering)
    extract: str = "strict"  # strict (#### N) | flexible (last number)
    format_reward: float = 0.0  # bonus for a well-formed "#### N" line (added to correctness)
    eval_max_new_tokens: int = 0  # 0 = max_new_tokens
    eval_batch_size: int = 64  # problems per batch in the held-out greedy evaluation
    passk_problems: int = 64  # held-out problems sampled G times at the start to estimate pass@1 / pass@G
    log_samples: int = 2  # completions per step written to samples.jsonl
    greedy_in_group: bool = False  # one member of each group is the greedy completion (the evaluation's rule)
    dynamic_sampling: int = 0  # DAPO dynamic sampling: up to this many batches of P prompts per step, keeping only
    # groups with 0 < pass < 1 until P are kept (0 = off: one batch, zero-variance groups as filter_zero_std says)
    ckpt_every: int = 0  # steps between checkpoints in rl/ckpt/ for a resume (0 = about 10 per run)
    keep_ckpts: int = 2  # newest checkpoints kept (0 = all)

    def validate(self) -> None:
        if self.task.split(":")[0] == "arith":  # a bad option, or too few distinct problems for either split
            opts = arith.task_options(self.task)
            arith.generate(self.n_train or 2000, "train", 0, **opts)
            arith.generate(self.n_eval, "heldout", 0, **opts)
        if self.train_task:
            if self.task.split(":")[0] != "arith" or self.train_task.split(":")[0] != "arith":
                raise ValueError("train_task is for the built-in arith task only (arith[:max_ops=N,max_value=N])")
            arith.generate(self.n_train or 2000, "train", 0, **arith.task_options(self.train_task))
        if self.advantage not in ADV_MODES:
            raise ValueError(f"advantage must be one of {ADV_MODES}, got {self.advantage!r}")
        if self.loss_agg not in AGG_MODES:
            raise ValueError(f"loss_agg must be one of {AGG_MODES}, got {self.loss_agg!r}")
        if self.extract not in ("strict", "flexible"):
            raise ValueError(f"extract must be strict or flexible, got {self.extract!r}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2 (advantages are relative within a group)")
        if self.steps < 0 or self.prompts_per_step < 1 or self.ppo_epochs < 1 or self.minibatches < 1:
            raise ValueError("steps >= 0, prompts_per_step, ppo_epochs and minibatches >= 1")
        if (self.prompts_per_step * self.group_size) % self.minibatches:
            raise ValueError("prompts_per_step * group_size must be divisible by minibatches")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError("need 0 <= clip_low < 1 and clip_high >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 for sampling G different completions")
        if self.lr <= 0 or self.kl_beta < 0:
            raise ValueError("lr must be > 0 and kl_beta >= 0")
        if self.ckpt_every < 0 or self.keep_ckpts < 0:
            raise ValueError("ckpt_every and keep_ckpts must be >= 0")
        if self.dynamic_sampling < 0:
            raise ValueError("dynamic_sampling must be >= 0 (0 = off)")


# ----------------------------------------------------------------------------------------------------------------------
# the math (pure tensors)


def group_advantages(
    rewards: torch.Tensor, mode: str = "mean_std", eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards [P, G] -> (advantages [P, G], zero_std [P] bool).

    "mean": r - mean(group) (Dr. GRPO: dividing by std up-weights groups that are nearly all right or all wrong);
    "mean_std": (r - mean) / (std + eps) (GRPO). Population std, as a group is the whole sample."""
    if mode not in ADV_MODES:
        raise ValueError(f"advantage mode must be one of {ADV_MODES}, got {mode!r}")
    mean = rewards.mean(dim=1, keepdim=True)
    adv = rewards - mean
    if mode == "mean_std":
        adv = adv / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
    zero_std = (rewards.max(dim=1).values - rewards.min(dim=1).values) == 0
    return adv, zero_std


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) on samples from pi: exp(d) - d - 1, d = ref - logp (always >= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def aggregate(per_tok: torch.Tensor, mask: torch.Tensor, agg: str, max_len: int | None = None) -> torch.Tensor:
    """Reduce per-token losses [N, T] over the tokens where mask == 1.

    grpo:   mean over each sequence's tokens, then over sequences with any token (long answers get less weight
            per token: the length bias Dr. GRPO points out);
    dapo:   sum / number of tokens in the batch (every token weighs the same);
    drgrpo: sum / (N * max_len), a constant, so neither length nor the number of masked tokens rescales the loss."""
    mask = mask.to(per_tok.dtype)
    if agg == "grpo":
        lens = mask.sum(dim=1)
        keep = lens > 0
        if not keep.any():
            return (per_tok * mask).sum()  # 0 with a graph attached
        return ((per_tok * mask).sum(dim=1)[keep] / lens[keep]).mean()
    if agg == "dapo":
        return (per_tok * mask).sum() / mask.sum().clamp(min=1)
    if agg == "drgrpo":
        return (per_tok * mask).sum() / (per_tok.shape[0] * (max_len or per_tok.shape[1]))
    raise ValueError(f"aggregation must be one of {AGG_MODES}, got {agg!r}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    agg: str = "dapo",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (+ beta * k3 KL). logp, old_logp, ref_logp, mask: [N, T] completion-token aligned;
    advantages [N]. Returns (loss, {"clipped_frac", "kl"?})."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    per_tok = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv)
    kl = kl_k3(logp, ref_logp) if ref_logp is not None else None
    if kl is not None and kl_beta:
        per_tok = per_tok + kl_beta * kl
    loss = aggregate(per_tok, mask, agg, max_len)
    m = mask.to(logp.dtype)
    n = m.sum().clamp(min=1)
    # clipped = the clamp, not the ratio, decided the token's term (its gradient is zero)
    clipped = ((ratio < 1 - clip_low) & (adv < 0)) | ((ratio > 1 + clip_high) & (adv > 0))
    stats = {"clipped_frac": float((clipped.to(m.dtype) * m).sum() / n)}
    if kl is not None:
        stats["kl"] = float((kl.detach() * m).sum() / n)
    return loss, stats


def keep_mask(
    zero_std: torch.Tensor, truncated: list[bool], group_size: int, filter_zero_std: bool, mask_truncated: bool
):
    """[P*G] 0/1: which completions enter the loss. Zero-variance groups have no signal (and under token-level
    aggregation would only dilute the others); truncated completions were cut off before their answer, so their
    zero reward says nothing about it (DAPO's overlong filtering)."""
    keep = torch.ones(len(truncated))
    if filter_zero_std:
        keep *= (~zero_std).repeat_interleave(group_size).float()
    if mask_truncated:
        keep *= 1.0 - torch.tensor(truncated, dtype=torch.float32)
    return keep


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def paired_exact_match(before: list[bool], after: list[bool]) -> dict[str, float]:
    """Same problems scored before and after: exact McNemar test (two-sided binomial on the discordant pairs) and a
    95% CI (normal approximation) of the mean paired difference."""
    if len(before) != len(after) or not before:
        raise ValueError("paired test needs two equally long, non-empty lists")
    n = len(before)
    test = mcnemar(before, after)
    gained, lost = test["b_only"], test["a_only"]
    d = [int(a) - int(b) for b, a in zip(before, after)]
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, n - 1))
    half = 1.96 * sd / math.sqrt(n)
    return {
        "n": n,
        "before": sum(before) / n,
        "after": sum(after) / n,
        "diff": mean,
        "ci95": [mean - half, mean + half],
        "gained": gained,
        "lost": lost,
        "p_mcnemar": test["p_value"],
    }


def verifiable_reward(text: str, gold: str, extract: str = "strict", format_bonus: float = 0.0) -> tuple[float, bool]:
    """(reward, correct) for one completion: correctness by the evaluation's GSM8K extractor (+ a format bonus)."""
    correct = is_correct(text, gold, extract)
    return float(correct) + (format_bonus if extract_strict(text) is not None else 0.0), correct


# ----------------------------------------------------------------------------------------------------------------------
# data


def load_problems(cfg: Config, seed: int) -> tuple[list[dict], list[dict], dict]:
    """(train pool, held-out problems, counters); each problem {"question", "answer"} in GSM8K format."""
    if cfg.task.split(":")[0] == "arith":  # "arith" or "arith:max_ops=1,max_value=10" (easier problems)
        opts = arith.task_options(cfg.task)
        tr_opts = arith.task_options(cfg.train_task) if cfg.train_task else opts
        tr = [p.record() for p in arith.generate(cfg.n_train or 2000, "train", seed, **tr_opts)]
        ho = [p.record() for p in arith.generate(cfg.n_eval, "heldout", seed, **opts)]
        return tr, ho, {"train": len(tr), "heldout": len(ho)}
    rows, counters, bad = [], {"rows": 0, "quarantined": 0}, []
    p = Path(cfg.task).expanduser()
    if p.is_file():
        with open_text(p) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    counters["rows"] += 1
                    try:
                        rows.append((f"{p}:{lineno}", json.loads(line)))
                    except json.JSONDecodeError as e:
                        bad.append({"where": f"{p}:{lineno}", "reason": f"invalid JSON ({e.msg})"})
    else:
        import datasets

        name = cfg.task.removeprefix("hf:")
        ds = datasets.load_dataset(hub.dataset(name), cfg.subset or None, split=cfg.split, **hub.cache_kwargs())
        for i, row in enumerate(ds):
            counters["rows"] += 1
            rows.append((f"hf:{name}#{i}", dict(row)))
    good = []
    for where, row in rows:
        q, a = (
            row.get("question") if isinstance(row, dict) else None,
            row.get("answer") if isinstance(row, dict) else None,
        )
        if not isinstance(q, str) or not q.strip():
            bad.append({"where": where, "reason": "field 'question': missing or empty"})
        elif not isinstance(a, str) or extract_strict(a) is None:
            bad.append({"where": where, "reason": "field 'answer': missing or has no '#### N' line"})
        else:
            good.append({"question": q, "answer": a})
    counters["quarantined"] = len(bad)
    # seeded held-out slice of the same file (GSM8K test is the evaluation stage's business)
    random.Random(f"rl-split|{seed}").shuffle(good)
    if len(good) <= cfg.n_eval:
        raise ValueError(f"{cfg.task}: {len(good)} usable problems, need more than n_eval={cfg.n_eval}")
    ho, tr = good[: cfg.n_eval], good[cfg.n_eval :]
    tr = tr[: cfg.n_train] if cfg.n_train else tr
    counters.update(train=len(tr), heldout=len(ho))
    counters["quarantine"] = bad
    return tr, ho, counters


# ----------------------------------------------------------------------------------------------------------------------
# sampling and scoring


class Sampler:
    def __init__(self, tok, system_prompt: str, max_new_tokens: int):
        self.tok = tok
        self.system = system_prompt
        self.max_new = max_new_tokens
        self.im_end = special_ids(tok)[1]

    def prompt(self, question: str) -> list[int]:
        msgs = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": question}
        ]
        return render_prompt(msgs, self.tok)

    def sample(self, model, prompts, temperature, top_k, top_p, generator, max_new=None):
        """-> (completion ids incl. a final <|im_end|> when it stopped, texts, truncated flags)."""
        outs = generate(
            model,
            prompts,
            max_new or self.max_new,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop_ids=(self.im_end,),
            generator=generator,
        )
        texts, trunc = [], []
        for o in outs:
            stopped = bool(o) and o[-1] == self.im_end
            texts.append(self.tok.decode(o[:-1] if stopped else o))
            trunc.append(not stopped)
        return outs, texts, trunc


def seq_token_logps(model, prompts: list[list[int]], completions: list[list[int]], device, temperature: float = 1.0):
    """Per-completion-token log-probs [N, L] (row i aligned at its first completion token; L = longest completion)
    and the completion mask [N, L], under the sampling distribution (logits / temperature) so ratios and KL are
    those of the policy that produced the samples."""
    ids, _ = pad_batch(prompts, completions)
    ids = ids.to(device)
    with autocast(device):
        lp = token_logps(model, ids, temperature=temperature).float()
    L = max(1, max(len(c) for c in completions))
    lens = torch.tensor([len(c) for c in completions], device=device)
    # completion token j of row i is predicted at position len(prompt_i) - 1 + j
    starts = torch.tensor([len(p) - 1 for p in prompts], device=device)
    idx = (starts[:, None] + torch.arange(L, device=device)[None]).clamp(max=lp.shape[1] - 1)
    mask = (torch.arange(L, device=device)[None] < lens[:, None]).float()
    return lp.gather(1, idx) * mask, mask


def chunked_logps(model, prompts, completions, device, temperature: float, chunk: int) -> torch.Tensor:
    """`seq_token_logps` in chunks of `chunk` sequences (memory), padded to the longest completion -> [N, L]."""
    L = max(1, max(len(c) for c in completions))
    out = torch.zeros(len(prompts), L, device=device)
    for i in range(0, len(prompts), chunk):
        lp, _ = seq_token_logps(model, prompts[i : i + chunk], completions[i : i + chunk], device, temperature)
        out[i : i + chunk, : lp.shape[1]] = lp
    return out


def agg_weight(mask: torch.Tensor, agg: str) -> float:
    """What `aggregate` averages over, for a set of rows: tokens (dapo), sequences with a kept token (grpo), or
    sequences (drgrpo, whose normaliser is rows x max_len)."""
    if agg == "dapo":
        return float(mask.sum())
    if agg == "grpo":
        return float((mask.sum(dim=1) > 0).sum())
    return float(mask.shape[0]) if mask.sum() > 0 else 0.0


@torch.no_grad()
def greedy_exact_match(
    model, sampler: Sampler, problems, cfg: Config, device, progress=None
) -> tuple[list[bool], float, list[str]]:
    """Greedy completions for `problems` -> (correct per problem, truncation rate, texts). `progress` wraps the
    loop over batches (StageContext.progress)."""
    correct, trunc, texts = [], 0, []
    max_new = cfg.eval_max_new_tokens or cfg.max_new_tokens
    batches = range(0, len(problems), cfg.eval_batch_size)
    for i in progress(batches) if progress else batches:
        chunk = problems[i : i + cfg.eval_batch_size]
        _, tx, tr = sampler.sample(model, [sampler.prompt(p["question"]) for p in chunk], 0.0, 0, 1.0, None, max_new)
        for p, t in zip(chunk, tx):
            correct.append(verifiable_reward(t, p["answer"], cfg.extract)[1])
        trunc += sum(tr)
        texts += tx
    return correct, trunc / max(1, len(problems)), texts


@torch.no_grad()
def sampled_pass_at_k(model, sampler: Sampler, problems, cfg: Config, gen) -> tuple[dict[str, float], list[float]]:
    """pass@1 and pass@G on `problems` from G samples each at the training temperature (the RL starting signal)
    -> (summary, per-problem pass@1: the share of its G samples that are right)."""
    g = cfg.group_size
    p1, pg, zero, trunc, n = 0.0, 0.0, 0, 0, 0
    per_problem = []
    per = max(1, cfg.eval_batch_size // g)
    for i in range(0, len(problems), per):
        chunk = problems[i : i + per]
        prompts = [sampler.prompt(p["question"]) for p in chunk for _ in range(g)]
        _, texts, tr = sampler.sample(model, prompts, cfg.temperature, cfg.top_k, cfg.top_p, gen)
        for j, p in enumerate(chunk):
            c = sum(verifiable_reward(t, p["answer"], cfg.extract)[1] for t in texts[j * g : (j + 1) * g])
            per_problem.append(pass_at_k(g, c, 1))
            p1 += pass_at_k(g, c, 1)
            pg += pass_at_k(g, c, g)
            zero += c in (0, g)
            n += 1
        trunc += sum(tr)
    summary = {"pass@1": p1 / n, f"pass@{g}": pg / n, "zero_std_frac": zero / n, "truncation_rate": trunc / (n * g)}
    return summary, per_problem


@dataclass
class Setup:
    """The policy (and its frozen reference, for the KL), the problems and the random streams of a run."""

    init_dir: Path
    policy: torch.nn.Module
    ref: torch.nn.Module | None  # None: no KL term and no KL logged
    tok: object
    train: list[dict]
    held: list[dict]
    counters: dict
    sampler: Sampler
    gen: torch.Generator  # sampling
    rng: random.Random  # prompt order and minibatch order


@dataclass
class Rollout:
    """One step's samples: G completions for each of P problems, scored, with their group advantages."""

    items: list[dict]  # the P problems
    prompts: list[list[int]]  # P*G: each problem's prompt G times
    comps: list[list[int]]  # completion ids (with a final <|im_end|> when it stopped)
    scorable: list[list[int]]  # the same, an empty one (it stopped at once) as <|im_end|>: the loss needs a token
    texts: list[str]
    trunc: list[bool]  # cut off by max_new_tokens
    scored: list[tuple[float, bool]]  # (reward, correct)
    correct: torch.Tensor  # [P, G] 0/1
    rewards: torch.Tensor  # [P, G]
    adv: torch.Tensor  # [P, G]
    zero_std: torch.Tensor  # [P] bool
    keep: torch.Tensor  # [P*G] 0/1: which completions enter the loss


# ----------------------------------------------------------------------------------------------------------------------
# the update: GRPO's loss on one rollout, in minibatches and micro-batches


def minibatch_grads(cfg: Config, s: Setup, ro: Rollout, mb: list[int], lp_old, lp_ref, mask, adv, device) -> dict:
    """Accumulate the gradient of one minibatch's loss over micro-batches of `micro_batch_size` sequences -> its loss,
    and its clipped fraction and KL as means over the kept tokens."""
    chunk = cfg.micro_batch_size or len(ro.prompts)
    total_w = agg_weight(mask[mb], cfg.loss_agg)
    loss_sum, tok_sum, clip_sum, kl_sum = 0.0, 0.0, 0.0, 0.0
    for c0 in range(0, len(mb), chunk):
        mc = mb[c0 : c0 + chunk]
        w = agg_weight(mask[mc], cfg.loss_agg)
        if w == 0:
            continue
        lp, _ = seq_token_logps(
            s.policy, [ro.prompts[i] for i in mc], [ro.scorable[i] for i in mc], device, cfg.temperature
        )
        L = lp.shape[1]
        loss, st = policy_loss(
            lp,
            lp.detach() if lp_old is None else lp_old[mc, :L],
            adv[mc],
            mask[mc, :L],
            agg=cfg.loss_agg,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            ref_logp=None if lp_ref is None else lp_ref[mc, :L],
            kl_beta=cfg.kl_beta,
            max_len=cfg.max_new_tokens,
        )
        # each aggregation is a mean over some count (tokens, kept sequences, sequences): weight the micro-batch by
        # its share of the minibatch's count so the sum equals the full loss
        (loss * (w / total_w)).backward()
        n_tok = float(mask[mc, :L].sum())
        loss_sum += float(loss.detach()) * w / total_w
        tok_sum += n_tok
        clip_sum += st["clipped_frac"] * n_tok
        kl_sum += st.get("kl", 0.0) * n_tok
    return {"loss": loss_sum, "clipped_frac": clip_sum / max(tok_sum, 1.0), "kl": kl_sum / max(tok_sum, 1.0)}


def update(cfg: Config, s: Setup, opt, ro: Rollout, lr: float, device) -> dict:
    """`ppo_epochs` x `minibatches` optimizer steps on one rollout -> loss, clipped_frac, lr, updates, grad_norm, kl."""
    s.policy.train()
    n = len(ro.prompts)
    chunk = cfg.micro_batch_size or n
    single = cfg.ppo_epochs * cfg.minibatches == 1  # then old = current policy: reuse its forward
    with torch.no_grad():
        lp_old = None if single else chunked_logps(s.policy, ro.prompts, ro.scorable, device, cfg.temperature, chunk)
        lp_ref = (
            None if s.ref is None else chunked_logps(s.ref, ro.prompts, ro.scorable, device, cfg.temperature, chunk)
        )
    lens = torch.tensor([len(c) for c in ro.scorable])
    mask = (torch.arange(int(lens.max()))[None] < lens[:, None]).float().to(device)
    mask = mask * ro.keep.to(device)[:, None]
    adv = ro.adv.view(-1).to(device)
    size = n // cfg.minibatches
    stats, gnorms = [], []
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(s.rng.randrange(2**31))).tolist()
        for k in range(cfg.minibatches):
            mb = order[k * size : (k + 1) * size]
            if agg_weight(mask[mb], cfg.loss_agg) == 0:
                continue  # nothing kept in this minibatch: no step (Adam would still move on momentum)
            stats.append(minibatch_grads(cfg, s, ro, mb, lp_old, lp_ref, mask, adv, device))
            gnorms.append(optimizer_step(s.policy, opt, lr, cfg.grad_clip))
    n_up = max(1, len(stats))
    rec = {
        "loss": sum(st["loss"] for st in stats) / n_up,
        "clipped_frac": sum(st["clipped_frac"] for st in stats) / n_up,
        "lr": lr,
        "updates": len(stats),
        "grad_norm": sum(gnorms) / len(gnorms) if gnorms else 0.0,
    }
    if lp_ref is not None and stats:
        rec["kl"] = sum(st["kl"] for st in stats) / len(stats)
    return rec
