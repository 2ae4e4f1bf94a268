"""Heuristic quality gates (Gopher, C4, FineWeb) and optional fastText language id.

Each document is tokenised once into a `DocView` (lines, paragraphs, raw word spans, normalised word hashes as numpy
arrays); every gate reads that view. The gates run in a fixed order and the first that fails names the reason
(`quality:<gate>`) together with the measured value and the threshold, so `ledgerlm inspect` can show why.

Thresholds follow the papers / datatrove defaults except where noted for short documents (min words 30, not 50).
A threshold of None switches that gate off. Repetition n-gram statistics are computed on word hashes with numpy:
"duplicated n-gram fraction" = share of word characters covered by n-grams that already occurred earlier in the
document (Gopher counts the same, skipping overlaps).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ledgerlm.config import from_dict
from ledgerlm.data.minhash import U64, codepoints, ngram_windows, normalized_codes, word_hashes, word_spans

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's list
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u3002", "\uff01", "\uff1f")
BULLETS = ("\u2022", "\u2023", "\u25b6", "\u25cf", "\u25e6", "\u25aa", "\u25ab", "\u2013", "-", "*", "\u00b7")
_IS_SPACE = np.array([chr(cp).isspace() for cp in range(0x10000)], dtype=bool)
_ALPHA = np.array([chr(cp).isalpha() for cp in range(0x10000)], dtype=bool)
_IS_SPACE8, _ALPHA8 = _IS_SPACE[:128].tobytes() * 2, _ALPHA[:128].tobytes() * 2  # bytes.translate tables (ASCII)
_STOP_HASHES = None
_PARA_SPLIT = re.compile(r"\n\s*\n")


def _stop_hashes() -> np.ndarray:
    global _STOP_HASHES
    if _STOP_HASHES is None:
        text = " ".join(STOP_WORDS)
        codes = codepoints(text)
        s, e = word_spans(codes)
        _STOP_HASHES = np.unique(word_hashes(codes, s, e))
    return _STOP_HASHES


@dataclass
class QualityConfig:
    enabled: bool = True
    # Gopher quality
    min_words: int | None = 30  # Gopher uses 50; 30 keeps short stories
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1  # ('#' and ellipses) per word
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8  # words with at least one letter
    min_stop_words: int | None = 2
    # Gopher repetition
    max_dup_line_frac: float | None = 0.3
    max_dup_para_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    max_dup_para_char_frac: float | None = 0.2
    top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    # C4
    c4_lorem_ipsum: bool = True
    c4_curly_bracket: bool = True
    c4_max_javascript_lines_ratio: float | None = 0.2  # C4 deletes such lines; a doc made of them is dropped
    c4_min_terminal_lines: int | None = 1  # C4 keeps only lines ending in terminal punctuation
    # FineWeb
    min_line_punct_ratio: float | None = 0.12
    max_short_lines_ratio: float | None = 0.67
    short_line_length: int = 30
    max_dup_line_chars_ratio: float | None = 0.01
    max_newline_word_ratio: float | None = 0.3
    # language id (fastText model file, e.g. lid.176.bin); off when no model is given
    lang_model: str | None = None
    languages: list[str] = field(default_factory=lambda: ["en"])
    min_lang_score: float = 0.65

    def validate(self) -> None:
        for k in (*self.top_ngram_char_frac, *self.dup_ngram_char_frac):
            if not 1 <= k <= 64:
                raise ValueError(f"n-gram sizes must be in 1..64, got {k}")


def overlay(base: QualityConfig, override: dict[str, Any] | None) -> QualityConfig:
    """`base` with the fields named in `override` replaced: a source's `quality:` over the stage-wide gates.

    `override` is a partial mapping of QualityConfig fields; it is checked like a recipe section (unknown gate names,
    wrong types -> ConfigError naming `quality.<field>`). Fields are replaced whole (a dict such as
    `dup_ngram_char_frac` replaces the stage-wide dict, it is not merged). No override returns `base` itself.
    """
    if not override:
        return base
    part = from_dict(QualityConfig, override, prefix="quality")
    out = dataclasses.replace(base, **{k: getattr(part, k) for k in override})
    out.validate()
    return out


class DocView:
    """One document tokenised once: lines, paragraphs, raw words (spans + lengths), normalised word hashes."""

    __slots__ = (
        "text",
        "lines",
        "paras",
        "n_words",
        "word_len",
        "alpha_words",
        "norm_hashes",
        "norm_len",
        "n_lines",
        "punct_lines",
        "line_punct_ratio",
        "dup_lines",
    )

    def __init__(self, text: str):
        self.text = text
        self.lines = [ln for ln in text.split("\n") if ln.strip()]
        self.n_lines = max(len(self.lines), 1)
        self.punct_lines = sum(1 for ln in self.lines if ln.rstrip().endswith(TERMINAL_PUNCT))
        self.line_punct_ratio = self.punct_lines / self.n_lines
        self.dup_lines = _dup_stats(self.lines)  # (repeated lines, their characters): read by several gates
        self.paras = [p for p in _PARA_SPLIT.split(text) if p.strip()]
        if text.isascii():  # the character classes by bytes.translate (C speed)
            raw = text.encode("ascii")
            space = np.frombuffer(raw.translate(_IS_SPACE8), dtype=np.uint8)
            alpha = np.frombuffer(raw.translate(_ALPHA8), dtype=np.uint8)
        else:
            idx = np.minimum(codepoints(text), 0xFFFF)
            space, alpha = _IS_SPACE[idx].view(np.uint8), _ALPHA[idx].view(np.uint8)
        s, e = word_spans(space, space=1)
        self.n_words = len(s)
        self.word_len = e - s
        # a word has a letter when the maximum of its span (and the spaces after it) is 1
        self.alpha_words = int(np.count_nonzero(np.maximum.reduceat(alpha, s))) if self.n_words else 0
        ncodes = normalized_codes(text)
        ns, ne = word_spans(ncodes)
        self.norm_hashes = word_hashes(ncodes, ns, ne)
        self.norm_len = ne - ns


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
