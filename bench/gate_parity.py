"""Quality gates vs datatrove's own filters, document by document, on a varied real-text mix.

Every document of the mix goes through our gates and through datatrove's filters at the same settings (datatrove's
FineWeb example, `examples/fineweb.py`: GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter(
filter_no_terminal_punct=False) -> FineWebQualityFilter, defaults otherwise; ours: `QualityConfig()`), each family
alone on the text as read and the chain (where FineWeb sees C4's edited text). We compare keep/drop per document,
and for the chain also the kept text (C4's edits). Reported: agreement per family and for the chain, a confusion table
per source, every disagreement with both sides' rule, and the CPU time per document of both.

The mix, from ../shared/data: GSM8K train (question + answer), LAMBADA, Dolly/HH (prompt + response), HH-RLHF
harmless (chosen), PIQA (goal + solutions), WinoGrande (sentence), tiny Shakespeare (blocks of 1-4 KB), the Common
Crawl pages, bench.scale's generated web pages, and generated "web furniture" pages that exercise every rule (menus,
bullet lists, citations, cookie and javascript lines, code, lorem ipsum, ellipses, hashes, repeated lines).
Other text can be added with `--jsonl name=path[:field]` (e.g. real FineWeb pages).

    python -m bench.gate_parity [--limit N] [--jsonl NAME=PATH[:FIELD]] [--no-record]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _jsonl(path: Path) -> list[dict]:
    op = gzip.open if path.suffix == ".gz" else open
    with op(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f.read().split("\n") if x.strip()]


def furniture(n: int, seed: int = 0) -> list[str]:
    """Web pages with the furniture the rules look for, in random amounts (so that documents fall on both sides)."""
    rng = random.Random(seed)
    sents = [s for d in _jsonl(DATA / "sft" / "dolly_hhrlhf_train_small.jsonl") for s in d["response"].split(". ")]
    sents = [s.strip() + "." for s in sents if len(s.split()) >= 4]
    pieces = [
        lambda: "Home | About | Contact | Blog",
        lambda: "Menu",
        lambda: "- " + rng.choice(sents),
        lambda: "\u2022 " + " ".join(rng.choice(sents).split()[:3]),
        lambda: rng.choice(sents)[:-1] + f"[{rng.randint(1, 30)}].",
        lambda: rng.choice(sents) + " [citation needed]",
        lambda: "This site uses cookies. By continuing you accept our privacy policy.",
        lambda: "Please enable JavaScript to view the comments powered by Disqus.",
        lambda: "function f(x) { return x + 1; }",
        lambda: "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
        lambda: rng.choice(sents)[:-1] + "...",
        lambda: "#" + " #".join(rng.choice(sents).split()[:4]),
        lambda: "Share this: Facebook Twitter",
        lambda: "Read more",
        lambda: "x" * rng.choice([20, 1200]),
        lambda: "",
        lambda: "   " + rng.choice(sents) + "   ",
        lambda: rng.choice(sents).upper(),
        lambda: f"Posted on {rng.randint(1, 28)} May 2021 by admin",
        lambda: "\u201c" + rng.choice(sents) + "\u201d",
    ]
    out = []
    for _ in range(n):
        lines = []
        p_noise = rng.random() * 0.6
        for _ in range(rng.randint(1, 40)):
            if rng.random() < p_noise:
                lines.append(rng.choice(pieces)())
            else:
                lines.append(" ".join(rng.choices(sents, k=rng.randint(1, 3))))
        if rng.random() < 0.2:
            lines += lines[: rng.randint(1, 5)]  # repeated lines
        out.append("\n".join(lines).strip() or "Empty page")
    return out


def mix(limit: int | None = None, extra: list[str] = ()) -> list[tuple[str, str]]:
    """(source, text) for every document of the mix."""
    from bench.scale import generate

    src: dict[str, list[str]] = {}
    src["gsm8k"] = [d["question"] + "\n" + d["answer"] for d in _jsonl(DATA / "gsm8k" / "train.jsonl")]
    src["lambada"] = [d["text"] for d in _jsonl(DATA / "lambada" / "lambada_test.jsonl")]
    src["dolly"] = [d["prompt"] + d["response"] for d in _jsonl(DATA / "sft" / "dolly_hhrlhf_train_small.jsonl")]
    src["hh_rlhf"] = [d["chosen"] for d in _jsonl(DATA / "preference" / "hh_rlhf_harmless_base_test.jsonl.gz")]
    src["piqa"] = [f"{d['goal']}\n{d['sol1']}\n{d['sol2']}" for d in _jsonl(DATA / "piqa" / "valid.jsonl")]
    src["winogrande"] = [d["sentence"] for d in _jsonl(DATA / "winogrande" / "dev.jsonl")]
    sh = (DATA / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    rng = random.Random(0)
    blocks, i = [], 0
    while i < len(sh):
        j = sh.find("\n\n", i + rng.randint(1000, 4000))
        j = len(sh) if j < 0 else j
        blocks.append(sh[i:j])
        i = j + 2
    src["shakespeare"] = blocks
    src["common_crawl"] = [d["text"] for p in sorted((DATA / "text").glob("cc_en_head-*.jsonl")) for d in _jsonl(p)]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"gate_parity_web_{os.getpid()}.jsonl"
    try:
        generate(2000, tmp, seed=1)
        src["generated_web"] = [d["text"] for d in _jsonl(tmp)]
    finally:
        tmp.unlink(missing_ok=True)
    src["generated_furniture"] = furniture(3000)
    for spec in extra:
        name, _, rest = spec.partition("=")
        path, _, fld = rest.partition(":")
        src[name] = [d[fld or "text"] for d in _jsonl(Path(path))]
    out = []
    for name, texts in src.items():
        texts = [t for t in texts if t.strip()]
        out += [(name, t) for t in (texts[:limit] if limit else texts)]
    return out


FAMILIES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def datatrove_side(docs: list[tuple[str, str]]) -> tuple[list[dict], float]:
    """Per document: each family's verdict alone ((keep, reason)) and the chain's (keep, reason, text)."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    fams = {
        "gopher_repetition": GopherRepetitionFilter(),
        "gopher_quality": GopherQualityFilter(),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb": FineWebQualityFilter(),
    }
    out = []
    t0 = time.process_time()
    for i, (_, text) in enumerate(docs):  # the chain first, alone: its CPU time is the speed compared
        d = Document(text=text, id=str(i))
        row = {"chain": (True, None, None)}
        for name, f in fams.items():
            r = f.filter(d)
            if r is not True:
                row["chain"] = (False, f"{name}:{r[1] if isinstance(r, tuple) else 'dropped'}", None)
                break
        else:
            row["chain"] = (True, None, d.text)
        out.append(row)
    chain_cpu = time.process_time() - t0
    for i, (row, (_, text)) in enumerate(zip(out, docs)):
        for name, f in fams.items():
            r = f.filter(Document(text=text, id=str(i)))
            row[name] = (True, None) if r is True else (False, r[1] if isinstance(r, tuple) else "dropped")
    return out, chain_cpu


def our_side(docs: list[tuple[str, str]]) -> tuple[list[dict], float, float]:
    from ledgerlm.data import filters
    from ledgerlm.data.filters import QualityConfig
    from ledgerlm.data.quality import DocView

    cfg = QualityConfig()
    fams = {
        "gopher_repetition": filters.GopherRepetition(cfg),
        "gopher_quality": filters.GopherQuality(cfg),
        "c4": filters.C4(cfg),
        "fineweb": filters.FineWeb(cfg),
    }
    gates = filters.QualityGates(cfg)
    out = []
    t0 = time.process_time()
    for _, text in docs:
        reason, details, _, edit = gates.check_view(DocView(text))
        out.append(
            {"chain": (reason is None, reason and f"{reason} ({details.get('ref', '')})", edit.text if edit else text)}
        )
    chain_cpu = time.process_time() - t0
    t0 = time.process_time()
    for row, (_, text) in zip(out, docs):
        for name, f in fams.items():
            keep, reason, details = f.filter(DocView(text))
            row[name] = (keep, reason and f"{reason} ({details.get('ref', '')})")
    return out, chain_cpu, time.process_time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="documents per source (default: all)")
    ap.add_argument("--jsonl", action="append", default=[], help="extra source NAME=PATH[:FIELD]")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--show", type=int, default=60, help="disagreements listed in the section (all go to stdout)")
    args = ap.parse_args(argv)
    try:
        import spacy  # noqa: F401  (datatrove's English word tokenizer)
    except ImportError:
        print("spaCy is not installed: datatrove's filters need it (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    docs = mix(args.limit, args.jsonl)
    load0 = os.getloadavg()[0]
    print(f"{len(docs)} documents; load {load0:.2f}", flush=True)
    ours, our_chain_cpu, our_fam_cpu = our_side(docs)
    print(f"ours: chain {our_chain_cpu:.1f} CPU-s ({len(docs) / our_chain_cpu:.0f} docs/CPU-s)", flush=True)
    theirs, dt_cpu = datatrove_side(docs)
    print(f"datatrove: chain {dt_cpu:.1f} CPU-s ({len(docs) / dt_cpu:.0f} docs/CPU-s)", flush=True)
    load1 = os.getloadavg()[0]

    agree = {}
    confusion: dict[str, Counter] = defaultdict(Counter)
    disagreements = []
    text_diff = 0
    for k in (*FAMILIES, "chain"):
        same = 0
        for (src, text), o, t in zip(docs, ours, theirs):
            if o[k][0] == t[k][0]:
                same += 1
            else:
                disagreements.append((k, src, o[k][1] or "kept", t[k][1] or "kept", text))
            if k == "chain":
                confusion[src][("keep" if o[k][0] else "drop") + "/" + ("keep" if t[k][0] else "drop")] += 1
                if o[k][0] and t[k][0] and o[k][2] != t[k][2]:
                    text_diff += 1
                    disagreements.append(("chain-text", src, "kept (edited text differs)", "kept", text))
        agree[k] = same / len(docs)
    kept_ours = sum(o["chain"][0] for o in ours)
    kept_dt = sum(t["chain"][0] for t in theirs)
    for k, v in agree.items():
        print(f"  {k:18s} {100 * v:.3f}% agreement")
    print(f"chain kept: ours {kept_ours}, datatrove {kept_dt}; kept text differs on {text_diff}")
    for k, src, o, t, text in disagreements:
        print(f"DISAGREE {k} [{src}] ours={o} | datatrove={t} | {text[:160]!r}")

    n = len(docs)
    per_doc_dt = dt_cpu / n
    rows = [
        "| family | agreement | docs where ours differs |",
        "|---|---|---|",
        *[f"| {k} | {100 * agree[k]:.2f}% | {round((1 - agree[k]) * n)} |" for k in (*FAMILIES, "chain")],
    ]
    conf = [
        "| source | docs | both keep | both drop | only ours drops | only datatrove drops |",
        "|---|---|---|---|---|---|",
    ]
    for src in sorted(confusion):
        c = confusion[src]
        conf.append(
            f"| {src} | {sum(c.values())} | {c['keep/keep']} | {c['drop/drop']} | {c['drop/keep']} | {c['keep/drop']} |"
        )
    listed = [
        f"- {k} [{src}] ours: `{o}`; datatrove: `{t}`; text: `{text[:120]!r}`" for k, src, o, t, text in disagreements
    ]
    body = "\n".join(
        [
            f"{n:,} documents (sources and counts below); datatrove "
            f"{importlib.metadata.version('datatrove')} at its FineWeb example's settings vs `QualityConfig()`. "
            f"Load average {load0:.2f} -> {load1:.2f} (2 shared cores); CPU time by `time.process_time()`.",
            "",
            *rows,
            "",
            f"Chain: ours kept {kept_ours:,}, datatrove kept {kept_dt:,}; of the documents both kept, the kept (C4-edited) "
            f"text differs on {text_diff}.",
            "",
            f"Speed: our whole chain {n / our_chain_cpu:,.0f} docs per CPU-second ({1e3 * our_chain_cpu / n:.3f} ms/doc); "
            f"datatrove's chain {1 / per_doc_dt:,.0f} docs per CPU-second ({1e3 * per_doc_dt:.3f} ms/doc; "
            f"{our_chain_cpu and dt_cpu / our_chain_cpu:.0f}x ours).",
            "",
            "Chain confusion per source (ours/datatrove):",
            "",
            *conf,
            "",
            f"Disagreements ({len(disagreements)}; first {min(args.show, len(disagreements))}):",
            "",
            *(listed[: args.show] or ["- none"]),
        ]
    )
    if not args.no_record:
        from bench._record import record

        record(
            "gate-parity",
            body,
            numbers={
                "gate_parity_chain_agreement_pct": round(100 * agree["chain"], 3),
                **{f"gate_parity_{k}_agreement_pct": round(100 * agree[k], 3) for k in FAMILIES},
                "gate_parity_docs": n,
                "gate_parity_disagreements": len(disagreements),
                "gates_docs_per_cpu_s": round(n / our_chain_cpu, 1),
                "datatrove_chain_docs_per_cpu_s": round(1 / per_doc_dt, 1),
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
