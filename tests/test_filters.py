"""Quality filters: one class per gate family, a registry, and the n-gram statistics' shortcut."""

from __future__ import annotations

import random

import numpy as np

from ledgerlm.data import filters
from ledgerlm.data.quality import DocView, QualityConfig, QualityGates, _ngram_stats, ngram_repetition

GOOD = (
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. He had done this for forty years, "
    "and the ships that passed in the night never knew his name. One winter a storm broke the great window, and he "
    "sat with the flame until morning so that no boat would be lost on the rocks below the cliff."
)


def test_each_family_answers_keep_reason_details():
    cfg = QualityConfig()
    v = DocView(GOOD)
    assert all(f(cfg).filter(v) == filters.KEEP for f in filters.FILTERS if f.active(cfg))
    keep, reason, details = filters.C4(cfg).filter(DocView(GOOD + " {x}"))
    assert (keep, reason, details) == (False, "quality:c4_curly_bracket", {"value": 1.0, "threshold": True})
    assert not filters.Language.active(cfg)  # no model file: not built
    off = QualityConfig(
        c4_lorem_ipsum=False, c4_curly_bracket=False, c4_max_javascript_lines_ratio=None, c4_min_terminal_lines=None
    )
    assert not filters.C4.active(off) and all(hasattr(off, f) for F in filters.FILTERS for f in F.fields)


def test_a_new_rule_is_one_class_and_one_registry_line(monkeypatch):
    class NoShouting(filters.Filter):
        fields = ("min_words",)

        def filter(self, v):
            shouts = sum(w.isupper() and len(w) > 1 for w in v.text.split())
            return filters.fail("shouting", shouts, 0) if shouts else filters.KEEP

    monkeypatch.setattr(filters, "FILTERS", [*filters.FILTERS, NoShouting])
    gates = QualityGates(QualityConfig())
    assert gates.check(GOOD)[0] is None
    reason, details, _ = gates.check(GOOD.replace("lamp", "LAMP"))
    assert reason == "quality:shouting" and details == {"value": 1.0, "threshold": 0}


def test_ngram_shortcut_equals_the_full_computation():
    """Skipping the 6..10-gram sort when no 5-gram repeats gives the same statistics as sorting everything."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    top, dup = [2, 3, 4], [5, 6, 7, 8, 9, 10]
    for trial in range(60):
        words = rng.choices(vocab[: rng.choice([20, 300])], k=rng.randint(3, 400))
        if trial % 3 == 0:
            words += words[: rng.randint(0, 30)]  # a repeated passage
        v = DocView(" ".join(words) + ".")
        got = ngram_repetition(v.norm_hashes, v.norm_len, top, dup)
        full = {("top", n): 0.0 for n in top} | {("dup", n): 0.0 for n in dup}
        total = int(v.norm_len.sum())
        _ngram_stats(v.norm_hashes, v.norm_len, total, sorted({*top, *dup}), top, dup, full)
        assert got == full
    assert np.isfinite(list(got.values())).all()
