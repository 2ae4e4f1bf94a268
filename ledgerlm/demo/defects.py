"""The demo corpus's planted defects (junk, near duplicates, boilerplate lines) and the word n-gram similarity they
are measured with: what each curation gate must catch, made from our own templates (`ledgerlm.demo.corpus` deals
them into the corpus, `ledgerlm.rehearsal` into its web mirror)."""

from __future__ import annotations

import random
import re
import string

from ledgerlm.demo.words import cap


def _words(text: str) -> list[str]:
    # The normalisation decontamination tools use: lowercase, punctuation dropped, split on whitespace.
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of the word n-gram sets (what MinHash estimates)."""
    x, y = ngrams(a, n), ngrams(b, n)
    return len(x & y) / len(x | y) if x or y else 1.0


# ============================================================================ planted junk

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo "
    "consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur"
).split()
_JS = [
    "var {a} = document.getElementById('{b}');",
    "function {a}() {{ return window.{b} || {{}}; }}",
    "if (typeof {a} === 'undefined') {{ {a} = []; }}",
    "{a}.push({{'event': '{b}', 'ts': new Date().getTime()}});",
    "document.addEventListener('DOMContentLoaded', function() {{ {a}('{b}'); }});",
    "window.{a} = window.{a} || function() {{ ({a}.q = {a}.q || []).push(arguments); }};",
    '<script type="text/javascript" src="/static/{a}.{b}.min.js"></script>',
    "Please enable JavaScript in your browser to view this page.",
]
_SHORT = [
    "Click here {k}.",
    "Page {k} of {m}",
    "Home | About | Contact {k}",
    "Loading item {k}...",
    "Read more ({k})",
    "Thanks! #{k}",
    "Top {k} picks",
    "Sold out: lot {k}",
]
_SPAM = [
    "Best deals on shoes today, order now and save more.",
    "Click the link below to claim your free prize.",
    "Cheap flights to every city, book your ticket online now.",
    "Join now and win big every single day.",
    "Limited offer for new members only, do not miss it.",
]
JUNK_KINDS = ("symbols", "lorem", "javascript", "too_short", "repeated_lines")


def _ident(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) + str(rng.randint(0, 99))


def junk(rng: random.Random, kind: str) -> str:
    if kind == "symbols":
        pool = string.punctuation + "0123456789" + "▒░█§¶©®±µ" + "xqz"
        lines = ["".join(rng.choice(pool + " ") for _ in range(rng.randint(40, 90))) for _ in range(rng.randint(4, 12))]
        return "\n".join(lines)
    if kind == "lorem":
        sents = []
        for _ in range(rng.randint(6, 16)):
            w = [rng.choice(_LOREM) for _ in range(rng.randint(6, 14))]
            sents.append(cap(" ".join(w)) + ".")
        return "Lorem ipsum dolor sit amet. " + " ".join(sents)
    if kind == "javascript":
        lines = [_JS[1]] + [rng.choice(_JS) for _ in range(rng.randint(5, 19))]  # always at least one `{`
        return "\n".join(line.format(a=_ident(rng), b=_ident(rng)) for line in lines)
    if kind == "too_short":
        return rng.choice(_SHORT).format(k=rng.randint(1, 10**6), m=rng.randint(1, 10**6))
    if kind == "repeated_lines":
        line = rng.choice(_SPAM)
        tag = rng.randint(1, 10**6)  # distinct documents, so exact dedup does not remove them before the quality gate
        return f"Offer {tag}.\n" + "\n".join([line] * rng.randint(12, 30))
    raise ValueError(f"unknown junk kind {kind!r}")


# Site furniture appended to otherwise good documents: segment dedup should strip these lines and keep the rest.
BOILERPLATE = [
    "Subscribe to our newsletter to get new stories and notes every week.",
    "Copyright 2025 Little Lantern Press. All rights reserved.",
    "Share this page with your friends and family, and leave a comment below.",
    "This site uses cookies to improve your experience. By continuing to browse, you agree to our use of cookies.",
    "Sign up for a free account to save your favorite articles and get reading lists.",
    "Back to the top of the page. Browse more stories, explanations and worksheets in our archive.",
]

NEAR_DUP_BAND = (0.82, 0.9)  # word-5-gram Jaccard of each planted near duplicate to its source
# Replacement words for near duplicates: common enough to read naturally, rare enough to break a 5-gram.
_SWAPS = [
    "very",
    "quite",
    "little",
    "big",
    "happy",
    "quiet",
    "bright",
    "slowly",
    "soon",
    "again",
    "really",
    "small",
    "early",
    "later",
    "gladly",
    "often",
    "suddenly",
    "together",
    "nearly",
    "calmly",
]


def near_duplicate(rng: random.Random, text: str, lo: float = 0.8, hi: float = 0.9) -> tuple[str, float] | None:
    """`text` with a few words swapped so that word-5-gram Jaccard lands in [lo, hi]; None if it cannot."""
    words = text.split(" ")
    # aim inside the band, away from its low edge: MinHash LSH finds a pair at J=0.8 with ~92% probability (14
    # bands x 8 rows), at 0.85 with ~99%. Swaps far from the ends change 5 shingles, near the ends fewer: trying
    # every place, and undoing swaps that overshoot, lands close to the target.
    target = rng.uniform(lo + 0.02, hi - 0.01)
    floor = max(lo, target - 0.02)
    positions = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 2]
    rng.shuffle(positions)
    j = 1.0
    for i in positions:
        old = words[i]
        words[i] = rng.choice([s for s in _SWAPS if s != old.lower()])
        j_new = jaccard(text, " ".join(words))
        if j_new < floor:  # this swap overshot (it hit fresh 5-grams); undo it and try a different place
            words[i] = old
            continue
        j = j_new
        if j <= target:
            break
    return (" ".join(words), j) if lo <= j <= hi else None
