"""Curation cost on >= 20k real-text-like documents, on the stage's own path, beside datatrove's MinHash.

Documents are built from ../shared/data/text (tinyshakespeare prose + the Common Crawl samples): each is 3-25 random
sentences, plus planted near-duplicates (5%), exact copies (2%) and benchmark items (1%: one item of one of the
seven decontamination benchmarks pasted into the text), so LSH has clusters to find and decontamination has leaks.
Everything runs in this process on one core (numpy is single-threaded here); costs are process CPU seconds
(`resource.getrusage`, self + children), so "per core" = per CPU-second, and the machine's load shows in the
section but counts less than in wall time.

Measured, `--repeats` times interleaved (the section gives min / median / max):

  near-dedup   the `curate` stage itself (`ledgerlm.data.curate.curate`, the local executor, 1 task) on the JSONL,
               with only near-dedup on (quality gates, boilerplate and decontamination off): signatures in scan,
               external-sort LSH per band, exact-Jaccard verified clusters, apply, write. The same run with
               near-dedup off gives the stage's fixed cost (read, index, apply, write); the difference is what
               near-dedup costs.
  datatrove    datatrove's MinHash at its defaults (5-grams, 14x8, 64-bit xxhash, spaCy word tokenizer) on the same
               JSONL: JsonlReader -> signatures -> 14 bucket tasks -> cluster -> JsonlReader -> filter ->
               JsonlWriter; and JsonlReader -> JsonlWriter alone for its fixed cost.
  gates        every quality gate (Gopher, C4, FineWeb) per document, as scan calls them.
  decontam     the scan's benchmark matcher (`Matcher.match`) against the recipe's seven benchmarks.

    python -m bench.curate [--docs 20000] [--repeats 3] [--no-record]

datatrove's MinHash needs spaCy for its default English word tokenizer (`pip install datatrove[processing]`); if it
is missing those rows say so instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from bench._record import record
from ledgerlm.io import iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
# the smollm-135m-1gpu recipe's decontamination benchmarks
TASKS = ["arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "lambada_openai", "gsm8k"]


def cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def bench_data_dir(tmp: Path) -> Path:
    """A task data directory for the seven benchmarks: PIQA, WinoGrande and LAMBADA from ../shared/data; GSM8K's
    train split standing in for its test split (the test file is not on this machine; train is 5.7x larger, so
    its index is larger than the real one); ARC-Easy, ARC-Challenge and HellaSwag from the test fixtures (a few
    items each: their releases are not on this machine)."""
    d = tmp / "tasks"
    d.mkdir()
    for name in ("piqa", "winogrande", "lambada"):
        (d / name).symlink_to(DATA / name)
    for name in ("arc_easy", "arc_challenge", "hellaswag"):
        (d / name).symlink_to(FIXTURES / name)
    (d / "gsm8k").mkdir()
    (d / "gsm8k" / "test.jsonl").symlink_to(DATA / "gsm8k" / "train.jsonl")
    return d


def build_docs(n: int, bench_items: dict[str, list[str]], seed: int = 0) -> tuple[list[str], dict[str, int]]:
    lines = [ln.strip() for ln in (DATA / "text" / "tinyshakespeare.txt").read_text().splitlines()]
    text = " ".join(ln for ln in lines if ln and not ln.endswith(":"))
    for p in sorted((DATA / "text").glob("cc_en_head-*.jsonl")):
        text += " " + " ".join(rec["text"].replace("\n", " ") for _, rec in iter_jsonl(p))
    sents = [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]
    rng = random.Random(seed)
    names = sorted(bench_items)
    docs, planted = [], {b: 0 for b in names}
    while len(docs) < n:
        r = rng.random()
        if docs and r < 0.02:  # exact copy
            docs.append(docs[rng.randrange(len(docs))])
        elif docs and r < 0.07:  # near copy: ~1 word in 60 replaced (shingle Jaccard ~0.85)
            w = docs[rng.randrange(len(docs))].split()
            for _ in range(max(1, len(w) // 60)):
                w[rng.randrange(len(w))] = f"w{rng.randrange(10**6)}"
            docs.append(" ".join(w))
        else:
            body = [rng.choice(sents) for _ in range(rng.randrange(3, 26))]
            if r < 0.08:  # a leaked benchmark item inside the text
                b = rng.choice(names)
                body.insert(rng.randrange(len(body) + 1), rng.choice(bench_items[b]).replace("\n", " "))
                planted[b] += 1
            docs.append(" ".join(body))
    return docs, planted


def stage_config(src: Path, near_dedup: bool):
    from ledgerlm.data.curate import Config
    from ledgerlm.data.curate.config import NearDedupConfig
    from ledgerlm.data.filters import QualityConfig
    from ledgerlm.data.segdedup import SegDedupConfig
    from ledgerlm.data.sources import SourceSpec

    return Config(
        sources=[SourceSpec(name="bench", path=str(src))],
        quality=QualityConfig(enabled=False),
        segment_dedup=SegDedupConfig(enabled=False),
        near_dedup=NearDedupConfig(enabled=near_dedup),
    )


def bench_stage(src: Path, out: Path, near_dedup: bool) -> dict:
    """The curate stage in this process; CPU seconds per step (read at each step's end)."""
    from ledgerlm.data.curate import curate

    steps, last = {}, [cpu()]

    def done(name: str) -> None:
        now = cpu()
        steps[name] = now - last[0]
        last[0] = now

    t = cpu()
    res = curate(stage_config(src, near_dedup), out, progress=done)
    return {"cpu": cpu() - t, "steps": steps, "near_dup": res["counters"]["dropped"].get("near_dup", 0)}


def _patch_xxhash() -> None:
    import xxhash
    from datatrove.utils.hashes import xxhash as dt_xxhash

    try:
        xxhash.xxh64_intdigest("x")
    except TypeError:  # xxhash >= 4 takes bytes only; datatrove passes str: encode as xxhash 3 did internally
        dt_xxhash.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)
        dt_xxhash.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)


def bench_datatrove(src: Path, work: Path, dedup: bool) -> dict:
    try:
        import spacy  # noqa: F401  (datatrove's default English word tokenizer)
    except ImportError:
        return {"error": "spaCy not installed (pip install 'datatrove[processing]')"}
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    _patch_xxhash()
    cfg = MinhashConfig()  # datatrove's defaults: 5-grams, 14 buckets x 8 hashes

    def reader():
        return JsonlReader(str(src.parent), glob_pattern=src.name, text_key="text")

    if dedup:
        steps = [
            ("signatures", [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], 1),
            ("buckets", [MinhashDedupBuckets(str(work / "sigs"), str(work / "bk"), config=cfg)], cfg.num_buckets),
            ("cluster", [MinhashDedupCluster(str(work / "bk"), str(work / "ids"), config=cfg)], 1),
            (
                "filter",
                [reader(), MinhashDedupFilter(str(work / "ids")), JsonlWriter(str(work / "out"), compression=None)],
                1,
            ),
        ]
    else:
        steps = [("read+write", [reader(), JsonlWriter(str(work / "out"), compression=None)], 1)]
    times = {}
    t0 = cpu()
    for name, pipe, tasks in steps:
        t = cpu()
        LocalPipelineExecutor(pipe, tasks=tasks, workers=1, logging_dir=str(work / f"logs-{name}")).run()
        times[name] = cpu() - t
    kept = sum(1 for p in (work / "out").rglob("*.jsonl") for line in open(p) if line.strip())
    return {"cpu": cpu() - t0, "steps": times, "kept": kept}


def bench_quality(docs: list[str]) -> dict:
    from ledgerlm.data.filters import QualityConfig, QualityGates
    from ledgerlm.data.quality import DocView

    g = QualityGates(QualityConfig())
    t = cpu()
    passed = sum(g.check_view(DocView(d))[0] is None for d in docs)
    return {"cpu": cpu() - t, "passed": passed}


def bench_decontam(docs: list[str], data_dir: Path) -> dict:
    from ledgerlm.data.decontam import DecontamConfig, Matcher, load_benchmarks

    t = cpu()
    benches = load_benchmarks(DecontamConfig(tasks=TASKS, data_dir=str(data_dir)))
    t_build = cpu() - t
    m = Matcher(benches)
    t = cpu()
    found = [m.match(d) for d in docs]
    return {
        "cpu": cpu() - t,
        "build_cpu": t_build,
        "docs_matched": sum(bool(f) for f in found),
        "by_benchmark": {b.name: sum(b.name in f for f in found) for b in benches},
        "benchmarks": {b.name: (b.n, b.n_items) for b in benches},
    }


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("numpy", "datatrove", "spacy", "xxhash"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} missing")
    return ", ".join(out)


def spread(xs: list[float], fmt: str = "{:.1f}") -> str:
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-datatrove", action="store_true", help="skip datatrove (its rows say so)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not (DATA / "text" / "tinyshakespeare.txt").is_file():
        sys.exit(f"shared data not found under {DATA}")
    from ledgerlm.tasks import benchmark_texts

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = bench_data_dir(tmp)
        items = {t: benchmark_texts(t, data_dir=data_dir) for t in TASKS}
        docs, planted = build_docs(args.docs, items)
        nbytes = sum(len(d.encode()) for d in docs)
        words = sum(len(d.split()) for d in docs)
        src = tmp / "docs" / "docs.jsonl"
        src.parent.mkdir()
        src.write_text("".join(json.dumps({"id": str(i), "text": d}) + "\n" for i, d in enumerate(docs)))
        print(f"{len(docs)} docs, {nbytes / 1e6:.1f} MB, {words / len(docs):.0f} words/doc", flush=True)
        runs: dict[str, list[dict]] = {k: [] for k in ("ours", "ours_base", "dt", "dt_base", "gates", "decontam")}
        for r in range(args.repeats):  # interleaved, so background load hits all alike
            runs["ours"].append(bench_stage(src, tmp / f"ours{r}", near_dedup=True))
            runs["ours_base"].append(bench_stage(src, tmp / f"base{r}", near_dedup=False))
            if not args.no_datatrove:
                runs["dt"].append(bench_datatrove(src, tmp / f"dt{r}", dedup=True))
                runs["dt_base"].append(bench_datatrove(src, tmp / f"dtb{r}", dedup=False))
            runs["gates"].append(bench_quality(docs))
            runs["decontam"].append(bench_decontam(docs, data_dir))
            print(f"repeat {r}:", {k: v[-1]["cpu"] for k, v in runs.items() if v}, flush=True)
    load1 = os.getloadavg()

    gb = nbytes / 1e9
    gbh = lambda s: gb / (s / 3600)  # noqa: E731
    ours = [x["cpu"] for x in runs["ours"]]
    base = [x["cpu"] for x in runs["ours_base"]]
    marginal = [a - b for a, b in zip(ours, base)]
    numbers = {
        "docs": len(docs),
        "mb": round(nbytes / 1e6, 2),
        "stage_near_dedup_cpu_s": [round(x, 2) for x in ours],
        "stage_base_cpu_s": [round(x, 2) for x in base],
        "near_dedup_gb_per_cpu_hour": [round(gbh(x), 2) for x in marginal],
        "stage_near_dedup_gb_per_cpu_hour": [round(gbh(x), 2) for x in ours],
        "gates_docs_per_cpu_s": [round(len(docs) / x["cpu"]) for x in runs["gates"]],
        "decontam_docs_per_cpu_s": [round(len(docs) / x["cpu"]) for x in runs["decontam"]],
        "decontam_benchmarks": len(TASKS),
        "decontam_planted": sum(planted.values()),
        "decontam_docs_matched": runs["decontam"][0]["docs_matched"],
        "load_1min": [round(load0[0], 2), round(load1[0], 2)],
    }
    dt_ok = runs["dt"] and "error" not in runs["dt"][0]
    if dt_ok:
        dt = [x["cpu"] for x in runs["dt"]]
        dtb = [x["cpu"] for x in runs["dt_base"]]
        dt_marginal = [a - b for a, b in zip(dt, dtb)]
        numbers |= {
            "datatrove_cpu_s": [round(x, 2) for x in dt],
            "datatrove_base_cpu_s": [round(x, 2) for x in dtb],
            "datatrove_near_dedup_gb_per_cpu_hour": [round(gbh(x), 3) for x in dt_marginal],
            "datatrove_gb_per_cpu_hour": [round(gbh(x), 3) for x in dt],
            # per repeat: datatrove's CPU seconds over ours, whole pipeline (read -> write) and near-dedup alone
            "vs_datatrove_whole": [round(a / b, 2) for a, b in zip(dt, ours)],
            "vs_datatrove_near_dedup": [round(a / b, 2) for a, b in zip(dt_marginal, marginal)],
        }
    n = args.repeats
    dc = runs["decontam"][0]
    steps = {k: statistics.median(x["steps"].get(k, 0.0) for x in runs["ours"]) for k in runs["ours"][0]["steps"]}
    steps_base = {
        k: statistics.median(x["steps"].get(k, 0.0) for x in runs["ours_base"]) for k in runs["ours_base"][0]["steps"]
    }
    step_text = ", ".join(
        f"{k} {v:.2f}" + (f" (off: {steps_base[k]:.2f})" if k in steps_base else "") for k, v in steps.items()
    )
    body = [
        f"{len(docs):,} documents built from `../shared/data/text` ({nbytes / 1e6:.1f} MB of text, "
        f"{words / len(docs):.0f} words/doc; 5% planted near-copies, 2% exact copies, "
        f"{sum(planted.values())} documents with a pasted benchmark item). One process, one core; CPU seconds of "
        f"the process and its children; {n} repeats interleaved, shown as median (min–max). Load average (1 min) "
        f"{load0[0]:.2f} before, {load1[0]:.2f} after, on {os.cpu_count()} cores. Versions: {_versions()}.",
        "",
        "| near-dedup on the same JSONL | CPU s | GB of text per CPU-hour | datatrove / ours (CPU) |",
        "|---|---|---|---|",
        f"| ledgerlm `curate` stage, near-dedup only (read, signatures, index, LSH by external sort, exact-Jaccard "
        f"clusters, apply, write) | {spread(ours, '{:.2f}')} | {spread([gbh(x) for x in ours])} | |",
        f"| ledgerlm `curate` stage, near-dedup off (the stage's fixed cost) | {spread(base, '{:.2f}')} | "
        f"{spread([gbh(x) for x in base])} | |",
        f"| **ledgerlm near-dedup alone** (difference of the two) | {spread(marginal, '{:.2f}')} | "
        f"**{spread([gbh(x) for x in marginal])}** | |",
    ]
    if dt_ok:
        body += [
            f"| datatrove MinHash (defaults): read, signatures, 14 bucket tasks, cluster, read, filter, write | "
            f"{spread(dt, '{:.2f}')} | {spread([gbh(x) for x in dt], '{:.2f}')} | "
            f"{spread(numbers['vs_datatrove_whole'], '{:.1f}x')} |",
            f"| datatrove read + write alone (its fixed cost) | {spread(dtb, '{:.2f}')} | "
            f"{spread([gbh(x) for x in dtb], '{:.2f}')} | |",
            f"| **datatrove near-dedup alone** (difference of the two) | {spread(dt_marginal, '{:.2f}')} | "
            f"**{spread([gbh(x) for x in dt_marginal], '{:.2f}')}** | "
            f"**{spread(numbers['vs_datatrove_near_dedup'], '{:.1f}x')}** |",
        ]
    else:
        why = runs["dt"][0]["error"] if runs["dt"] else "skipped (--no-datatrove)"
        body.append(f"| datatrove MinHash (defaults) | - | - | {why} |")
    body += [
        "",
        f"ledgerlm drops {runs['ours'][0]['near_dup']} documents as near-duplicates (verified: exact shingle "
        f"Jaccard >= 0.75 with the kept copy)"
        + (f"; datatrove keeps {runs['dt'][0]['kept']:,} of {len(docs):,}" if dt_ok else "")
        + f". Stage CPU seconds per step, median, near-dedup on (off): {step_text}.",
        "datatrove: MinhashConfig() (5-grams, 14x8, 64-bit xxhash, spaCy 'en' word tokenizer), 1 task per step "
        "except buckets (14); xxhash >= 4 accepts only bytes and datatrove passes str, so the bench wraps its "
        "xxhash call with `.encode()` (what xxhash 3 did inside).",
        "",
        "| step (as scan runs it) | documents per CPU-second | notes |",
        "|---|---|---|",
        f"| all quality gates (Gopher + C4 + FineWeb) | {spread(numbers['gates_docs_per_cpu_s'], '{:,.0f}')} | "
        f"{runs['gates'][0]['passed']:,} of {len(docs):,} pass |",
        f"| decontamination scan (`Matcher.match`), the recipe's {len(TASKS)} benchmarks | "
        f"{spread(numbers['decontam_docs_per_cpu_s'], '{:,.0f}')} | N per benchmark "
        + ", ".join(f"{k}={v[0]} ({v[1]:,} items)" for k, v in dc["benchmarks"].items())
        + f"; index built in {dc['build_cpu']:.1f} CPU s; {dc['docs_matched']} documents with a match "
        f"({sum(planted.values())} planted, more through copies of those; found/planted per benchmark: "
        + ", ".join(f"{k} {dc['by_benchmark'][k]}/{planted[k]}" for k in TASKS)
        + ") |",
        "",
        "Benchmarks: PIQA, WinoGrande and LAMBADA from ../shared/data; GSM8K's train split stands in for its test "
        "split (5.7x more items than the real index); ARC-Easy, ARC-Challenge and HellaSwag are the test fixtures' "
        "few items (their releases are not on this machine), so their indexes are far smaller than the real ones. "
        "The scan's cost per document depends on the number of distinct N (one screen per N through a 16 MiB bit "
        "filter) and on the benchmarks the screen lets through, not on the size of an index.",
    ]
    text = "\n".join(body)
    print(text)
    if not args.no_record:
        record("curate", text, numbers=numbers)


if __name__ == "__main__":
    main()
