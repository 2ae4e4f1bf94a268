"""Write the demo's data to a directory: the corpus, SFT conversations, preference pairs and the benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ledgerlm.demo.corpus import BENCHMARK_N, write_benchmark, write_demo_corpus
from ledgerlm.demo.posttrain import demo_preference_pairs, demo_sft_conversations
from ledgerlm.io import write_jsonl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ledgerlm.demo", description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument(
        "out_dir",
        type=Path,
        help="writes corpus/ (JSONL shards + manifest.json), sft.jsonl, preference.jsonl and benchmark.jsonl here",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-docs", type=int, default=6000)
    ap.add_argument("--n-sft", type=int, default=2000)
    ap.add_argument("--n-pref", type=int, default=1000)
    ap.add_argument("--benchmark-n", type=int, default=BENCHMARK_N)
    args = ap.parse_args(argv)
    m = write_demo_corpus(args.out_dir / "corpus", args.seed, args.n_docs, benchmark_n=args.benchmark_n)
    write_jsonl(args.out_dir / "sft.jsonl", demo_sft_conversations(args.seed, args.n_sft, benchmark_n=args.benchmark_n))
    write_jsonl(args.out_dir / "preference.jsonl", demo_preference_pairs(args.seed, args.n_pref))
    write_benchmark(args.out_dir / "benchmark.jsonl", args.benchmark_n)
    keys = (
        "n_docs",
        "text_bytes",
        "clean_docs",
        "junk_total",
        "exact_duplicates",
        "near_duplicates",
        "boilerplate_docs",
        "leak_docs",
    )
    print(json.dumps({k: m[k] for k in keys}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
