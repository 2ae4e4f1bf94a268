"""What a change did to the data: documents kept in one run and dropped in the other (by reason, with examples), the
contamination tables and the tokenizer's numbers side by side."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.io import iter_jsonl
from ledgerlm.report.diff.compare import EXAMPLES, TEXT_CHARS, Run, artifact_key

# ----------------------------------------------------------------------------- data: curation and tokenization


def _doc_groups(run: Run, rec: dict) -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    """(id, [("kept" or the reason, record), ...]) for every document id curate read, in id order. Each output shard
    is sorted by id, so the shards are heap-merged: memory is one record per shard (and the copies of one id)."""
    outs = rec.get("outputs") or {}
    streams = []
    for name in ("kept", "excluded"):
        d = ledger.resolve(outs[name]["path"], run.path)
        streams += [_fates(p, name == "kept") for p in sorted(d.glob("part-*.jsonl*"))]
    merged = heapq.merge(*streams, key=lambda t: t[0])
    for doc_id, group in itertools.groupby(merged, key=lambda t: t[0]):
        yield doc_id, [(status, r) for _, status, r in group]


def _fates(path: Path, kept: bool) -> Iterator[tuple[str, str, dict]]:
    for _, r in iter_jsonl(path):
        yield str(r["id"]), "kept" if kept else str(r.get("reason")), r


def _pair(xs: list, ys: list) -> list[tuple]:
    """Copies of one id in A and in B, paired: the same fate with the same fate first, the rest in order."""
    ys = list(ys)
    pairs, rest = [], []
    for x in xs:
        k = next((i for i, y in enumerate(ys) if y[0] == x[0]), None)
        if k is None:
            rest.append(x)
        else:
            pairs.append((x, ys.pop(k)))
    n = max(len(rest), len(ys))
    rest, ys = rest + [None] * (n - len(rest)), ys + [None] * (n - len(ys))
    return pairs + list(zip(rest, ys))


def _example(r: dict, status: str) -> dict:
    text = r.get("text") or ""
    out = {"id": r.get("id"), "source": r.get("source"), "status": status}
    if r.get("file") is not None:
        out["where"] = f"{r.get('file')}:{r.get('line')}"
    if status != "kept":
        out["details"] = r.get("details") or {}
    out["text"] = text[:TEXT_CHARS] + ("…" if len(text) > TEXT_CHARS else "")
    return out


def documents_moved(a: Run, b: Run, examples: int = EXAMPLES) -> dict | None:
    """Every document's fate in A against B: counts per (A, B) pair of fates, and the first few of each move."""
    ra, rb = a.records.get("curate"), b.records.get("curate")
    if not ra or not rb or not {"kept", "excluded"} <= set(ra.get("outputs") or {}) & set(rb.get("outputs") or {}):
        return None
    if all(artifact_key(ra["outputs"][k]) == artifact_key(rb["outputs"][k]) for k in ("kept", "excluded")):
        return {"moves": [], "same": _count_docs(ra), "text_changed": 0}
    moves: Counter = Counter()
    shown: dict[tuple, list] = {}
    same = text_changed = 0
    ga, gb = _doc_groups(a, ra), _doc_groups(b, rb)
    x, y = next(ga, None), next(gb, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            pairs, x = [(c, None) for c in x[1]], next(ga, None)
        elif x is None or y[0] < x[0]:
            pairs, y = [(None, c) for c in y[1]], next(gb, None)
        else:
            pairs, x, y = _pair(x[1], y[1]), next(ga, None), next(gb, None)
        for ca, cb in pairs:
            fate = (ca[0] if ca else None, cb[0] if cb else None)
            if fate[0] == fate[1]:
                same += 1
                text_changed += fate[0] == "kept" and ca[1].get("text") != cb[1].get("text")
                continue
            moves[fate] += 1
            if len(shown.setdefault(fate, [])) < examples:
                shown[fate].append([{"run": r, **_example(c[1], c[0])} for c, r in ((ca, "A"), (cb, "B")) if c])
    rows = [
        {"a": fa, "b": fb, "n": n, "examples": shown.get((fa, fb), [])}
        for (fa, fb), n in sorted(moves.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]
    for run, rec, side in ((a, ra, "A"), (b, rb, "B")):  # the kept twin of each near-duplicate shown, as inspect does
        want = {x["details"]["kept_id"]: x for m in rows for pair in m["examples"] for x in pair
                if x["run"] == side and isinstance(x.get("details"), dict) and x["details"].get("kept_id")}  # fmt: skip
        for twin in _kept_records(run, rec, set(want)):
            want[str(twin["id"])]["twin"] = _example(twin, "kept")
    return {"moves": rows, "same": same, "text_changed": int(text_changed)}


def _kept_records(run: Run, rec: dict, ids: set[str]) -> Iterator[dict]:
    """The kept records with these ids: one pass over the kept shards (sorted by id), stopping past the last."""
    if not ids:
        return
    last = max(ids)
    d = ledger.resolve(rec["outputs"]["kept"]["path"], run.path)
    for p in sorted(d.glob("part-*.jsonl*")):
        for _, r in iter_jsonl(p):
            if str(r["id"]) in ids:
                yield r
            if str(r["id"]) > last:
                break


def _count_docs(rec: dict) -> int:
    c = rec.get("counters") or {}
    return int(c.get("read") or 0)


def _side_by_side(da: dict, db: dict) -> list[dict]:
    keys = list(da) + [k for k in db if k not in da]
    return [{"key": k, "a": da.get(k), "b": db.get(k)} for k in keys]


def data_effects(a: Run, b: Run, examples: int = EXAMPLES) -> dict:
    out: dict[str, Any] = {}
    ca, cb = a.records.get("curate"), b.records.get("curate")
    if ca and cb:
        cna, cnb = ca.get("counters") or {}, cb.get("counters") or {}
        out["curate"] = {
            "read": [cna.get("read"), cnb.get("read")],
            "kept": [cna.get("kept"), cnb.get("kept")],
            "dropped": _side_by_side(cna.get("dropped") or {}, cnb.get("dropped") or {}),
            "documents": documents_moved(a, b, examples),
        }
        rows_a = {r.get("benchmark"): r for r in (ca.get("metrics") or {}).get("contamination") or []}
        rows_b = {r.get("benchmark"): r for r in (cb.get("metrics") or {}).get("contamination") or []}
        if rows_a or rows_b:
            out["contamination"] = [
                {"benchmark": k, **{f: [rows_a.get(k, {}).get(f), rows_b.get(k, {}).get(f)] for f in CONTAM_FIELDS}}
                for k in list(rows_a) + [k for k in rows_b if k not in rows_a]
            ]
    ta, tb = a.records.get("tokenize"), b.records.get("tokenize")
    if ta and tb:
        ma, mb = ta.get("metrics") or {}, tb.get("metrics") or {}
        rows = [
            {"what": "vocabulary", "a": ma.get("vocab_size"), "b": mb.get("vocab_size")},
            {"what": "bytes per token", "a": ma.get("bytes_per_token"), "b": mb.get("bytes_per_token")},
        ]
        bpa, bpb = ma.get("bytes_per_token_per_source") or {}, mb.get("bytes_per_token_per_source") or {}
        rows += [{"what": f"bytes per token, {s}", "a": bpa.get(s), "b": bpb.get(s)} for s in _keys(bpa, bpb)]
        toka, tokb = (ta.get("counters") or {}).get("tokens") or {}, (tb.get("counters") or {}).get("tokens") or {}
        for s in _keys(toka, tokb):
            for split in _keys(toka.get(s) or {}, tokb.get(s) or {}):
                rows.append(
                    {
                        "what": f"tokens, {s}, {split}",
                        "a": (toka.get(s) or {}).get(split),
                        "b": (tokb.get(s) or {}).get(split),
                    }
                )
        out["tokenize"] = rows
    pa, pb = a.records.get("pretrain"), b.records.get("pretrain")
    if pa and pb:
        da = ((pa.get("extra") or {}).get("loader") or {}).get("drawn") or {}
        db = ((pb.get("extra") or {}).get("loader") or {}).get("drawn") or {}
        rows = []
        for s in _keys(da, db):
            xa, xb = da.get(s), db.get(s)
            if isinstance(xa, dict) or isinstance(xb, dict):
                for ep in _keys(xa or {}, xb or {}):
                    rows.append({"what": f"{s}, epoch {ep}", "a": (xa or {}).get(ep), "b": (xb or {}).get(ep)})
            else:
                rows.append({"what": s, "a": xa, "b": xb})
        if rows:
            out["drawn"] = rows
        phases = _phase_rows((pa.get("config") or {}).get("phases"), (pb.get("config") or {}).get("phases"))
        if phases:
            out["phases"] = phases
    return out


def _phase_rows(pa: Any, pb: Any) -> list[dict]:
    """Pretraining phases (recipe `pretrain.phases`): each phase's tokens and mixture weight per source, A and B."""
    if not isinstance(pa, list) and not isinstance(pb, list):
        return []
    na = {str(p.get("name", i)): p for i, p in enumerate(pa or []) if isinstance(p, dict)}
    nb = {str(p.get("name", i)): p for i, p in enumerate(pb or []) if isinstance(p, dict)}
    rows = []
    for name in _keys(na, nb):
        xa, xb = na.get(name) or {}, nb.get(name) or {}
        rows.append({"what": f"{name}: tokens", "a": xa.get("tokens"), "b": xb.get("tokens")})
        ma, mb = xa.get("mixture") or {}, xb.get("mixture") or {}
        rows += [{"what": f"{name}: weight of {src}", "a": ma.get(src), "b": mb.get(src)} for src in _keys(ma, mb)]
    return rows


CONTAM_FIELDS = ["items", "items_contaminated", "docs_touched", "docs_dropped", "docs_cut", "action"]


def _keys(x: dict, y: dict) -> list:
    return list(x) + [k for k in y if k not in x]
