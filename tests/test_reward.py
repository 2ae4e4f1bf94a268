"""Reward model: Bradley-Terry loss on hand values, last-token scoring independent of padding, the stage end to end."""

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from ledgerlm.post import preference, reward
from ledgerlm.stage import StageContext
from ledgerlm.tasks import arith


def _tiny_run(tmp_path: Path) -> Path:
    from ledgerlm.data.tokenizer import train_tokenizer
    from ledgerlm.model.hf import save_model
    from ledgerlm.model.llama import Llama, model_config

    texts = [p.question + "\n" + p.solution for p in arith.generate(300, "train", 0)] + ["user\nassistant\n"]
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    save_model(Llama(model_config("tiny", vocab_size=tok.get_vocab_size())), tmp_path / "sft" / "model", tokenizer=tok)
    return tmp_path


def test_bradley_terry_hand_values():
    loss, st = reward.bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))) / 2
    assert float(loss) == pytest.approx(want, abs=1e-6)
    assert st["correct"].tolist() == [1.0, 0.0] and st["margin"].tolist() == [1.0, -2.0]
    rc = torch.tensor([0.0], requires_grad=True)
    reward.bradley_terry_loss(rc, torch.tensor([0.0]))[0].backward()
    assert float(rc.grad) == pytest.approx(-0.5)  # -sigmoid(0): descent raises the chosen reward


def test_reward_model_scores_last_token_regardless_of_padding():
    from ledgerlm.model.llama import Llama, model_config

    torch.manual_seed(0)
    rm = reward.RewardModel(Llama(model_config("tiny", vocab_size=40))).eval()
    torch.nn.init.normal_(rm.head.weight)  # the stage's zero head scores everything 0: give it something to read
    torch.nn.init.normal_(rm.head.bias)
    a = preference.EncodedPair([1, 5, 6], [7, 8, 2], [9, 2])
    b = preference.EncodedPair([1, 5, 6, 11, 12, 13, 14], [7, 2], [3, 3, 3, 3, 2])
    with torch.no_grad():
        rc_both, rr_both = reward.score(rm, [a, b], 8, "cpu")
        rc_a, rr_a = reward.score(rm, [a], 8, "cpu")
        # and by hand: head(final hidden state at the last response token)
        h = rm.backbone.hidden_states(torch.tensor([a.prompt + a.chosen]))[0, -1]
        want = float(rm.head(h))
    assert float(rc_both[0]) == pytest.approx(float(rc_a[0]), abs=1e-5)
    assert float(rr_both[0]) == pytest.approx(float(rr_a[0]), abs=1e-5)
    assert float(rc_a[0]) == pytest.approx(want, abs=1e-5)


def test_reward_stage_learns_and_round_trips(tmp_path):
    run = _tiny_run(tmp_path)
    ctx = StageContext(run_dir=run, stage="reward", recipe=None, seed=0, device="cpu", log=logging.getLogger("rw"))
    ctx.out_dir.mkdir(parents=True)
    cfg = reward.Config(n_train=8, n_heldout=8, max_steps=6, batch_size=8, lr=1e-3, warmup_ratio=0.0, eval_every=6)
    res = reward.run(cfg, ctx)
    rows = [json.loads(x) for x in (run / "reward" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "heldout_acc" in rows[0]
    train = [r for r in rows if r["step"] > 0]
    assert train[-1]["loss"] < train[0]["loss"] - 0.1  # 8 pairs, full batch, 6 steps: must fit them
    held = json.loads((run / "reward" / "heldout.json").read_text())
    assert held["n"] == 8 and res.metrics["heldout_accuracy"] == held["accuracy"]
    # judged against its start, the same backbone with the untrained (zero) head: every pair a tie, exactly chance;
    # ties count half, so the outcomes are scores and the paired test is the bootstrap
    eff = res.metrics["effect"]
    assert eff["metric"] == "heldout_accuracy" and eff["test"] == "paired_bootstrap" and eff["n"] == 8
    assert res.metrics["init_heldout_accuracy"] == eff["before"] == 0.5 and held["init_ties"] == 8
    assert held["per_pair_correct_before"] == [False] * 8
    assert eff["after"] == held["accuracy"] == (held["correct"] + held["ties"] / 2) / 8
    assert set(reward.SPEC.headline) <= set(res.metrics)
    # the saved backbone + head give back exactly the held-out decisions of the final evaluation
    rm, tok = reward.load_reward_model(run / "reward" / "model")
    _, ho, _, _ = preference.load_split("arith", 8, 8, 0)
    enc = [preference.encode_pair(p, tok, 256, 128)[0] for p in ho]
    rc, rr = reward.score(rm, enc, 8, "cpu")
    assert (rc > rr).tolist() == held["per_pair_correct"]
    with pytest.raises(FileNotFoundError, match="reward_head"):
        reward.load_reward_model(run / "sft" / "model")


def test_reward_stage_beats_chance_on_heldout_pairs(tmp_path):
    """End to end on pairs whose signal generalises: chosen ends with the `#### N` line the verifier accepts, rejected
    with "The answer is N." (same reasoning, other final line). Held-out problems are disjoint from the training ones,
    so only a head that reads each response's own last token (not padding, not the prompt) can rank them; the exact
    binomial test of the stage's own held-out report must reject chance, and the rewards must still depend on the
    response (a collapse to a constant reward gives ties, which count as wrong, and abs_margin 0)."""
    run = _tiny_run(tmp_path)
    rows = [
        {
            "prompt": p.question,
            "chosen": p.solution,
            "rejected": p.solution.rsplit("\n#### ", 1)[0] + f"\nThe answer is {p.answer}.",
        }
        for p in arith.generate(88, "train", 1)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = StageContext(run_dir=run, stage="reward", recipe=None, seed=0, device="cpu", log=logging.getLogger("rw"))
    ctx.out_dir.mkdir(parents=True)
    cfg = reward.Config(
        data=str(data), n_heldout=24, max_steps=12, batch_size=8, lr=1e-3, warmup_ratio=0.0, eval_every=12
    )
    res = reward.run(cfg, ctx)
    held = json.loads((run / "reward" / "heldout.json").read_text())
    assert held["n"] == 24 and res.counters["pairs_train"] == 64
    assert held["p_binomial_vs_0.5"] < 0.05, held
    assert held["p_binomial_vs_0.5"] == pytest.approx(preference.binomial_p_greater(held["correct"], 24))
    assert res.metrics["heldout_abs_margin"] > 0.05
    eff = res.metrics["effect"]  # (a random head may already rank these format pairs: no claim about the change)
    assert eff["after"] == held["accuracy"] and eff["before"] == res.metrics["init_heldout_accuracy"]


def test_untrained_head_ties_every_pair_and_ties_count_half(tmp_path):
    """The stage starts from chance by construction: the zero head scores every response 0, so every held-out pair
    ties; a tie is half right (accuracy 0.5) and drops out of the binomial test (p = 1), and the effect of a model
    that wins some pairs over that start is judged on outcomes 1 / 0.5 / 0."""
    from ledgerlm.model.llama import Llama, model_config

    rm = reward.RewardModel(Llama(model_config("tiny", vocab_size=40))).eval()
    pairs = [preference.EncodedPair([1, 5, 6], [7, 8, 2], [9, 2]), preference.EncodedPair([1, 4], [7, 2], [3, 3, 2])]
    rc, rr = reward.score(rm, pairs, 8, "cpu")
    assert rc.tolist() == rr.tolist() == [0.0, 0.0]
    assert reward.pair_outcomes(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])).tolist() == [1, 0.5, 0]
    cfg = reward.Config()
    ev = reward.evaluate(cfg, rm, pairs, "cpu")
    assert ev["acc"] == 0.5 and ev["ties"] == 2 and ev["outcome"] == [0.5, 0.5] and ev["correct"] == [False, False]
    held = preference.write_heldout(tmp_path / "h.json", [False] * 10, ties=10)
    assert held["heldout_accuracy"] == 0.5 and held["heldout_p_binomial"] == 1.0
    held = preference.write_heldout(tmp_path / "h.json", [True] * 8 + [False] * 2, ties=2)
    assert held["heldout_accuracy"] == 0.9  # 8 right + 2 ties as half
    assert held["heldout_p_binomial"] == pytest.approx(preference.binomial_p_greater(8, 8))  # ties left out
    with pytest.raises(ValueError, match="ties"):
        preference.write_heldout(tmp_path / "h.json", [True] * 9 + [False], ties=2)
    start = {"outcome": [0.5] * 40}
    eff = reward.reward_effect(start, {"outcome": [1.0] * 30 + [0.0] * 10})
    assert eff["before"] == 0.5 and eff["after"] == 0.75 and eff["test"] == "paired_bootstrap" and eff["p"] < 0.01
    eff = reward.reward_effect({"outcome": [1.0, 0.0] * 20}, {"outcome": [1.0] * 40})  # no ties: McNemar
    assert eff["test"] == "mcnemar_exact" and eff["gained"] == 20 and eff["lost"] == 0
