"""`ledgerlm inspect RUN [--reason R] [-n 5]`: samples of what a curation reason removed, read in bounded memory.

Near-duplicates are shown beside the text of the copy that was kept in their place; `--boilerplate` lists the lines
segment dedup removed, with the number of documents each was found in; `--reason c4_edit[:why]` shows the lines the
C4 gate removed from documents it kept (why: too_long_word, citation, no_terminal_punct, too_few_words, javascript,
policy).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from ledgerlm.io import iter_jsonl


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="run directory or its curate/ directory")
    p.add_argument(
        "--reason",
        default=None,
        help="reason or prefix (e.g. near_dup, quality, quality:gopher_stop_words); c4_edit[:why] for C4's line edits",
    )
    p.add_argument("-n", type=int, default=5, help="samples to print")
    p.add_argument("--chars", type=int, default=400, help="characters of text to show per sample")
    p.add_argument("--seed", type=int, default=0, help="which samples (deterministic)")
    p.add_argument("--boilerplate", action="store_true", help="list the boilerplate lines removed, most frequent first")


def _curate_dir(d: Path) -> Path:
    for cand in (d, d / "curate"):
        if (cand / "excluded").is_dir():
            return cand
    raise FileNotFoundError(f"{d}: no excluded/ or curate/excluded/ directory (run `ledgerlm curate` first)")


def _parts(d: Path) -> list[Path]:
    return sorted(d.glob("part-*.jsonl"))


def _find(parts: list[Path], doc_id: str) -> dict | None:
    """The record with this id (output shards are sorted by id: stop at the first larger id)."""
    for p in parts:
        for _, r in iter_jsonl(p):
            if r["id"] == doc_id:
                return r
            if r["id"] > doc_id:
                break
    return None


def _show(text: str, chars: int) -> str:
    return "    " + (text[:chars] + ("…" if len(text) > chars else "")).replace("\n", "\n    ")


def _matches(reason: str, want: str) -> bool:
    return reason == want or reason.startswith(want.rstrip(":") + ":")


def boilerplate(cur: Path, n: int, chars: int, out) -> int:
    p = cur / "boilerplate.jsonl"
    if not p.exists():
        print(f"{cur}: no boilerplate.jsonl (segment dedup off, or a run from before it was recorded)", file=out)
        return 1
    top: list[dict] = []
    total = 0
    for _, r in iter_jsonl(p):  # keep the n most frequent: memory = n lines
        total += 1
        top.append(r)
        if len(top) > 4 * n:
            top = sorted(top, key=lambda x: (-x["docs"], x["id"]))[:n]
    top = sorted(top, key=lambda x: (-x["docs"], x["id"]))[:n]
    print(f"{total} boilerplate lines removed; the {len(top)} found in most documents:", file=out)
    for r in top:
        print(f"  {r['docs']:8d} docs  {r['segment'][:chars]!r}  (kept by {r['owner']})", file=out)
    return 0


def c4_edits(cur: Path, want: str, n: int, chars: int, seed: int, out) -> int:
    """Samples of C4's line edits (`--reason c4_edit` or `c4_edit:<why>`, e.g. c4_edit:javascript): the lines removed
    from documents the gates kept, and why."""
    p = cur / "c4_edits.jsonl"
    if not p.exists():
        print(f"{cur}: no c4_edits.jsonl (a run from before C4 edits were recorded)", file=out)
        return 1
    why = want.split(":", 1)[1] if ":" in want else None
    total, by = 0, Counter()
    for _, r in iter_jsonl(p):  # pass 1: counts only
        for k, (lines, _) in r["removed"].items():
            by[k] += lines
        total += why is None or why in r["removed"]
    if not total:
        print(f"no C4 edits for {want!r} (removed: {', '.join(sorted(by)) or 'nothing'})", file=out)
        return 1
    rng = np.random.default_rng(seed)
    pick = set(rng.choice(total, size=min(n, total), replace=False).tolist())
    print(
        f"{total} kept documents edited by C4 for {want!r}; lines removed by reason: {dict(by.most_common())}", file=out
    )
    i = 0
    for _, r in iter_jsonl(p):  # pass 2: only the picked records are printed
        if why is not None and why not in r["removed"]:
            continue
        if i in pick:
            print(f"\n--- {r['id']}  source={r['source']}  {r['file']}:{r['line']}  removed={r['removed']}", file=out)
            for reason, line in r["lines"]:
                if why is None or reason == why:
                    print(f"    [{reason}] {line[:chars]!r}", file=out)
        i += 1
    return 0


def main(args, out=None) -> int:
    out = out or sys.stdout
    cur = _curate_dir(args.dir)
    if args.boilerplate:
        return boilerplate(cur, args.n, args.chars, out)
    if args.reason and (args.reason == "c4_edit" or args.reason.startswith("c4_edit:")):
        return c4_edits(cur, args.reason, args.n, args.chars, args.seed, out)
    excluded = _parts(cur / "excluded")
    counts: Counter = Counter()
    for p in excluded:  # pass 1: counts only
        for _, r in iter_jsonl(p):
            counts[r["reason"]] += 1
    if not args.reason:
        print(f"{sum(counts.values())} excluded documents:", file=out)
        for k, v in counts.most_common():
            print(f"  {v:8d}  {k}", file=out)
        if (cur / "boilerplate.jsonl").exists():
            print("  (boilerplate lines removed from kept documents: --boilerplate)", file=out)
        if (cur / "c4_edits.jsonl").exists() and (cur / "c4_edits.jsonl").stat().st_size:
            print("  (lines C4 removed from kept documents: --reason c4_edit[:why])", file=out)
        return 0
    total = sum(v for k, v in counts.items() if _matches(k, args.reason))
    if not total:
        print(f"no documents excluded for {args.reason!r} (reasons: {', '.join(sorted(counts))})", file=out)
        return 1
    rng = np.random.default_rng(args.seed)
    pick = set(rng.choice(total, size=min(args.n, total), replace=False).tolist())
    sel, i = [], 0
    for p in excluded:  # pass 2: only the picked records are held
        for _, r in iter_jsonl(p):
            if _matches(r["reason"], args.reason):
                if i in pick:
                    sel.append(r)
                i += 1
    print(f"{total} documents excluded for {args.reason!r}; showing {len(sel)}", file=out)
    kept = _parts(cur / "kept")
    for r in sel:
        text = r.get("text") or ""
        print(f"\n--- {r['id']}  source={r['source']}  {r['file']}:{r['line']}  reason={r['reason']}", file=out)
        print(f"    details: {json.dumps(r.get('details', {}), ensure_ascii=False)[:400]}", file=out)
        print(_show(text, args.chars), file=out)
        twin_id = (r.get("details") or {}).get("kept_id")
        if twin_id:
            twin = _find(kept, twin_id)
            where = "kept"
            if twin is None:  # the kept copy was dropped later (e.g. decontamination)
                twin, where = _find(excluded, twin_id), "excluded later"
            if twin is not None:
                print(f"  +++ kept twin {twin_id}  source={twin['source']}  ({where})", file=out)
                print(_show(twin.get("text") or "", args.chars), file=out)
    return 0


def inspect_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ledgerlm inspect", allow_abbrev=False)
    add_args(p)
    return main(p.parse_args(argv))


__all__ = ["add_args", "main", "inspect_main"]
