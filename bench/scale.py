"""Curate (and tokenize) at growing corpus sizes, as a user preparing the real run would: the CLI, 1 and 2 workers.

A generated web-like corpus (log-normal document lengths, mean ~4 KB, lines of 1-4 real English sentences, footers
shared by many pages, 3% exact copies and 3% near copies of earlier pages) is curated with
`ledgerlm curate --input web=FILE --out RUN --datatrove-tasks W --workers W` and tokenized with `ledgerlm tokenize --out RUN
--workers W`, each under a small wrapper that reports the CPU time (process + children) and the peak RSS of the
largest process of the tree. Then:

  - the output hashes of 1 and 2 workers are compared (they must be identical);
  - the false-drop rate: near_dup drops whose kept twin is not a copy of the same original page;
  - growth is fitted (CPU = a * docs, peak RSS = b + c * docs) and extrapolated to 15M and 100M documents on a
    16-core 128 GB host; the fitted costs are written to ledgerlm/data/scale_costs.json for `ledgerlm plan`.

    python -m bench.scale [--sizes 10000,100000,1000000] [--workers 1,2] [--tokenize-max 100000] [--no-record]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench._record import record
from ledgerlm.data.sources import doc_id

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
COSTS = ROOT / "ledgerlm" / "data" / "scale_costs.json"
FOOTERS = [
    f"Copyright {2000 + i} Example Media Group {i}. All rights reserved, see our terms of use." for i in range(40)
] + [f"Subscribe to the weekly newsletter number {i} for more stories like this one." for i in range(40)]
_WRAP = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.time(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': p.returncode, 'wall': time.time() - t, 'cpu': u.ru_utime + u.ru_stime,"
    " 'rss_kb': u.ru_maxrss, 'err': p.stderr[-3000:]}))\n"
)


def sentences() -> list[str]:
    lines = [ln.strip() for ln in (DATA / "text" / "tinyshakespeare.txt").read_text().splitlines()]
    text = " ".join(ln for ln in lines if ln and not ln.endswith(":"))
    for p in sorted((DATA / "text").glob("cc_en_head-*.jsonl")):
        text += " " + " ".join(json.loads(x)["text"].replace("\n", " ") for x in p.read_text().split("\n") if x)
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]


def generate(n: int, path: Path, seed: int = 0) -> np.ndarray:
    """Write n documents to `path` (JSONL); returns the family (index of the original page) of each line."""
    rng = random.Random(seed)
    sents = sentences()
    sigma = 0.8
    mu = math.log(4000) - sigma**2 / 2  # log-normal with mean 4,000 characters
    family = np.empty(n, dtype=np.int64)
    recent: list[tuple[int, str]] = []  # copies come from the last 2,000 pages: memory stays flat
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if recent and r < 0.03:
                fam, text = rng.choice(recent)
            elif recent and r < 0.06:  # near copy: about 1 word in 100 replaced (shingle Jaccard ~0.9)
                fam, text = rng.choice(recent)
                w = text.split(" ")
                for _ in range(max(1, len(w) // 100)):
                    w[rng.randrange(len(w))] = f"w{rng.randrange(10**6)}"
                text = " ".join(w)
            else:
                fam, target, lines, size = i, min(max(rng.lognormvariate(mu, sigma), 300), 200_000), [], 0
                while size < target:
                    line = " ".join(rng.choices(sents, k=rng.randint(1, 4)))
                    lines.append(line)
                    size += len(line) + 1
                if rng.random() < 0.3:
                    lines.append(rng.choice(FOOTERS))
                text = "\n".join(lines)
                recent.append((fam, text))
                if len(recent) > 2000:
                    recent.pop(rng.randrange(len(recent)))
            family[i] = fam
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return family


def measured(cmd: list[str], cwd: Path) -> dict:
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", _WRAP, *cmd], cwd=cwd, capture_output=True, text=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    if m["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{m['err']}")
    m["load"] = (round(load, 1), round(os.getloadavg()[0], 1))
    return m


def tree_hash(*dirs: Path) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted(d.rglob("*.jsonl")):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def false_drops(run: Path, family: np.ndarray, corpus: Path) -> dict:
    """near_dup drops whose kept twin is a copy of another page (a false drop), streaming the excluded shards."""
    ids = []
    with open(corpus, "rb") as f:
        for line in f:
            ids.append(doc_id("web", json.loads(line)["text"]))
    ids = np.array(ids, dtype="S32")
    order = np.argsort(ids)
    ids_sorted = ids[order]  # once: indexing 1M ids per drop made this check the slow part of the 1M row
    drops = bad = 0
    jac = []
    for p in sorted((run / "curate" / "excluded").glob("*.jsonl")):
        with open(p, "rb") as f:
            for line in f:
                r = json.loads(line)
                if r["reason"] != "near_dup":
                    continue
                drops += 1
                twin = order[np.searchsorted(ids_sorted, r["details"]["kept_id"].encode())]
                bad += int(family[r["line"] - 1] != family[twin])
                jac.append(r["details"]["jaccard"])
    planted = int(np.sum(family != np.arange(len(family))))
    return {"near_dup": drops, "false": bad, "planted": planted, "min_jaccard": min(jac) if jac else None}


def fit(xs, ys) -> tuple[float, float]:
    """Least squares y = a + b x."""
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale")
    p.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--tokenize-max", type=int, default=100_000, help="tokenize only corpora up to this many docs")
    p.add_argument("--dir", type=Path, default=ROOT / ".bench-scale", help="scratch directory (removed per size)")
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--report-only", action="store_true", help="only write the table from the saved results")
    p.add_argument("--note", default="", help="a sentence added under the table (e.g. which sizes did not finish)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    workers = [int(x) for x in args.workers.split(",")]
    # results accumulate across invocations (e.g. the 1M run in the background): one table from all of them
    args.dir.mkdir(parents=True, exist_ok=True)
    saved = args.dir / "results.json"
    rows, fd = [], {}

    def save() -> None:  # re-read first: another invocation may have saved its sizes meanwhile
        prev = json.loads(saved.read_text()) if saved.exists() else {"rows": [], "fd": {}}
        keep = [
            r
            for r in prev["rows"]
            if (r["docs"], r["stage"], r["workers"]) not in {(x["docs"], x["stage"], x["workers"]) for x in rows}
        ]
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": keep + rows, "fd": {**prev["fd"], **{str(k): v for k, v in fd.items()}}}))
        os.replace(tmp, saved)

    for n in [] if args.report_only else sizes:
        d = args.dir / str(n)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        corpus = d / "web.jsonl"
        t = time.process_time()
        family = generate(n, corpus)
        print(f"[{n}] corpus {corpus.stat().st_size / 1e6:.0f} MB in {time.process_time() - t:.0f} CPU s", flush=True)
        hashes = {}
        for w in workers:
            run = d / f"run-w{w}"
            cur = ["-m", "ledgerlm", "curate", "--input", f"web={corpus}", "--out", str(run)]
            m = measured([sys.executable, *cur, "--datatrove-tasks", str(w), "--workers", str(w)], ROOT)
            rows.append({"docs": n, "stage": "curate", "workers": w, **m})
            print(f"[{n}] curate W={w}: {json.dumps(rows[-1])[:300]}", flush=True)
            save()
            hashes[("curate", w)] = tree_hash(run / "curate" / "kept", run / "curate" / "excluded")
            if n not in fd:
                fd[n] = false_drops(run, family, corpus)
                save()
                print(f"[{n}] near-dup check: {fd[n]}", flush=True)
            if n <= args.tokenize_max:
                tok = ["-m", "ledgerlm", "tokenize", "--out", str(run), "--tokenizer", "train", "--vocab-size", "4096"]
                m = measured([sys.executable, *tok, "--sample-bytes", "20000000", "--workers", str(w)], ROOT)
                rows.append({"docs": n, "stage": "tokenize", "workers": w, **m})
                print(f"[{n}] tokenize W={w}: {json.dumps(rows[-1])[:300]}", flush=True)
        for stage in ("curate",) if len(workers) > 1 else ():  # "same" only where both were measured
            got = {hashes[(stage, w)] for w in workers}
            for r in rows:
                if r["docs"] == n and r["stage"] == stage:
                    r["same_hash"] = len(got) == 1
                    r["hash"] = hashes[(stage, r["workers"])]
        shutil.rmtree(d)  # the next size needs the disk
        save()
    allr = json.loads(saved.read_text())
    rows = sorted(allr["rows"], key=lambda r: (r["docs"], r["stage"], r["workers"]))
    fd = {int(k): v for k, v in sorted(allr["fd"].items(), key=lambda kv: int(kv[0]))}
    report(rows, fd, sorted({r["docs"] for r in rows}), workers, args)
    return 0


def report(rows, fd, sizes, workers, args) -> None:
    cur = [r for r in rows if r["stage"] == "curate"]  # CPU time and per-process peak do not depend on W
    a_cpu, b_cpu = fit([r["docs"] for r in cur], [r["cpu"] for r in cur])
    # scan/apply memory grows with the chunk until a task has chunk_docs (20,000) documents, then stays flat: the growth
    # that remains (the global steps' numpy columns) is fitted on the sizes past that, when there are two of them
    by_w = {w: [r for r in cur if r["docs"] >= 100_000 and r["workers"] == w] for w in {r["workers"] for r in cur}}
    big = max(by_w.values(), key=lambda rs: (len({r["docs"] for r in rs}), -len(rs)))  # one W: peaks differ by W
    big = big if len({r["docs"] for r in big}) >= 2 else cur
    a_rss, b_rss = fit([r["docs"] for r in big], [r["rss_kb"] * 1024 for r in big])
    a_rss = max(a_rss, 0.0)
    costs = {
        "curate_cpu_s_per_doc": b_cpu,
        "curate_rss_base_bytes": max(a_rss, min(r["rss_kb"] * 1024 for r in cur)),
        "curate_rss_bytes_per_doc": max(b_rss, 0.0),
        "measured_docs": [r["docs"] for r in cur],
    }
    tok = [r for r in rows if r["stage"] == "tokenize"]
    if tok:  # one size only: the mean cost per document (no slope to fit)
        many = len({r["docs"] for r in tok}) >= 2
        b_t = (
            fit([r["docs"] for r in tok], [r["cpu"] for r in tok])[1]
            if many
            else np.mean([r["cpu"] / r["docs"] for r in tok])
        )
        costs["tokenize_cpu_s_per_doc"] = float(b_t)
        costs["tokenize_rss_bytes"] = max(r["rss_kb"] * 1024 for r in tok)
    lines = [
        "| documents | stage | W | wall s | load (before, after) | CPU s | docs / CPU s | peak RSS (largest process) |"
        " output hash (1 = 2 workers) |",
        "|---:|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        same = {True: "same", False: "DIFFERENT"}.get(r.get("same_hash"), "")
        lines.append(
            f"| {r['docs']:,} | {r['stage']} | {r['workers']} | {r['wall']:.0f} | {r['load'][0]}, {r['load'][1]} "
            f"| {r['cpu']:.0f} | {r['docs'] / r['cpu']:,.0f} | {r['rss_kb'] / 2**20:.2f} GB | "
            f"{r.get('hash', '')} {same} |"
        )
    lines += ["", "Near-duplicates (verified against the kept copy, threshold 0.75):", ""]
    lines += ["| documents | planted copies | dropped as near_dup | false drops (twin from another page) | min J |"]
    lines += ["|---:|---:|---:|---:|---:|"]
    for n, f in fd.items():
        lines.append(f"| {n:,} | {f['planted']:,} | {f['near_dup']:,} | {f['false']} | {f['min_jaccard']} |")
    growth = []  # the acceptance: per worker count, the largest process at the largest size over the smallest
    for w in sorted({r["workers"] for r in cur}):
        by_n = {r["docs"]: r["rss_kb"] for r in cur if r["workers"] == w}
        lo, hi = by_n[min(by_n)], by_n[max(by_n)]
        growth.append(f"x{hi / lo:.2f} with {w} worker{'s' * (w > 1)} ({lo / 2**20:.2f} -> {hi / 2**20:.2f} GB)")
    ex = {m: (a_rss + b_rss * m) / 2**30 for m in (15_000_000, 100_000_000)}
    cpu_h = {m: b_cpu * m / 3600 for m in ex}
    lines += [
        "",
        f"Fit over all curate runs: CPU = {a_cpu:.1f} s + {b_cpu * 1e3:.3f} ms/doc ({1 / b_cpu:,.0f} docs per CPU-second "
        f"at the margin; {1e6 / (a_cpu + b_cpu * 1e6):,.0f} for a whole 1M-document run); peak RSS of the largest "
        f"process = {a_rss / 2**30:.2f} GB + {b_rss:.1f} B/doc (fitted on W={big[0]['workers']}, sizes "
        f"{sorted({r['docs'] for r in big})}). Peak RSS from {sizes[0]:,} to {sizes[-1]:,} docs: "
        f"{', '.join(growth)}.",
        f"Extrapolated to a 16-core 128 GB host: 15M docs {cpu_h[15_000_000]:.1f} CPU-hours "
        f"(~{cpu_h[15_000_000] / 16:.1f} h on 16 workers), peak RSS per process {ex[15_000_000]:.2f} GB; "
        f"100M docs {cpu_h[100_000_000]:.0f} CPU-hours (~{cpu_h[100_000_000] / 16:.1f} h), {ex[100_000_000]:.2f} GB.",
    ]
    if args.note:
        lines += ["", args.note]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:  # the section first: it stamps the code version, and the costs file is part of the code
        record("Curate and tokenize at scale (bench.scale)", body, numbers=headline(cur))
        COSTS.write_text(json.dumps(costs, indent=2) + "\n")


def headline(cur: list[dict]) -> dict:
    """The summary's numbers: with 1 worker, docs per CPU-second at the largest size and the peak RSS growth from the
    smallest size to the largest."""
    w1 = {r["docs"]: r for r in cur if r["workers"] == 1}
    if not w1:
        return {}
    lo, hi = w1[min(w1)], w1[max(w1)]
    return {
        "curate_w1_docs": hi["docs"],
        "curate_w1_cpu_s": round(hi["cpu"], 1),
        "curate_w1_docs_per_cpu_s": round(hi["docs"] / hi["cpu"], 1),
        "curate_w1_smallest_docs": lo["docs"],
        "curate_w1_rss_gb_smallest": round(lo["rss_kb"] / 2**20, 3),
        "curate_w1_rss_gb_largest": round(hi["rss_kb"] / 2**20, 3),
        "curate_w1_rss_ratio": round(hi["rss_kb"] / lo["rss_kb"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
