"""GRPO / RLVR: advantages, aggregation modes, k3 KL, clipping, filtering, pass@k, paired test, log-prob alignment,
and the loop end to end (it must raise a learnable reward)."""

import itertools
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from ledgerlm.post import grpo, rl
from ledgerlm.stage import StageContext
from ledgerlm.tasks import arith

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _tiny_run(tmp_path: Path) -> Path:
    from ledgerlm.data.tokenizer import train_tokenizer
    from ledgerlm.model.hf import save_model
    from ledgerlm.model.llama import Llama, model_config

    texts = [p.question + "\n" + p.solution for p in arith.generate(300, "train", 0)] + ["user\nassistant\n"]
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    save_model(Llama(model_config("tiny", vocab_size=tok.get_vocab_size())), tmp_path / "sft" / "model", tokenizer=tok)
    return tmp_path


def _ctx(run: Path) -> StageContext:
    ctx = StageContext(run_dir=run, stage="rl", recipe=None, seed=0, device="cpu", log=logging.getLogger("rl"))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return ctx


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    adv, zero = rl.group_advantages(r, "mean")
    assert adv[0].tolist() == [0.5, -0.5, -0.5, 0.5] and adv[1].tolist() == [0.0] * 4
    assert adv[2].tolist() == [0.75, -0.25, -0.25, -0.25]
    assert zero.tolist() == [False, True, False]
    adv_s, _ = rl.group_advantages(r, "mean_std", eps=0.0 + 1e-12)
    assert adv_s[0].tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0])  # population std 0.5
    assert adv_s[2, 0] == pytest.approx(0.75 / math.sqrt(0.1875))
    assert torch.all(rl.group_advantages(r, "mean_std")[0][1] == 0)  # uniform group: no signal, no NaN
    with pytest.raises(ValueError):
        rl.group_advantages(r, "rank")


def test_aggregation_modes_hand_values():
    per_tok = torch.tensor([[1.0, 0.0, 0.0], [2.0, 4.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(grpo.aggregate(per_tok, mask, "grpo")) == pytest.approx((1.0 + 4.0) / 2)  # mean of per-seq means
    assert float(grpo.aggregate(per_tok, mask, "dapo")) == pytest.approx(13.0 / 4)  # per token
    assert float(grpo.aggregate(per_tok, mask, "drgrpo", max_len=10)) == pytest.approx(13.0 / (2 * 10))  # constant
    # a fully masked row does not count in GRPO's mean over sequences
    mask2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(grpo.aggregate(per_tok, mask2, "grpo")) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        grpo.aggregate(per_tok, mask, "mean")


def test_kl_k3():
    lp = torch.tensor([-1.0, -2.0, -0.5])
    assert grpo.kl_k3(lp, lp).tolist() == [0.0, 0.0, 0.0]
    ref = torch.tensor([-1.5, -1.0, -0.5])
    d = ref - lp
    assert grpo.kl_k3(lp, ref).tolist() == pytest.approx((torch.exp(d) - d - 1).tolist())
    assert torch.all(grpo.kl_k3(lp, ref) >= 0)


def test_policy_loss_clipping_and_kl():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5, 1.0, 1.1 with advantage +1: the first is clipped (above 1 + 0.2), the others are not
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.0, 1.1]])).requires_grad_(True)
    mask = torch.ones(1, 4)
    loss, st = grpo.policy_loss(lp, old, torch.tensor([1.0]), mask, agg="dapo", clip_low=0.2, clip_high=0.2)
    assert st["clipped_frac"] == pytest.approx(0.25)
    assert float(loss.detach()) == pytest.approx(-(1.2 + 0.5 + 1.0 + 1.1) / 4, abs=1e-6)
    loss.backward()
    assert lp.grad[0, 0] == 0  # clipped token: no gradient
    assert lp.grad[0, 1] == pytest.approx(-0.5 / 4)  # d(-ratio)/dlogp = -ratio, / 4 tokens
    # negative advantage: clipping applies below 1 - clip_low; with clip_high larger ("clip higher") 1.5 is not clipped
    _, st2 = grpo.policy_loss(lp.detach(), old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.6)
    assert st2["clipped_frac"] == pytest.approx(0.25)  # only the 0.5 ratio
    _, st3 = grpo.policy_loss(lp.detach(), old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.6)
    assert st3["clipped_frac"] == 0.0
    # KL term: beta * k3 added per token and reported
    ref = lp.detach() - 0.1
    l_kl, st4 = grpo.policy_loss(lp.detach(), lp.detach(), torch.tensor([0.0]), mask, ref_logp=ref, kl_beta=2.0)
    k3 = math.exp(-0.1) + 0.1 - 1
    assert st4["kl"] == pytest.approx(k3, rel=1e-4) and float(l_kl) == pytest.approx(2 * k3, rel=1e-4)


def test_keep_mask_filters_zero_std_groups_and_truncated():
    zero = torch.tensor([False, True])
    trunc = [False, True, False, False]
    assert rl.keep_mask(zero, trunc, 2, True, True).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert rl.keep_mask(zero, trunc, 2, False, True).tolist() == [1.0, 0.0, 1.0, 1.0]
    assert rl.keep_mask(zero, trunc, 2, True, False).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_pass_at_k_unbiased():
    for n, c, k in [(5, 2, 1), (5, 2, 2), (8, 3, 4), (6, 0, 3), (6, 6, 1), (4, 1, 4)]:
        # brute force: fraction of k-subsets containing at least one correct sample
        items = [1] * c + [0] * (n - c)
        subsets = list(itertools.combinations(range(n), k))
        want = sum(any(items[i] for i in s) for s in subsets) / len(subsets)
        assert rl.pass_at_k(n, c, k) == pytest.approx(want)
    assert rl.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        rl.pass_at_k(4, 5, 1)


def test_paired_exact_match():
    before = [True] * 10 + [False] * 30
    after = [True] * 9 + [False] + [True] * 12 + [False] * 18  # gained 12, lost 1
    t = rl.paired_exact_match(before, after)
    assert (t["gained"], t["lost"], t["n"]) == (12, 1, 40)
    assert t["diff"] == pytest.approx(11 / 40) and t["ci95"][0] < t["diff"] < t["ci95"][1]
    assert t["p_mcnemar"] == pytest.approx(2 * sum(math.comb(13, i) for i in range(2)) / 2**13)
    assert rl.paired_exact_match([True, False], [True, False])["p_mcnemar"] == 1.0


def test_verifiable_reward_uses_eval_extractor():
    assert rl.verifiable_reward("3 + 4 = 7\n#### 7", "x\n#### 7") == (1.0, True)
    assert rl.verifiable_reward("3 + 4 = 7\n#### 8", "#### 7", format_bonus=0.1) == (0.1, False)
    assert rl.verifiable_reward("the answer is 7", "#### 7") == (0.0, False)  # strict needs "#### N"
    assert rl.verifiable_reward("the answer is 7", "#### 7", extract="flexible") == (1.0, True)


def test_seq_token_logps_alignment():
    from ledgerlm.model.llama import Llama, model_config

    torch.manual_seed(0)
    m = Llama(model_config("tiny", vocab_size=30)).eval()
    prompts, comps = [[1, 4, 5, 6, 7], [1, 8]], [[9, 2], [10, 11, 12, 2]]
    with torch.no_grad():
        lp, mask = grpo.seq_token_logps(m, prompts, comps, "cpu", temperature=0.5)
        assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
        for i in range(2):
            logits = m(torch.tensor([prompts[i] + comps[i]]))[0] / 0.5
            logp = torch.log_softmax(logits, -1)
            for j, t in enumerate(comps[i]):
                assert float(lp[i, j]) == pytest.approx(float(logp[len(prompts[i]) - 1 + j, t]), abs=1e-4)


def test_rl_loop_raises_a_learnable_reward(tmp_path, monkeypatch):
    """With a reward the tiny random model can learn (emit digits), the loop's update must raise it: checks the sign,
    the log-prob alignment and the optimizer wiring of the whole loop together."""
    run = _tiny_run(tmp_path)

    def digit_share(text, gold, extract="strict", format_bonus=0.0):
        share = sum(ch.isdigit() for ch in text) / max(1, len(text))  # continuous: groups are never uniform
        return share, share > 0.5

    monkeypatch.setattr(rl, "verifiable_reward", digit_share)
    cfg = rl.Config(
        n_train=20,
        n_eval=2,
        steps=8,
        prompts_per_step=2,
        group_size=8,
        max_new_tokens=4,
        lr=2e-2,
        mask_truncated=False,
        passk_problems=0,
        log_kl=False,
    )
    rl.run(cfg, _ctx(run))
    rows = [json.loads(x) for x in (run / "rl" / "metrics.jsonl").read_text().splitlines()][1:]
    first = sum(r["reward_mean"] for r in rows[:3]) / 3
    last = sum(r["reward_mean"] for r in rows[-3:]) / 3
    assert last > first + 0.2, [round(r["reward_mean"], 2) for r in rows]


def test_rl_stage_end_to_end_logs_everything(tmp_path):
    run = _tiny_run(tmp_path)
    cfg = rl.Config(
        n_train=20,
        n_eval=6,
        steps=2,
        prompts_per_step=2,
        group_size=4,
        max_new_tokens=6,
        passk_problems=2,
        minibatches=2,
        ppo_epochs=2,
        kl_beta=0.1,
        filter_zero_std=False,
        mask_truncated=False,
        lr=1e-3,
    )
    res = rl.run(cfg, _ctx(run))
    rows = [json.loads(x) for x in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert {"start_pass@1", "start_pass@4", "start_zero_std_frac", "start_truncation_rate", "heldout_em"} <= set(
        rows[0]
    )
    need = {"reward_mean", "zero_std_frac", "clipped_frac", "mean_length", "truncation_rate", "pass@1", "pass@4", "kl"}
    assert all(need <= set(r) for r in rows[1:]) and len(rows) == 3
    held = json.loads((run / "rl" / "heldout.json").read_text())
    assert held["n"] == 6 and len(held["per_problem"]) == 6 and "p_mcnemar" in held
    assert res.metrics["heldout_n"] == 6 and (run / "rl" / "model" / "model.safetensors").is_file()
    assert res.counters["completions"] == 2 * 2 * 4
    # the stage's effect: greedy EM of the start model vs the trained one on the same problems, McNemar; and the
    # sampled pass@1 at the training temperature before vs after (paired); the headline is a metric it writes
    eff = res.metrics["effect"]
    assert eff["metric"] == "heldout_greedy_em" and eff["test"] == "mcnemar_exact" and eff["n"] == 6
    per = held["per_problem"]
    assert eff["before"] == sum(p["before"] for p in per) / 6 and eff["after"] == sum(p["after"] for p in per) / 6
    assert res.metrics["effects"][0] == eff and len(res.metrics["effects"]) == 2
    sampled = res.metrics["effects"][1]
    assert sampled["metric"] == "heldout_sampled_pass@1_T1" and sampled["n"] == 2
    assert sampled["before"] == pytest.approx(rows[0]["start_pass@1"]) and sampled["test"] == "paired_bootstrap"
    assert rl.SPEC.headline and all(res.metrics.get(h) is not None for h in rl.SPEC.headline)
    assert res.metrics[rl.SPEC.headline[0]] == eff["after"]


@pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason="shared data absent")
def test_real_gsm8k_problems_load(tmp_path):
    cfg = rl.Config(task=str(DATA / "gsm8k" / "train.jsonl"), n_train=100, n_eval=50)
    tr, ho, counters = rl.load_problems(cfg, seed=0)
    assert len(tr) == 100 and len(ho) == 50 and counters["quarantined"] == 0
    assert not {p["question"] for p in tr} & {p["question"] for p in ho}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"question": "q", "answer": "no final line"}\n{oops\n' + '{"question": "q2", "answer": "#### 3"}\n' * 3
    )
    tr2, ho2, c2 = rl.load_problems(rl.Config(task=str(bad), n_eval=1), seed=0)
    reasons = [q["reason"] for q in c2["quarantine"]]
    assert c2["quarantined"] == 2 and any("####" in r for r in reasons) and any("JSON" in r for r in reasons)


@pytest.mark.parametrize("agg", ["grpo", "dapo", "drgrpo"])
def test_micro_batching_matches_full_batch(tmp_path, monkeypatch, agg):
    """Gradient accumulation over micro-batches must reproduce the full-batch update for every aggregation mode."""
    from ledgerlm.model.hf import load_model

    run = _tiny_run(tmp_path)

    def variety(text, gold, extract="strict", format_bonus=0.0):
        return len(set(text)) / 10, False  # differs between almost any two samples: every group has signal

    monkeypatch.setattr(rl, "verifiable_reward", variety)
    weights, logs = [], []
    for micro in (0, 3):
        cfg = rl.Config(
            n_train=10,
            n_eval=2,
            steps=1,
            prompts_per_step=2,
            group_size=4,
            max_new_tokens=5,
            lr=1e-2,
            loss_agg=agg,
            mask_truncated=False,
            micro_batch_size=micro,
            passk_problems=0,
            log_kl=False,
        )
        ctx = StageContext(
            run_dir=run, stage=f"rl_{agg}_{micro}", recipe=None, seed=0, device="cpu", log=logging.getLogger("rl")
        )
        ctx.out_dir.mkdir(parents=True)
        rl.run(cfg, ctx)
        weights.append(load_model(ctx.out_dir / "model").state_dict())
        logs.append(json.loads((ctx.out_dir / "metrics.jsonl").read_text().splitlines()[-1]))
    base = load_model(run / "sft" / "model").state_dict()
    moved = max(float((weights[0][k] - base[k]).abs().max()) for k in base)
    assert moved > 1e-4  # the step did something
    # same loss and same accumulated gradient (its norm is logged before clipping)
    assert logs[1]["loss"] == pytest.approx(logs[0]["loss"], rel=1e-4, abs=1e-7)
    assert logs[1]["grad_norm"] == pytest.approx(logs[0]["grad_norm"], rel=1e-4)
    for k in base:  # Adam's first step is ~lr * sign(grad), so a float-noise-sized gradient may differ in a few entries
        assert float((weights[0][k] - weights[1][k]).abs().mean()) < 1e-6


def test_greedy_in_group_puts_the_greedy_completion_first(tmp_path):
    """greedy_in_group: member 0 of each group is the start policy's greedy completion at step 1; the rest are
    samples (they differ from it somewhere)."""
    from ledgerlm.post.common import load_model_and_tokenizer

    run = _tiny_run(tmp_path)
    cfg = rl.Config(
        n_train=20, n_eval=2, steps=1, prompts_per_step=2, group_size=4, max_new_tokens=6, lr=1e-3,
        passk_problems=0, log_kl=False, greedy_in_group=True, log_samples=8, filter_zero_std=False,
        mask_truncated=False,
    )  # fmt: skip
    res = rl.run(cfg, _ctx(run))
    rows = [json.loads(x) for x in (run / "rl" / "samples.jsonl").read_text().splitlines()]
    model, tok = load_model_and_tokenizer(run / "sft" / "model")
    sampler = rl.Sampler(tok, "", 6)
    for j in (0, 1):
        group = rows[4 * j : 4 * j + 4]
        _, greedy, _ = sampler.sample(model, [sampler.prompt(group[0]["question"])], 0.0, 0, 1.0, None)
        assert group[0]["completion"] == greedy[0]
        assert any(r["completion"] != greedy[0] for r in group[1:])
    assert res.counters["completions"] == 8


def test_dynamic_sampling_keeps_only_groups_with_signal(monkeypatch):
    """dynamic_sampling: batches of P prompts are drawn until P groups with 0 < pass < 1 are kept (at most N batches);
    zero-variance groups (all right or all wrong) never reach the loss, and every sampled group is in the logs."""
    from ledgerlm.post.common import Shuffled

    P, G = 3, 4
    train = [{"question": f"q{i}", "answer": str(i)} for i in range(30)]
    calls = []

    def fake_rollout(cfg, s, items):  # problem i: all wrong if i % 3 == 0, all right if i % 3 == 1, else mixed
        calls.append([it["question"] for it in items])
        rewards = torch.tensor(
            [[0.0] * G if int(it["answer"]) % 3 == 0 else [1.0] * G if int(it["answer"]) % 3 == 1 else [1.0, 0, 0, 0]
             for it in items]
        )  # fmt: skip
        adv, zero = rl.group_advantages(rewards)
        n = len(items) * G
        prompts = [[int(it["answer"])] for it in items for _ in range(G)]
        keep = rl.keep_mask(zero, [False] * n, G, True, False)
        scored = [(float(r), bool(r)) for r in rewards.view(-1)]
        return rl.Rollout(items, prompts, prompts, prompts, ["t"] * n, [False] * n, scored, rewards, rewards, adv,
                          zero, keep)  # fmt: skip

    monkeypatch.setattr(rl, "rollout", fake_rollout)
    s = type("S", (), {"train": train})()
    problems = Shuffled(len(train), torch.Generator().manual_seed(0))
    cfg = rl.Config(prompts_per_step=P, group_size=G, dynamic_sampling=10)
    kept, seen = rl.dynamic_rollout(cfg, s, problems)
    assert len(kept.items) == P and not kept.zero_std.any() and bool(kept.keep.all())
    assert all(int(it["answer"]) % 3 == 2 for it in kept.items)
    assert [p[0] for p in kept.prompts] == [int(it["answer"]) for it in kept.items for _ in range(G)]
    assert len(seen.items) == P * len(calls) and len(calls) < 10  # stopped once P were kept
    assert sum(not z for z in seen.zero_std.tolist()) >= P
    # a budget of one batch: what had signal in it, never a zero-variance group unless none had any
    calls.clear()
    kept1, seen1 = rl.dynamic_rollout(rl.Config(prompts_per_step=P, group_size=G, dynamic_sampling=1), s, problems)
    assert len(calls) == 1 and len(seen1.items) == P
    assert (not kept1.zero_std.any()) or bool(seen1.zero_std.all())


def test_train_task_changes_only_the_training_prompts():
    """train_task: a curriculum for the training prompts; the held-out problems stay those of `task`."""
    base = rl.Config(task="arith:max_ops=1", n_train=100, n_eval=50)
    easy = rl.Config(task="arith:max_ops=1", train_task="arith:max_ops=1,max_value=10", n_train=100, n_eval=50)
    easy.validate()
    tr0, ho0, _ = rl.load_problems(base, seed=0)
    tr1, ho1, _ = rl.load_problems(easy, seed=0)
    assert ho1 == ho0 and tr1 != tr0
    assert not {p["question"] for p in tr1} & {p["question"] for p in ho1}
    def top(problems):
        return max(int(p["answer"].rsplit("####", 1)[1]) for p in problems)

    assert top(tr1) <= 45 < top(tr0)  # max_value 10: sums <= 20, products <= 5 * 9; 20 allows 10 * 9
    with pytest.raises(ValueError):
        rl.Config(task="x.jsonl", train_task="arith").validate()
