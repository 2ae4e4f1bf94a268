"""bench.demo records the stages' metrics from the run's ledger, not only their times."""

from __future__ import annotations

from bench.demo import outcome, stage_numbers

RECS = [
    {"stage": "pretrain", "seconds": 150.0, "metrics": {"final_val_loss": 0.953, "curve": [1, 2]}},
    {
        "stage": "dpo",
        "seconds": 17.7,
        "metrics": {
            "heldout_accuracy": 0.82,
            "heldout_p_binomial": 3.1e-11,
            "heldout_wilson95": [0.73, 0.88],
            "init_logp_accuracy": 0.89,
            "effect": {
                "metric": "pair_accuracy",
                "before": 0.89,
                "after": 0.82,
                "n": 100,
                "test": "mcnemar_exact",
                "p": 0.12,
            },
        },
    },
    {
        "stage": "rl",
        "seconds": 22.6,
        "metrics": {
            "heldout_em_before": 0.04,
            "heldout_em_after": 0.09,
            "heldout_n": 100,
            "heldout_p_mcnemar": 0.27,
            "start_zero_std_frac": 0.44,
            "zero_std_frac": 0.53,
            "skipped": True,
        },
    },
]


def test_stage_numbers_flatten_every_scalar_metric_and_the_effect():
    n = stage_numbers(RECS)
    assert n["pretrain.final_val_loss"] == 0.953 and "pretrain.curve" not in n
    assert n["dpo.heldout_accuracy"] == 0.82 and n["dpo.heldout_p_binomial"] == 3.1e-11
    assert (n["dpo.effect.before"], n["dpo.effect.after"], n["dpo.effect.n"], n["dpo.effect.p"]) == (
        0.89,
        0.82,
        100,
        0.12,
    )
    assert n["rl.start_zero_std_frac"] == 0.44 and "rl.skipped" not in n and n["rl.seconds"] == 22.6


def test_outcome_names_the_tests():
    assert "held-out pair accuracy 0.82 (binomial p = 3.1e-11)" in outcome(RECS[1]["metrics"])
    assert "effect on pair_accuracy: 0.89 → 0.82 (n = 100, mcnemar_exact p = 0.12)" in outcome(RECS[1]["metrics"])
    assert "held-out EM 0.04 → 0.09 (n = 100, McNemar p = 0.27)" in outcome(RECS[2]["metrics"])
