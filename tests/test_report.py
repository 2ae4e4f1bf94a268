"""The report card from hand-written ledger records: verdicts, labels, rounding, warnings (no pipeline, no browser)."""

from __future__ import annotations

import json

from ledgerlm.card import Card, effect_test
from ledgerlm.report.report_stage import build


def _record(stage: str, **kw) -> dict:
    base = {
        "stage": stage,
        "status": "ok",
        "recipe": "demo",
        "recipe_file": "recipes/demo.yaml",
        "seed": 1234,
        "device": "cpu",
        "seconds": 12.3456,
        "started": f"2026-01-01T00:00:0{len(stage) % 10}",
        "ended": "2026-01-01T00:01:00",
        "outputs": {},
        "counters": {},
        "metrics": {},
        "config": {},
        "env": {"python": "3.11", "torch": "2.13", "cpu_count": 2},
        "code": {"git_commit": "abc"},
    }
    return {**base, **kw}


def _run(tmp_path, *records):
    (tmp_path / "ledger").mkdir()
    for r in records:
        (tmp_path / "ledger" / f"{r['stage']}.json").write_text(json.dumps(r))
    card = build(tmp_path)
    return "\n".join(card.md), "\n".join(card.html)


def test_verdicts_labels_and_warnings(tmp_path):
    md, page = _run(
        tmp_path,
        _record(
            "tokenize",
            config={"vocab_size": 49152},
            metrics={"vocab_size": 4137, "bytes_per_token": 3.79431, "bytes_per_token_on": "val"},
            counters={"documents_per_source": {"demo": {"train": 10, "val": 2}}, "tokens": {"demo": {"train": 900}}},
            extra={"tokenizer": {"trained": True}},
            warnings=[{"code": "vocab_smaller", "message": "asked for 49,152 tokens, got 4,137"}],
        ),
        _record("sft", metrics={"initial_val_loss": 1.6789, "final_val_loss": 0.7159}),
        _record(
            "reward",
            counters={"pairs_heldout": 100, "pairs_train": 256},
            metrics={"heldout_accuracy": 0.51, "heldout_p_binomial": 0.6914, "first_loss": 0.656, "final_loss": 0.709},
        ),
        _record(
            "dpo",
            counters={"pairs_heldout": 100},
            metrics={"heldout_accuracy": 0.66, "heldout_p_binomial": 0.0009},
        ),
    )
    assert "SFT lowered held-out chat loss 1.68 → 0.716" in md
    assert "reward model: no better than chance: 51.0% of held-out pairs ranked correctly (n = 100, p = 0.69)" in md
    assert "its training loss did not fall (0.656 → 0.709)" in md  # and here is why
    assert "DPO: 66.0% of held-out pairs ranked correctly, better than chance (n = 100, p = 9.0e-04)" in md
    assert "asked for 49,152: the data did not support more" in md
    assert "⚠ **vocab_smaller**: asked for 49,152 tokens, got 4,137" in md and "class='warn'" in page
    for raw in ("bytes_per_token_on", "documents_per_source", "heldout_p_binomial", "initial_val_loss"):
        assert raw not in md, raw
    assert "| seed | 1234 |" in md  # an identifier, not a count
    assert "$0.00" in md and "12.3456" not in md  # costs to cents, times to 3 digits
    assert "Evaluation was not run" in md and "Pretraining was not run" in md


def test_eval_names_its_model_and_hides_uncovered_references(tmp_path):
    refs = [{"model": "SmolLM-135M", "tasks": {"piqa": 0.68}, "source": "paper"}]
    ev = _record(
        "eval",
        metrics={
            "arith_0shot.exact_match_strict": 0.06,
            "arith_0shot.exact_match_strict_ci95": [0.03, 0.1],
            "arith_0shot.n": 200,
        },  # fmt: skip
        extra={"model": "/runs/demo/rl/model", "limit": 200, "references": refs},
    )
    md, _ = _run(tmp_path, ev)
    assert "`rl/model` scored exact match strict 6.0% [95% CI 3.0%, 10.0%] on arith, 0-shot (n = 200" in md
    assert "SmolLM-135M" not in md  # its row covers piqa, which this run did not score
    (tmp_path / "ledger" / "eval.json").write_text(
        json.dumps({**ev, "metrics": {**ev["metrics"], "piqa.acc_norm": 0.6, "piqa.n": 1838}})
    )
    assert "SmolLM-135M" in "\n".join(build(tmp_path).md)


def test_numbers_round_to_what_they_mean():
    card = Card(run_dir=None)
    assert card.num(0.715957406232732) == "0.716" and card.num(1.6789777) == "1.68"
    assert card.num(856064) == "856,064" and card.num(1234.5678) == "1,235" and card.num(0.1) == "0.1"
    assert card.num(3e-5) == "3.00e-05" and card.num(float("nan")) == "not a number"
    assert card.usd(0.0174) == "$0.02" and card.pct(0.0425) == "4.2%" and card.plain(1234) == "1234"


def test_numbers_shown_does_not_depend_on_the_values():
    """The record's `numbers_shown` counts every printed number: two runs whose wall times happen to equal another
    printed number (13 s vs a 13-gram gate) give the same counter as runs where they do not."""
    a, b = Card(run_dir=None), Card(run_dir=None)
    for card, seconds in ((a, 13), (b, 14)):
        card.num(13), card.num(seconds), card.pct(0.5), card.plain(7)
    assert a.shown == b.shown == 4 and len(a.numbers) == 3 and len(b.numbers) == 4


def _eff(metric, before, after, n, p, test="mcnemar_exact", higher=True, **kw):
    improved = after > before if higher else after < before
    e = {"metric": metric, "before": before, "after": after, "n": n, "test": test, "p": p}
    return {**e, "higher_is_better": higher, "improved": improved, **kw}


def test_post_training_verdicts_are_effects_against_the_start(tmp_path):
    """Each post-training stage's verdict is its effect (start -> end on held-out items, with its paired test); a
    stage that made its own metric worse is flagged; chance is only the yardstick where the stage starts from it."""
    dpo_eff = _eff("heldout_chosen_preference", 0.86, 0.93, 100, 0.0039, gained=8, lost=1, label="chosen-preference")
    sft_eff = _eff("heldout_conversation_loss", 1.71, 0.565, 150, 0.0001, "paired_bootstrap", higher=False)
    md, page = _run(
        tmp_path,
        _record("sft", metrics={"initial_val_loss": 1.7, "final_val_loss": 0.57, "effect": sft_eff}),
        _record(
            "dpo",
            counters={"pairs_heldout": 100},
            metrics={"heldout_accuracy": 0.66, "heldout_p_binomial": 0.0009, "effect": dpo_eff, "effects": [dpo_eff]},
        ),
        _record(
            "reward",
            counters={"pairs_heldout": 100},
            metrics={
                "heldout_accuracy": 0.55,
                "heldout_p_binomial": 0.18,
                "effect": _eff("heldout_accuracy", 0.61, 0.55, 100, 0.27, gained=4, lost=10),
            },
        ),
        _record(
            "rl",
            metrics={"effect": _eff("heldout_exact_match", 0.04, 0.09, 100, 0.27, gained=7, lost=2)},
            config={"task": "arith:max_ops=1"},
        ),
    )
    assert (
        "DPO raised the chosen-preference from 86.0% to 93.0% (n = 100, McNemar p = 0.0039: 8 gained, 1 lost); "
        "implicit-reward accuracy 66.0%" in md
    )
    assert "better than chance" not in md.split("### DPO")[1].split("###")[0]  # DPO does not start from chance
    assert "SFT lowered the held-out assistant loss per conversation" not in md  # no label: the metric's name
    assert "SFT lowered the held-out conversation loss from 1.71 to 0.565 (n = 150, paired bootstrap p = 1.0e-04)" in md
    assert (
        "⚠ The reward model made its own metric worse: it lowered the held-out pair accuracy from 61.0% to 55.0%" in md
    )
    assert "no better than chance: 55.0% (n = 100, p = 0.18)" in md
    assert (
        "RL raised the held-out exact match from 4.0% to 9.0% (n = 100, McNemar p = 0.27: 7 gained, 2 lost; not a "
        "significant change) on 100 problems of the arith held-out split with max_ops=1" in md
    )
    assert md.count("| held-out metric | start → end | test |") == 4 and "| worse |" in md
    assert "made its own metric worse" in page


def test_effect_with_bootstrap_p_zero_says_below_resolution():
    zero = _eff("heldout_conversation_loss", 1.7, 0.5, 9, 0.0, "paired_bootstrap", higher=False, iters=10000)
    assert effect_test(Card(run_dir=None), zero) == "n = 9, paired bootstrap p < 1/10,000"
