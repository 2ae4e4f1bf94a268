"""What the quality gates read: the document as the gates see it (`DocView`, `Tokens`) and the shared counting pieces
(n-gram repetition, datatrove's terminal punctuation and Gopher stop words). The gates themselves, one class per
datatrove filter family with its own thresholds, and their settings (`QualityConfig`, `overlay`) are in
`ledgerlm.data.filters` (`QualityGates` runs them in the FineWeb chain's order).

Each document is viewed once (`DocView`): its text, its word tokens (lazily: the tokenised text, token spans,
lengths, raw token hashes, which tokens hold a letter / a non-punctuation character) and its normalised word hashes
for near-dedup. Words are the tokens of datatrove's English word tokenizer (spaCy's), reproduced without spaCy by
`ledgerlm.data.wordtok`.
"""

from __future__ import annotations

import re

import numpy as np

from ledgerlm.data import chunkcache, wordtok
from ledgerlm.data.chunkcache import STOP_WORDS, _table32, _tables
from ledgerlm.data.minhash import U64, codepoints, ngram_windows, normalized_codes, word_hashes, word_spans

_TERMINAL = None  # datatrove's TERMINAL_PUNCTUATION (FineWeb's line ends), read from datatrove on first use
_STOP_HASHES = None


def terminal_punctuation() -> tuple[str, ...]:
    """datatrove's TERMINAL_PUNCTUATION (160 sentence-final characters of many scripts), as a tuple for endswith."""
    global _TERMINAL
    if _TERMINAL is None:
        from datatrove.utils.text import TERMINAL_PUNCTUATION  # a dependency already; no spaCy needed

        _TERMINAL = tuple(sorted(TERMINAL_PUNCTUATION))
    return _TERMINAL


def terminal_set() -> frozenset[str]:
    """The same characters as a set (each is one character: a line ends in one iff its last character is one)."""
    global _TERMINAL_SET
    if _TERMINAL_SET is None:
        _TERMINAL_SET = frozenset(terminal_punctuation())
        assert all(len(c) == 1 for c in _TERMINAL_SET)
    return _TERMINAL_SET


_TERMINAL_SET = None


def _stop_hashes() -> np.ndarray:
    global _STOP_HASHES
    if _STOP_HASHES is None:
        codes = codepoints(" ".join(STOP_WORDS))
        _STOP_HASHES = np.unique(word_hashes(codes, *word_spans(codes)))
    return _STOP_HASHES


class Tokens:
    """The word tokens of a text (datatrove's English `split_into_words`) as numpy columns; `joined`, the tokens
    joined by single spaces, is built on first use. With `ids` (the chunks' rows in `chunkcache`) the columns are
    gathered from the per-chunk cache; without, or when a chunk needs the whole text, they are computed from it."""

    __slots__ = (
        "_text",
        "_chunks",
        "_joined",
        "n",
        "lens",
        "hashes",
        "_codes",
        "_starts",
        "_alpha",
        "_nonsym",
        "_stop",
    )

    def __init__(self, text: str, chunks: list[str] | None = None, ids: np.ndarray | None = None):
        self._text, self._chunks = text, chunks
        got = chunkcache.tokens(ids) if ids is not None else None
        if got is not None:
            self.n, self.lens, self.hashes, bits, self._stop = got
            self._nonsym = (bits & 1).astype(bool)
            self._alpha = (bits & 2).astype(bool)
            self._joined = None
            return
        self._joined = joined = wordtok.tokenize(text, chunks)
        self._codes = codes = codepoints(joined)
        s, e = word_spans(codes)
        self._starts = s
        self.n = len(s)
        self.lens = e - s
        self.hashes = word_hashes(codes, s, e)
        self._alpha = self._nonsym = self._stop = None

    @property
    def joined(self) -> str:
        if self._joined is None:
            self._joined = wordtok.tokenize(self._text, self._chunks)
        return self._joined

    def _classes(self) -> None:
        if self.n == 0:
            self._alpha = self._nonsym = np.zeros(0, dtype=bool)
            return
        codes, s = self._codes, self._starts
        # one byte per character: bit 0 = not datatrove punctuation, bit 1 = a letter; OR-reduced per token
        if codes.dtype == np.uint8:  # ASCII: bytes.translate with a 256-entry table (C speed, no fancy indexing)
            bits = np.frombuffer(codes.tobytes().translate(_table8()), dtype=np.uint8)
        else:
            bits = _table32()[codes]  # one lookup in the combined table (the space: 0)
        per_token = np.bitwise_or.reduceat(bits, s)
        self._nonsym = (per_token & 1).astype(bool)
        self._alpha = (per_token & 2).astype(bool)

    @property
    def alpha(self) -> np.ndarray:
        """Tokens holding a letter (str.isalpha)."""
        if self._alpha is None:
            self._classes()
        return self._alpha

    @property
    def nonsym(self) -> np.ndarray:
        """Tokens holding a character outside datatrove's punctuation set."""
        if self._nonsym is None:
            self._classes()
        return self._nonsym

    def distinct(self, words: tuple[str, ...]) -> int:
        """How many of `words` occur as a token (case-sensitive)."""
        if self._stop is not None and words == STOP_WORDS:  # each token's index in STOP_WORDS (-1: none)
            return int(np.count_nonzero(np.bincount(self._stop[self._stop >= 0], minlength=len(STOP_WORDS))))
        padded = f" {self.joined} "
        return sum(f" {w} " in padded for w in words)


_TABLE8 = None


def _table8() -> bytes:
    """The ASCII rows of `_tables` as one bytes.translate table: bit 0 = not punctuation (space: 0), bit 1 = letter."""
    global _TABLE8
    if _TABLE8 is None:
        alpha, nonpunct = _tables()
        t = nonpunct[:256] | (alpha[:256] << 1)
        t[32] = 0
        _TABLE8 = t.astype(np.uint8).tobytes()
    return _TABLE8


class DocView:
    """One document as the gates see it: the text, its word tokens (computed on first use) and, for near-dedup, its
    normalised word hashes. The whitespace word count (`ws_words`) is what the ledger counts as tokens."""

    __slots__ = ("text", "_tok", "_norm", "_chunks", "_ids", "_lines", "_dup")

    def __init__(self, text: str):
        self.text = text
        self._tok: Tokens | None = None
        self._norm: np.ndarray | None = None
        self._chunks: list[str] | None = None
        self._ids: tuple[int, np.ndarray] | None = None
        self._lines: list[str] | None = None
        self._dup: int | None = None

    @property
    def nonblank_lines(self) -> list[str]:
        """The lines of text.split("\\n") that hold more than whitespace (FineWeb's lines; the near-dup score's)."""
        if self._lines is None:
            self._lines = [ln for ln in self.text.split("\n") if ln.strip()]
        return self._lines

    @property
    def dup_line_chars(self) -> int:
        """Characters in the non-blank lines that repeat an earlier one."""
        if self._dup is None:
            self._dup = _dup_stats(self.nonblank_lines)[1]
        return self._dup

    def _chunk_ids(self) -> np.ndarray:
        """The chunks' rows in `chunkcache` (looked up again when the cache was cleared since)."""
        if self._ids is None or self._ids[0] != chunkcache.generation:
            self._ids = chunkcache.lookup(self.chunks)
        return self._ids[1]

    @property
    def chunks(self) -> list[str]:
        """text.split(): the whitespace words (split once, read by several gates)."""
        if self._chunks is None:
            self._chunks = self.text.split()
        return self._chunks

    @property
    def tok(self) -> Tokens:
        if self._tok is None:
            self._tok = Tokens(self.text, self.chunks, self._chunk_ids())
        return self._tok

    @property
    def n_tokens(self) -> int:
        """The number of word tokens (cheaper than `tok` when only the count is needed)."""
        if self._tok is not None:
            return self._tok.n
        n = chunkcache.count(self._chunk_ids())
        return wordtok.count(self.text, self.chunks) if n is None else n

    @property
    def ws_words(self) -> int:
        return len(self.chunks)

    @property
    def norm_hashes(self) -> np.ndarray:
        if self._norm is None:
            self._norm = chunkcache.norm_hashes(self._chunk_ids())
        if self._norm is None:  # a chunk whose lowercase changes length: the whole text, as minhash._lower does
            ncodes = normalized_codes(self.text)
            self._norm = word_hashes(ncodes, *word_spans(ncodes))
        return self._norm


def _dup_stats(parts: list[str]) -> tuple[int, int]:
    """(number of parts that repeat an earlier part, characters in those repeats)."""
    seen: set[str] = set()
    n = chars = 0
    for p in parts:
        if p in seen:
            n += 1
            chars += len(p)
        else:
            seen.add(p)
    return n, chars


def ngram_repetition(h: np.ndarray, lens: np.ndarray, top: list[int], dup: list[int]) -> dict[tuple[str, int], float]:
    """Gopher's n-gram repetition statistics, n ascending, each size looking only where a repeat is possible.

    ("top", n): characters of the most frequent n-gram times its count / all word characters (0 if none repeats; of
    equally frequent n-grams, the one with the smallest hash value);
    ("dup", n): share of word characters covered by n-grams that already occurred earlier in the document.
    A repeated n-gram is made of two repeated (n-1)-grams (at i and i+1), so after the first size only those
    positions are sorted, and when no n-gram repeats no longer one does (the common case on clean text: stop).
    """
    total = int(lens.sum())
    out = {("top", n): 0.0 for n in top} | {("dup", n): 0.0 for n in dup}
    sizes = {*top, *dup}
    if not total or not sizes:
        return out
    rep = None  # rep[i]: the previous size's n-gram at i occurs more than once
    for n, g in ngram_windows(h, range(min(sizes), max(sizes) + 1), mix=False):
        m = len(g)
        at = np.flatnonzero(rep[:m] & rep[1 : m + 1]) if rep is not None else _shared_buckets(g)
        ga = g[at]
        order = np.argsort(ga, kind="stable")  # equal values stay in position order: the first is the earliest
        gs = ga[order]
        later = np.zeros(len(gs), dtype=bool)  # an occurrence after the first of its value
        np.equal(gs[1:], gs[:-1], out=later[1:])
        if not later.any():
            break
        if n in top:
            starts = np.flatnonzero(~later)
            counts = np.diff(np.append(starts, len(gs)))
            k = int(np.argmax(counts))  # the first maximum: of equally frequent n-grams, the smallest value
            i = int(at[order[starts[k]]])  # its first occurrence
            out[("top", n)] = float(lens[i : i + n].sum() * counts[k]) / total
        if n in dup:
            pos = at[order[later]]
            cover = np.zeros(len(lens) + 1, dtype=np.int32)
            cover[pos] += 1  # positions are distinct: fancy-index adds are exact (no np.add.at needed)
            cover[pos + n] -= 1
            out[("dup", n)] = float(lens[np.cumsum(cover[:-1]) > 0].sum()) / total
        repeated = later.copy()  # every occurrence of a value that occurs more than once
        repeated[:-1] |= later[1:]
        rep = np.zeros(m, dtype=bool)
        rep[at[order[repeated]]] = True
    return out


def _shared_buckets(g: np.ndarray) -> np.ndarray:
    """Positions whose value shares its top bits with another value: a superset of the repeated values' positions,
    found in O(len) with a bucket count (~4 buckets per value), so that only ~1/5 of the values need sorting."""
    bits = min(len(g).bit_length() + 2, 24)
    bucket = (g >> U64(64 - bits)).astype(np.intp)
    return np.flatnonzero(np.bincount(bucket, minlength=1 << bits)[bucket] > 1)


# ----------------------------------------------------------------------------- Gopher repetition's counts

PARAGRAPH_BREAK = re.compile(r"\n{2,}")


def top_ngram_chars(g: np.ndarray, lens: np.ndarray, n: int) -> tuple[int, bool]:
    """datatrove's find_top_duplicate: len(" ".join(most common n-gram)) * its count (ties: the first seen); and
    whether any n-gram repeats."""
    _, first, counts = np.unique(g, return_index=True, return_counts=True)
    best = int(counts.max())
    i = int(first[counts == best].min())
    return (int(lens[i : i + n].sum()) + n - 1) * best, best > 1


def all_dup_chars(g: np.ndarray, cum: np.ndarray, n: int) -> int:
    """datatrove's find_all_duplicate: scan left to right; an n-gram seen before adds its characters (without spaces)
    and the scan jumps past it (the skipped n-grams are not remembered)."""
    seen: set[int] = set()
    rep, idx, m = 0, 0, len(g)
    gl = g.tolist()
    while idx < m:
        h = gl[idx]
        if h in seen:
            rep += int(cum[idx + n] - cum[idx])
            idx += n
        else:
            seen.add(h)
            idx += 1
    return rep


def split_newline_runs(text: str) -> list[str]:
    """re.split("\n+", text) without the regex engine (several times faster on long texts)."""
    parts = text.split("\n")
    if len(parts) < 3:
        return parts
    return [parts[0], *filter(None, parts[1:-1]), parts[-1]]


def bucket_counts(g: np.ndarray) -> np.ndarray:
    """For each value, how many values share its hash bucket: >= how often the value itself occurs."""
    bits = min(len(g).bit_length() + 2, 24)
    bucket = (g >> np.uint64(64 - bits)).astype(np.intp)
    return np.bincount(bucket, minlength=1 << bits)[bucket]


# ----------------------------------------------------------------------------- C4's line vocabulary

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_COOKIE_PHRASES = tuple(p for p in POLICY_SUBSTRINGS if "cookie" in p)
_OTHER_PHRASES = tuple(p for p in POLICY_SUBSTRINGS if "cookie" not in p)


def has_policy(low: str) -> bool:
    """any(p in low for p in POLICY_SUBSTRINGS), looking for the cookie phrases only where "cookie" occurs."""
    return any(p in low for p in _OTHER_PHRASES) or ("cookie" in low and any(p in low for p in _COOKIE_PHRASES))


def near_dup_score(v: DocView) -> float:
    """Near-dup keep rule's quality score: share of lines ending in punctuation x (1 - share of characters in
    repeated lines). (The view's lines and repeats are FineWeb's, counted once.)"""
    lines = v.nonblank_lines
    if not lines:
        return 0.0
    punct = sum(1 for ln in lines if ln.rstrip().endswith(END_PUNCTUATION)) / len(lines)
    return round(punct * (1.0 - v.dup_line_chars / max(len(v.text), 1)), 6)
