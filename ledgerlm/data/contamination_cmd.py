"""`ledgerlm contamination DATASET --against TASKS`: the contamination table of any dataset, read-only."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ledgerlm.data.decontam import DecontamConfig, contamination_table, load_benchmarks, to_csv, to_markdown
from ledgerlm.data.sources import SourceSpec, iter_records
from ledgerlm.io import atomic_write_text


def add_contamination_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="+", help="JSONL/Parquet/text file(s) or directories (e.g. an SFT or DPO set)")
    p.add_argument(
        "--against",
        action="append",
        required=True,
        metavar="TASKS",
        help="comma-separated task names or benchmark files (repeatable)",
    )
    p.add_argument("--text-field", default="*", help="field with the text (default '*': every string of a record)")
    p.add_argument("--data-dir", default=None, help="local benchmark data for task names")
    p.add_argument("--max-doc-freq", type=int, default=10)
    p.add_argument("--out", type=Path, default=None, help="also write contamination.md and .csv into this directory")


def contamination_cmd(args) -> int:
    """Print the contamination table of any dataset; the dataset is only read."""
    against = [x for a in args.against for x in a.split(",") if x]
    files = [x for x in against if Path(x.rpartition("=")[2]).is_file()]
    dc = DecontamConfig(
        tasks=[x for x in against if x not in files],
        files=files,
        data_dir=args.data_dir,
        max_doc_freq=args.max_doc_freq,
    )
    benchmarks = load_benchmarks(dc)
    bad = Counter()

    def texts():
        for i, path in enumerate(args.dataset):
            spec = SourceSpec(name=f"d{i}", path=path, text_field=args.text_field)
            for rec in iter_records(spec):
                if rec.reason:
                    bad[rec.reason] += 1
                    continue
                yield rec.text

    rows = contamination_table(texts(), benchmarks, args.max_doc_freq)
    md = to_markdown(rows)
    print(md, end="")
    if bad:
        print(f"(skipped unreadable records: {dict(bad)})", file=sys.stderr)
    if args.out:
        atomic_write_text(args.out / "contamination.md", md)
        atomic_write_text(args.out / "contamination.csv", to_csv(rows))
    return 0


add_args = add_contamination_args
main = contamination_cmd
