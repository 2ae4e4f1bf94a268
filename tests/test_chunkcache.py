"""The per-chunk cache gives the gates and near-dedup the same arrays as the whole-text path, value for value."""

import random

import numpy as np

from ledgerlm.data import chunkcache, wordtok
from ledgerlm.data.minhash import normalized_codes, word_hashes, word_spans
from ledgerlm.data.quality import STOP_WORDS, DocView, Tokens

# emoticons and "10a.m." (the special-case matcher), İ (lowercase changes length), final sigma, stop words
ALPHABET = list("ab .,;:'\"()-!?İΣσςß\u0307\n\t\xa0#…•—") + [":)", ":-)", "10a.m.", "e.g.", "don't", "the", "The "]
FIXED = [
    "",
    " ",
    "İstanbul ΣΟΦΟΣ σοφοΣ K ﬁ straße :) :-) 10a.m. a.m. can't don't gonna U.S.A. (hello) e.g. the the",
    "the be to of and that have with The",
    "\u2028x\x1c y",
]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return FIXED + ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _same(t: str) -> None:
    a, b = DocView(t).tok, Tokens(t, t.split())  # cached chunks vs the whole text
    assert a.n == b.n and a.joined == b.joined, t
    for x, y in ((a.lens, b.lens), (a.hashes, b.hashes), (a.alpha, b.alpha), (a.nonsym, b.nonsym)):
        assert np.array_equal(x, y), t
    assert a.distinct(STOP_WORDS) == b.distinct(STOP_WORDS), t
    assert DocView(t).n_tokens == wordtok.count(t), t
    nc = normalized_codes(t)
    assert np.array_equal(DocView(t).norm_hashes, word_hashes(nc, *word_spans(nc))), t


def test_cached_chunks_give_the_whole_text_arrays():
    for t in _texts(1500):
        _same(t)


def test_a_full_cache_is_cleared_between_documents_and_stale_ids_looked_up_again(monkeypatch):
    monkeypatch.setattr(chunkcache, "CACHE_MAX", 50)
    gen = chunkcache.generation
    for t in _texts(400, seed=1):
        _same(t)
    assert chunkcache.generation > gen
    v = DocView("held over a clear: the words are looked up again")
    v.norm_hashes  # noqa: B018 - ids of this generation
    for t in _texts(100, seed=2):
        DocView(t).tok  # noqa: B018 - fills (and clears) the cache
    v._norm, v._tok = None, None
    _held = DocView(v.text)
    assert np.array_equal(v.norm_hashes, _held.norm_hashes)
    assert np.array_equal(v.tok.hashes, Tokens(v.text, v.text.split()).hashes)
