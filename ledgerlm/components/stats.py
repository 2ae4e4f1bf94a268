"""Standard errors, confidence intervals and paired tests for evaluation scores.

stderr follows lm-eval (`mean_stderr`: sample standard deviation / sqrt(n)) so it is comparable to its tables.
The 95% CI of a 0/1 metric is the Wilson interval (well-behaved at small n and at 0 or 1, unlike mean +- 1.96 se);
perplexity gets a delta-method interval on exp(-mean ll).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def mean_stderr(xs: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    return float(np.std(np.asarray(xs, dtype=np.float64), ddof=1) / math.sqrt(n))


def wilson_ci(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials. With no trials nothing is known: (0, 1), the limit of the
    interval as n -> 0 and the only interval that covers every p."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binary_score(xs: Sequence[float]) -> dict:
    """{value, stderr, ci95, n} for a list of 0/1 outcomes."""
    n = len(xs)
    k = float(sum(xs))
    return {"value": k / n if n else float("nan"), "stderr": mean_stderr(xs), "ci95": list(wilson_ci(k, n)), "n": n}


def perplexity_score(lls: Sequence[float]) -> dict:
    """lm-eval's `perplexity` aggregation exp(-mean ll) over items, with a delta-method stderr and CI."""
    n = len(lls)
    m = float(np.mean(lls))
    ppl = math.exp(-m)
    se_m = mean_stderr(lls)
    lo, hi = math.exp(-(m + Z95 * se_m)), math.exp(-(m - Z95 * se_m))
    return {"value": ppl, "stderr": ppl * se_m, "ci95": [lo, hi], "n": n}


def mean_of_scores(scores: Sequence[dict]) -> dict:
    """Unweighted mean of independent task scores (each task counts once); stderr = sqrt(sum se^2) / k."""
    k = len(scores)
    value = sum(s["value"] for s in scores) / k
    se = math.sqrt(sum(s["stderr"] ** 2 for s in scores)) / k
    return {
        "value": value,
        "stderr": se,
        "ci95": [value - Z95 * se, value + Z95 * se],
        "n": sum(s["n"] for s in scores),
    }


def mcnemar(a: Sequence[float], b: Sequence[float]) -> dict:
    """Exact McNemar test on paired 0/1 outcomes: two-sided binomial test on the discordant pairs (p = 1 without
    any). a_only: items only `a` got right; b_only: only `b`."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired test needs equally long outcome lists (got {len(a)} and {len(b)})")
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    n01 = int(np.sum(~a & b))  # B right, A wrong
    n10 = int(np.sum(a & ~b))
    p = 1.0 if n01 + n10 == 0 else float(binomtest(n10, n01 + n10, 0.5).pvalue)
    return {"test": "mcnemar_exact", "a_only": n10, "b_only": n01, "p_value": p}


def paired_bootstrap_mean(
    a_tasks: Sequence[Sequence[float]], b_tasks: Sequence[Sequence[float]], iters: int = 10000, seed: int = 0
) -> dict:
    """Paired bootstrap of the difference (B - A) of the unweighted mean over tasks.

    Items are resampled within each task with the same indices for A and B, so the pairing is kept.
    p is two-sided: twice the smaller tail of the bootstrap difference around 0.
    """
    rng = np.random.default_rng(seed)
    diffs = np.zeros(iters)
    observed = 0.0
    for a, b in zip(a_tasks, b_tasks):
        d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
        observed += d.mean()
        idx = rng.integers(0, len(d), size=(iters, len(d)))
        diffs += d[idx].mean(axis=1)
    k = len(a_tasks)
    observed /= k
    diffs /= k
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"test": "paired_bootstrap", "diff": observed, "ci95": [float(lo), float(hi)], "p_value": p, "iters": iters}


def effect(
    metric: str,
    before: Sequence[float],
    after: Sequence[float],
    binary: bool | None = None,
    higher_is_better: bool = True,
    label: str = "",
) -> dict:
    """What a stage did to its own metric: {metric, before, after, n, test, p, improved, higher_is_better, ...} on
    the same held-out items, before = the model the stage started from, after = the model it hands on.

    Per-item right/wrong outcomes (binary) get the exact McNemar test; per-item scores (a log-prob margin, a reward,
    a loss) a paired bootstrap of the mean difference. `binary=None` decides from the values. `improved` follows
    `higher_is_better` (a loss improves when it falls); `label` is the metric in words, for reports."""
    before, after = list(map(float, before)), list(map(float, after))
    if len(before) != len(after):
        raise ValueError(f"effect of {metric!r}: paired lists differ in length ({len(before)} vs {len(after)})")
    if binary is None:
        binary = all(x in (0.0, 1.0) for x in before + after)
    n = len(before)
    out = {
        "metric": metric,
        "before": float(np.mean(before)) if n else float("nan"),
        "after": float(np.mean(after)) if n else float("nan"),
        "n": n,
    }
    if binary:
        t = mcnemar(before, after)
        out.update(test="mcnemar_exact", p=t["p_value"], gained=t["b_only"], lost=t["a_only"])
    else:
        t = paired_bootstrap_mean([before], [after])
        out.update(test="paired_bootstrap", p=t["p_value"], diff_ci95=t["ci95"], iters=t["iters"])
    out["higher_is_better"] = bool(higher_is_better)
    out["improved"] = bool(out["after"] > out["before"] if higher_is_better else out["after"] < out["before"])
    if label:
        out["label"] = label
    return out
