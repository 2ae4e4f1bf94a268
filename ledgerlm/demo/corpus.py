"""The built-in demo corpus: a deterministic generator of small English pretraining text, with planted defects.

Everything here is produced by our own templates and word lists; no third-party text is copied. A corpus is a pure
function of (seed, n_docs, options): the same call writes byte-identical files.

Clean documents come in three genres:
  - stories: characters, places, objects and one of several simple plots (lost object, journey, learning a skill,
    sharing, storm, building something), told with varied sentence templates;
  - explanations: how things work and simple facts (topic notes, animal profiles, number facts), templated prose;
  - arithmetic worksheets: GSM8K-format word problems with worked solutions and a `#### N` line, taken from the
    *train* split of `ledgerlm.tasks.arith`.

Planted, in counts recorded in the manifest, are the things each curation gate must catch:
  - junk: symbol soup, lorem ipsum, javascript boilerplate, too-short documents, documents of one repeated line;
  - exact duplicates of clean documents;
  - near duplicates: a clean document with a few words changed, word-5-gram Jaccard in NEAR_DUP_BAND (0.82-0.9,
    measured and recorded per document);
  - boilerplate lines (cookie notices, footers) appended to many documents, for line-level/segment dedup;
  - leaks: held-out arithmetic problems (the demo's own "benchmark") copied verbatim into a few documents.

The held-out benchmark is `arith.generate(benchmark_n, "heldout", benchmark_seed)`, by default the eval stage's `arith`
task (500 problems, seed 0). Train problems that happen to
share a word n-gram (n = `leak_ngram`, default 13, the lm-eval/GPT-3 decontamination size) with a benchmark item are
not used, so n-gram decontamination must flag exactly the planted leak documents, no more.

Each JSONL record is {"id", "text", "planted"}; `planted` says what the record is, for tests only (curation must not
read it). `write_demo_corpus` returns the manifest (also written as manifest.json beside the shards).

The demo's post-training data (SFT conversations, preference pairs) is built from the same generators, in
`ledgerlm.demo.posttrain`.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

from ledgerlm.demo.defects import BOILERPLATE, JUNK_KINDS, NEAR_DUP_BAND, junk, near_duplicate, ngrams
from ledgerlm.demo.explanations import explanation
from ledgerlm.demo.stories import story
from ledgerlm.demo.words import NAMES, TOWNS
from ledgerlm.io import atomic_write_json, write_jsonl
from ledgerlm.tasks import arith

SCHEMA = "ledgerlm.demo_corpus/1"

# The curate settings this corpus needs (quality gates, near-dedup band, boilerplate threshold) have one home: the
# `curate` section of recipes/demo.yaml; docs/recipes.md says why each is what it is.


def rng_for(*parts: object) -> random.Random:
    """An independent, reproducible stream per (purpose, index): documents do not depend on generation order."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ============================================================================ arithmetic worksheets

# The arithmetic options the demo uses everywhere (corpus, SFT, RL, eval): pass the same ones to `arith.generate`.
ARITH_OPTIONS = {"max_ops": 3, "max_value": 20, "heldout_fraction": 0.2, "calc_annotations": False}


def qa_text(p: arith.Problem) -> str:
    """How a problem appears in pretraining text: the lm-eval GSM8K layout, 'Question: ...' then 'Answer: ...'."""
    return f"Question: {p.question}\nAnswer: {p.solution}"


# The demo's benchmark is the eval stage's `arith` task: the first 500 held-out problems of seed 0
# (ledgerlm.tasks.arith: BUILTIN_ITEMS, seed 0; tests check they agree).
BENCHMARK_N, BENCHMARK_SEED = 500, 0


def benchmark(n: int = BENCHMARK_N, seed: int = BENCHMARK_SEED) -> list[arith.Problem]:
    """The demo's held-out "benchmark": the first `n` held-out problems for `seed` (a prefix of any larger n)."""
    return arith.generate(n, "heldout", seed, **ARITH_OPTIONS)


def _worksheet(rng: random.Random, problems: list[arith.Problem]) -> str:
    town = rng.choice(TOWNS)
    head = rng.choice(
        [
            f"Worksheet {rng.randint(1, 999)} for the {town} school: solve each problem and show your work.",
            f"Here are {len(problems)} word problems from {town}, with worked answers to check.",
            f"Practice set {rng.randint(1, 999)}. Read each question carefully and then check the worked solution.",
            f"Homework for {rng.choice(NAMES)[0]}'s class in {town}: {len(problems)} problems, each with an answer to check.",
        ]
    )
    return head + "\n\n" + "\n\n".join(qa_text(p) for p in problems)


def write_benchmark(path: str | Path, n: int = BENCHMARK_N, seed: int = BENCHMARK_SEED) -> int:
    """The held-out benchmark as GSM8K-format JSONL ({"question", "answer"}): usable as a decontamination file
    (`curate.decontam.files: ["arith=PATH"]`) and as a GSM8K-format eval/RL task file."""
    return write_jsonl(path, (p.record() for p in benchmark(n, seed)))


# ============================================================================ the corpus


class _Dealer:
    """Deals problems into worksheets so that a sheet repeats no name, item, number or final answer and, while the
    pool allows, no template: shared frames trip the duplicated-n-gram quality rule, two equal `#### N` lines the
    duplicated-line rule. Deterministic: the earliest problems of the pool that fit."""

    def __init__(self, pool: list[arith.Problem]):
        self.by_template: dict[str, list] = {}
        for i, p in enumerate(pool):
            self.by_template.setdefault(p.key.split("|")[0], []).append((i, p, *self._tags(p)))

    @staticmethod
    def _tags(p: arith.Problem) -> tuple[set, set]:
        item = next((w for w in arith.ITEMS if f" {w}" in p.question), "")
        base = {("who", p.question.split(" ", 1)[0]), ("item", item), ("answer", p.answer)}
        return base, {("num", x) for st in p.steps for x in (st[0], st[2])}

    def _pick(self, window: list, size: int, first: arith.Problem | None) -> list | None:
        # strict first; the big templates dominate the end of the pool, so relax the template cap, then the numbers
        for limit, nums in ((1, True), (2, True), (size, True), (2, False), (size, False)):
            picked, per_template, used = [], Counter(), set()
            if first is not None:
                b, n = self._tags(first)
                used |= b | n if nums else b
                per_template[first.key.split("|")[0]] += 1
            for entry in window:
                _i, p, b, n = entry
                tags = b | n if nums else b
                template = p.key.split("|")[0]
                if tags & used or per_template[template] >= limit:
                    continue
                picked.append(entry)
                used |= tags
                per_template[template] += 1
                if len(picked) == size:
                    return picked
        return None

    def deal(self, size: int, first: arith.Problem | None = None) -> list[arith.Problem]:
        # look at the first few problems of each template only (fast); the whole pool if that is not enough
        for k in (64, None):
            window = sorted((e for lst in self.by_template.values() for e in lst[:k]), key=lambda e: e[0])
            picked = self._pick(window, size, first)
            if picked:
                break
        else:
            raise ValueError(f"could not deal a worksheet of {size} distinct problems")
        for e in picked:
            self.by_template[e[1].key.split("|")[0]].remove(e)
        return [e[1] for e in picked]


def _norm_line(line: str) -> str:
    return " ".join(line.lower().split())


def _plan_counts(n_docs: int, fractions: dict[str, float], minimum: int = 1) -> dict[str, int]:
    return {k: max(minimum, round(n_docs * f)) if f > 0 else 0 for k, f in fractions.items()}


DEFAULT_FRACTIONS = {"junk": 0.05, "exact_dup": 0.03, "near_dup": 0.03, "leak": 0.0025, "boilerplate": 0.10}
GENRE_WEIGHTS = {"story": 0.45, "explanation": 0.30, "arith": 0.25}


def generate_demo_corpus(
    seed: int = 0,
    n_docs: int = 6000,
    *,
    fractions: dict[str, float] | None = None,
    benchmark_n: int = BENCHMARK_N,
    benchmark_seed: int = BENCHMARK_SEED,
    leak_ngram: int = 13,
) -> tuple[list[dict], dict]:
    """The corpus in memory -> (records, manifest). See the module docstring; `write_demo_corpus` writes it.
    One `plan` random stream draws, in this order: genres, worksheet sizes, boilerplate documents, leaked items,
    exact-duplicate sources, near-duplicate candidates, the final shuffle (each document has its own stream)."""
    counts, n_clean = _planted_counts(n_docs, fractions)
    bench = benchmark(benchmark_n, benchmark_seed)
    if counts["leak"] > len(bench):
        raise ValueError(f"{counts['leak']} leak documents need benchmark_n >= {counts['leak']}, got {benchmark_n}")

    rng = rng_for("demo", seed, "plan")
    genres = rng.choices(list(GENRE_WEIGHTS), weights=list(GENRE_WEIGHTS.values()), k=n_clean)
    sizes = [rng.randint(2, 4) for _ in range(genres.count("arith") + counts["leak"])]  # popped from the end
    need = sum(sizes)
    usable, arith_dropped = _arith_problems(need, seed, bench, leak_ngram)
    dealer = _Dealer(usable)

    docs, seen = _clean_docs(genres, sizes, dealer, seed)
    clean_idx = list(range(len(docs)))
    _add_boilerplate(docs, rng, clean_idx, counts["boilerplate"])
    n_boiler_docs = sum("boilerplate" in d["planted"] for d in docs)
    leaked = _add_leaks(docs, rng, bench, counts["leak"], dealer, sizes, seed)
    dup_src, n_groups = _add_exact_duplicates(docs, rng, clean_idx, counts["exact_dup"])
    near_j = _add_near_duplicates(docs, rng, clean_idx, set(dup_src), counts["near_dup"], seen, seed)
    junk_counts = _add_junk(docs, counts["junk"], seen, seed)
    records = _shuffled_records(docs, rng)

    manifest = _manifest(
        records,
        docs,
        seed=seed,
        counts=counts,
        n_clean=n_clean,
        junk_counts=junk_counts,
        n_groups=n_groups,
        near_j=near_j,
        n_boiler_docs=n_boiler_docs,
        leaked=leaked,
        benchmark_n=benchmark_n,
        benchmark_seed=benchmark_seed,
        leak_ngram=leak_ngram,
        need=need,
        arith_dropped=arith_dropped,
    )
    return records, manifest


def _planted_counts(n_docs: int, fractions: dict[str, float] | None) -> tuple[dict[str, int], int]:
    """Check the options -> (documents of each planted kind, clean documents)."""
    frac = {**DEFAULT_FRACTIONS, **(fractions or {})}
    unknown = set(frac) - set(DEFAULT_FRACTIONS)
    if unknown:
        raise ValueError(f"unknown fraction keys {sorted(unknown)} (known: {sorted(DEFAULT_FRACTIONS)})")
    bad = {k: v for k, v in frac.items() if not isinstance(v, int | float) or not 0 <= v <= 0.5}
    if bad or not isinstance(n_docs, int):
        raise ValueError(f"fractions must be numbers in [0, 0.5] and n_docs an integer, got {bad or n_docs!r}")
    counts = _plan_counts(n_docs, frac)
    n_clean = n_docs - counts["junk"] - counts["exact_dup"] - counts["near_dup"] - counts["leak"]
    if n_clean < max(20, n_docs // 2):
        raise ValueError(f"n_docs={n_docs} is too small for the planted fractions {frac} (need >= 40 documents)")
    return counts, n_clean


def _arith_problems(
    need: int, seed: int, bench: list[arith.Problem], leak_ngram: int
) -> tuple[list[arith.Problem], int]:
    """Train problems that share no leak_ngram-gram with the benchmark (so decontamination is exact) -> (at least
    `need` of them, how many were dropped for overlap)."""
    bench_grams: set[tuple[str, ...]] = set()
    for p in bench:
        bench_grams |= ngrams(qa_text(p), leak_ngram)
    # twice what is needed: the spare keeps the end of the pool varied enough to deal good worksheets
    pool = arith.generate(2 * need + 100, "train", seed, **ARITH_OPTIONS)
    usable = [p for p in pool if not (ngrams(qa_text(p), leak_ngram) & bench_grams)]
    if len(usable) < need:  # rare: continue the same deterministic stream (generate(n) is a prefix of generate(m))
        more = arith.generate(4 * need + 200, "train", seed, **ARITH_OPTIONS)[len(pool) :]
        usable += [p for p in more if not (ngrams(qa_text(p), leak_ngram) & bench_grams)]
        pool += more
    if len(usable) < need:
        raise ValueError(f"not enough arithmetic problems free of benchmark overlap ({len(usable)} < {need})")
    return usable, len(pool) - len(usable)


def _clean_docs(genres: list[str], sizes: list[int], dealer: _Dealer, seed: int) -> tuple[list[dict], set[str]]:
    """One distinct document per genre drawn -> (documents, the set of texts so far). Each document has its own
    random stream, so one document never shifts another."""
    docs: list[dict] = []
    seen: set[str] = set()
    for i, genre in enumerate(genres):
        r = rng_for("demo", seed, "doc", i)
        if genre == "arith":
            text, topic = _worksheet(r, dealer.deal(sizes.pop())), "worksheet"
        else:
            make = story if genre == "story" else explanation
            for _attempt in range(100):
                text, topic = make(r)
                if text not in seen:
                    break
            else:
                raise RuntimeError(f"could not make a distinct {genre} document (seed={seed}, index={i})")
        seen.add(text)
        docs.append({"text": text, "planted": {"kind": "clean", "genre": genre, "topic": topic}})
    return docs, seen


def _add_boilerplate(docs: list[dict], rng: random.Random, clean_idx: list[int], n: int) -> None:
    """Boilerplate lines appended to `n` clean documents. Lines are dealt round-robin (every third document gets a
    second one), so each line is about equally frequent and far above any repeated content line even in a small
    corpus."""
    nb = len(BOILERPLATE)
    for k, i in enumerate(sorted(rng.sample(clean_idx, min(n, len(clean_idx))))):
        picks = [k % nb] + ([(k + nb // 2) % nb] if k % 3 == 2 else [])
        docs[i]["text"] += "\n\n" + "\n".join(BOILERPLATE[b] for b in picks)
        docs[i]["planted"]["boilerplate"] = picks


def _add_leaks(
    docs: list[dict],
    rng: random.Random,
    bench: list[arith.Problem],
    n: int,
    dealer: _Dealer,
    sizes: list[int],
    seed: int,
) -> list[arith.Problem]:
    """`n` benchmark items, each copied verbatim into an otherwise ordinary worksheet -> the leaked items."""
    leaked = rng.sample(bench, n)
    for k, item in enumerate(leaked):
        r = rng_for("demo", seed, "leak", k)
        probs = dealer.deal(sizes.pop() - 1, first=item)
        probs.insert(r.randrange(len(probs) + 1), item)
        docs.append(
            {
                "text": _worksheet(r, probs),
                "planted": {"kind": "leak", "genre": "arith", "topic": "worksheet", "leaks": [item.key]},
            }
        )
    return leaked


def _add_exact_duplicates(docs: list[dict], rng: random.Random, clean_idx: list[int], n: int) -> tuple[list[int], int]:
    """`n` extra copies of some clean documents (some copied more than once) -> (the sources, how many)."""
    n_groups = max(1, round(n / 1.5)) if n else 0
    dup_src = rng.sample(clean_idx, n_groups)
    for k in range(n):
        src = dup_src[k] if k < n_groups else rng.choice(dup_src)
        docs.append({"text": docs[src]["text"], "planted": {**docs[src]["planted"], "kind": "exact_dup", "of": src}})
    return dup_src, n_groups


def _add_near_duplicates(
    docs: list[dict], rng: random.Random, clean_idx: list[int], taken: set[int], n: int, seen: set[str], seed: int
) -> list[float]:
    """Near duplicates of `n` long clean prose documents (never of an exact-dup source in `taken`, to keep clusters
    apart) -> the word-5-gram Jaccard of each to its source."""
    cands = [
        i
        for i in clean_idx
        if i not in taken and docs[i]["planted"]["genre"] != "arith" and len(docs[i]["text"].split()) >= 100
    ]
    rng.shuffle(cands)
    near_j: list[float] = []
    for i in cands:
        if len(near_j) == n:
            break
        made = near_duplicate(
            rng_for("demo", seed, "near", i), docs[i]["text"], lo=NEAR_DUP_BAND[0], hi=NEAR_DUP_BAND[1]
        )
        if made is None or made[0] in seen:
            continue
        text, j = made
        seen.add(text)
        near_j.append(j)
        docs.append(
            {"text": text, "planted": {**docs[i]["planted"], "kind": "near_dup", "of": i, "jaccard5": round(j, 4)}}
        )
    if len(near_j) < n:
        raise RuntimeError(f"only {len(near_j)} of {n} near duplicates could be made")
    return near_j


def _add_junk(docs: list[dict], n: int, seen: set[str], seed: int) -> Counter[str]:
    """`n` junk documents cycling through the kinds; every junk text is distinct so only the quality gates can
    remove it -> count per kind."""
    junk_counts: Counter[str] = Counter()
    for k in range(n):
        kind = JUNK_KINDS[k % len(JUNK_KINDS)]
        r = rng_for("demo", seed, "junk", k)
        text = junk(r, kind)
        while text in seen:
            text = junk(r, kind)
        seen.add(text)
        junk_counts[kind] += 1
        docs.append({"text": text, "planted": {"kind": "junk", "genre": "junk", "topic": kind}})
    return junk_counts


def _shuffled_records(docs: list[dict], rng: random.Random) -> list[dict]:
    """The documents shuffled, with ids by final position and the duplicates pointing at their sources' ids."""
    order = list(range(len(docs)))
    rng.shuffle(order)
    ids = {old: f"demo-{new:06d}" for new, old in enumerate(order)}
    records = []
    for old in order:
        planted = dict(docs[old]["planted"])
        if "of" in planted:
            planted["of"] = ids[planted["of"]]
        records.append({"id": ids[old], "text": docs[old]["text"], "planted": planted})
    return records


def _manifest(
    records: list[dict],
    docs: list[dict],
    *,
    seed: int,
    counts: dict[str, int],
    n_clean: int,
    junk_counts: Counter[str],
    n_groups: int,
    near_j: list[float],
    n_boiler_docs: int,
    leaked: list[arith.Problem],
    benchmark_n: int,
    benchmark_seed: int,
    leak_ngram: int,
    need: int,
    arith_dropped: int,
) -> dict:
    """What was planted, and the numbers a curation of this corpus is checked against."""
    line_counts = Counter(line for r in records for line in r["text"].split("\n") if line in BOILERPLATE)
    # For segment dedup: how many documents share the most repeated line of real content (>= 20 characters, as
    # normalised by segment dedup) -- a `min_docs` above this and at most min(boilerplate counts) removes exactly the
    # planted boilerplate.
    content_lines: Counter[str] = Counter()
    for r in records:
        if r["planted"]["kind"] != "junk":
            for line in {_norm_line(x) for x in r["text"].split("\n") if x not in BOILERPLATE}:
                if len(line) >= 20:
                    content_lines[line] += 1
    genre_counts = Counter(d["planted"]["genre"] for d in docs if d["planted"]["kind"] == "clean")
    return {
        "schema": SCHEMA,
        "seed": seed,
        "n_docs": len(records),
        "text_bytes": sum(len(r["text"].encode()) for r in records),
        "clean_docs": n_clean,
        "genres": dict(sorted(genre_counts.items())),
        "junk": {k: junk_counts[k] for k in JUNK_KINDS},
        "junk_total": counts["junk"],
        "exact_duplicates": counts["exact_dup"],
        "exact_duplicate_sources": n_groups,
        "near_duplicates": counts["near_dup"],
        "near_duplicate_jaccard5": {
            "min": round(min(near_j), 4),
            "max": round(max(near_j), 4),
            "mean": round(sum(near_j) / len(near_j), 4),
        }
        if near_j
        else None,
        "boilerplate_docs": n_boiler_docs,
        "boilerplate_lines": {line: line_counts[line] for line in BOILERPLATE},
        "max_docs_sharing_a_content_line": max(content_lines.values(), default=0),
        "leak_docs": counts["leak"],
        "leaked_items": sorted(p.key for p in leaked),
        "benchmark": {
            "source": "ledgerlm.tasks.arith",
            "split": "heldout",
            "n": benchmark_n,
            "seed": benchmark_seed,
            "options": ARITH_OPTIONS,
            "format": "Question: <question>\nAnswer: <solution>",
            "ngram": leak_ngram,
        },
        "arith_train_problems": need - counts["leak"],  # each leak sheet holds one benchmark item in place of one
        "arith_train_dropped_for_benchmark_overlap": arith_dropped,
        # what a perfect curation keeps: every clean document (boilerplate lines stripped), one of each duplicate set
        "expected_kept_docs": n_clean,
    }


def write_demo_corpus(
    out_dir: str | Path, seed: int = 0, n_docs: int = 6000, *, docs_per_file: int = 1000, **kw
) -> dict:
    """Write the corpus as `demo-NNN.jsonl` shards plus `manifest.json` into `out_dir`; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, manifest = generate_demo_corpus(seed, n_docs, **kw)
    files = []
    for k in range(0, len(records), docs_per_file):
        path = out / f"demo-{k // docs_per_file:03d}.jsonl"
        n = write_jsonl(path, records[k : k + docs_per_file])
        files.append({"path": path.name, "docs": n, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest["files"] = files
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
