"""End-to-end tokenisation speed (read JSONL, parse, encode, write shards + hashes) vs raw `tokenizers` batch encode.

    python -m bench.tokenize [--vocab-size 49152] [--workers 0] [--repeats 3] [--no-record]

Corpus: every real text file in ../shared/data (GSM8K, LAMBADA, Dolly/HH, HH-RLHF, PIQA, WinoGrande, Shakespeare,
Common Crawl), ~10 MB, written once as JSONL to a temporary directory. The tokenizer is a byte-level BPE trained on
that corpus with ledgerlm's own trainer. Both timings start from a freshly loaded tokenizer (tokenizers caches
words per instance, which would flatter whichever ran second). Reports MB/s of UTF-8 text, total and per core.
Goal: end to end >= 80% of raw.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer

from bench._record import record
from ledgerlm.data import shards as sh
from ledgerlm.data.tokenizer import eot_id, train_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def corpus() -> dict[str, list[str]]:
    def jl(p):
        opener = gzip.open if str(p).endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    out = {
        "gsm8k": [r["question"] + "\n" + r["answer"] for r in jl(DATA / "gsm8k/train.jsonl")],
        "lambada": [r["text"] for r in jl(DATA / "lambada/lambada_test.jsonl")],
        "dolly": [r["prompt"] + r["response"] for r in jl(DATA / "sft/dolly_hhrlhf_train_small.jsonl")],
        "hh": [r["chosen"] for r in jl(DATA / "preference/hh_rlhf_harmless_base_test.jsonl.gz")],
        "piqa": [r["goal"] + " " + r["sol1"] + " " + r["sol2"] for r in jl(DATA / "piqa/valid.jsonl")],
        "winogrande": [r["sentence"] for r in jl(DATA / "winogrande/dev.jsonl")],
        "shakespeare": (DATA / "text/tinyshakespeare.txt").read_text().split("\n\n"),
        "web": [r["text"] for f in sorted((DATA / "text").glob("cc_en_head-*.jsonl")) for r in jl(f)],
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=49152)
    ap.add_argument("--workers", type=int, default=0, help="encoding threads (0 = all cores)")
    ap.add_argument("--batch-bytes", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    cores = os.cpu_count() or 1
    docs = corpus()
    texts = [t for ts in docs.values() for t in ts if t.strip()]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, ts in docs.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for i, t in enumerate(ts):
                    if t.strip():
                        f.write(json.dumps({"id": i, "source": name, "text": t}, ensure_ascii=False) + "\n")
        files = sh.expand_inputs([tmp])

        t0 = time.perf_counter()
        tok = train_tokenizer(texts, vocab_size=args.vocab_size)
        t_train = time.perf_counter() - t0
        spec = tok.to_str()
        eot = eot_id(tok)

        def clock() -> tuple[float, float]:
            return time.perf_counter(), time.process_time()  # wall, and CPU seconds of all threads

        def since(t: tuple[float, float]) -> tuple[float, float]:
            now = clock()
            return now[0] - t[0], now[1] - t[1]

        def raw() -> tuple[float, float]:
            fresh = Tokenizer.from_str(spec)
            fresh.encode_special_tokens = True
            t = clock()
            fresh.encode_batch_fast(texts, add_special_tokens=False)
            return since(t)

        def raw_offsets() -> tuple[float, float]:  # the classic encode_batch, which also computes offsets
            fresh = Tokenizer.from_str(spec)
            t = clock()
            fresh.encode_batch(texts, add_special_tokens=False)
            return since(t)

        def end_to_end(i: int) -> tuple[float, float]:
            out = tmp / f"out{i}"
            t = clock()
            items = ((d.source, sh.split_of(d.key, 0, 0.01), d.text) for d in sh.iter_documents(files, lambda q: None))
            index = sh.write_shards(
                items, Tokenizer.from_str(spec), out, eot, workers=args.workers, batch_bytes=args.batch_bytes
            )
            sh.write_index(out, index)
            dt = since(t)
            end_to_end.tokens = sum(s["n_tokens"] for s in index["shards"])
            end_to_end.hashes = [s["sha256"] for s in index["shards"]]
            return dt

        times_raw, times_off, times_e2e, hashes = [], [], [], []
        for i in range(args.repeats):  # interleaved, so background load hits both alike
            times_raw.append(raw())
            times_off.append(raw_offsets())
            times_e2e.append(end_to_end(i))
            hashes.append(end_to_end.hashes)
        assert all(h == hashes[0] for h in hashes), "shards differ between repeats"

    med = [
        (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
        for ts in (times_raw, times_off, times_e2e)
    ]
    (r, rc), (o, oc), (e, ec) = med
    rows = [
        ("raw `encode_batch_fast` (ids only)", r, rc),
        ("raw `encode_batch` (with offsets)", o, oc),
        ("ledgerlm end to end (read, parse, encode, write, sha256)", e, ec),
    ]
    lines = [
        f"Corpus: {len(texts):,} real documents, {mb:.2f} MB UTF-8 ({len(docs)} sources); byte-level BPE, "
        f"vocab {args.vocab_size:,} (trained on it in {t_train:.1f} s); {end_to_end.tokens:,} tokens "
        f"({mb * 1e6 / end_to_end.tokens:.2f} bytes/token incl. separators). {cores} cores, "
        f"workers={args.workers or cores}, median of {args.repeats}; load average before: "
        f"{os.getloadavg()[0]:.2f}.",
        "",
        "| path | wall s | MB/s | MB/s per core (wall) | CPU s | MB per CPU-second |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {t:.2f} | {mb / t:.2f} | {mb / t / cores:.2f} | {c:.2f} | {mb / c:.2f} |" for name, t, c in rows
    ]
    lines += [
        "",
        f"End to end vs raw `encode_batch_fast`: **{r / e:.0%} by wall clock, {rc / ec:.0%} by CPU time** "
        f"(vs `encode_batch`: {o / e:.0%} wall, {oc / ec:.0%} CPU); goal >= 80%. CPU time (all threads of the "
        "process) is the per-core cost and does not depend on what else the machine runs; wall clock does. "
        f"Shard hashes identical across the {args.repeats} repeats.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        cmd = "python -m bench.tokenize " + " ".join(sys.argv[1:])
        record("tokenize", body, cmd.strip())


if __name__ == "__main__":
    main()
