"""A fast English word tokenizer that splits like datatrove's (spaCy's `spacy.blank("en")` tokenizer), without spaCy.

datatrove's Gopher, FineWeb and C4 filters count spaCy tokens (punctuation tokens included), so gates that decide as
datatrove does must see the same tokens. This module runs spaCy's English tokenizer algorithm (tokenizer.pyx:
whitespace split, special cases, prefix/suffix loop, URL match, infixes, the special-case matcher) on spaCy's own
English rules, stored as data in `spacy_en_rules.json` (regenerate with `scripts/gen_spacy_en_rules.py`).

Speed comes from the same trick spaCy uses: tokens never cross whitespace, so each whitespace-separated chunk is
tokenised once and cached; a document is then `" ".join` of cached chunks (C speed). The cache is bounded
(`CACHE_MAX` chunks, then cleared): memory stays flat however many documents go through.

`tokenize(text) -> str`: the tokens of `text` joined by single spaces (tokens never hold whitespace; whitespace tokens
are dropped, as datatrove's `strip_strings` does). `sentence_count(line)`: the number of sentences spaCy's
sentencizer finds in a line, as datatrove's `split_into_sentences` counts them for C4.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

_RULES = json.loads((Path(__file__).with_name("spacy_en_rules.json")).read_text(encoding="utf-8"))
_PREFIX = re.compile(_RULES["prefix"]).search
_SUFFIX = re.compile(_RULES["suffix"]).search
_INFIX = re.compile(_RULES["infix"]).finditer
_URL = re.compile(_RULES["url"]).match
SPECIALS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _RULES["rules"].items()}
# the special-case matcher: affix-only token sequences that are re-joined into a special case
_MATCH: set[tuple[str, ...]] = {tuple(v) for v in _RULES["matcher"].values()}
_MATCH_LENS = sorted({len(p) for p in _MATCH}, reverse=True)
_MATCH_FIRST = {p[0] for p in _MATCH}
_NONFIRST = {t for p in _MATCH for t in p[1:]}  # tokens that can continue a pattern
_NONLAST = {t for p in _MATCH for t in p[:-1]}  # tokens that can be continued
SENT_PUNCT = frozenset(_RULES["sent_punct"])
CACHE_MAX = 500_000


def _split_affixes(string: str) -> tuple[str, list[str], list[str]]:
    """spaCy's Tokenizer._split_affixes (with special cases)."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    last_size = 0
    while string and len(string) != last_size:
        if string in SPECIALS:
            break
        last_size = len(string)
        m = _PREFIX(string)
        pre_len = m.end() - m.start() if m else 0
        if pre_len:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre and minus_pre in SPECIALS:
                prefixes.append(prefix)
                string = minus_pre
                break
        m = _SUFFIX(string[pre_len:])
        suf_len = m.end() - m.start() if m else 0
        if suf_len:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf and minus_suf in SPECIALS:
                suffixes.append(suffix)
                string = minus_suf
                break
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            string = string[pre_len:-suf_len]
            prefixes.append(prefix)
            suffixes.append(suffix)
        elif pre_len:
            string = minus_pre
            prefixes.append(prefix)
        elif suf_len:
            string = minus_suf
            suffixes.append(suffix)
    return string, prefixes, suffixes


def _attach(string: str, prefixes: list[str], suffixes: list[str]) -> list[str]:
    """spaCy's Tokenizer._attach_tokens: prefixes, the middle (special case, URL, or split at infixes), suffixes."""
    toks = list(prefixes)
    if string:
        if string in SPECIALS:
            toks.extend(SPECIALS[string])
        elif _URL(string):
            toks.append(string)
        else:
            start = 0
            for m in _INFIX(string):
                a, b = m.start(), m.end()
                if a == 0:  # an infix at the very start is not split off
                    continue
                if a != start:
                    toks.append(string[start:a])
                if a != b:
                    toks.append(string[a:b])
                start = b
            if string[start:]:
                toks.append(string[start:])
    toks.extend(reversed(suffixes))
    return toks


def _apply_matcher(toks: list[str], glued: list[bool] | None = None) -> list[str]:
    """spaCy's special-case matcher (_apply_special_cases): longest matches first, then leftmost; a match overlapping
    an earlier one at its first or last token is skipped. `glued[i]`: token i follows token i-1 without whitespace
    (None: all glued, one chunk). A match across whitespace changes nothing (its text, with the space, is no special
    case) but still takes its tokens, as in spaCy."""
    n = len(toks)
    found = []
    for i in range(n):
        if toks[i] not in _MATCH_FIRST:
            continue
        for k in _MATCH_LENS:
            if i + k <= n and tuple(toks[i : i + k]) in _MATCH:
                found.append((i, i + k))
    if not found:
        return toks
    found.sort(key=lambda s: (s[1] - s[0], -s[0]))  # len_start_cmp; taken from the end: longest, then leftmost
    seen: set[int] = set()
    keep = []
    for a, b in reversed(found):
        if a not in seen and b - 1 not in seen:
            keep.append((a, b))
        seen.update(range(a, b))
    keep.sort()
    out: list[str] = []
    j = 0
    for a, b in keep:
        out.extend(toks[j:a])
        if glued is None or all(glued[a + 1 : b]):
            out.extend(SPECIALS.get("".join(toks[a:b]), toks[a:b]))
        else:
            out.extend(toks[a:b])
        j = b
    out.extend(toks[j:])
    return out


def _raw_tokens(chunk: str) -> list[str]:
    """One whitespace-free chunk's tokens before the special-case matcher."""
    return list(SPECIALS[chunk]) if chunk in SPECIALS else _attach(*_split_affixes(chunk))


def chunk_tokens(chunk: str) -> list[str]:
    """The tokens of one whitespace-free chunk on its own, as spaCy's English tokenizer makes them."""
    raw = _raw_tokens(chunk)
    out = _apply_matcher(raw)
    changed = out != raw
    if changed or (raw and (raw[0] in _NONFIRST or raw[-1] in _NONLAST)):
        # the matcher changed this chunk, or could act across its edge: `_doc_tokens` looks again in context
        _EDGE[chunk] = (raw[0] in _NONFIRST, raw[-1] in _NONLAST, changed)
        if changed:
            _MATCHED[chunk] = True
    return out


_EDGE: dict[str, tuple[bool, bool, bool]] = {}  # chunk -> (first token continues a pattern, last is continued, matched)
_MATCHED: dict[str, bool] = {}  # chunks where the matcher acted (rare: emoticons, "10a.m.", ...)
_WS_SPLIT = re.compile(r"(\s+)")


def _needs_context(chunks: list[str]) -> bool:
    """True when a match of the special-case matcher across whitespace could block one inside a chunk."""
    prev = None
    for c in chunks:
        e = _EDGE.get(c)
        if e is not None and prev is not None and prev[1] and e[0] and (prev[2] or e[2]):
            return True
        prev = e
    return False


def _doc_tokens(text: str) -> list[str]:
    """The tokens of `text` with the special-case matcher run over the whole sequence (spaCy's exact order)."""
    return [t for t in _doc_tokens_ws(text) if not t.isspace()]


def _doc_tokens_ws(text: str) -> list[str]:
    """`_doc_tokens` keeping whitespace tokens (the sentencizer sees them)."""
    toks: list[str] = []
    glued: list[bool] = []
    for i, part in enumerate(_WS_SPLIT.split(text)):
        if not part:
            continue
        if i % 2:
            if part != " " and toks:
                toks.append(part[1:] if part[0] == " " else part)
                glued.append(False)
            continue
        raw = _raw_tokens(part)
        toks.extend(raw)
        glued.extend([False] + [True] * (len(raw) - 1))
    return _apply_matcher(toks, glued)


def _is_punct(t: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in t)


def _token_class(t: str) -> str:
    """For the sentencizer: P = a sentence-final character, Q = other punctuation, O = anything else."""
    return "P" if t in SENT_PUNCT else "Q" if _is_punct(t) else "O"


class _Cache(dict):
    """chunk -> its tokens joined by spaces; filled on first sight (see `classes` for the sentencizer's view)."""

    def __missing__(self, chunk: str) -> str:
        if len(self) >= CACHE_MAX:
            self.clear()
            _CLASSES.clear()
            _COUNTS.clear()
            _EDGE.clear()
            _MATCHED.clear()
        toks = chunk_tokens(chunk)
        v = self[chunk] = " ".join(toks)
        _CLASSES[chunk] = "".join(map(_token_class, toks))
        _COUNTS[chunk] = len(toks)
        return v


class _Classes(dict):
    def __missing__(self, chunk: str):
        _TOKS[chunk]
        return self[chunk]


_TOKS = _Cache()
_CLASSES = _Classes()
_COUNTS = _Classes()


def tokenize(text: str, chunks: list[str] | None = None) -> str:
    """The word tokens of `text` (datatrove's `split_into_words` for English), joined by single spaces. `chunks`:
    `text.split()` when the caller has it already."""
    if chunks is None:
        chunks = text.split()
    out = " ".join(map(_TOKS.__getitem__, chunks))
    if not _MATCHED.keys().isdisjoint(chunks) and _needs_context(chunks):
        return " ".join(_doc_tokens(text))
    return out


def count(text: str, chunks: list[str] | None = None) -> int:
    """len(words(text)), without building the tokens."""
    if chunks is None:
        chunks = text.split()
    n = sum(map(_COUNTS.__getitem__, chunks))
    if not _MATCHED.keys().isdisjoint(chunks) and _needs_context(chunks):
        return len(_doc_tokens(text))
    return n


def words(text: str) -> list[str]:
    """The word tokens of `text` as a list (slower than `tokenize`; for tests and tools)."""
    return tokenize(text).split()


_SENT_RE = re.compile(r"[PQ]*P[PQ]*O")
_WS_RUN = re.compile(r"\s+")


def sentence_count(line: str) -> int:
    """Sentences spaCy's sentencizer finds in `line` (stripped, non-empty): one, plus one per token that is not
    punctuation and follows a run of punctuation holding a sentence-final character (".", "!", "?", ...).
    Whitespace beyond a single space between chunks is a token of its own there (class O)."""
    chunks = line.split()
    if not _MATCHED.keys().isdisjoint(chunks) and _needs_context(chunks):
        cls = "".join(map(_token_class, _doc_tokens_ws(line)))
    elif len(chunks) == line.count(" ") + 1 and len(line) == sum(map(len, chunks)) + len(chunks) - 1:  # single spaces
        cls = "".join(map(_CLASSES.__getitem__, chunks))
    else:
        parts = []
        pos = 0
        for m in _WS_RUN.finditer(line):
            if m.start() > pos:
                parts.append(_CLASSES[line[pos : m.start()]])
            run = m.group()
            if run[0] != " " or len(run) > 1:  # spaCy: a run is a token unless it is exactly " "
                parts.append("O")
            pos = m.end()
        if pos < len(line):
            parts.append(_CLASSES[line[pos:]])
        cls = "".join(parts)
    if not cls:
        return 0
    return 1 + len(_SENT_RE.findall(cls))


__all__ = ["tokenize", "words", "sentence_count", "chunk_tokens", "SPECIALS", "SENT_PUNCT"]
