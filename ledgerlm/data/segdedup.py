"""Exact segment (line or paragraph) dedup across the corpus.

A segment is hashed after normalisation (lowercase, whitespace collapsed). Segments shorter than `min_chars` are
ignored (headings, blank lines). A segment found in at least `min_docs` documents is boilerplate: it stays in the
first document that has it — "first" meaning the smallest document id, so the choice does not depend on file order or
sharding — and is cut from every other. A document left with fewer than `min_words` words is dropped
(`segment_dedup:too_short`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xxhash

_PARA = re.compile(r"(\n\s*\n)")
_NON_ASCII_SPACE = re.compile("[" + "".join(c for c in map(chr, range(0x80, 0x10000)) if c.isspace()) + "]")


@dataclass
class SegDedupConfig:
    enabled: bool = True
    unit: str = "line"  # line | paragraph
    min_docs: int = 3  # a segment in this many documents or more is boilerplate
    min_chars: int = 20  # shorter segments are never removed
    min_words: int = 20  # documents shorter than this after removal are dropped

    def validate(self) -> None:
        if self.unit not in ("line", "paragraph"):
            raise ValueError(f"unit must be line|paragraph, got {self.unit!r}")
        if self.min_docs < 2:
            raise ValueError("min_docs must be >= 2")


def split_segments(text: str, unit: str) -> list[str]:
    """Pieces that re-join to exactly `text` (separators are pieces of their own)."""
    if unit == "line":
        return text.splitlines(keepends=True)
    return _PARA.split(text)


def segment_hash(seg: str, min_chars: int) -> int | None:
    norm = " ".join(seg.split()).lower()  # = collapsing \s+ runs and stripping, without a regex
    if len(norm) < min_chars:
        return None
    return xxhash.xxh3_64_intdigest(norm.encode("utf-8", "surrogatepass"))


def segment_hashes(text: str, cfg: SegDedupConfig) -> list[int | None]:
    """`segment_hash` of each piece of `split_segments(text, cfg.unit)`, in order.

    Lines are normalised for the whole document at once (lowercase, tabs -> spaces, runs of spaces -> one), then
    split: the same strings as line by line, since every line break of `str.splitlines` is whitespace that the
    per-line normalisation drops anyway, and lowercasing neither makes nor removes whitespace (3x faster than
    splitting each line into words). Text holding non-ASCII whitespace (some of it line breaks) goes line by line."""
    if cfg.unit != "line" or (not text.isascii() and _NON_ASCII_SPACE.search(text)):
        return [segment_hash(s, cfg.min_chars) for s in split_segments(text, cfg.unit)]
    low = text.lower().replace("\t", " ").replace("\x1f", " ")  # the ASCII whitespace that is not a line break
    while "  " in low:
        low = low.replace("  ", " ")
    norms = [ln.strip(" ") for ln in low.splitlines()]
    return [
        xxhash.xxh3_64_intdigest(n.encode("utf-8", "surrogatepass")) if len(n) >= cfg.min_chars else None
        for n in norms
    ]


def doc_segment_hashes(text: str, cfg: SegDedupConfig) -> np.ndarray:
    """The distinct segment hashes of a document (a document counts once per segment)."""
    hs = {h for h in segment_hashes(text, cfg) if h is not None}
    return np.fromiter(hs, dtype=np.uint64, count=len(hs))


def plan(hashes: np.ndarray, doc_rank: np.ndarray, min_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Boilerplate segments and their owner. `hashes[i]` occurs in the document whose id-order rank is doc_rank[i].

    Returns (sorted boilerplate hashes, owner rank of each) — the owner keeps the segment, everybody else loses it.
    """
    if len(hashes) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    order = np.lexsort((doc_rank, hashes))
    h, r = hashes[order], doc_rank[order]
    uniq, first, counts = np.unique(h, return_index=True, return_counts=True)
    keep = counts >= min_docs
    return uniq[keep], r[first[keep]]


def apply(
    text: str,
    cfg: SegDedupConfig,
    boiler: np.ndarray,
    owner: np.ndarray,
    my_rank: int,
    owned: list | None = None,
    removed_segments: list | None = None,
) -> tuple[str, int]:
    """Remove the boilerplate segments this document does not own; returns (new text, segments removed).
    `owned`, if given, receives (hash, segment) for each boilerplate segment this document keeps as its owner;
    `removed_segments` the segments removed (the words left = the document's words - theirs: a segment ends in
    whitespace, so no word spans two segments)."""
    if len(boiler) == 0:
        return text, 0
    segs = split_segments(text, cfg.unit)
    hs = segment_hashes(text, cfg)
    h = np.array([0 if x is None else x for x in hs], dtype=np.uint64)
    i = np.minimum(np.searchsorted(boiler, h), len(boiler) - 1)  # one lookup for all segments of the document
    hit = ((boiler[i] == h) & np.array([x is not None for x in hs], dtype=bool)).tolist()
    mine = (owner[i] == my_rank).tolist()
    out, removed = [], 0
    for s, x, is_boiler, is_mine in zip(segs, hs, hit, mine):
        if is_boiler:
            if not is_mine:
                removed += 1
                if removed_segments is not None:
                    removed_segments.append(s)
                continue
            if owned is not None:
                owned.append((x, s.strip()))
        out.append(s)
    if not removed:
        return text, 0
    new = "".join(out)
    if cfg.unit == "paragraph":
        new = re.sub(r"(\n\s*\n){2,}", "\n\n", new)
    return new.strip("\n"), removed
