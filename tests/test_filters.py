"""Quality filters: one class per gate family, a registry, parity with datatrove's own filters (and its word
tokenizer) on real text, C4's recorded edits, and the n-gram statistics' kernel against a reference."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ledgerlm.data import filters, wordtok
from ledgerlm.data.filters import QualityConfig, QualityGates
from ledgerlm.data.minhash import ngram_hash_family, normalized_codes, word_hashes, word_spans
from ledgerlm.data.quality import DocView, ngram_repetition

GOOD = (
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. He had done this for forty years, "
    "and the ships that passed in the night never knew his name. One winter a storm broke the great window, and he "
    "sat with the flame until morning so that no boat would be lost on the rocks below the cliff. In spring the "
    "village children came to ask him about the sea. He told them of whales, of wrecks, and of the lights of distant "
    "towns. When he grew too old to climb, his granddaughter carried the oil up for him."
)


def test_each_family_answers_keep_reason_details():
    cfg = QualityConfig()
    v = DocView(GOOD)
    assert all(f(cfg).filter(v) == filters.KEEP for f in filters.FILTERS if f.active(cfg))
    keep, reason, details = filters.C4(cfg).filter(DocView(GOOD + " {x}"))
    ref = "datatrove C4QualityFilter: curly_bracket"
    assert (keep, reason, details) == (False, "quality:c4_curly_bracket", {"value": 1.0, "threshold": True, "ref": ref})
    assert not filters.Language.active(cfg)  # no model file: not built
    off = QualityConfig(
        **{f: False if isinstance(getattr(cfg, f), bool) else None for f in filters.C4.fields}  # every C4 rule off
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
        codes = normalized_codes(text)
        s, e = word_spans(codes)
        h, lens = word_hashes(codes, s, e), e - s
        for top, dup in configs:
            got = ngram_repetition(h, lens, top, dup)
            assert got == _reference_ngram_repetition(h, lens, top, dup), (text[:80], top, dup)
            repeats += got.get(("dup", 5), 0) > 0
    assert repeats > 50 and np.isfinite(list(got.values())).all()  # the repeated cases were exercised


# ----------------------------------------------------------------------------- parity with datatrove


def test_word_tokens_and_sentences_are_spacys(shared_data):
    """Our tokenizer gives spaCy's English tokens (datatrove's word tokenizer) and its sentencizer's sentence counts,
    on real text and on generated chunks full of prefixes, suffixes, infixes, URLs, emoticons and contractions."""
    spacy = pytest.importorskip("spacy")
    import random

    from bench.gate_parity import mix

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    docs = [t for _, t in mix(40)]
    rng = random.Random(0)
    alphabet = list("abcdeXYZ0123456789") * 3 + list(".,;:!?'\"()[]{}-–—/\\@#$%&*_+=<>|~…“”’£°")
    alphabet += ["'s", "n't", "http://", "www.", ".com", "a.m.", "U.S.", ":)", "e.g.", "10km", "é", "中"]
    for _ in range(1500):
        chunks = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(1, 10))]
        docs.append(rng.choice([" ", "  ", " \t"]).join(chunks))
    lines = 0
    for t in docs:
        ref = [x for x in (tok.text.strip() for tok in nlp.tokenizer(t)) if x]
        assert wordtok.words(t) == ref, t[:200]
        assert wordtok.count(t) == len(ref)
        for line in t.splitlines()[:10]:
            if line.strip():
                lines += 1
                assert wordtok.sentence_count(line.strip()) == len(list(nlp(line.strip()).sents)), line
    assert lines > 2000


def test_each_family_and_the_chain_decide_as_datatrove(shared_data):
    """Every family alone and the whole chain against datatrove's filters at its FineWeb settings, document by document,
    on ~900 documents of the parity benchmark's mix (GSM8K, LAMBADA, Dolly, HH, PIQA, WinoGrande, Shakespeare, Common
    Crawl pages, generated web pages and web furniture); the chain's kept text (after C4's edits) too."""
    pytest.importorskip("spacy")
    from bench.gate_parity import FAMILIES, datatrove_side, mix, our_side

    docs = mix(80)
    ours, _, _ = our_side(docs)
    theirs, _ = datatrove_side(docs)
    for k in (*FAMILIES, "chain"):
        differ = [
            (src, o[k][1], t[k][1], text[:100]) for (src, text), o, t in zip(docs, ours, theirs) if o[k][0] != t[k][0]
        ]
        assert len(differ) <= 0.005 * len(docs), (k, differ[:5])
    both = [(o["chain"][2], t["chain"][2]) for o, t in zip(ours, theirs) if o["chain"][0] and t["chain"][0]]
    assert sum(a != b for a, b in both) <= 0.005 * len(docs)
    kept = sum(o["chain"][0] for o in ours)
    assert 0.1 * len(docs) < kept < 0.9 * len(docs)  # the mix falls on both sides
    reasons = {o[k][1].split(" ")[0] for o in ours for k in FAMILIES if not o[k][0]}
    assert len(reasons) >= 12, reasons  # most rules were exercised


def test_c4_edits_are_recorded_and_later_gates_see_the_edited_text():
    page = "\n".join(
        [
            GOOD,
            "Please enable JavaScript to view the comments.",
            "This site uses cookies to improve your experience.",
            "Menu",
            "",
            "The keeper wrote in his log every night[3].",
        ]
    )
    reason, details, _, edit = filters.QualityGates(QualityConfig()).check_view(DocView(page))
    assert reason is None and edit is not None
    assert edit.text == GOOD + "\nThe keeper wrote in his log every night."
    assert edit.removed == {
        "javascript": [1, 46],
        "policy": [1, 50],
        "too_few_words": [1, 4],
        "blank": [1, 0],
        "citation": [1, 3],
    }
    assert ["javascript", "Please enable JavaScript to view the comments."] in edit.lines
    # edits off: the same decision, the text as read is kept
    off = filters.QualityGates(QualityConfig(c4_edit=False)).check_view(DocView(page))
    assert off[0] is None and off[3] is None
