"""What the gates and near-dedup read from a document's words, cached per whitespace-separated chunk.

Every word-level quantity of the gates is a function of the chunks of `text.split()` taken one at a time: spaCy's
tokens never cross whitespace (`wordtok`), a token's hash, length and character classes depend on its characters
only (`minhash.word_hashes` is position-free), and normalisation maps every whitespace character to a space, so the
normalised words of a text are those of its chunks, in order. A chunk is therefore worked out once (`_ChunkIds`) and a
document costs one dict lookup per chunk (`lookup`) and a few numpy gathers (`tokens`, `norm_hashes`): the same
arrays the whole-text path computes, value for value.

Two kinds of chunk send a document back to the whole-text path (they return None): one that spaCy's special-case
matcher changed (its tokens may depend on its neighbours, `wordtok._needs_context`), and one whose lowercase has
another length (`minhash._lower` then lowercases the whole text character by character). So does any chunk whose
token count differs from its word-span count (none known; the check keeps the two paths equal by construction).

The cache is bounded: past `CACHE_MAX` chunks it is cleared before the next document's lookup (never during one), and
`generation` tells a holder of old ids to look them up again.
"""

from __future__ import annotations

import numpy as np

from ledgerlm.data import wordtok
from ledgerlm.data.minhash import U64, codepoints, normalized_codes, word_hashes, word_spans

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's list (datatrove: case-sensitive)
CACHE_MAX = 500_000
WHOLE_TOKENS, WHOLE_NORM = 1, 2  # chunk flags: the document needs the whole-text path for its tokens / its norm words


class _Col:
    """A growable numpy column."""

    __slots__ = ("a", "n")

    def __init__(self, dtype):
        self.a = np.zeros(4096, dtype=dtype)
        self.n = 0

    def extend(self, v) -> int:
        n = self.n
        m = n + len(v)
        if m > len(self.a):
            b = np.zeros(max(m, 2 * len(self.a)), dtype=self.a.dtype)
            b[:n] = self.a[:n]
            self.a = b
        self.a[n:m] = v
        self.n = m
        return n

    def clear(self) -> None:
        self.n = 0


# per chunk: flags, first token / norm word in the tables below, how many
FLAGS, TOK_OFF, TOK_CNT, NORM_OFF, NORM_CNT = (_Col(t) for t in (np.uint8, np.int64, np.int64, np.int64, np.int64))
# per token: hash, length in code points, class bits (1: not punctuation, 2: a letter), index in STOP_WORDS or -1
T_HASH, T_LEN, T_BITS, T_STOP = (_Col(t) for t in (U64, np.int64, np.uint8, np.int8))
N_HASH = _Col(U64)  # per normalised word: its hash
_COLS = (FLAGS, TOK_OFF, TOK_CNT, NORM_OFF, NORM_CNT, T_HASH, T_LEN, T_BITS, T_STOP, N_HASH)
generation = 0
_TABLES = None
_TABLE32 = None


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(is a letter, is not datatrove punctuation) for every code point: two 1.1 MB lookup tables, built once."""
    global _TABLES
    if _TABLES is None:
        alpha = np.array([chr(c).isalpha() for c in range(0x110000)], dtype=np.uint8)
        nonpunct = np.ones(0x110000, dtype=np.uint8)
        from datatrove.utils.text import PUNCTUATION_SET  # Gopher quality's "symbol" characters

        nonpunct[[ord(c) for c in PUNCTUATION_SET]] = 0
        _TABLES = (alpha, nonpunct)
    return _TABLES


def _table32() -> np.ndarray:
    """`_tables` combined for every code point, as `_table8` is for ASCII: bit 0 = not punctuation (space: 0), bit 1 =
    letter (one fancy-index lookup per character instead of two lookups, a compare and a multiply)."""
    global _TABLE32
    if _TABLE32 is None:
        alpha, nonpunct = _tables()
        t = nonpunct | (alpha << 1)
        t[32] = 0
        _TABLE32 = t.astype(np.uint8)
    return _TABLE32


def _fill(chunks: list[str]) -> None:
    """Append the rows of new chunks (and their tokens and normalised words) to the tables, with one numpy pass over
    all of them (a chunk at a time would cost ~15 numpy calls each)."""
    flags, toks = [], []
    for c in chunks:
        t = wordtok.chunk_tokens(c)
        f = WHOLE_TOKENS if c in wordtok._MATCHED else 0
        if not all(t) or any(" " in w for w in t):  # an empty token or one holding a space: the whole-text path
            f |= WHOLE_TOKENS
        if f & WHOLE_TOKENS:
            t = []  # never read: the document goes the whole-text way
        if len(c.lower()) != len(c):
            f |= WHOLE_NORM
        flags.append(f)
        toks.append(t)
    n_tok = [len(t) for t in toks]
    words = [w for t in toks for w in t]
    codes = codepoints(" ".join(words))
    s, e = word_spans(codes)  # one span per token: none is empty or holds a space
    first = T_HASH.extend(word_hashes(codes, s, e))
    T_LEN.extend(e - s)
    T_BITS.extend(np.bitwise_or.reduceat(_table32()[codes], s) if len(s) else np.zeros(0, np.uint8))
    T_STOP.extend([STOP_WORDS.index(w) if w in STOP_WORDS else -1 for w in words])
    TOK_OFF.extend(first + np.cumsum(n_tok) - n_tok)
    TOK_CNT.extend(n_tok)
    # normalised words: the chunks joined by spaces (a space is a separator there too), words counted per chunk
    norm = [c for c, f in zip(chunks, flags) if not f & WHOLE_NORM]
    nc = normalized_codes(" ".join(norm))
    ns, ne = word_spans(nc)
    starts = np.cumsum([0] + [len(c) + 1 for c in norm[:-1]])
    per = np.bincount(np.searchsorted(starts, ns, side="right") - 1, minlength=len(norm)) if norm else []
    n_norm = np.zeros(len(chunks), dtype=np.int64)
    n_norm[[i for i, f in enumerate(flags) if not f & WHOLE_NORM]] = per
    first = N_HASH.extend(word_hashes(nc, ns, ne))
    NORM_OFF.extend(first + np.cumsum(n_norm) - n_norm)
    NORM_CNT.extend(n_norm)
    FLAGS.extend(flags)


class _ChunkIds(dict):
    """chunk -> its row in the tables; a new chunk gets the next row, filled by `lookup` before it returns."""

    def __missing__(self, chunk: str) -> int:
        i = self[chunk] = len(self)
        _NEW.append(chunk)
        return i


_IDS = _ChunkIds()
_NEW: list[str] = []


def lookup(chunks: list[str]) -> tuple[int, np.ndarray]:
    """(generation, the row of each chunk). Clears the cache first when it is full (so never inside a document)."""
    global generation
    if len(_IDS) >= CACHE_MAX:
        _IDS.clear()
        for c in _COLS:
            c.clear()
        generation += 1
    ids = np.fromiter(map(_IDS.__getitem__, chunks), dtype=np.intp, count=len(chunks))
    if _NEW:
        _fill(_NEW)
        _NEW.clear()
    return generation, ids


def _gather(off: _Col, cnt: _Col, ids: np.ndarray) -> np.ndarray:
    """The rows of a per-word table that the chunks `ids` cover, in order (a ragged gather)."""
    c = cnt.a[ids]
    first = np.cumsum(c) - c
    return np.repeat(off.a[ids] - first, c) + np.arange(int(first[-1] + c[-1]) if len(c) else 0)


def tokens(ids: np.ndarray):
    """(n, lengths, hashes, class bits, stop-word index) of the document's word tokens, or None (whole-text path)."""
    if len(ids) and np.bitwise_or.reduce(FLAGS.a[ids]) & WHOLE_TOKENS:
        return None
    i = _gather(TOK_OFF, TOK_CNT, ids)
    return len(i), T_LEN.a[i], T_HASH.a[i], T_BITS.a[i], T_STOP.a[i]


def count(ids: np.ndarray) -> int | None:
    """The number of word tokens, or None (whole-text path)."""
    if len(ids) and np.bitwise_or.reduce(FLAGS.a[ids]) & WHOLE_TOKENS:
        return None
    return int(TOK_CNT.a[ids].sum())


def norm_hashes(ids: np.ndarray) -> np.ndarray | None:
    """The normalised word hashes (`minhash.word_hashes` of `minhash.normalized_codes(text)`), or None."""
    if len(ids) and np.bitwise_or.reduce(FLAGS.a[ids]) & WHOLE_NORM:
        return None
    return N_HASH.a[_gather(NORM_OFF, NORM_CNT, ids)]
