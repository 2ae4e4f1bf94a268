"""Quality filters, one class per gate family, each a port of datatrove 0.10's filter of the same family.

    GopherRepetition  datatrove GopherRepetitionFilter  (Gopher, Rae et al. 2021, Table A1)
    GopherQuality     datatrove GopherQualityFilter     (Gopher, Rae et al. 2021)
    C4                datatrove C4QualityFilter         (C4, Raffel et al. 2020; edits the text: removes lines)
    FineWeb           datatrove FineWebQualityFilter    (FineWeb, Penedo et al. 2024)
    Language          fastText language id (optional)

FILTERS runs them in the order of datatrove's FineWeb chain (`examples/fineweb.py`); the first failure names the
reason, and the later families see the C4-edited text. Each family declares its thresholds with it (a nested
`Settings` dataclass; `QualityConfig` is built from the registered families' Settings: flat recipe keys
`curate.quality.<field>`, defaults = datatrove's FineWeb chain, None switches a rule off; `fields` names those that
switch the family on) and answers `filter(doc) -> (keep, reason, details)` for a `DocView`; `details` holds the measured value, the threshold and `ref`, the datatrove filter and reason the rule
follows. C4 may also return an edit (`details["edit"]`, a `C4Edit`): the text with lines removed and what went why.
Adding a rule = one class here (its Settings and its verdict), one line in FILTERS, its test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar

import numpy as np

from ledgerlm.config import from_dict, ranged
from ledgerlm.data import wordtok
from ledgerlm.data.minhash import ngram_hashes, ngram_windows
from ledgerlm.data.quality import (
    CITATION,
    END_PUNCTUATION,
    PARAGRAPH_BREAK,
    STOP_WORDS,
    DocView,
    _dup_stats,
    all_dup_chars,
    bucket_counts,
    has_policy,
    near_dup_score,
    ngram_repetition,
    split_newline_runs,
    terminal_set,
    top_ngram_chars,
)

Verdict = tuple[bool, "str | None", dict]
KEEP: Verdict = (True, None, {})


def fail(name: str, value, threshold, ref: str | None = None) -> Verdict:
    d = {"value": round(float(value), 4), "threshold": threshold}
    if ref:
        d["ref"] = ref
    return False, f"quality:{name}", d


class Filter:
    fields: tuple[str, ...] = ()

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    @classmethod
    def active(cls, cfg: QualityConfig) -> bool:
        """False when every field is off (None/False): the filter is not built at all."""
        return any(getattr(cfg, f) not in (None, False, {}) for f in cls.fields)

    def filter(self, doc: DocView) -> Verdict:
        raise NotImplementedError


# ----------------------------------------------------------------------------- Gopher repetition


class GopherRepetition(Filter):
    """datatrove GopherRepetitionFilter: paragraphs (split on 2+ newlines), lines (split on newlines, empty pieces
    included), the most frequent 2/3/4-gram and the duplicated 5..10-grams of word tokens, all over len(text)."""

    @dataclass
    class Settings:
        """Its thresholds (fractions of len(text)); None switches a rule off."""

        max_dup_line_frac: float | None = 0.3
        max_dup_para_frac: float | None = 0.3
        max_dup_line_char_frac: float | None = 0.2
        max_dup_para_char_frac: float | None = 0.2
        top_ngram_char_frac: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
        dup_ngram_char_frac: dict[int, float] = field(
            default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
        )

    fields = (
        "max_dup_line_frac",
        "max_dup_para_frac",
        "max_dup_line_char_frac",
        "max_dup_para_char_frac",
        "top_ngram_char_frac",
        "dup_ngram_char_frac",
    )
    REF = "datatrove GopherRepetitionFilter"

    def filter(self, v: DocView) -> Verdict:
        c, text = self.cfg, v.text
        if not text:
            return fail("gopher_empty", 0, 1, f"{self.REF}: empty")
        n_chars = len(text)
        stripped = text.strip()
        paras = PARAGRAPH_BREAK.split(stripped) if "\n\n" in stripped else [stripped]
        k, chars = _dup_stats(paras)
        if c.max_dup_para_frac and k / len(paras) > c.max_dup_para_frac:
            return fail("gopher_dup_paragraphs", k / len(paras), c.max_dup_para_frac, f"{self.REF}: dup_para_frac")
        if c.max_dup_para_char_frac and chars / n_chars > c.max_dup_para_char_frac:
            r = chars / n_chars
            return fail("gopher_dup_paragraph_chars", r, c.max_dup_para_char_frac, f"{self.REF}: dup_para_char_frac")
        lines = split_newline_runs(text)
        k, chars = _dup_stats(lines)
        if c.max_dup_line_frac and k / len(lines) > c.max_dup_line_frac:
            return fail("gopher_dup_lines", k / len(lines), c.max_dup_line_frac, f"{self.REF}: dup_line_frac")
        if c.max_dup_line_char_frac and chars / n_chars > c.max_dup_line_char_frac:
            r = chars / n_chars
            return fail("gopher_dup_line_chars", r, c.max_dup_line_char_frac, f"{self.REF}: dup_line_char_frac")
        if not c.top_ngram_char_frac and not c.dup_ngram_char_frac:
            return KEEP
        return self._top_ngrams(v.tok, n_chars) or self._dup_ngrams(v.tok, n_chars) or KEEP

    def _top_ngrams(self, t, n_chars: int) -> Verdict | None:
        """The top n-gram character fractions (datatrove's top_n_gram), cheapest bounds first; None = passes."""
        c = self.cfg
        top = c.top_ngram_char_frac
        if top and t.n:
            cum = np.concatenate(([0], np.cumsum(t.lens)))
            no_repeat_from = None  # no n-gram of this size repeats, so no longer one does
            grams = None  # n -> the n-gram hashes, built when a size needs them
            n_min = min(top)
            first = None  # bucket counts of the n_min-grams: an n-gram at i occurs at most as often as its n_min-gram
            for n, thr in top.items():  # datatrove's order: as configured
                if t.n < n:  # no n-gram
                    continue
                limit = thr * n_chars
                joined_len = cum[n:] - cum[:-n] + (n - 1)  # len(" ".join(n-gram)) at each position
                if no_repeat_from is not None and n >= no_repeat_from:
                    chars = int(joined_len[0])  # every n-gram once: the first one
                else:
                    if grams is None:
                        grams, windows = {}, ngram_windows(t.hashes, sorted(top), mix=False)
                    while n_min not in grams:
                        grams.update([next(windows)])
                    if first is None:
                        first = bucket_counts(grams[n_min])
                    if n > n_min and int((first[: t.n - n + 1] * joined_len).max()) <= limit:
                        continue  # the n_min-gram bound: no n-gram's characters times count can reach the limit
                    while n not in grams:
                        grams.update([next(windows)])
                    g = grams[n]
                    # an upper bound first: each n-gram's count is at most its hash bucket's count
                    counts = first if n == n_min else bucket_counts(g)
                    if int((counts * joined_len).max()) <= limit:
                        if counts.max() == 1:
                            no_repeat_from = n if no_repeat_from is None else min(n, no_repeat_from)
                        continue
                    chars, repeats = top_ngram_chars(g, t.lens, n)
                    if not repeats:
                        no_repeat_from = n if no_repeat_from is None else min(n, no_repeat_from)
                if chars > limit:
                    return fail(f"gopher_top_{n}gram", chars / n_chars, thr, f"{self.REF}: top_{n}_gram")
        return None

    def _dup_ngrams(self, t, n_chars: int) -> Verdict | None:
        """The duplicated n-gram character fractions (datatrove's duplicated_n_grams), bounds first; None = passes."""
        c = self.cfg
        if c.dup_ngram_char_frac and t.n > min(c.dup_ngram_char_frac):
            n0 = min(c.dup_ngram_char_frac)
            g0 = ngram_hashes(t.hashes, n0)
            gs = np.sort(g0)
            if not (gs[1:] == gs[:-1]).any():  # no n0-gram repeats, so no longer one does
                return None
            order = np.argsort(g0)  # any order of equal values: only which positions repeat is read
            gs = g0[order]
            same = gs[1:] == gs[:-1]
            # a cheap bound first: the word characters under any n0-gram that occurs more than once. A repeated
            # n-gram (n >= n0) is made of repeated n0-grams, and datatrove's count adds disjoint repeated n-grams, so
            # its count for every n is at most this
            repeated = np.zeros(len(gs), dtype=bool)
            repeated[1:] = same
            repeated[:-1] |= same
            pos = order[repeated]
            cover = np.zeros(t.n + 1, dtype=np.int32)
            cover[pos] += 1  # positions are distinct: fancy-index adds are exact
            cover[pos + n0] -= 1
            under = int(t.lens[np.cumsum(cover[:-1]) > 0].sum())
            if all(under / n_chars <= thr for thr in c.dup_ngram_char_frac.values()):
                return None
            # a tighter upper bound next (characters covered by any repeated n-gram, vectorised): the exact greedy count
            # (datatrove's find_all_duplicate) is never above it, so it runs only when the bound crosses
            dup = list(c.dup_ngram_char_frac)
            bound = ngram_repetition(t.hashes, t.lens, [], dup)
            total = int(t.lens.sum())
            for n, thr in c.dup_ngram_char_frac.items():
                if bound[("dup", n)] * total / n_chars <= thr:
                    continue
                cum = np.concatenate(([0], np.cumsum(t.lens)))
                r = all_dup_chars(ngram_hashes(t.hashes, n), cum, n) / n_chars
                if r > thr:
                    return fail(f"gopher_dup_{n}gram", r, thr, f"{self.REF}: duplicated_{n}_n_grams")
        return None


# ----------------------------------------------------------------------------- Gopher quality


class GopherQuality(Filter):
    """datatrove GopherQualityFilter: word tokens; count and mean length over "non-symbol" words (holding a character
    outside datatrove's punctuation set); '#' and ellipses per word tested separately; bullet (• or -) and ellipsis
    lines over str.splitlines(); words with a letter over all words; distinct stop words, case-sensitive."""

    @dataclass
    class Settings:
        """Its thresholds (words = word tokens, "non-symbol" words for count and length); None: off."""

        min_words: int | None = 50
        max_words: int | None = 100_000
        min_mean_word_length: float | None = 3.0
        max_mean_word_length: float | None = 10.0
        max_symbol_word_ratio: float | None = 0.1  # '#' per word, and ellipses per word, each against this
        max_bullet_lines_ratio: float | None = 0.9  # lines starting with • or -
        max_ellipsis_lines_ratio: float | None = 0.3
        min_alpha_words_ratio: float | None = 0.8  # words with at least one letter
        min_stop_words: int | None = 2  # distinct stop words (case-sensitive tokens)

    fields = (
        "min_words",
        "max_words",
        "min_mean_word_length",
        "max_mean_word_length",
        "max_symbol_word_ratio",
        "max_bullet_lines_ratio",
        "max_ellipsis_lines_ratio",
        "min_alpha_words_ratio",
        "min_stop_words",
    )
    REF = "datatrove GopherQualityFilter"

    def filter(self, v: DocView) -> Verdict:
        c, text, t = self.cfg, v.text, v.tok
        nw = t.n
        ns = int(np.count_nonzero(t.nonsym))
        if c.min_words and ns < c.min_words:
            return fail("gopher_word_count", ns, c.min_words, f"{self.REF}: gopher_short_doc")
        if c.max_words and ns > c.max_words:
            return fail("gopher_word_count", ns, c.max_words, f"{self.REF}: gopher_long_doc")
        mean = float(t.lens[t.nonsym].mean()) if ns else float("nan")
        if c.min_mean_word_length and mean < c.min_mean_word_length:
            return fail(
                "gopher_mean_word_length", mean, c.min_mean_word_length, f"{self.REF}: gopher_below_avg_threshold"
            )
        if c.max_mean_word_length and mean > c.max_mean_word_length:
            return fail(
                "gopher_mean_word_length", mean, c.max_mean_word_length, f"{self.REF}: gopher_above_avg_threshold"
            )
        if c.max_symbol_word_ratio and nw:
            r = text.count("#") / nw
            if r > c.max_symbol_word_ratio:
                return fail("gopher_symbol_ratio", r, c.max_symbol_word_ratio, f"{self.REF}: gopher_too_many_hashes")
            r = (text.count("...") + text.count("\u2026")) / nw
            if r > c.max_symbol_word_ratio:
                return fail("gopher_symbol_ratio", r, c.max_symbol_word_ratio, f"{self.REF}: gopher_too_many_ellipsis")
        # every line ends at a newline or at the end: there are at least count("\n") lines, and a bullet (ellipsis) line
        # holds a "-" or "•" ("..." or "…"): below these bounds the ratios cannot cross, and lines are not split
        min_lines = max(text.count("\n"), 1)
        bullets = (
            c.max_bullet_lines_ratio and text.count("-") + text.count("\u2022") > c.max_bullet_lines_ratio * min_lines
        )
        ellipses = c.max_ellipsis_lines_ratio and (
            text.count("...") + text.count("\u2026") > c.max_ellipsis_lines_ratio * min_lines
        )
        if bullets or ellipses:
            lines = text.splitlines() or [""]
            if bullets:
                r = sum(ln.lstrip().startswith(("\u2022", "-")) for ln in lines) / len(lines)
                if r > c.max_bullet_lines_ratio:
                    return fail(
                        "gopher_bullet_lines", r, c.max_bullet_lines_ratio, f"{self.REF}: gopher_too_many_bullets"
                    )
            if ellipses:
                r = sum(ln.rstrip().endswith(("...", "\u2026")) for ln in lines) / len(lines)
                if r > c.max_ellipsis_lines_ratio:
                    ref = f"{self.REF}: gopher_too_many_end_ellipsis"
                    return fail("gopher_ellipsis_lines", r, c.max_ellipsis_lines_ratio, ref)
        if c.min_alpha_words_ratio and nw:
            r = int(np.count_nonzero(t.alpha)) / nw
            if r < c.min_alpha_words_ratio:
                ref = f"{self.REF}: gopher_below_alpha_threshold"
                return fail("gopher_alpha_words", r, c.min_alpha_words_ratio, ref)
        if c.min_stop_words:
            k = t.distinct(STOP_WORDS)
            if k < c.min_stop_words:
                return fail("gopher_stop_words", k, c.min_stop_words, f"{self.REF}: gopher_enough_stop_words")
        return KEEP


# ----------------------------------------------------------------------------- C4

# why a line left, in the order C4 tests them
EDIT_REASONS = (
    "too_long_word",
    "citation",
    "no_terminal_punct",
    "too_few_words",
    "blank",
    "javascript",
    "policy",
    "whitespace",
)


@dataclass
class C4Edit:
    """What C4's line rules did to one document: the text left, and per reason [lines, characters] removed (a
    `citation` entry counts markers, not lines; `blank` is empty or whitespace-only lines), with the lines."""

    text: str
    removed: dict[str, list[int]] = field(default_factory=dict)
    lines: list[list[str]] = field(default_factory=list)  # [reason, the line (or the citation marker)]
    # the later gates' view of `text` (its chunks and their cache rows): the caller reads it on, not a second one
    view: DocView | None = field(default=None, repr=False, compare=False)

    def add(self, reason: str, what: str) -> None:
        c = self.removed.setdefault(reason, [0, 0])
        c[0] += 1
        c[1] += len(what)
        if reason != "blank":
            self.lines.append([reason, what])


class C4(Filter):
    """datatrove C4QualityFilter (split_paragraph=True): each line of str.splitlines(), stripped, is removed for a word
    over `c4_max_word_length` chars, (citations are cut out), no terminal punctuation (when on), fewer than
    `c4_min_words_per_line` whitespace words, javascript, policy phrases; lorem ipsum or '{' on a kept line drops the
    document; then the document needs `c4_min_sentences` sentences (spaCy's sentencizer, per line). The text left is
    the kept lines joined by newlines."""

    @dataclass
    class Settings:
        """Its rules (FineWeb runs C4 with filter_no_terminal_punct=False); None switches a rule off."""

        c4_lorem_ipsum: bool = True  # drop the document
        c4_curly_bracket: bool = True  # drop the document
        c4_javascript: bool = True  # remove lines mentioning javascript
        c4_policy: bool = True  # remove terms-of-use / cookie lines
        c4_citations: bool = True  # remove [1], [edit], [citation needed]
        c4_terminal_punct: bool = False  # remove lines not ending in . ! ? " ' (C4's own rule; off in FineWeb)
        c4_min_words_per_line: int | None = ranged(3, ge=0)  # remove lines with fewer whitespace words
        c4_max_word_length: int | None = ranged(1000, ge=1)  # remove lines holding a longer word
        c4_min_sentences: int | None = ranged(5, ge=0)  # then drop the document when fewer sentences are left
        c4_edit: bool = True  # keep C4's edited text (False: decide on it, keep the text as read)

    fields = (
        "c4_lorem_ipsum",
        "c4_curly_bracket",
        "c4_javascript",
        "c4_policy",
        "c4_citations",
        "c4_terminal_punct",
        "c4_min_words_per_line",
        "c4_max_word_length",
        "c4_min_sentences",
    )
    REF = "datatrove C4QualityFilter"

    def filter(self, v: DocView) -> Verdict:
        c, text = self.cfg, v.text
        lower = text.lower()
        lorem = c.c4_lorem_ipsum and "lorem ipsum" in lower
        curly = c.c4_curly_bracket and "{" in text
        js = c.c4_javascript and "javascript" in lower
        policy = c.c4_policy and has_policy(lower)
        cite = c.c4_citations and "[" in text
        maxw = c.c4_max_word_length
        lines = text.splitlines()
        # a whitespace word lies within one line (every line break splitlines knows is whitespace to str.split), so
        # no line longer than maxw means no word longer either: the words are looked at only past that
        long_words = (
            maxw is not None
            and len(text) > maxw
            and max(map(len, lines), default=0) > maxw
            and max(map(len, v.chunks), default=0) > maxw
        )
        minw = c.c4_min_words_per_line
        edit = C4Edit("")
        kept: list[str] = []
        if not (lorem or js or curly or policy or cite or long_words or c.c4_terminal_punct):
            # the common case, at C speed: when every line has enough words, no line goes (a line split at most
            # minw - 1 times has min(its words, minw) pieces)
            stripped = list(map(str.strip, lines))
            if (
                minw is None
                or minw <= 0
                or min(map(len, map(str.split, stripped, repeat(None), repeat(minw - 1))), default=0) >= minw
            ):
                kept, lines = stripped, []
        for raw in lines:
            line = raw.strip()
            if not line:  # removed by the terminal-punctuation or the words-per-line rule; else kept (one sentence)
                if c.c4_terminal_punct or (minw is not None and minw > 0):
                    edit.add("blank", raw)
                    continue
                kept.append(line)
                continue
            words = line.split()
            if long_words and any(len(w) > maxw for w in words):
                edit.add("too_long_word", line)
                continue
            if cite:
                new = CITATION.sub("", line)
                if new != line:
                    for m in CITATION.findall(line):
                        edit.add("citation", m)
                    line = new
            if c.c4_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                edit.add("no_terminal_punct", line)
                continue
            if minw is not None and len(words) < minw:
                edit.add("too_few_words", line)
                continue
            if lorem or js or curly or policy:
                low = line.lower()
                if lorem and "lorem ipsum" in low:
                    return fail("c4_lorem_ipsum", 1, True, f"{self.REF}: lorem_ipsum")
                if js and "javascript" in low:
                    edit.add("javascript", line)
                    continue
                if curly and "{" in line:
                    return fail("c4_curly_bracket", 1, True, f"{self.REF}: curly_bracket")
                if policy and has_policy(low):
                    edit.add("policy", line)
                    continue
            kept.append(line)
        return self._decide(text, kept, edit)

    def _decide(self, text: str, kept: list[str], edit: C4Edit) -> Verdict:
        """After the line edits: enough sentences left, and the edited text (KEEP when nothing changed)."""
        need = self.cfg.c4_min_sentences
        # every kept line holds at least one sentence (an empty one counts as one): with `need` lines kept there are
        # enough, and only a document with fewer lines has its sentences counted
        if need is not None and len(kept) < need:
            sentences = sum(wordtok.sentence_count(line) if line else 1 for line in kept)
            if sentences < need:
                return fail("c4_too_few_sentences", sentences, need, f"{self.REF}: too_few_sentences")
        edit.text = "\n".join(kept).strip()
        if edit.text == text:
            return KEEP
        if not edit.removed:  # only whitespace went: line ends stripped ("\r" included)
            edit.removed["whitespace"] = [0, len(text) - len(edit.text)]
        return True, None, {"edit": edit}


# ----------------------------------------------------------------------------- FineWeb


class FineWeb(Filter):
    """datatrove FineWebQualityFilter: non-blank lines of text.split("\\n") (not stripped); the share ending in one of
    datatrove's 160 terminal punctuation marks, the share of lines <= `short_line_length` chars, characters in
    repeated lines over the characters that are not newlines, newlines per word token."""

    @dataclass
    class Settings:
        """Its thresholds; None switches a rule off."""

        min_line_punct_ratio: float | None = 0.12
        line_punct_exclude_zero: bool = False
        max_short_lines_ratio: float | None = 0.67
        short_line_length: int = 30
        max_dup_line_chars_ratio: float | None = 0.01
        max_newline_word_ratio: float | None = 0.3

    fields = ("min_line_punct_ratio", "max_short_lines_ratio", "max_dup_line_chars_ratio", "max_newline_word_ratio")
    REF = "datatrove FineWebQualityFilter"

    def filter(self, v: DocView) -> Verdict:
        c, text = self.cfg, v.text
        lines = v.nonblank_lines
        if not lines:
            return fail("fineweb_empty", 0, 1, f"{self.REF}: empty")
        n = len(lines)
        if c.min_line_punct_ratio is not None:
            ends = terminal_set()  # single characters: the last one decides, as endswith(TERMINAL_PUNCTUATION)
            r = sum(1 for ln in lines if ln[-1] in ends) / n
            if r < c.min_line_punct_ratio and not (r == 0 and c.line_punct_exclude_zero):
                return fail("fineweb_line_punct", r, c.min_line_punct_ratio, f"{self.REF}: line_punct_ratio")
        if c.max_short_lines_ratio is not None:
            r = sum(1 for ln in lines if len(ln) <= c.short_line_length) / n
            if r > c.max_short_lines_ratio:
                return fail("fineweb_short_lines", r, c.max_short_lines_ratio, f"{self.REF}: short_line_ratio")
        if c.max_dup_line_chars_ratio is not None:
            r = v.dup_line_chars / max(len(text) - text.count("\n"), 1)
            if r > c.max_dup_line_chars_ratio:
                return fail("fineweb_char_dup", r, c.max_dup_line_chars_ratio, f"{self.REF}: char_dup_ratio")
        if c.max_newline_word_ratio is not None:
            r = text.count("\n") / max(v.n_tokens, 1)
            if r > c.max_newline_word_ratio:
                return fail("fineweb_list_ratio", r, c.max_newline_word_ratio, f"{self.REF}: list_ratio")
        return KEEP


class Language(Filter):
    """fastText language id; on only when `lang_model` names a model file."""

    @dataclass
    class Settings:
        """The fastText model file (e.g. lid.176.bin; off when none is given), languages and score."""

        lang_model: str | None = None
        languages: list[str] = field(default_factory=lambda: ["en"])
        min_lang_score: float = 0.65

    fields = ("lang_model",)

    def __init__(self, cfg: QualityConfig):
        super().__init__(cfg)
        try:
            import fasttext  # optional dependency
        except ImportError as e:
            raise RuntimeError("quality.lang_model is set but the `fasttext` package is not installed") from e
        self.model = fasttext.load_model(str(cfg.lang_model))

    def filter(self, v: DocView) -> Verdict:
        c = self.cfg
        labels, probs = self.model.predict(v.text.replace("\n", " "), k=1)
        lang, p = labels[0].removeprefix("__label__"), float(probs[0])
        if lang not in c.languages or p < c.min_lang_score:
            return False, "quality:language", {"value": lang, "score": round(p, 4), "allowed": c.languages}
        return KEEP


# the registry: the gates run in this order (datatrove's FineWeb chain: repetition, quality, C4, FineWeb)
FILTERS: list[type[Filter]] = [GopherRepetition, GopherQuality, C4, FineWeb, Language]


@dataclass
class QualityConfig(*(f.Settings for f in reversed(FILTERS))):  # every filter's Settings, in the chain's order
    """The gates' settings: each filter's own `Settings` (declared with the filter, above), flat recipe keys
    `curate.quality.<field>`; defaults = datatrove's FineWeb chain (examples/fineweb.py). None switches a rule off."""

    # keys of the gates before datatrove parity: a run recorded with them still loads, with a warning
    RETIRED_KEYS: ClassVar[dict[str, str]] = {
        "c4_max_javascript_lines_ratio": "retired: C4 removes javascript lines (c4_javascript), it does not count them",
        "c4_min_terminal_lines": "retired: C4 needs c4_min_sentences sentences (and c4_terminal_punct per line)",
    }

    enabled: bool = True

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


class QualityGates:
    """`check(text) -> (reason or None, details, score)`; `check_view(view) -> (reason, details, score, edit)`, where
    `edit` is the C4Edit when C4 changed the text (the later gates saw the edited text), else None. `score` ranks
    copies in near-dup clusters (higher kept).

    The filters of `FILTERS` run in order and the first that fails names the reason. (FILTERS is read when the gates
    are built: a test may add a rule to it.)"""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.filters = [f(cfg) for f in FILTERS if f.active(cfg)]

    def check(self, text: str) -> tuple[str | None, dict, float]:
        return self.check_view(DocView(text))[:3]

    def check_view(self, v: DocView) -> tuple[str | None, dict, float, C4Edit | None]:
        edit = None
        if self.cfg.enabled:
            for f in self.filters:
                keep, reason, details = f.filter(v)
                if not keep:
                    return reason, details, near_dup_score(v), None
                if "edit" in details:  # the later gates see C4's edited text (as in datatrove's chain)
                    edit = details["edit"]
                    v = edit.view = DocView(edit.text)
        if edit is not None and not self.cfg.c4_edit:
            return None, {}, near_dup_score(v), None  # decided on the edited text; the text as read is kept
        return None, {}, near_dup_score(v), edit
