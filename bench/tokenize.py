"""`ledgerlm tokenize` end to end (the CLI in a child process), per MB and per CPU-second, vs raw `tokenizers`.

    python -m bench.tokenize [--sizes 10000,30000,100000] [--repeats 3] [--workers 1] [--long-doc-mb 20] [--no-record]

Corpus: every real text file in ../shared/data (GSM8K, LAMBADA, Dolly/HH, HH-RLHF, PIQA, WinoGrande, Shakespeare,
Common Crawl: 26k documents, ~10 MB). A corpus of N documents draws them at random with replacement (so text repeats
in a corpus larger than 26k documents), written as JSONL. The tokenizer is a byte-level BPE (vocab 49,152) trained once on the real
documents with ledgerlm's own trainer and given to the stage (`--tokenizer tok.json`, as the real recipe gives
SmolLM's), so the stage's time is read, parse, split, encode, write shards, hash, ledger.

Per size, `--repeats` times interleaved:

  stage   `ledgerlm tokenize --input FILE --tokenizer tok.json --out RUN --workers W` in a child process: its CPU
          seconds (user + system, `resource.getrusage(RUSAGE_CHILDREN)`), wall seconds, peak RSS.
  raw     a child process that reads the same texts, then times only `Tokenizer.encode_batch_fast` over them in
          batches of ~1 MB with tokenizers' thread pool off (TOKENIZERS_PARALLELISM=false): the bare encoding cost.

Goal: the stage's MB per CPU-second >= 80% of raw's. --long-doc-mb N also tokenizes one N MB document through
`ledgerlm tokenize` in a child process, in pieces (the default) and whole, and reports each one's peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._record import record
from ledgerlm.data.tokenizer import train_tokenizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_RAW = (
    "import json, sys, time\n"
    "from tokenizers import Tokenizer\n"
    "tok = Tokenizer.from_file(sys.argv[1]); tok.encode_special_tokens = True\n"
    "texts = [json.loads(x)['text'] for x in open(sys.argv[2], encoding='utf-8')]\n"
    "c = time.process_time(); n = 0; batch = []; size = 0\n"
    "for t in texts + [None]:\n"
    "    if t is None or size >= 1_000_000:\n"
    "        n += sum(len(e) for e in tok.encode_batch_fast(batch, add_special_tokens=False)); batch = []; size = 0\n"
    "    if t is not None: batch.append(t); size += len(t)\n"
    "print(json.dumps({'cpu': time.process_time() - c, 'tokens': n}))\n"
)


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


def write_corpus(path: Path, n: int, docs: dict[str, list[str]], seed: int = 0) -> int:
    """n documents drawn at random (with replacement) from the real ones; returns UTF-8 bytes of text."""
    rng = random.Random(seed)
    names = sorted(docs)
    nbytes = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            src = rng.choice(names)
            text = rng.choice(docs[src])
            nbytes += len(text.encode("utf-8"))
            f.write(json.dumps({"id": i, "source": src, "text": text}, ensure_ascii=False) + "\n")
    return nbytes


_WRAP = (  # runs a command; prints its wall and CPU seconds and its peak RSS (this wrapper's only child)
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': p.returncode, 'wall': time.perf_counter() - t, 'cpu': u.ru_utime + u.ru_stime,"
    " 'rss_gb': u.ru_maxrss / 1e6, 'out': p.stdout[-2000:], 'err': p.stderr[-3000:]}))\n"
)


def child(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd in a wrapper process: its wall seconds, CPU seconds (user + system) and peak RSS."""
    p = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True, env=env)
    m = json.loads(p.stdout.strip().splitlines()[-1])
    if m["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{m['err']}")
    return m


def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,30000,100000", help="corpus sizes in documents")
    ap.add_argument("--vocab-size", type=int, default=49152)
    ap.add_argument("--workers", type=int, default=1, help="the stage's encoding threads")
    ap.add_argument("--long-doc-mb", type=float, default=0, help="also measure peak RSS on one document this big")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    sizes = [int(x) for x in args.sizes.split(",")]
    load0 = os.getloadavg()
    docs = corpus()
    texts = [t for ts in docs.values() for t in ts if t.strip()]
    docs = {k: [t for t in v if t.strip()] for k, v in docs.items()}
    raw_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    rows, numbers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.process_time()
        tok = train_tokenizer(texts, vocab_size=args.vocab_size)
        t_train = time.process_time() - t0
        spec = tmp / "tok.json"
        spec.write_text(tok.to_str())
        for n in sizes:
            path = tmp / f"corpus-{n}.jsonl"
            nbytes = write_corpus(path, n, docs)
            mb = nbytes / 1e6
            stage, raw, tokens = [], [], set()
            for i in range(args.repeats):  # interleaved, so background load hits both alike
                r = child([sys.executable, "-c", _RAW, str(spec), str(path)], env=raw_env)
                raw.append(json.loads(r["out"].strip().splitlines()[-1])["cpu"])
                out = tmp / f"run-{n}-{i}"
                cmd = [sys.executable, "-m", "ledgerlm", "tokenize", "--input", str(path), "--tokenizer", str(spec)]
                stage.append(child(cmd + ["--out", str(out), "--workers", str(args.workers)]))
                tokens.add((out / "tokenize" / "index.json").read_text())
                print(f"{n} docs repeat {i}: stage {stage[-1]['cpu']:.1f} CPU s, raw {raw[-1]:.1f}", flush=True)
            assert len(tokens) == 1, "shards differ between repeats"
            index = json.loads(tokens.pop())
            n_tok = sum(s["n_tokens"] for s in index["shards"])
            s_cpu = [x["cpu"] for x in stage]
            ratio = [mb / s / (mb / r) for s, r in zip(s_cpu, raw)]
            numbers[f"stage_mb_per_cpu_s_{n}"] = [round(mb / x, 3) for x in s_cpu]
            numbers[f"stage_docs_per_cpu_s_{n}"] = [round(n / x) for x in s_cpu]
            numbers[f"raw_mb_per_cpu_s_{n}"] = [round(mb / x, 3) for x in raw]
            numbers[f"stage_vs_raw_{n}"] = [round(x, 3) for x in ratio]
            rows.append(
                f"| {n:,} | {mb:.1f} | {n_tok:,} | {spread([x['wall'] for x in stage], '{:.1f}')} | "
                f"{spread(s_cpu, '{:.1f}')} | {spread([mb / x for x in s_cpu])} | "
                f"{spread([n / x for x in s_cpu], '{:,.0f}')} | {spread([x['rss_gb'] for x in stage])} | "
                f"{spread([mb / x for x in raw])} | {spread(ratio, '{:.0%}')} |"
            )
        long_rows = long_document(tmp, texts, spec.read_text(), args) if args.long_doc_mb else []
    load1 = os.getloadavg()
    numbers["load_1min"] = [round(load0[0], 2), round(load1[0], 2)]
    largest = sizes[-1]
    numbers["stage_vs_raw"] = numbers[f"stage_vs_raw_{largest}"]
    numbers["stage_mb_per_cpu_s"] = numbers[f"stage_mb_per_cpu_s_{largest}"]
    if long_rows:
        numbers |= long_document.numbers
    lines = [
        f"Corpora of N documents drawn at random with replacement from the 26k real documents of ../shared/data "
        f"(8 sources; so text repeats in the larger corpora); byte-level BPE, vocab {args.vocab_size:,} "
        f"(trained once on the real documents, {t_train:.1f} CPU s, given to the stage). Stage: `ledgerlm tokenize "
        f"--input corpus.jsonl --tokenizer tok.json --out RUN --workers {args.workers}`, CPU seconds of the child "
        f"process (all threads); raw: `encode_batch_fast` alone over the same texts, tokenizers' pool off. "
        f"{args.repeats} repeats interleaved, median (min–max). Load average (1 min) {load0[0]:.2f} before, "
        f"{load1[0]:.2f} after, on {os.cpu_count()} cores.",
        "",
        "| documents | MB of text | tokens | stage wall s | stage CPU s | stage MB per CPU-s | stage documents per "
        "CPU-s | stage peak RSS GB | raw encode MB per CPU-s | stage / raw (per CPU-s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        *long_rows,
        "",
        "Shard hashes (index.json) identical across repeats at every size. The stage's CPU includes Python start-up "
        "and imports (~1-2 s), reading and parsing the JSONL, the train/val split, encoding, writing and hashing "
        "the shards and the ledger record; raw is the encoding call alone.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record("tokenize", body, numbers=numbers)


def long_document(tmp: Path, texts: list[str], spec: str, args) -> list[str]:
    """Peak RSS of `ledgerlm tokenize` (a child process, tokenizer given) on one document of args.long_doc_mb MB,
    encoded in pieces (the default) and whole (long_doc_chars above its size: what tokenize did before)."""
    target = int(args.long_doc_mb * 1e6)
    parts, n = [], 0
    while n < target:
        for t in texts:
            parts.append(t)
            n += len(t) + 2
            if n >= target:
                break
    doc = "\n\n".join(parts)
    path = tmp / "long.jsonl"
    path.write_text(json.dumps({"id": 0, "text": doc}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "tok-long.json").write_text(spec)
    mb = len(doc.encode()) / 1e6
    rows = ["", f"One {mb:.0f} MB document, `ledgerlm tokenize` in a child process:", ""]
    rows += ["| long_doc_chars | peak RSS GB | wall s | CPU s |", "|---|---:|---:|---:|"]
    indexes, rss = [], []
    for chars in (4_000_000, 10**12):
        out = tmp / f"long-{chars}"
        cmd = [sys.executable, "-m", "ledgerlm", "tokenize", "--input", str(path)]
        cmd += ["--tokenizer", str(tmp / "tok-long.json"), "--out", str(out), "--workers", str(args.workers)]
        m = child(cmd + [f"tokenize.long_doc_chars={chars}"])
        label = f"{chars:,} (pieces, the default)" if chars < len(doc) else "above the document (whole, as before)"
        rows.append(f"| {label} | {m['rss_gb']:.2f} | {m['wall']:.1f} | {m['cpu']:.1f} |")
        rss.append(m["rss_gb"])
        indexes.append((out / "tokenize" / "index.json").read_text())
    assert indexes[0] == indexes[1], "pieces and whole gave different shards"
    rows += ["", "Both give identical shards (index.json with every shard's sha256)."]
    long_document.numbers = {
        "long_doc_mb": round(mb, 1),
        "long_doc_rss_gb_pieces": round(rss[0], 3),
        "long_doc_rss_gb_whole": round(rss[1], 3),
    }
    return rows


if __name__ == "__main__":
    main()
