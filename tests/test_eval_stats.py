"""Standard errors, intervals and paired tests used by eval results and `ledgerlm compare`."""

from __future__ import annotations

import math

import pytest

from ledgerlm.components.stats import (
    binary_score,
    mcnemar,
    mean_of_scores,
    mean_stderr,
    paired_bootstrap_mean,
    perplexity_score,
    wilson_ci,
)


def test_stderr_and_intervals():
    xs = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    m = 0.7
    assert mean_stderr(xs) == pytest.approx(math.sqrt(sum((x - m) ** 2 for x in xs) / 9) / math.sqrt(10))  # lm-eval
    lo, hi = wilson_ci(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_ci(10, 10)[1] == pytest.approx(1.0) and wilson_ci(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    s = binary_score(xs)
    assert s["value"] == 0.7 and s["n"] == 10 and s["ci95"][0] < 0.7 < s["ci95"][1]
    p = perplexity_score([-1.0, -3.0])
    assert p["value"] == pytest.approx(math.exp(2.0)) and p["ci95"][0] < p["value"] < p["ci95"][1]
    mean = mean_of_scores([{"value": 0.4, "stderr": 0.03, "n": 10}, {"value": 0.6, "stderr": 0.04, "n": 20}])
    assert mean["value"] == pytest.approx(0.5) and mean["stderr"] == pytest.approx(0.025) and mean["n"] == 30


def test_mcnemar_exact():
    a = [1] * 10 + [0] * 5
    b = [0] * 10 + [0] * 5
    r = mcnemar(a, b)
    assert (r["a_only"], r["b_only"]) == (10, 0) and r["p_value"] == pytest.approx(2 * 0.5**10)
    assert mcnemar(a, a)["p_value"] == 1.0


def test_wilson_ci_edges():
    """No trials: nothing is known, so the interval is all of [0, 1] (its limit as n -> 0), never NaN."""
    assert wilson_ci(0, 0) == (0.0, 1.0)
    assert binary_score([])["ci95"] == [0.0, 1.0]
    for k, n in [(0, 1), (0, 7), (7, 7), (3, 1000)]:
        lo, hi = wilson_ci(k, n)
        assert 0.0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1.0
    assert wilson_ci(0, 5)[0] == pytest.approx(0.0, abs=1e-12) and wilson_ci(5, 5)[1] == pytest.approx(1.0)
    # z is a parameter: a wider z gives a wider interval around the same centre
    assert wilson_ci(3, 10, z=2.58)[0] < wilson_ci(3, 10)[0] and wilson_ci(3, 10, z=2.58)[1] > wilson_ci(3, 10)[1]


def test_mcnemar_edges():
    # only discordant pairs count, the test is symmetric in a and b, and outcomes are thresholded at 0.5
    a, b = [1, 1, 1, 0, 0, 1], [0, 0, 1, 0, 1, 1]
    r, s = mcnemar(a, b), mcnemar(b, a)
    assert (r["a_only"], r["b_only"]) == (2, 1) == (s["b_only"], s["a_only"]) and r["p_value"] == s["p_value"] == 1.0
    assert mcnemar([0.9, 0.2], [0.1, 0.2]) == mcnemar([1, 0], [0, 0])
    assert mcnemar([], [])["p_value"] == 1.0
    assert mcnemar([1] * 6, [0] * 6)["p_value"] == pytest.approx(2 * 0.5**6)
    with pytest.raises(ValueError, match="equally long"):
        mcnemar([1, 0, 1], [1])


def test_paired_bootstrap_mean():
    a = [[1, 0, 1, 0] * 25, [0, 1] * 50]
    same = paired_bootstrap_mean(a, a, iters=500)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    better = [[1] * 100, [1] * 100]
    r = paired_bootstrap_mean(a, better, iters=2000, seed=1)
    assert r["diff"] == pytest.approx(0.5) and r["p_value"] < 0.01 and r["ci95"][0] > 0.3
    assert paired_bootstrap_mean(a, better, iters=500, seed=3) == paired_bootstrap_mean(a, better, iters=500, seed=3)


def test_effect_binary_uses_mcnemar_and_counts_gains_and_losses():
    from ledgerlm.components.stats import effect

    before = [1] * 10 + [0] * 30
    after = [1] * 10 + [1] * 20 + [0] * 10  # 20 gained, 0 lost
    e = effect("em", before, after)
    assert e["test"] == "mcnemar_exact" and e["n"] == 40
    assert e["before"] == 0.25 and e["after"] == 0.75 and e["gained"] == 20 and e["lost"] == 0
    assert e["p"] < 1e-4 and e["improved"]
    same = effect("em", before, before)
    assert same["p"] == 1.0 and not same["improved"]


def test_effect_scores_use_paired_bootstrap():
    import numpy as np

    from ledgerlm.components.stats import effect

    rng = np.random.default_rng(0)
    before = rng.normal(0, 1, 200)
    e = effect("margin", before, before + 0.5 + rng.normal(0, 0.1, 200))
    assert e["test"] == "paired_bootstrap" and e["p"] < 0.01 and e["improved"]
    worse = effect("margin", before, before - 0.5)
    assert worse["p"] < 0.01 and not worse["improved"]
    with pytest.raises(ValueError, match="margin"):
        effect("margin", [0.1, 0.2], [0.3])


def test_effect_lower_is_better_for_a_loss():
    from ledgerlm.components.stats import effect

    before = [2.0, 1.5, 1.8, 2.2, 1.9, 2.1] * 10
    lower = effect("loss", before, [x - 0.4 for x in before], higher_is_better=False, label="held-out loss")
    assert lower["improved"] and lower["higher_is_better"] is False and lower["label"] == "held-out loss"
    assert lower["after"] < lower["before"] and lower["p"] < 0.01
    higher = effect("loss", before, [x + 0.4 for x in before], higher_is_better=False)
    assert not higher["improved"] and "label" not in higher
