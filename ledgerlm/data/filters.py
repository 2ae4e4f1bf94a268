"""Quality filters, one class per gate family (Gopher quality, Gopher repetition, C4, FineWeb, language id).

Each filter reads its own fields of `QualityConfig` (flat recipe keys, `curate.quality.<field>`, kept for backward
compatibility; `fields` lists them) and answers `filter(doc) -> (keep, reason, details)` for a `DocView`; `details`
holds the measured value and the threshold. Adding a rule = one class here, one line in FILTERS, its test.
The order of FILTERS is the order the gates run in: the first failure names the reason.
"""

from __future__ import annotations

import numpy as np

from ledgerlm.data.quality import (
    BULLETS,
    DocView,
    QualityConfig,
    _dup_stats,
    _stop_hashes,
    ngram_repetition,
)

Verdict = tuple[bool, "str | None", dict]
KEEP: Verdict = (True, None, {})


def fail(name: str, value, threshold) -> Verdict:
    return False, f"quality:{name}", {"value": round(float(value), 4), "threshold": threshold}


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


class GopherQuality(Filter):
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

    def filter(self, v: DocView) -> Verdict:
        c, text, nw = self.cfg, v.text, v.n_words
        if c.min_words is not None and nw < c.min_words:
            return fail("gopher_word_count", nw, c.min_words)
        if c.max_words is not None and nw > c.max_words:
            return fail("gopher_word_count", nw, c.max_words)
        mean_len = float(v.word_len.mean()) if nw else 0.0
        if c.min_mean_word_length is not None and mean_len < c.min_mean_word_length:
            return fail("gopher_mean_word_length", mean_len, c.min_mean_word_length)
        if c.max_mean_word_length is not None and mean_len > c.max_mean_word_length:
            return fail("gopher_mean_word_length", mean_len, c.max_mean_word_length)
        if c.max_symbol_word_ratio is not None:
            r = (text.count("#") + text.count("...") + text.count("\u2026")) / max(nw, 1)
            if r > c.max_symbol_word_ratio:
                return fail("gopher_symbol_ratio", r, c.max_symbol_word_ratio)
        if c.max_bullet_lines_ratio is not None:
            r = sum(1 for ln in v.lines if ln.lstrip().startswith(BULLETS)) / v.n_lines
            if r > c.max_bullet_lines_ratio:
                return fail("gopher_bullet_lines", r, c.max_bullet_lines_ratio)
        if c.max_ellipsis_lines_ratio is not None:
            r = sum(1 for ln in v.lines if ln.rstrip().endswith(("...", "\u2026"))) / v.n_lines
            if r > c.max_ellipsis_lines_ratio:
                return fail("gopher_ellipsis_lines", r, c.max_ellipsis_lines_ratio)
        if c.min_alpha_words_ratio is not None and nw:
            r = v.alpha_words / nw
            if r < c.min_alpha_words_ratio:
                return fail("gopher_alpha_words", r, c.min_alpha_words_ratio)
        if c.min_stop_words is not None:
            stops = _stop_hashes()
            idx = np.minimum(np.searchsorted(stops, v.norm_hashes), len(stops) - 1)
            k = int(np.count_nonzero(stops[idx] == v.norm_hashes))
            if k < c.min_stop_words:
                return fail("gopher_stop_words", k, c.min_stop_words)
        return KEEP


class GopherRepetition(Filter):
    fields = (
        "max_dup_line_frac",
        "max_dup_para_frac",
        "max_dup_line_char_frac",
        "max_dup_para_char_frac",
        "top_ngram_char_frac",
        "dup_ngram_char_frac",
    )

    def filter(self, v: DocView) -> Verdict:
        c, text = self.cfg, v.text
        if c.max_dup_line_frac is not None or c.max_dup_line_char_frac is not None:
            k, chars = v.dup_lines
            if c.max_dup_line_frac is not None and k / v.n_lines > c.max_dup_line_frac:
                return fail("gopher_dup_lines", k / v.n_lines, c.max_dup_line_frac)
            if c.max_dup_line_char_frac is not None and chars / max(len(text), 1) > c.max_dup_line_char_frac:
                return fail("gopher_dup_line_chars", chars / len(text), c.max_dup_line_char_frac)
        if c.max_dup_para_frac is not None or c.max_dup_para_char_frac is not None:
            k, chars = _dup_stats(v.paras)
            n_paras = max(len(v.paras), 1)
            if c.max_dup_para_frac is not None and k / n_paras > c.max_dup_para_frac:
                return fail("gopher_dup_paragraphs", k / n_paras, c.max_dup_para_frac)
            if c.max_dup_para_char_frac is not None and chars / max(len(text), 1) > c.max_dup_para_char_frac:
                return fail("gopher_dup_paragraph_chars", chars / len(text), c.max_dup_para_char_frac)
        rep = ngram_repetition(v.norm_hashes, v.norm_len, list(c.top_ngram_char_frac), list(c.dup_ngram_char_frac))
        for n, thr in sorted(c.top_ngram_char_frac.items()):
            if rep[("top", n)] > thr:
                return fail(f"gopher_top_{n}gram", rep[("top", n)], thr)
        for n, thr in sorted(c.dup_ngram_char_frac.items()):
            if rep[("dup", n)] > thr:
                return fail(f"gopher_dup_{n}gram", rep[("dup", n)], thr)
        return KEEP


class C4(Filter):
    fields = ("c4_lorem_ipsum", "c4_curly_bracket", "c4_max_javascript_lines_ratio", "c4_min_terminal_lines")

    def filter(self, v: DocView) -> Verdict:
        c, text = self.cfg, v.text
        lower = text.lower()
        if c.c4_lorem_ipsum and "lorem ipsum" in lower:
            return fail("c4_lorem_ipsum", 1, True)
        if c.c4_curly_bracket and "{" in text:
            return fail("c4_curly_bracket", 1, True)
        if c.c4_max_javascript_lines_ratio is not None and "javascript" in lower:
            r = sum(1 for ln in v.lines if "javascript" in ln.lower()) / v.n_lines
            if r > c.c4_max_javascript_lines_ratio:
                return fail("c4_javascript", r, c.c4_max_javascript_lines_ratio)
        if c.c4_min_terminal_lines is not None and v.punct_lines < c.c4_min_terminal_lines:
            return fail("c4_terminal_punct", v.punct_lines, c.c4_min_terminal_lines)
        return KEEP


class FineWeb(Filter):
    fields = ("min_line_punct_ratio", "max_short_lines_ratio", "max_dup_line_chars_ratio", "max_newline_word_ratio")

    def filter(self, v: DocView) -> Verdict:
        c, text = self.cfg, v.text
        if c.min_line_punct_ratio is not None and v.line_punct_ratio < c.min_line_punct_ratio:
            return fail("fineweb_line_punct", v.line_punct_ratio, c.min_line_punct_ratio)
        if c.max_short_lines_ratio is not None:
            r = sum(1 for ln in v.lines if len(ln) <= c.short_line_length) / v.n_lines
            if r > c.max_short_lines_ratio:
                return fail("fineweb_short_lines", r, c.max_short_lines_ratio)
        if c.max_dup_line_chars_ratio is not None:
            r = v.dup_lines[1] / max(len(text) - text.count("\n"), 1)
            if r > c.max_dup_line_chars_ratio:
                return fail("fineweb_dup_line_chars", r, c.max_dup_line_chars_ratio)
        if c.max_newline_word_ratio is not None:
            r = text.count("\n") / max(v.n_words, 1)
            if r > c.max_newline_word_ratio:
                return fail("fineweb_newline_ratio", r, c.max_newline_word_ratio)
        return KEEP


class Language(Filter):
    """fastText language id; on only when `lang_model` names a model file."""

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


# the registry: the gates run in this order
FILTERS: list[type[Filter]] = [GopherQuality, GopherRepetition, C4, FineWeb, Language]


class QualityGates:
    """`check(text) -> (reason or None, details, score)`; `score` ranks copies in near-dup clusters (higher kept).

    The document is tokenised once (`DocView`); the filters of `FILTERS` run in order and the first that fails names
    the reason. (FILTERS is read when the gates are built: a test may add a rule to it.)"""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.filters = [f(cfg) for f in FILTERS if f.active(cfg)]

    def check(self, text: str) -> tuple[str | None, dict, float]:
        return self.check_view(DocView(text))

    def check_view(self, v: DocView) -> tuple[str | None, dict, float]:
        text = v.text
        _, dup_line_chars = v.dup_lines
        score = round(v.line_punct_ratio * (1.0 - dup_line_chars / max(len(text), 1)), 6)
        if not self.cfg.enabled:
            return None, {}, score
        for f in self.filters:
            keep, reason, details = f.filter(v)
            if not keep:
                return reason, details, score
        return None, {}, score
