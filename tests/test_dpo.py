"""DPO: loss on hand-computed values, preference data parsing (incl. real hh-rlhf), log-prob masking, the stage."""

import gzip
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from ledgerlm.post import dpo, preference
from ledgerlm.stage import StageContext
from ledgerlm.tasks import arith

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _tiny_run(tmp_path: Path) -> Path:
    """A run dir with RUN/sft/model: a random 2-layer model and a small BPE tokenizer trained on arith text."""
    from ledgerlm.data.tokenizer import train_tokenizer
    from ledgerlm.model.hf import save_model
    from ledgerlm.model.llama import Llama, model_config

    tok = train_tokenizer(
        [p.question + "\n" + p.solution for p in arith.generate(300, "train", 0)] + ["user\nassistant\n"],
        vocab_size=300,
    )
    torch.manual_seed(0)
    save_model(Llama(model_config("tiny", vocab_size=tok.get_vocab_size())), tmp_path / "sft" / "model", tokenizer=tok)
    return tmp_path


def _ctx(run: Path, stage: str) -> StageContext:
    ctx = StageContext(run_dir=run, stage=stage, recipe=None, seed=0, device="cpu", log=logging.getLogger(stage))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return ctx


def test_dpo_loss_hand_values():
    t = torch.tensor
    loss, st = dpo.dpo_loss(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]), beta=0.5)
    # logits = 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-6)
    assert float(st["margin"][0]) == pytest.approx(0.5) and float(st["correct"][0]) == 1.0
    # length-normalised (Tulu 3): each log-ratio / its length -> 0.5 * (0.5/2 - (-0.5)/4) = 0.1875
    loss_n, st_n = dpo.dpo_loss(
        t([-1.0]),
        t([-2.0]),
        t([-1.5]),
        t([-1.5]),
        0.5,
        len_chosen=t([2.0]),
        len_rejected=t([4.0]),
        length_normalize=True,
    )
    assert float(loss_n) == pytest.approx(math.log1p(math.exp(-0.1875)), abs=1e-6)
    assert float(st_n["reward_chosen"][0]) == pytest.approx(0.125)
    # policy == reference: loss log 2, no preference
    loss0, st0 = dpo.dpo_loss(t([-3.0, -1.0]), t([-2.0, -4.0]), t([-3.0, -1.0]), t([-2.0, -4.0]), 0.1)
    assert float(loss0) == pytest.approx(math.log(2)) and float(st0["correct"].sum()) == 0
    with pytest.raises(ValueError, match="length"):
        dpo.dpo_loss(t([0.0]), t([0.0]), t([0.0]), t([0.0]), 0.1, length_normalize=True)


def test_dpo_gradient_direction():
    pc, pr = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    loss, _ = dpo.dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), 0.1)
    loss.backward()
    assert pc.grad[0] < 0 < pr.grad[0]  # descent raises chosen, lowers rejected
    assert pc.grad[0] == pytest.approx(-0.05)  # -beta * sigmoid(0)


def test_split_transcripts_and_bad_rows(tmp_path):
    c = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: add 2 and 2\n\nAssistant: It is 4."
    r = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: add 2 and 2\n\nAssistant: It is 5."
    msgs, cc, rr = preference.split_transcripts(c, r)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"] and msgs[-1]["content"] == "add 2 and 2"
    assert (cc, rr) == ("It is 4.", "It is 5.")
    path = tmp_path / "p.jsonl"
    rows = [
        json.dumps({"chosen": c, "rejected": r}),
        "{not json",
        json.dumps({"chosen": c, "rejected": c}),
        json.dumps({"prompt": "q?", "chosen": "a", "rejected": "b"}),
        json.dumps({"prompt": "q?", "chosen": "a"}),
        json.dumps({"chosen": "no turns", "rejected": "at all"}),
    ]
    path.write_text("\n".join(rows) + "\n")
    prefs = preference.load_preferences(str(path))
    assert len(prefs.pairs) == 2 and prefs.counters["quarantined"] == 4
    where = {q["where"].rsplit(":", 1)[1]: q["reason"] for q in prefs.quarantined}
    assert "invalid JSON" in where["2"] and "identical" in where["3"]
    assert "'rejected': missing" in where["5"] and "Assistant" in where["6"]


@pytest.mark.skipif(not (DATA / "preference").is_dir(), reason="shared data absent")
def test_real_hh_rlhf_parses():
    path = DATA / "preference" / "hh_rlhf_harmless_base_test.jsonl.gz"
    prefs = preference.load_preferences(str(path))
    with gzip.open(path, "rt") as f:
        n = sum(1 for line in f if line.strip())
    assert prefs.counters["rows"] == n == prefs.counters["kept"] + prefs.counters["quarantined"]
    assert prefs.counters["kept"] > 0.95 * n  # nearly every real pair splits cleanly
    p = prefs.pairs[0]
    assert p.prompt[-1]["role"] == "user" and p.chosen != p.rejected and "Human:" not in p.chosen


def test_sequence_logps_masks_prompt_and_padding():
    torch.manual_seed(0)
    from ledgerlm.model.llama import Llama, model_config

    m = Llama(model_config("tiny", vocab_size=50)).eval()
    prompts, resp = [[1, 5, 6], [1, 7]], [[8, 9, 2], [3, 2]]
    ids, mask = preference.pad_batch(prompts, resp)
    with torch.no_grad():
        lp, n = preference.sequence_logps(m, ids, mask)
    assert n.tolist() == [3.0, 2.0]
    for i in range(2):  # same as scoring each sequence alone, response tokens only
        seq = torch.tensor([prompts[i] + resp[i]])
        logp = torch.log_softmax(m(seq)[0, :-1], -1)
        want = sum(float(logp.detach()[len(prompts[i]) - 1 + k, t]) for k, t in enumerate(resp[i]))
        assert float(lp[i]) == pytest.approx(want, abs=1e-4)


def test_dpo_stage_learns_and_caches_reference(tmp_path):
    run = _tiny_run(tmp_path)
    cfg = dpo.Config(
        n_train=8, n_heldout=8, max_steps=6, batch_size=4, lr=3e-3, beta=0.5, warmup_ratio=0.0, eval_every=6
    )
    res = dpo.run(cfg, _ctx(run, "dpo"))
    assert res.counters["ref_cache"] == "miss" and (run / "dpo" / "ref_logps.safetensors").is_file()
    rows = [json.loads(x) for x in (run / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "reward_acc", "margin", "reward_chosen", "reward_rejected"} <= set(rows[-1])
    # 8 pairs, 6 steps at a high lr: the training preference must be learnt
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1 and rows[-1]["reward_acc"] >= 0.75
    held = json.loads((run / "dpo" / "heldout.json").read_text())
    assert held["n"] == 8 and 0 <= held["p_binomial_vs_0.5"] <= 1
    # judged against its start: the model's own preference for the chosen side, reference (before) vs policy (after)
    eff = res.metrics["effect"]
    assert eff["metric"] == "heldout_chosen_preference" and eff["test"] == "mcnemar_exact" and eff["n"] == 8
    assert eff["before"] == res.metrics["init_logp_accuracy"] == res.metrics["init_chosen_preference"]
    before, after = held["per_pair_own_margin_before"], held["per_pair_own_margin_after"]
    assert eff["after"] == sum(x > 0 for x in after) / 8 == res.metrics["heldout_chosen_preference"]
    assert eff["before"] == sum(x > 0 for x in before) / 8
    assert eff["gained"] == sum(a > 0 >= b for a, b in zip(after, before))
    margin = res.metrics["effects"][1]
    assert res.metrics["effects"][0] == eff and margin["metric"] == "heldout_logp_margin"
    assert margin["after"] == pytest.approx(sum(after) / 8) and margin["before"] == pytest.approx(sum(before) / 8)
    assert set(dpo.SPEC.headline) <= set(res.metrics)  # `ledgerlm sweep` without --metric plots these
    from ledgerlm.model.hf import load_model

    assert load_model(run / "dpo" / "model").cfg.n_layer == 2
    # a second run (length-normalised) on the same data + reference reuses the cached reference log-probs
    cfg2 = dpo.Config(
        n_train=8,
        n_heldout=8,
        max_steps=1,
        batch_size=4,
        loss="length_normalized",
        beta=5.0,
        ref_cache=str(run / "dpo" / "ref_logps.safetensors"),
    )
    (run / "dpo2").mkdir()
    res2 = dpo.run(cfg2, _ctx(run, "dpo2"))
    assert res2.counters["ref_cache"] == "hit"
    # ...but not when the data differ
    cfg3 = dpo.Config(n_train=4, n_heldout=8, max_steps=1, batch_size=4, ref_cache=cfg2.ref_cache)
    assert dpo.run(cfg3, _ctx(run, "dpo3")).counters["ref_cache"] == "miss"


def test_config_validation():
    with pytest.raises(ValueError, match="loss"):
        dpo.Config(loss="ipo").validate()
    with pytest.raises(ValueError, match="max_prompt_len"):
        dpo.Config(max_len=64, max_prompt_len=64).validate()


def test_dpo_own_margin_per_token_when_length_normalised():
    lp = {"chosen": torch.tensor([-4.0, -9.0]), "rejected": torch.tensor([-6.0, -8.0])}
    lp.update(chosen_len=torch.tensor([2.0, 9.0]), rejected_len=torch.tensor([2.0, 4.0]))
    assert dpo.own_margin(lp, False).tolist() == [2.0, -1.0]
    assert dpo.own_margin(lp, True).tolist() == [1.0, 1.0]  # -9/9 - (-8/4): the longer chosen is preferred per token


def test_sweep_defaults_to_the_headline_of_dpo_and_reward(tmp_path):
    """`ledgerlm sweep` without --metric reads each stage's headline from its record: it must be written there."""
    import yaml

    from ledgerlm import sweep

    run = _tiny_run(tmp_path / "run")
    recipe = tmp_path / "r.yaml"
    small = {"n_train": 8, "n_heldout": 8, "max_steps": 1, "batch_size": 8}
    recipe.write_text(yaml.safe_dump({"name": "t", "device": "cpu", "dpo": small, "reward": small}))
    for stage in ("dpo", "reward"):
        out = sweep.run_sweep(recipe, stage, {f"{stage}.lr": [1e-4]}, run, echo=lambda *_: None)
        spec_headline = list(__import__(f"ledgerlm.post.{stage}", fromlist=["SPEC"]).SPEC.headline)
        assert out["metrics"] == spec_headline and len(out["rows"]) == 1
        assert all(0.0 <= out["rows"][0][m] <= 1.0 for m in spec_headline)


def test_load_split_n_train_zero_means_all_pairs(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"q{i}?", "chosen": "yes", "rejected": "no"}) + "\n" for i in range(30))
    )
    tr, ho, _, _ = preference.load_split(str(path), 0, 8, seed=0)
    assert len(tr) == 22 and len(ho) == 8 and {p.prompt[0]["content"] for p in tr + ho} == {f"q{i}?" for i in range(30)}
    tr, ho, _, _ = preference.load_split(str(path), 10, 8, seed=0)
    assert len(tr) == 10 and len(ho) == 8
