"""Quality filters: one class per gate family, a registry, and the n-gram statistics' kernel against a reference."""

from __future__ import annotations

import json
import random

import numpy as np

from ledgerlm.data import filters
from ledgerlm.data.filters import QualityGates
from ledgerlm.data.minhash import ngram_hash_family
from ledgerlm.data.quality import DocView, QualityConfig, ngram_repetition

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


def _reference_ngram_repetition(h, lens, top, dup):
    """The previous implementation (one argsort over every size)."""
    total = int(lens.sum())
    out = {("top", n): 0.0 for n in top} | {("dup", n): 0.0 for n in dup}
    sizes = sorted({*top, *dup})
    if not total or not sizes:
        return out
    grams = ngram_hash_family(h, sizes, mix=False)
    parts = [grams[n] for n in sizes]
    if not sum(len(p) for p in parts):
        return out
    lengths = [len(p) for p in parts]
    offs = np.cumsum([0] + lengths)
    g = np.concatenate(parts)
    order = np.argsort(g)
    gs = g[order]
    new = np.append(True, gs[1:] != gs[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(g)))
    first = np.minimum.reduceat(order, starts)
    size_of = np.repeat(np.arange(len(sizes)), lengths)[first]
    is_dup = np.ones(len(g), dtype=bool)
    is_dup[first] = False
    for j, n in enumerate(sizes):
        if n in top:
            sel = np.flatnonzero((size_of == j) & (counts > 1))
            if len(sel):
                k = sel[np.argmax(counts[sel])]
                i = int(first[k] - offs[j])
                out[("top", n)] = float(lens[i : i + n].sum() * counts[k]) / total
        if n in dup:
            pos = np.flatnonzero(is_dup[offs[j] : offs[j + 1]])
            if len(pos):
                cover = np.zeros(len(lens) + 1, dtype=np.int32)
                cover[pos] += 1
                cover[pos + n] -= 1
                out[("dup", n)] = float(lens[np.cumsum(cover[:-1]) > 0].sum()) / total
    return out


def _real_texts(data, limit: int) -> list[str]:
    texts = []
    for p in sorted((data / "text").glob("cc_en_head-*.jsonl")):
        texts += [json.loads(x)["text"] for x in p.read_text().split("\n") if x]
    return texts[:limit]


def test_ngram_repetition_equals_the_one_sort_reference(shared_data):
    """The kernel (bucket pre-filter, sizes ascending over repeated positions only, early stop) gives exactly the
    statistics of one argsort over every n-gram of every size, on random and real text and unusual size sets."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(300)]
    configs = [([2, 3, 4], [5, 6, 7, 8, 9, 10]), ([1, 3], [2, 7]), ([], [5]), ([4], []), ([2, 3, 4], [5, 10])]
    docs = []
    for trial in range(400):
        words = rng.choices(vocab[: rng.choice([3, 20, 300])], k=rng.randint(0, 400))
        if trial % 3 == 0:
            words += words[: rng.randint(0, 30)]  # a repeated passage
        docs.append(" ".join(words) + ".")
    docs += _real_texts(shared_data, 300)
    repeats = 0
    for text in docs:
        v = DocView(text)
        for top, dup in configs:
            got = ngram_repetition(v.norm_hashes, v.norm_len, top, dup)
            assert got == _reference_ngram_repetition(v.norm_hashes, v.norm_len, top, dup), (text[:80], top, dup)
            repeats += got.get(("dup", 5), 0) > 0
    assert repeats > 50 and np.isfinite(list(got.values())).all()  # the repeated cases were exercised
