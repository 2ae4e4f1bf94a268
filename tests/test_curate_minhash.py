"""MinHash/LSH: hashing invariants, Jaccard estimates, and agreement with datasketch on the same shingles."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

from ledgerlm.data.minhash import (
    _POWERS,
    MinHasher,
    MinHashParams,
    candidate_pairs,
    codepoints,
    components,
    doc_word_hashes,
    estimated_jaccard,
    lsh_edges,
    normalize,
    normalized_codes,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_powers_are_exact_mod_2_64():
    pw, inv = _POWERS.get(3000)
    assert int(pw[2999]) == pow(0x100000001B3, 2999, 1 << 64)
    assert np.all(pw * inv == 1)


def test_word_hashes_do_not_depend_on_context_or_encoding():
    alone = doc_word_hashes("Hello, World")[0]
    inside = doc_word_hashes("x " * 5000 + "hello world! café")[0]
    assert np.array_equal(alone, inside[5000:5002])
    # same words, ASCII vs UTF-32 path (the 'é' forces UTF-32): identical hashes and string positions
    wh, s, e = doc_word_hashes("café au lait")
    assert np.array_equal(wh[1:], doc_word_hashes("au lait")[0]) and (s[1], e[1]) == (5, 7)
    assert len(normalize("İstanbul")) == len("İstanbul")


def test_normalized_codes_equal_the_translate_table_on_every_code_point():
    """The numpy lookup (ASCII by bytes.translate, the BMP by one table) equals `normalize` (str.translate)."""
    every = "".join(chr(c) for c in range(0x20000) if not 0xD800 <= c < 0xE000)
    for text in (every, every[:128], "Hello, World! 123"):
        assert np.array_equal(normalized_codes(text), codepoints(normalize(text)))


def test_batch_signatures_equal_single_signatures():
    mh = MinHasher()
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "short text", "", "a b c d e f g h", "!!!"]
    batch = mh.signatures(texts)
    for i, t in enumerate(texts):
        assert np.array_equal(batch[i], mh.signatures([t])[0])
    assert np.all(batch[2] == MinHasher.EMPTY) and np.all(batch[4] == MinHasher.EMPTY)
    assert not np.all(batch[1] == MinHasher.EMPTY)  # fewer words than n: one shingle of all of them


def test_signatures_from_word_hashes_equal_signatures_of_texts():
    """The scan builds signatures from the word hashes the quality gates already computed: same shingles, same
    signatures as from the texts (short, empty, punctuation-only, non-ASCII and real documents in one batch)."""
    mh = MinHasher()
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "short text", "", "!!!", "a b c d e f g h"]
    texts += ["Café au lait, naïve “quotes” — ΣΟΦΙΑ σοφός 日本語 end.", "x"] + _real_docs(40, random.Random(1))
    sh, counts = mh.shingles(texts)
    sh2, counts2 = mh.shingles_of_words([doc_word_hashes(t)[0] for t in texts])
    assert np.array_equal(sh, sh2) and np.array_equal(counts, counts2)
    assert np.array_equal(mh.signatures(texts), mh.signatures_from_shingles(sh2, counts2))
    assert mh.shingles_of_words([])[0].size == 0


@pytest.mark.parametrize("chunk_rows", [1, 5, 300, 1 << 16])
def test_signatures_equal_the_product_matrix_reference(chunk_rows):
    """One hash function at a time, in blocks of documents, equals the minimum over the full (shingles x 112)
    product matrix of each document (blocks smaller than a document, empty documents, real text)."""
    mh = MinHasher(chunk_rows=chunk_rows)
    texts = ["", "a", "!!!", "one two three four five six seven"] + _real_docs(30, random.Random(2)) + [""]
    sh, counts = mh.shingles(texts)
    want = np.full((len(texts), mh.params.num_perm), MinHasher.EMPTY, dtype=np.uint64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for d in np.flatnonzero(counts):
        want[d] = (sh[offsets[d] : offsets[d + 1], None] * mh.a[None, :]).min(axis=0)
    assert np.array_equal(mh.signatures_from_shingles(sh, counts), want)


def ref_shingles(text: str, n: int = 5) -> set[str]:
    w = re.sub(r"[^\w\s]|_", " ", text.lower()).split()
    return {" ".join(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))}


def _real_docs(k: int, rng: random.Random) -> list[str]:
    if not (DATA / "text" / "tinyshakespeare.txt").is_file():
        pytest.skip("shared data not available")
    words = (DATA / "text" / "tinyshakespeare.txt").read_text().split()
    out = []
    for _ in range(k):
        s = rng.randrange(len(words) - 300)
        out.append(" ".join(words[s : s + rng.randrange(120, 250)]))
    return out


def _plant(text: str, target: float, rng: random.Random) -> str:
    """Replace random words until the shingle Jaccard drops to about `target`."""
    words = text.split()
    ref = ref_shingles(text)
    while True:
        cand = list(words)
        cand[rng.randrange(len(cand))] = f"zq{rng.randrange(10**9)}"
        sh = ref_shingles(" ".join(cand))
        if len(ref & sh) / len(ref | sh) < target:
            return " ".join(words)
        words = cand


def test_estimated_jaccard_is_close_to_true_jaccard():
    rng = random.Random(0)
    mh = MinHasher()
    errs = []
    for doc in _real_docs(40, rng):
        other = _plant(doc, rng.uniform(0.3, 0.95), rng)
        a, b = ref_shingles(doc), ref_shingles(other)
        sig = mh.signatures([doc, other])
        errs.append(estimated_jaccard(sig[0], sig[1]) - len(a & b) / len(a | b))
    # standard error of a 112-hash estimate is <= 0.047; the mean error must be ~0 (no bias)
    assert abs(np.mean(errs)) < 0.02 and np.std(errs) < 0.06


def test_candidates_agree_with_datasketch():
    """Same shingles, same 14x8 banding: on pairs with Jaccard >= 0.8 both LSHs make the same call >= 95% of the time."""
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(1)
    base = _real_docs(150, rng)
    docs = list(base)
    pairs = []
    for i, d in enumerate(base):
        docs.append(_plant(d, rng.uniform(0.8, 0.95), rng) if i < 130 else d)  # 20 exact copies
        pairs.append((i, len(docs) - 1))
    mh = MinHasher(MinHashParams())
    mine = candidate_pairs(mh.signatures(docs), mh.params)
    lsh = datasketch.MinHashLSH(num_perm=112, params=(14, 8))
    keys = []
    for i, d in enumerate(docs):
        m = datasketch.MinHash(num_perm=112, seed=1)
        m.update_batch([s.encode() for s in ref_shingles(d)])
        lsh.insert(str(i), m)
        keys.append(m)
    theirs = {tuple(sorted((i, int(j)))) for i in range(len(docs)) for j in lsh.query(keys[i]) if int(j) != i}
    high = [
        p
        for p in pairs
        if len(ref_shingles(docs[p[0]]) & ref_shingles(docs[p[1]]))
        / len(ref_shingles(docs[p[0]]) | ref_shingles(docs[p[1]]))
        >= 0.8
    ]
    assert len(high) >= 140
    agree = np.mean([(p in mine) == (p in theirs) for p in high])
    recall_mine = np.mean([p in mine for p in high])
    print(f"agreement {agree:.3f} recall {recall_mine:.3f} on {len(high)} pairs")
    assert agree >= 0.95, (agree, recall_mine)
    assert recall_mine >= 0.95
    # and LSH finds no pair between unrelated windows of the play beyond what datasketch finds, give or take
    extra = {p for p in mine if p not in set(pairs)}
    extra_ds = {p for p in theirs if p not in set(pairs)}
    assert len(extra) <= len(extra_ds) + 5


def test_lsh_edges_and_components():
    mh = MinHasher()
    a = "the rain in spain stays mainly in the plain and the sun shines on the hills every day"
    texts = [a, a + " indeed", "completely different words are written in this sentence for the test here", a]
    sig = mh.signatures(texts)
    e = lsh_edges(sig, mh.params)
    labels = components(len(texts), e)
    assert labels[0] == labels[1] == labels[3] != labels[2]
