"""Benchmark decontamination by word n-gram overlap (GPT-3 appendix C style).

Benchmarks come by task name (`ledgerlm.tasks.benchmark_texts`: each task record's decontamination text) or by file (JSONL: a text field or every string
of each record; .txt: one item per line). Text is normalised like MinHash (lowercase, no punctuation) and each
benchmark gets its own N: the 5th percentile of its item lengths in words, clamped to [min_n, max_n] (8..13), unless
set explicitly. Items shorter than N words cannot be matched and are counted as such in the table.

Matching a document: its normalised word hashes -> n-gram hashes for each distinct N -> `searchsorted` against each
benchmark's sorted hash array. An n-gram found in more than `max_doc_freq` training documents is ignored (common
phrases, not leaks). Action `drop` removes the document; `cut` removes each matching span with a `margin`-character
margin on both sides, drops remaining pieces shorter than `min_piece_chars`, and drops the document when it falls
into more than `max_pieces` pieces or nothing is left.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ledgerlm.data.minhash import doc_word_hashes, ngram_hash_family, ngram_hashes
from ledgerlm.data.sources import _open_bytes, all_string_values
from ledgerlm.tasks import benchmark_texts, hub_unavailable


@dataclass
class DecontamConfig:
    tasks: list[str] = field(default_factory=list)  # evaluation task names (piqa, winogrande, lambada_openai, ...)
    files: list[str] = field(default_factory=list)  # benchmark files; "name=path" names the benchmark
    data_dir: str | None = None  # where the task loaders read local copies (None: their default / the Hub)
    text_field: str | None = None  # field of benchmark JSONL files (None: every string of the record)
    n: dict[str, int] = field(default_factory=dict)  # explicit N per benchmark name
    min_n: int = 8
    max_n: int = 13
    max_doc_freq: int = 10  # n-grams in more training documents than this are ignored
    action: str = "drop"  # drop | cut
    margin: int = 200
    min_piece_chars: int = 200
    max_pieces: int = 10

    def validate(self) -> None:
        if self.action not in ("drop", "cut"):
            raise ValueError(f"action must be drop|cut, got {self.action!r}")
        if not 1 <= self.min_n <= self.max_n <= 64:
            raise ValueError("need 1 <= min_n <= max_n <= 64")
        if (why := hub_unavailable(self.tasks, self.data_dir)) is not None:
            raise ValueError(f"tasks: {why}")

    @property
    def active(self) -> bool:
        return bool(self.tasks or self.files)


@dataclass
class Benchmark:
    name: str
    n: int
    n_items: int
    short_items: int  # items with fewer than n words (never matchable)
    hashes: np.ndarray  # sorted unique n-gram hashes
    pair_hash: np.ndarray  # (hash, item) pairs sorted by hash, to find which items an n-gram belongs to
    pair_item: np.ndarray

    def items_with(self, hashes: np.ndarray) -> np.ndarray:
        """Indices of the items containing any of `hashes`."""
        if len(hashes) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(self.pair_item[np.isin(self.pair_hash, hashes)])


def read_benchmark_file(path: Path, text_field: str | None) -> list[str]:
    """Items of a benchmark file. Bad lines are errors here (a benchmark must be read completely)."""
    items = []
    name = path.name.lower()
    with _open_bytes(path) as f:
        if ".jsonl" in name or ".json" in name:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise ValueError(f"{path}:{lineno}: malformed benchmark line ({e})") from None
                if text_field:
                    if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                        raise ValueError(f"{path}:{lineno}: field {text_field!r} missing or not a string")
                    items.append(obj[text_field])
                else:
                    items.append(all_string_values(obj))
        else:
            items = [ln for ln in f.read().decode("utf-8").split("\n") if ln.strip()]  # "\n" only, as JSONL
    return items


def choose_n(lengths: np.ndarray, cfg: DecontamConfig) -> int:
    """GPT-3's rule: N = 5th percentile of item length in words, within [min_n, max_n]."""
    if len(lengths) == 0:
        return cfg.max_n
    return int(np.clip(int(np.percentile(lengths, 5)), cfg.min_n, cfg.max_n))


def build_benchmark(name: str, items: list[str], cfg: DecontamConfig) -> Benchmark:
    wh = [doc_word_hashes(t)[0] for t in items]
    lengths = np.array([len(w) for w in wh])
    n = cfg.n.get(name) or choose_n(lengths, cfg)
    hs, its = [], []
    for i, w in enumerate(wh):
        g = np.unique(ngram_hashes(w, n))
        hs.append(g)
        its.append(np.full(len(g), i, dtype=np.int64))
    ph = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
    pi = np.concatenate(its) if its else np.zeros(0, np.int64)
    order = np.argsort(ph, kind="stable")
    return Benchmark(name, n, len(items), int((lengths < n).sum()), np.unique(ph), ph[order], pi[order])


def load_benchmarks(cfg: DecontamConfig) -> list[Benchmark]:
    out = []
    for task in cfg.tasks:
        out.append(build_benchmark(task, benchmark_texts(task, data_dir=cfg.data_dir), cfg))
    for spec in cfg.files:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"decontamination benchmark file not found: {p}")
        name = name or p.name.split(".")[0]
        out.append(build_benchmark(name, read_benchmark_file(p, cfg.text_field), cfg))
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark names must be unique, got {names} (use name=path for files)")
    return out


class Matcher:
    """Finds which benchmark n-grams a document contains.

    Per n-gram size, a 2**27-bit filter over the top bits of every benchmark hash (16 MiB) screens a document's
    n-grams with one vectorised lookup; only the rare survivors are binary-searched in each benchmark's sorted array.
    """

    BITS = 27

    def __init__(self, benchmarks: list[Benchmark], ignore: dict[str, np.ndarray] | None = None):
        self.benchmarks = benchmarks
        self.sizes = sorted({b.n for b in benchmarks})
        # the hash arrays actually matched against: minus the n-grams ignored as too common
        self.active = {}
        for b in benchmarks:
            h = b.hashes
            if ignore and len(ignore.get(b.name, ())):
                h = h[~np.isin(h, ignore[b.name])]
            self.active[b.name] = h
        self.filters = {}
        shift = np.uint64(64 - self.BITS)
        for n in self.sizes:
            bits = np.zeros(1 << (self.BITS - 3), dtype=np.uint8)
            for b in benchmarks:
                if b.n == n and len(self.active[b.name]):
                    top = self.active[b.name] >> shift
                    np.bitwise_or.at(bits, top >> np.uint64(3), (1 << (top & np.uint64(7))).astype(np.uint8))
            self.filters[n] = bits

    def _screen(self, g: np.ndarray, n: int) -> np.ndarray:
        top = g >> np.uint64(64 - self.BITS)
        return np.flatnonzero((self.filters[n][top >> np.uint64(3)] >> (top & np.uint64(7)).astype(np.uint8)) & 1)

    def match(self, text: str, with_positions: bool = False):
        """{benchmark: unique matched hashes} (and, if asked, {benchmark: start word index of each match})."""
        wh, starts, ends = doc_word_hashes(text)
        found, pos = {}, {}
        grams = ngram_hash_family(wh, self.sizes)
        cand = {n: self._screen(grams[n], n) for n in self.sizes}
        for b in self.benchmarks:
            idx_c = cand[b.n]
            h = self.active[b.name]
            if len(idx_c) == 0 or len(h) == 0:
                continue
            g = grams[b.n][idx_c]
            idx = np.searchsorted(h, g)
            hit = h[np.minimum(idx, len(h) - 1)] == g
            if hit.any():
                found[b.name] = np.unique(g[hit])
                if with_positions:
                    pos[b.name] = idx_c[hit]
        if with_positions:
            return found, pos, starts, ends
        return found


def cut_spans(text: str, word_idx: np.ndarray, n: int, starts: np.ndarray, ends: np.ndarray, cfg: DecontamConfig):
    """Remove the matched spans (with margins). Returns (new text or None if the document must go, n spans)."""
    lo = np.maximum(starts[word_idx] - cfg.margin, 0)
    hi = np.minimum(ends[word_idx + n - 1] + cfg.margin, len(text))
    order = np.argsort(lo, kind="stable")
    spans = []
    for a, b in zip(lo[order].tolist(), hi[order].tolist()):
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    pieces, prev = [], 0
    for a, b in spans:
        pieces.append(text[prev:a])
        prev = b
    pieces.append(text[prev:])
    pieces = [p.strip() for p in pieces]
    pieces = [p for p in pieces if len(p) >= cfg.min_piece_chars]
    if not pieces or len(pieces) > cfg.max_pieces:
        return None, len(spans)
    return "\n\n".join(pieces), len(spans)


# ----------------------------------------------------------------------------- the table

COLUMNS = [
    "benchmark",
    "n",
    "items",
    "items_contaminated",
    "pct_items_contaminated",
    "items_shorter_than_n",
    "docs_touched",
    "ngrams_ignored_common",
]


def table_rows(
    benchmarks: list[Benchmark],
    items_hit: dict[str, int],
    docs_hit: dict[str, int],
    ignored: dict[str, int],
    extra: dict[str, dict] | None = None,
) -> list[dict]:
    rows = []
    for b in benchmarks:
        k = int(items_hit.get(b.name, 0))
        row = {
            "benchmark": b.name,
            "n": b.n,
            "items": b.n_items,
            "items_contaminated": k,
            "pct_items_contaminated": round(100.0 * k / b.n_items, 3) if b.n_items else 0.0,
            "items_shorter_than_n": b.short_items,
            "docs_touched": int(docs_hit.get(b.name, 0)),
            "ngrams_ignored_common": int(ignored.get(b.name, 0)),
        }
        row.update((extra or {}).get(b.name, {}))
        rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "_no benchmarks_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def doc_freq_ignore(matches: list[dict[str, np.ndarray]], max_doc_freq: int) -> dict[str, np.ndarray]:
    """Per benchmark, the matched n-grams found in more than `max_doc_freq` documents (each document counts once)."""
    per: dict[str, list[np.ndarray]] = {}
    for m in matches:
        for name, h in m.items():
            per.setdefault(name, []).append(h)
    out = {}
    for name, hs in per.items():
        u, c = np.unique(np.concatenate(hs), return_counts=True)
        out[name] = u[c > max_doc_freq]
    return out


def contamination_table(texts, benchmarks: list[Benchmark], max_doc_freq: int) -> list[dict]:
    """The table for any iterable of texts (read-only): eval side and train side per benchmark."""
    matcher = Matcher(benchmarks)
    matches = [m for t in texts if (m := matcher.match(t))]
    ignore = doc_freq_ignore(matches, max_doc_freq)
    items_hit, docs_hit = {}, {}
    for b in benchmarks:
        ig = ignore.get(b.name, np.zeros(0, np.uint64))
        hit_docs, hashes = 0, []
        for m in matches:
            h = m.get(b.name)
            if h is not None:
                h = h[~np.isin(h, ig)]
                if len(h):
                    hit_docs += 1
                    hashes.append(h)
        docs_hit[b.name] = hit_docs
        items_hit[b.name] = len(b.items_with(np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)))
    return table_rows(benchmarks, items_hit, docs_hit, {k: len(v) for k, v in ignore.items()})
