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

from ledgerlm.data.minhash import codepoints, ngram_hash_family, normalized_codes, word_hashes, word_spans

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher's list
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u3002", "\uff01", "\uff1f")
BULLETS = ("\u2022", "\u2023", "\u25b6", "\u25cf", "\u25e6", "\u25aa", "\u25ab", "\u2013", "-", "*", "\u00b7")
_IS_SPACE = np.array([chr(cp).isspace() for cp in range(0x10000)], dtype=bool)
_ALPHA = np.array([chr(cp).isalpha() for cp in range(0x10000)], dtype=bool)
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
    from ledgerlm.config import from_dict

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
    )

    def __init__(self, text: str):
        self.text = text
        self.lines = [ln for ln in text.split("\n") if ln.strip()]
        self.n_lines = max(len(self.lines), 1)
        self.punct_lines = sum(1 for ln in self.lines if ln.rstrip().endswith(TERMINAL_PUNCT))
        self.line_punct_ratio = self.punct_lines / self.n_lines
        self.paras = [p for p in _PARA_SPLIT.split(text) if p.strip()]
        codes = codepoints(text)
        idx = codes if codes.dtype == np.uint8 else np.minimum(codes, 0xFFFF)
        s, e = word_spans(_IS_SPACE[idx].view(np.uint8), space=1)
        self.n_words = len(s)
        self.word_len = e - s
        if self.n_words:
            alpha = _ALPHA[idx].astype(np.int32)
            self.alpha_words = int(np.count_nonzero(np.add.reduceat(alpha, s)))
        else:
            self.alpha_words = 0
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
    """Gopher's n-gram repetition statistics for several n with one sort.

    ("top", n): characters of the most frequent n-gram times its count / all word characters (0 if none repeats);
    ("dup", n): share of word characters covered by n-grams that already occurred earlier in the document.
    """
    total = int(lens.sum())
    out = {("top", n): 0.0 for n in top} | {("dup", n): 0.0 for n in dup}
    # a repeated m-gram contains a repeated n-gram for every n < m: when the smallest dup size has no repeat, the
    # larger ones have none either and need no sorting (the common case on clean text)
    small = sorted({*top, min(dup)}) if dup else sorted(top)
    if dup and len(small) < len({*top, *dup}):
        part = _ngram_stats(h, lens, total, small, top, [min(dup)], out)
        if part == 0:
            return out
    if total:
        _ngram_stats(h, lens, total, sorted({*top, *dup}), top, dup, out)
    return out


def _ngram_stats(h, lens, total, sizes, top, dup, out) -> int:
    """Fill `out` for `sizes`; returns the number of repeated n-grams of the dup sizes."""
    grams = ngram_hash_family(h, sizes, mix=False)  # distinct n never collide: the size is part of the value
    parts = [grams[n] for n in sizes]
    if total == 0 or not sum(len(p) for p in parts):
        return 0
    lengths = [len(p) for p in parts]
    offs = np.cumsum([0] + lengths)
    g = np.concatenate(parts)
    order = np.argsort(g)
    gs = g[order]
    new = np.empty(len(g), dtype=bool)
    new[0] = True
    np.not_equal(gs[1:], gs[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(g)))
    first = np.minimum.reduceat(order, starts)  # earliest occurrence of each distinct value
    size_of = np.repeat(np.arange(len(sizes)), lengths)[first]
    repeated = counts > 1
    is_dup = np.ones(len(g), dtype=bool)
    is_dup[first] = False
    repeats = 0
    for j, n in enumerate(sizes):
        if n in top:
            sel = np.flatnonzero((size_of == j) & repeated)
            if len(sel):
                k = sel[np.argmax(counts[sel])]
                i = int(first[k] - offs[j])
                out[("top", n)] = float(lens[i : i + n].sum() * counts[k]) / total
        if n in dup:
            pos = np.flatnonzero(is_dup[offs[j] : offs[j + 1]])
            repeats += len(pos)
            if len(pos):
                cover = np.zeros(len(lens) + 1, dtype=np.int32)
                cover[pos] += 1  # positions are distinct: fancy-index adds are exact (no np.add.at needed)
                cover[pos + n] -= 1
                out[("dup", n)] = float(lens[np.cumsum(cover[:-1]) > 0].sum()) / total
    return repeats


class QualityGates:
    """`check(text) -> (reason or None, details, score)`; `score` ranks copies in near-dup clusters (higher kept).

    The document is tokenised once (`DocView`); the filters of `ledgerlm.data.filters.FILTERS` run in order and the
    first that fails names the reason."""

    def __init__(self, cfg: QualityConfig):
        from ledgerlm.data.filters import FILTERS

        self.cfg = cfg
        self.filters = [f(cfg) for f in FILTERS if f.active(cfg)]

    def check(self, text: str) -> tuple[str | None, dict, float]:
        v = DocView(text)
        _, dup_line_chars = _dup_stats(v.lines)
        score = round(v.line_punct_ratio * (1.0 - dup_line_chars / max(len(text), 1)), 6)
        if not self.cfg.enabled:
            return None, {}, score
        for f in self.filters:
            keep, reason, details = f.filter(v)
            if not keep:
                return reason, details, score
        return None, {}, score
