"""`ledgerlm diff RUN_A RUN_B`: why a number moved, read from the two runs' ledgers.

Stage by stage, in pipeline order, the two records are compared on what went in (resolved config, code version,
environment, seed, input hashes) and what came out (output hashes, counters, metrics, warnings, samples). The first
stage where anything differs is where the runs part ways; every later stage that differs is downstream of it, and
each is told why (its own config, its inputs, the code, or nothing at all: the same inputs gave different outputs).

Wall-clock measurements (stage seconds, tokens/s, MFU, elapsed times in metrics files, the report's costs) are
timings, not differences: a run and its re-run with the same seed are "identical except timings".

Then what the change did: to the data (curation: the documents kept in one run and dropped in the other, by
reason, with examples; the contamination table side by side; tokenization: vocabulary, bytes per token, tokens per
source and phase) and to the model (training curves overlaid, final metrics side by side, each post-training
stage's recorded effect, and evaluation's paired per-item tests from `ledgerlm compare`).

Output: a terminal summary, `--out DIR` (diff.md, a self-contained diff.html with the plots, diff.json), `--json`
(the whole diff on stdout). Exit status 0 when the runs are the same, 1 when they differ, 2 on bad input.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import html
import io
import itertools
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.eval.compare import compare as compare_results
from ledgerlm.eval.eval_stage import load_results
from ledgerlm.io import atomic_write_bytes, atomic_write_json, atomic_write_text, iter_jsonl
from ledgerlm.stage import STAGES, get

# A metric, counter or metrics-file column (any part of its key) that matches this is a wall-clock measurement.
TIMING = re.compile(r"(^|_)(seconds|secs|elapsed|time|timings?|mfu|tok_s|per_s|per_cpu_s|rss|mem_gb)($|_)|_s$")
EXAMPLES = 3  # documents shown per kind of move
TEXT_CHARS = 400  # characters of a document's text shown (as `ledgerlm inspect`)
CURVE_KEYS = ["loss", "val_loss", "reward_mean", "heldout_acc", "kl"]  # overlaid per stage when present


class DiffInputError(Exception):
    """A run that cannot be compared: missing, without records, or with a broken ledger (exit 2)."""


# ----------------------------------------------------------------------------- loading


@dataclass
class Run:
    path: Path
    records: dict[str, dict]  # stage -> record
    recipe: dict  # RUN/recipe.json, or {}

    @property
    def roots(self) -> tuple[str, ...]:
        """The run directory as records and outputs may spell it (absolute, resolved), longest first."""
        return tuple(sorted({str(self.path.absolute()), str(self.path.resolve())}, key=len, reverse=True))

    @property
    def name(self) -> str:
        first = next(iter(self.records.values()), {})
        return str(self.recipe.get("name") or first.get("recipe") or self.path.name)


def load_run(path: Path, rehash: bool = True, skip: tuple[str, ...] = ()) -> Run:
    """A run directory whose ledger is intact (`ledgerlm audit`; only the records' own hashes with rehash=False)."""
    path = Path(path)
    if not path.is_dir():
        raise DiffInputError(f"{path}: no such run directory")
    recs = [r for r in ledger.read_records(path) if r.get("stage") not in skip]
    if not recs:
        raise DiffInputError(f"{path}: no stage records under {ledger.ledger_dir(path)} (not a run directory)")
    if rehash:
        problems, _ = ledger.audit(path)
        problems = [p for p in problems if p.split(":", 1)[0] not in skip]
    else:
        problems = [
            f"{r.get('stage')}: ledger record is not valid JSON"
            if r.get("status") == "unreadable"
            else f"{r.get('stage')}: ledger record was modified after it was written"
            for r in recs
            if r.get("status") == "unreadable" or ledger.seal(r)["record_sha256"] != r.get("record_sha256")
        ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DiffInputError(
            f"{path}: broken ledger, audit found {len(problems)} problem(s): {'; '.join(problems[:3])}{more}"
        )
    try:
        recipe = json.loads((path / "recipe.json").read_text())
    except (OSError, ValueError):
        recipe = {}
    return Run(path, {r["stage"]: r for r in recs}, recipe if isinstance(recipe, dict) else {})


def stage_order(a: Run, b: Run) -> list[str]:
    """Pipeline order: A's recipe order with B's stages merged in after their predecessor; stages neither recipe
    lists (run alone) by the registry's order, then by start time."""
    order: list[str] = []
    for run in (a, b):
        listed = [s for s in run.recipe.get("stages") or [] if s in run.records]
        for i, s in enumerate(listed):
            if s not in order:
                prev = next((p for p in reversed(listed[:i]) if p in order), None)
                order.insert(order.index(prev) + 1 if prev else 0, s)
    rest = {s: r for run in (b, a) for s, r in run.records.items() if s not in order}
    registry = list(STAGES)
    for s in sorted(
        rest, key=lambda s: (registry.index(s) if s in registry else len(registry), rest[s].get("started", ""))
    ):
        later = [o for o in order if o in registry and s in registry and registry.index(o) > registry.index(s)]
        order.insert(order.index(later[0]) if later else len(order), s)
    return order


# ----------------------------------------------------------------------------- comparing values


def flatten(x: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts and lists as dotted keys (`sources[0].limit`)."""
    if isinstance(x, dict):
        out: dict[str, Any] = {}
        for k, v in x.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    if isinstance(x, list):
        out = {}
        for i, v in enumerate(x):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out if out or not prefix else {prefix: []}
    return {prefix: x}


def is_timing(key: str) -> bool:
    return any(TIMING.search(part) for part in re.split(r"[.\[\]]", key) if part)


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y and type(x) is type(y) or (_number(x) and _number(y) and x == y)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def localize(x: Any, roots: tuple[str, ...]) -> Any:
    """`x` with the run's own directory written as RUN: a run and its re-run elsewhere hold the same content."""
    if isinstance(x, str):
        for r in roots:
            x = x.replace(r, "RUN")
        return x
    if isinstance(x, dict):
        return {k: localize(v, roots) for k, v in x.items()}
    if isinstance(x, list):
        return [localize(v, roots) for v in x]
    return x


def changed_keys(a: Any, b: Any, roots_a: tuple[str, ...] = (), roots_b: tuple[str, ...] = ()) -> list[dict]:
    """[{key, a, b, incidental}] for every leaf that differs once each run's directory is written as RUN (a missing
    leaf is None on its side); `incidental`: a wall-clock measurement."""
    fa, fb = flatten(a or {}), flatten(b or {})
    out = []
    for k in list(fa) + [k for k in fb if k not in fa]:
        va, vb = fa.get(k), fb.get(k)
        if (k in fa) != (k in fb) or not _equal(localize(va, roots_a), localize(vb, roots_b)):
            row = {"key": k, "a": va, "b": vb, "incidental": is_timing(k)}
            if (k in fa) != (k in fb):
                row["absent"] = "b" if k in fa else "a"  # a key one side's code did not have
            out.append(row)
    return out


def _without_timings(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if not (isinstance(k, str) and is_timing(k))}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


TEXT_SUFFIXES = (".md", ".txt", ".csv", ".html", ".yaml", ".yml", ".tsv")
MAX_COMPARED = 64 << 20  # larger files that differ are different, without reading them


def _incidental_file(pa: Path, pb: Path, roots_a: tuple[str, ...], roots_b: tuple[str, ...]) -> bool:
    """Two files with different hashes whose only differences are wall-clock values (metrics JSONL, JSON summaries)
    or the run's own directory written into them."""
    if not (pa.is_file() and pb.is_file()) or max(pa.stat().st_size, pb.stat().st_size) > MAX_COMPARED:
        return False
    try:
        if pa.name.endswith(".jsonl"):
            ra = [_without_timings(localize(r, roots_a)) for _, r in iter_jsonl(pa)]
            rb = [_without_timings(localize(r, roots_b)) for _, r in iter_jsonl(pb)]
            return ra == rb
        if pa.suffix == ".json":
            ja, jb = json.loads(pa.read_text()), json.loads(pb.read_text())
            return _without_timings(localize(ja, roots_a)) == _without_timings(localize(jb, roots_b))
        if pa.suffix in TEXT_SUFFIXES:
            return localize(pa.read_text(), roots_a) == localize(pb.read_text(), roots_b)
    except (OSError, ValueError):
        return False
    return False


# ----------------------------------------------------------------------------- one stage


def _artifact_key(art: dict | None) -> Any:
    if art is None:
        return None
    return art.get("sha256", art.get("path")) if art.get("kind") != "missing" else "missing"


def _compare_outputs(ra: dict, rb: dict, a: Run, b: Run) -> list[dict]:
    out = []
    oa, ob = ra.get("outputs") or {}, rb.get("outputs") or {}
    for name in list(oa) + [n for n in ob if n not in oa]:
        xa, xb = oa.get(name), ob.get(name)
        if xa is not None and xb is not None and _artifact_key(xa) == _artifact_key(xb):
            continue
        row: dict[str, Any] = {"name": name, "path": (xa or xb)["path"], "a": _artifact_key(xa), "b": _artifact_key(xb)}
        files: list[str] = []
        incidental_files: list[str] = []
        if xa and xb and xa.get("kind") == xb.get("kind") == "dir":
            fa, fb = xa.get("files") or {}, xb.get("files") or {}
            for f in sorted(set(fa) | set(fb)):
                if fa.get(f, [None, None])[1] != fb.get(f, [None, None])[1]:
                    pa, pb = ledger.resolve(xa["path"], a.path) / f, ledger.resolve(xb["path"], b.path) / f
                    same = f in fa and f in fb and _incidental_file(pa, pb, a.roots, b.roots)
                    (incidental_files if same else files).append(f)
        elif xa and xb and xa.get("kind") == xb.get("kind") == "file":
            pa, pb = ledger.resolve(xa["path"], a.path), ledger.resolve(xb["path"], b.path)
            same = _incidental_file(pa, pb, a.roots, b.roots)
            (incidental_files if same else files).append(Path(xa["path"]).name)
        else:
            files.append("(only in A)" if xb is None else "(only in B)" if xa is None else "(file vs directory)")
        row.update(files=files, incidental_files=incidental_files, incidental=not files)
        out.append(row)
    return out


def _compare_inputs(ra: dict, rb: dict, incidental_paths: set[str], verdicts: dict[str, dict]) -> list[dict]:
    out = []
    ia, ib = ra.get("inputs") or {}, rb.get("inputs") or {}
    for name in list(ia) + [n for n in ib if n not in ia]:
        xa, xb = ia.get(name), ib.get(name)
        if xa is not None and xb is not None and _artifact_key(xa) == _artifact_key(xb):
            continue
        path = (xa or xb)["path"]
        incidental = bool(
            xa and xb and xa["path"] == xb["path"] and _incidental_input(path, incidental_paths, verdicts)
        )
        out.append({"name": name, "path": path, "path_b": (xb or {}).get("path"), "incidental": incidental})
    return out


LEDGER_RECORD = re.compile(r"(^|/)ledger/[^/]+\.json$")  # a stage record read as an input (the report's)


def _incidental_input(path: str, incidental_paths: set[str], verdicts: dict[str, dict]) -> bool:
    """An input that differs only because an upstream output (or record) differs only incidentally."""
    m = re.fullmatch(r"ledger/(.+)\.json", path)
    if m:  # another stage's record (the report reads them)
        v = verdicts.get(m.group(1))
        return v is not None and v["same"]
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in incidental_paths)


def _samples(rec: dict) -> list:
    return [(s.get("prompt"), s.get("completion")) for s in rec.get("samples") or []]


def compare_stage(stage: str, ra: dict | None, rb: dict | None, a: Run, b: Run, ctx: dict) -> dict:
    """One stage's row: what differs going in and coming out, why, and whether only timings moved."""
    ra_, rb_ = a.roots, b.roots
    row: dict[str, Any] = {"stage": stage, "in_a": ra is not None, "in_b": rb is not None}
    if ra is None or rb is None:
        row.update(same=False, status="only in A" if rb is None else "only in B", why=[], cause="missing")
        return row
    row["seconds"] = [ra.get("seconds"), rb.get("seconds")]
    code_keys = ("git_commit", "git_dirty", "package_version")
    went_in = {
        "status": []
        if ra.get("status") == rb.get("status")
        else [{"key": "status", "a": ra.get("status"), "b": rb.get("status")}],
        "config": changed_keys(ra.get("config"), rb.get("config"), ra_, rb_),
        "code": changed_keys(
            {k: (ra.get("code") or {}).get(k) for k in code_keys}, {k: (rb.get("code") or {}).get(k) for k in code_keys}
        ),
        "environment": changed_keys(
            {**(ra.get("env") or {}), "device": ra.get("device")}, {**(rb.get("env") or {}), "device": rb.get("device")}
        ),
        "seed": [] if ra.get("seed") == rb.get("seed") else [{"key": "seed", "a": ra.get("seed"), "b": rb.get("seed")}],
        "inputs": _compare_inputs(ra, rb, ctx["incidental_paths"], ctx["verdicts"]),
    }
    came_out = {
        "outputs": _compare_outputs(ra, rb, a, b),
        "counters": changed_keys(ra.get("counters"), rb.get("counters"), ra_, rb_),
        "metrics": changed_keys(ra.get("metrics"), rb.get("metrics"), ra_, rb_),
        "extra": changed_keys(_without_timings(ra.get("extra")), _without_timings(rb.get("extra")), ra_, rb_),
        "warnings": changed_keys(
            [w.get("code") for w in ra.get("warnings") or []], [w.get("code") for w in rb.get("warnings") or []]
        ),
        "samples": []
        if localize(_samples(ra), ra_) == localize(_samples(rb), rb_)
        else [{"key": "samples", "a": len(_samples(ra)), "b": len(_samples(rb))}],
    }
    row.update(went_in)
    row.update(came_out)
    # only ledger records as inputs, none differing but incidentally: a view of the records (the report) whose
    # outputs show their timings
    view = bool(ra.get("inputs")) and all(LEDGER_RECORD.search(x["path"]) for x in (ra.get("inputs") or {}).values())
    real_in = [k for k, v in went_in.items() if [x for x in v if not x.get("incidental")]]
    real_out = [k for k, v in came_out.items() if [x for x in v if not x.get("incidental")]]
    if view and not real_in:
        real_out = [k for k in real_out if k != "outputs"]
        for o in row["outputs"]:
            o["incidental"], o["incidental_files"], o["files"] = True, o["incidental_files"] + o["files"], []
    for o in row["outputs"]:
        if o["incidental"]:
            ctx["incidental_paths"].add(o["path"])
            ctx["incidental_paths"].update(f"{o['path']}/{f}" for f in o["incidental_files"])
    row["why"] = real_in + real_out
    row["same"] = not row["why"]
    row["status"] = "same" if row["same"] else "differs"
    for k in ("config", "code", "environment", "seed", "status"):
        if k in real_in:
            row["cause"] = k
            break
    else:
        row["cause"] = "inputs" if "inputs" in real_in else "nondeterminism" if real_out else None
    return row


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
    if all(_artifact_key(ra["outputs"][k]) == _artifact_key(rb["outputs"][k]) for k in ("kept", "excluded")):
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


# ----------------------------------------------------------------------------- model: curves, metrics, effects, eval


def metrics_rows(run: Run, rec: dict) -> list[dict]:
    """The rows of a stage's metrics.jsonl (a file output, or a file in an output directory)."""
    for art in (rec.get("outputs") or {}).values():
        base = ledger.resolve(art["path"], run.path)
        if art.get("kind") == "file" and art["path"].endswith("metrics.jsonl"):
            path = base
        elif art.get("kind") == "dir" and "metrics.jsonl" in (art.get("files") or {}):
            path = base / "metrics.jsonl"
        else:
            continue
        if path.is_file():
            return [r for _, r in iter_jsonl(path) if isinstance(r, dict)]
    return []


def headline(stage: str) -> tuple[str, ...]:
    try:
        return tuple(get(stage).headline or ())
    except (KeyError, ImportError, AttributeError):
        return ()


def model_effects(a: Run, b: Run, order: list[str], iters: int, seed: int) -> dict:
    out: dict[str, Any] = {"curves": [], "metrics": [], "effects": []}
    for s in order:
        ra, rb = a.records.get(s), b.records.get(s)
        if not ra or not rb:
            continue
        rows_a, rows_b = metrics_rows(a, ra), metrics_rows(b, rb)
        keys = [k for k in CURVE_KEYS if any(_finite(r.get(k)) for r in rows_a + rows_b)]
        pa, pb = _points(rows_a, keys), _points(rows_b, keys)
        keys = [k for k in keys if pa[k] != pb[k]][:3]  # a curve the two runs share says nothing about the change
        if keys:
            out["curves"].append(
                {"stage": s, "keys": keys, "a": {k: pa[k] for k in keys}, "b": {k: pb[k] for k in keys}}
            )
        heads = headline(s)
        for c in changed_keys(ra.get("metrics"), rb.get("metrics")):
            if c["incidental"] or c["key"].startswith("effect") or not (_number(c["a"]) or _number(c["b"])):
                continue
            if re.search(r"\[\d+\]\.", c["key"]):  # a field of a list of rows (the contamination table): shown whole
                continue
            delta = c["b"] - c["a"] if _number(c["a"]) and _number(c["b"]) else None
            out["metrics"].append({"stage": s, **c, "delta": delta, "headline": c["key"] in heads})
        ea, eb = (ra.get("metrics") or {}).get("effect"), (rb.get("metrics") or {}).get("effect")
        if isinstance(ea, dict) or isinstance(eb, dict):
            out["effects"].append({"stage": s, "a": ea, "b": eb})
    ea, eb = a.records.get("eval"), b.records.get("eval")
    if ea and eb:
        try:
            out["eval"] = compare_results(load_results(a.path), load_results(b.path), iters=iters, seed=seed)
        except (ValueError, FileNotFoundError, KeyError) as e:
            out["eval_error"] = str(e)
    return out


def _finite(x: Any) -> bool:
    return _number(x) and math.isfinite(x)


def _points(rows: list[dict], keys: list[str], most: int = 1000) -> dict[str, list]:
    """(step, value) per key, thinned to at most `most` points (a long run's curve keeps its shape)."""
    out = {}
    for k in keys:
        pts = [[r["step"], r[k]] for r in rows if _finite(r.get(k)) and _number(r.get("step"))]
        stride = max(1, math.ceil(len(pts) / most))
        out[k] = pts[::stride] + (pts[-1:] if pts and (len(pts) - 1) % stride else [])
    return out


# ----------------------------------------------------------------------------- the whole diff


def diff_runs(
    a: Run, b: Run, iters: int = 10000, seed: int = 0, examples: int = EXAMPLES, skip: tuple[str, ...] = ()
) -> dict:
    order = [s for s in stage_order(a, b) if s not in skip]
    ctx: dict[str, Any] = {"incidental_paths": set(), "verdicts": {}}
    stages = []
    for s in order:
        row = compare_stage(s, a.records.get(s), b.records.get(s), a, b, ctx)
        ctx["verdicts"][s] = row
        stages.append(row)
    first = next((r for r in stages if not r["same"]), None)
    for r in stages:
        r["downstream"] = (
            bool(first) and r is not first and not r["same"] and order.index(r["stage"]) > order.index(first["stage"])
        )
    timings = any(
        (r.get("seconds") or [0, 0])[0] != (r.get("seconds") or [0, 0])[1]
        or any(x.get("incidental") for k in ("metrics", "counters", "outputs", "inputs") for x in r.get(k) or [])
        for r in stages
    )
    d: dict[str, Any] = {
        "a": _run_info(a),
        "b": _run_info(b),
        "same": first is None,
        "identical_except_timings": first is None and timings,
        "first_divergent": first["stage"] if first else None,
        "downstream": [r["stage"] for r in stages if r["downstream"]],
        "stages": stages,
        "changes": _changes(stages, a, b),
    }
    if first is not None:
        d["data"] = data_effects(a, b, examples)
        d["model"] = model_effects(a, b, order, iters, seed)
    return d


def _run_info(run: Run) -> dict:
    first = next(iter(run.records.values()))
    code = first.get("code") or {}
    return {
        "run": str(run.path),
        "recipe": run.name,
        "seed": first.get("seed"),
        "commit": code.get("git_commit") or code.get("package_version"),
        "dirty": code.get("git_dirty"),
        "torch": (first.get("env") or {}).get("torch"),
        "device": first.get("device"),
        "stages": list(run.records),
    }


def _changes(stages: list[dict], a: Run, b: Run) -> dict:
    """Everything that went in differently, once per key (a code or seed change is listed once, with its stages)."""
    config = [{"stage": r["stage"], **c} for r in stages for c in r.get("config") or []]
    seen: dict[tuple, dict] = {}
    for kind in ("code", "environment", "seed"):
        for r in stages:
            for c in r.get(kind) or []:
                k = (kind, c["key"], json.dumps(c["a"], default=str), json.dumps(c["b"], default=str))
                seen.setdefault(k, {"kind": kind, "key": c["key"], "a": c["a"], "b": c["b"], "stages": []})[
                    "stages"
                ].append(r["stage"])
    recipe = (
        []
        if _run_info(a)["recipe"] == _run_info(b)["recipe"]
        else [{"a": _run_info(a)["recipe"], "b": _run_info(b)["recipe"]}]
    )
    return {
        "recipe": recipe,
        "recipe_keys": _recipe_keys(a, b),
        "config": config,
        "other": list(seen.values()),
        "only_in_a": [r["stage"] for r in stages if r.get("status") == "only in A"],
        "only_in_b": [r["stage"] for r in stages if r.get("status") == "only in B"],
    }


def _recipe_keys(a: Run, b: Run) -> list[dict]:
    """The recipes' own keys outside the stage sections (the stage list, `hub_mirror`, `logging`, ...) that differ;
    the name, seed and device are shown with the runs and in every stage's record."""

    def top(run: Run) -> dict:
        return {
            k: v for k, v in run.recipe.items() if k not in STAGES and k not in ("name", "seed", "device", "stages")
        }

    out = changed_keys(top(a), top(b), a.roots, b.roots)
    sa, sb = a.recipe.get("stages"), b.recipe.get("stages")
    if sa != sb:  # the stage list as a whole: an inserted stage is not a change of every later item
        out.insert(0, {"key": "stages", "a": sa, "b": sb, "incidental": False})
    return out


# ----------------------------------------------------------------------------- words and numbers


def fmt(x: Any, digits: int = 4) -> str:
    """A count with thousands separators, a measurement to `digits` significant digits, anything else as text."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    if isinstance(x, str):
        return x
    return json.dumps(x, default=str)


def _val(c: dict, side: str) -> str:
    """One side of a changed key: its value, `(absent)` where that side had no such key."""
    if c.get("absent") == side:
        return "(absent)"
    return json.dumps(c[side]) if isinstance(c[side], str) or c[side] is None else fmt(c[side])


def _delta(x: Any, digits: int = 3) -> str:
    return "" if not _number(x) else f"{'+' if x >= 0 else '−'}{fmt(abs(x), digits)}"


WENT_IN = ("status", "config", "code", "environment", "seed", "inputs")


def _why(row: dict) -> str:
    """What differs going in → what differs coming out, in a few words."""
    if row["same"]:
        incidental = any(x.get("incidental") for k in ("outputs", "metrics", "inputs") for x in row.get(k) or [])
        return "same" + (" (timings differ)" if incidental else "")
    if row["status"] in ("only in A", "only in B"):
        return f"ran {row['status']}"
    went, came = [], []
    for k in row["why"]:
        items = [x for x in row.get(k) or [] if not x.get("incidental")]
        if k == "config":
            text = f"config ({_some([x['key'] for x in items], 2)})"
        elif k in ("outputs", "inputs"):
            text = f"{k} ({_some([x['name'] for x in items])})"
        elif k in ("code", "environment"):
            text = f"{k} ({_some([x['key'] for x in items])})"
        else:
            text = k
        (went if k in WENT_IN else came).append(text)
    if not went:
        return "same config, code and inputs → " + ", ".join(came) + " differ: not reproducible"
    return ", ".join(went) + " → " + (", ".join(came) if came else "outputs the same")


def _some(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _move(state: str | None, side: str) -> str:
    if state is None:
        return f"not read in {side}"
    return f"kept in {side}" if state == "kept" else f"dropped in {side} ({state})"


NOT_HEADLINE = re.compile(
    r"(_stderr|ci95|wilson95|\.n|_n|(^|_)p_\w+|_p)(\[\d+\])?$"
)  # an uncertainty, a count of items, a p-value


def headline_deltas(d: dict, limit: int = 16, per_stage: int = 2) -> list[str]:
    """The metric moves a reader looks at first: each stage's headline metrics, effects and eval's paired tests."""
    m = d.get("model") or {}
    lines = []
    for stage in dict.fromkeys(r["stage"] for r in m.get("metrics", [])):
        rows = [
            r for r in m["metrics"] if r["stage"] == stage and _finite(r["delta"]) and not NOT_HEADLINE.search(r["key"])
        ]
        rows.sort(key=lambda r: (not r["headline"], -abs(r["delta"]) / max(abs(r["a"]), 1e-12)))
        rows = [r for i, r in enumerate(rows) if (r["a"], r["b"]) not in {(q["a"], q["b"]) for q in rows[:i]}]
        lines += [f"{stage} {r['key']}: {fmt(r['a'])} → {fmt(r['b'])} ({_delta(r['delta'])})" for r in rows[:per_stage]]
    for e in m.get("effects", []):
        lines.append(f"{e['stage']} effect: A {_effect_text(e['a'])}; B {_effect_text(e['b'])}")
    ev = m.get("eval")
    if ev:
        for r in ev["tasks"]:
            lines.append(
                f"eval {r['task']} {r['metric']}: {fmt(r['a'])} → {fmt(r['b'])} ({_delta(r['b'] - r['a'])}; "
                f"n = {r['n']}, McNemar p = {fmt(r['p_value'], 3)})"
            )
        s = ev.get("six_task_mean")
        if s:
            lines.append(
                f"six-task mean: {fmt(s['a'])} → {fmt(s['b'])} ({_delta(s['diff'])}, 95% CI [{fmt(s['ci95'][0], 3)}, "
                f"{fmt(s['ci95'][1], 3)}], paired bootstrap p = {fmt(s['p_value'], 3)})"
            )
    elif m.get("eval_error"):
        lines.append(f"eval: no paired tests ({m['eval_error']})")
    return lines[:limit]


def _effect_text(e: Any) -> str:
    if not isinstance(e, dict):
        return "not recorded"
    return (
        f"{e.get('metric')} {fmt(e.get('before'))} → {fmt(e.get('after'))} "
        f"(n = {fmt(e.get('n'))}, {e.get('test')} p = {fmt(e.get('p'), 3)})"
    )


def verdict_text(d: dict) -> str:
    if d["same"]:
        what = "identical except timings" if d["identical_except_timings"] else "identical"
        n = len(d["stages"])
        return f"The runs are {what}: {n} stage{'s' if n != 1 else ''} with the same config, code, inputs and outputs."
    first = next(r for r in d["stages"] if r["stage"] == d["first_divergent"])
    down = d["downstream"]
    text = f"The runs differ. They part ways at **{first['stage']}** ({_why(first)})"
    return text + (f"; downstream of it: {', '.join(down)}." if down else ".")


def summary(d: dict, top: int = 8) -> str:
    """What the terminal shows."""
    lines = []
    for side in ("a", "b"):
        x = d[side]
        commit = str(x["commit"] or "?")[:12] + (" dirty" if x["dirty"] else "")
        lines.append(
            f"{side.upper()}: {x['run']}  ({x['recipe']}, seed {x['seed']}, code {commit}, torch {x['torch']}, "
            f"{x['device']})"
        )
    lines.append(verdict_text(d).replace("**", ""))
    width = max((len(r["stage"]) for r in d["stages"]), default=5)
    lines.append("stages:")
    for r in d["stages"]:
        mark = "*" if r["stage"] == d["first_divergent"] else " "
        lines.append(f" {mark}{r['stage']:<{width}}  {_why(r)}")
    ch = d["changes"]
    changed = [f"recipe: {c['a']} → {c['b']}" for c in ch["recipe"]]
    changed += [f"recipe {c['key']}: {_val(c, 'a')} → {_val(c, 'b')}" for c in ch["recipe_keys"]]
    changed += [f"{c['stage']}.{c['key']}: {_val(c, 'a')} → {_val(c, 'b')}" for c in ch["config"]]
    changed += [f"{c['kind']} {c['key']}: {fmt(c['a'])} → {fmt(c['b'])}" for c in ch["other"]]
    if changed:
        more = f" (and {len(changed) - top} more; --out DIR or --json lists them all)" if len(changed) > top else ""
        lines.append(f"what changed ({len(changed)}){more}:")
        lines += [f"  {c}" for c in changed[:top]]
    docs = ((d.get("data") or {}).get("curate") or {}).get("documents")
    if docs and docs["moves"]:
        lines.append("documents that moved (curate):")
        for mv in docs["moves"][:top]:
            ex = ", ".join(x[-1]["id"] for x in mv["examples"][:2])
            lines.append(
                f"  {mv['n']:>6,}  {_move(mv['a'], 'A')}, {_move(mv['b'], 'B')}" + (f"  (e.g. {ex})" if ex else "")
            )
    deltas = headline_deltas(d)
    if deltas:
        lines.append("metrics, A → B:")
        lines += [f"  {x}" for x in deltas]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- Markdown and HTML


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _code(x: Any) -> str:
    """A value in a table cell: as code, pipes escaped for Markdown, long values cut."""
    s = fmt(x) if not isinstance(x, str) else x
    s = s if len(s) <= 200 else s[:200] + "…"
    return "`" + s.replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`" if s != "—" else s


@dataclass
class Page:
    """Markdown and HTML side by side (the report's Card offers the same calls, so a report can hold a diff)."""

    md: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def num(self, x: Any, digits: int = 3) -> str:
        return fmt(x, digits)

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{_inline_html(text)}</p>")

    def table(self, header: list[str], rows: list[list[str]], wide: bool = False) -> None:
        if not rows:
            self.para("_(none)_")
            return
        self.md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]
        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.html.append(f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>")

    def figure(self, name: str, fig) -> None:
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        self.images[name] = buf.getvalue()
        self.md.append(f"![{name}]({name})\n")
        self.html.append(
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
        )


def _pre(page, text: str) -> None:
    """A document's text, as `ledgerlm inspect` shows it (wrapped, never wider than the page)."""
    page.md.append("```\n" + text.replace("```", "'''") + "\n```\n")
    page.html.append(
        f"<pre style='white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:6px;font-size:12px'>{html.escape(text)}</pre>"
    )


def render(d: dict, page, level: int = 1, title: str | None = None) -> None:
    """The diff into a page (a `Page`, or the report's Card): every section, headings from `level` down."""
    num = page.num
    h = level + 1
    page.heading(title or f"ledgerlm diff: {d['a']['recipe']} (A) vs {d['b']['recipe']} (B)", level)
    if hasattr(page, "verdict"):  # the report's card: the verdict goes into the report's summary too
        page.verdict("baseline", verdict_text(d))
    else:
        page.para(verdict_text(d))
    rows = []
    for label, key in (
        ("run", "run"),
        ("recipe", "recipe"),
        ("seed", "seed"),
        ("code", "commit"),
        ("torch", "torch"),
        ("device", "device"),
    ):
        va, vb = d["a"][key], d["b"][key]
        if key == "commit":
            va = f"{str(va)[:12]}{' (dirty)' if d['a']['dirty'] else ''}"
            vb = f"{str(vb)[:12]}{' (dirty)' if d['b']['dirty'] else ''}"
        if key == "seed":
            va, vb = str(va), str(vb)
        rows.append([label, _code(va), _code(vb)])
    page.table(["", "A", "B"], rows)

    page.heading("Stages, in pipeline order", h)
    srows = []
    for r in d["stages"]:
        secs = r.get("seconds") or [None, None]
        name = f"**{r['stage']}**" if r["stage"] == d["first_divergent"] else r["stage"]
        srows.append([name, _why(r), num(secs[0]), num(secs[1])])
    page.table(["stage", "A vs B", "wall time A (s)", "wall time B (s)"], srows)
    page.para(
        "A stage is the same when its config, code, environment, seed, input and output hashes, counters and metrics "
        "are; wall-clock measurements (seconds, tokens/s, MFU) are timings and do not count."
    )
    if d["same"]:
        return
    _render_changes(d, page, h)
    if d.get("data"):
        _render_data(d, page, h)
    if d.get("model"):
        _render_model(d, page, h)


def _render_changes(d: dict, page, h: int) -> None:
    ch = d["changes"]
    page.heading("What changed", h)
    if ch["recipe"]:
        page.para(f"Recipe: `{ch['recipe'][0]['a']}` (A) vs `{ch['recipe'][0]['b']}` (B).")
    if ch["recipe_keys"]:
        page.para("Recipe keys outside the stages' sections:")
        page.table(
            ["key", "A", "B"], [[_code(c["key"]), _code(_val(c, "a")), _code(_val(c, "b"))] for c in ch["recipe_keys"]]
        )
    page.para(f"Resolved config keys that differ: {page.num(len(ch['config']))}.")
    page.table(
        ["stage", "key", "A", "B"],
        [[c["stage"], _code(c["key"]), _code(_val(c, "a")), _code(_val(c, "b"))] for c in ch["config"]],
    )
    if ch["other"]:
        page.para("Code, environment and seed:")
        page.table(
            ["what", "A", "B", "stages"],
            [[f"{c['kind']}: {c['key']}", _code(c["a"]), _code(c["b"]), ", ".join(c["stages"])] for c in ch["other"]],
        )
    else:
        page.para("Code version, environment (Python, torch, device) and seed: the same in every stage.")
    for side in ("a", "b"):
        only = ch[f"only_in_{side}"]
        if only:
            page.para(f"Stages recorded only in {side.upper()}: {', '.join(only)}.")


def _render_data(d: dict, page, h: int) -> None:
    data = d["data"]
    if not data:
        return
    num = page.num
    page.heading("What it did to the data", h)
    cur = data.get("curate")
    if cur:
        (ra, rb), (ka, kb) = cur["read"], cur["kept"]
        page.para(f"Curation read {num(ra)} (A) and {num(rb)} (B) documents and kept {num(ka)} (A) and {num(kb)} (B).")
        docs = cur.get("documents")
        if docs and docs["moves"]:
            page.table(
                ["in A", "in B", "documents"],
                [[_move(m["a"], "A"), _move(m["b"], "B"), num(m["n"])] for m in docs["moves"]],
            )
            extra = f" ({num(docs['text_changed'])} of them with a different text)" if docs["text_changed"] else ""
            page.para(f"{num(docs['same'])} documents had the same fate in both runs{extra}.")
            for m in docs["moves"]:
                page.heading(f"{_move(m['a'], 'A')}, {_move(m['b'], 'B')}: {num(m['n'])}", h + 1)
                for pair in m["examples"]:
                    for x in pair:
                        where = f" `{x['where']}`" if x.get("where") else ""
                        fate = "kept" if x["status"] == "kept" else f"dropped, `{x['status']}`"
                        head = f"{x['run']}: `{x['id']}` (source `{x['source']}`{where}) {fate}"
                        if x.get("details"):
                            head += f"; details `{json.dumps(x['details'], ensure_ascii=False)[:200]}`"
                        page.para(head)
                    _pre(page, next((x["text"] for x in pair if x["text"]), ""))
                    for x in pair:
                        if x.get("twin"):
                            t = x["twin"]
                            page.para(f"{x['run']}: its kept twin `{t['id']}` (source `{t['source']}`):")
                            _pre(page, t["text"])
                reason = m["b"] if m["b"] not in (None, "kept") else m["a"]
                side = "B" if m["b"] not in (None, "kept") else "A"
                if reason not in (None, "kept"):
                    page.para(f"More: `ledgerlm inspect {d[side.lower()]['run']} --reason {reason} -n 5`.")
        elif docs is not None:
            page.para("Every document had the same fate in both runs.")
        page.para("Dropped by reason, each side:")
        page.table(
            ["reason", "A", "B", "B − A"],
            [
                [_code(r["key"]), num(r["a"] or 0), num(r["b"] or 0), _delta((r["b"] or 0) - (r["a"] or 0))]
                for r in cur["dropped"]
            ],
        )
    if data.get("contamination"):
        page.para("Contamination, side by side (A / B):")
        page.table(
            ["benchmark", *[f.replace("_", " ") for f in CONTAM_FIELDS]],
            [
                [r["benchmark"], *[f"{num(r[f][0])} / {num(r[f][1])}" for f in CONTAM_FIELDS]]
                for r in data["contamination"]
            ],
        )
    if data.get("tokenize"):
        page.para("Tokenization:")
        page.table(
            ["", "A", "B", "B − A"],
            [
                [
                    r["what"],
                    num(r["a"], 4),
                    num(r["b"], 4),
                    _delta(r["b"] - r["a"]) if _number(r["a"]) and _number(r["b"]) else "",
                ]
                for r in data["tokenize"]
            ],
        )
    if data.get("phases"):
        page.para("Pretraining phases (tokens, and each source's weight in the phase's mixture):")
        page.table(["phase", "A", "B"], [[r["what"], num(r["a"]), num(r["b"])] for r in data["phases"]])
    if data.get("drawn"):
        page.para("Tokens pretraining drew, per source and pass over it (epoch):")
        page.table(["source, epoch", "A", "B"], [[r["what"], num(r["a"]), num(r["b"])] for r in data["drawn"]])


def _render_model(d: dict, page, h: int) -> None:
    m = d["model"]
    num = page.num
    page.heading("What it did to the model", h)
    for c in m["curves"]:
        _curves(page, c)
    rows = [
        [
            r["stage"],
            _code(r["key"]) + (" (headline)" if r["headline"] else ""),
            num(r["a"], 4),
            num(r["b"], 4),
            _delta(r["delta"]),
        ]
        for r in m["metrics"]
    ]
    page.para("Final metrics that differ (timings left out):")
    page.table(["stage", "metric", "A", "B", "B − A"], rows)
    if m["effects"]:
        page.para("Each stage's effect on its own metric (before → after, on the same held-out items):")
        page.table(
            ["stage", "A", "B"], [[e["stage"], _effect_text(e["a"]), _effect_text(e["b"])] for e in m["effects"]]
        )
    ev = m.get("eval")
    if ev:
        page.para("Evaluation, paired per item (`ledgerlm compare`): McNemar's exact test per task.")
        page.table(
            ["task", "metric", "n", "A", "B", "B − A", "A only", "B only", "p (McNemar)"],
            [
                [
                    r["task"],
                    r["metric"],
                    num(r["n"]),
                    num(r["a"], 4),
                    num(r["b"], 4),
                    _delta(r["b"] - r["a"]),
                    num(r["a_only"]),
                    num(r["b_only"]),
                    num(r["p_value"]),
                ]
                for r in ev["tasks"]
            ],
        )
        s = ev.get("six_task_mean")
        if s:
            page.para(
                f"Six-task mean: A {num(s['a'], 4)}, B {num(s['b'], 4)}, B − A {_delta(s['diff'])} "
                f"(95% CI [{num(s['ci95'][0])}, {num(s['ci95'][1])}], paired bootstrap p = {num(s['p_value'])}, "
                f"{num(s['iters'])} resamples)."
            )
    elif m.get("eval_error"):
        page.para(f"Evaluation: no paired tests ({m['eval_error']}).")


def _curves(page, c: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = c["keys"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.9 * len(keys) + 0.6, 3.0), squeeze=False, layout="constrained")
    for ax, k in zip(axes.flat, keys):
        for side, style in (("a", "-"), ("b", "--")):
            pts = c[side].get(k) or []
            if pts:
                marker = "." if len(pts) < 40 else None
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, label=side.upper())
        ax.set_title(LABELS.get(k, k.replace("_", " ")), fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{c['stage']}: A (solid) vs B (dashed)", fontsize=11)
    page.figure(f"diff_{c['stage']}_curves.png", fig)


LABELS = {
    "loss": "training loss",
    "val_loss": "held-out loss",
    "reward_mean": "mean reward",
    "heldout_acc": "held-out accuracy",
    "kl": "KL to reference",
}
# ----------------------------------------------------------------------------- the report's section


BASELINE_TITLE = "Difference from the baseline"


def check_baseline(baseline: str) -> None:
    """`report.baseline` names a run directory (a ValueError is reported against the key, exit 2)."""
    if baseline and not ledger.read_records(Path(baseline)):
        raise ValueError(
            f"{baseline}: not a run directory (no stage records under {ledger.ledger_dir(Path(baseline))})"
        )


def baseline_inputs(baseline: str) -> dict[str, Path]:
    """The baseline's records, hashed into the report's record: a re-run baseline makes the report stale."""
    if not baseline:
        return {}
    return {
        f"baseline:{r['stage']}": ledger.record_path(Path(baseline), r["stage"])
        for r in ledger.read_records(Path(baseline))
        if r.get("stage") != "report"
    }


def baseline_section(card, run_dir: Path, baseline: Path) -> dict | None:
    """The report's "Difference from the baseline": this run (B) against the baseline (A), without the reports."""
    try:
        a = load_run(baseline, skip=("report",))
        b = load_run(run_dir, rehash=False, skip=("report",))  # its own audit runs after the report
    except DiffInputError as e:
        card.heading(BASELINE_TITLE)
        card.para(f"The baseline cannot be compared: {e}")
        return None
    d = diff_runs(a, b, skip=("report",))
    render(d, card, level=2, title=BASELINE_TITLE)
    card.para(f"A = the baseline `{baseline}`, B = this run. The same as `ledgerlm diff {baseline} {run_dir}`.")
    return d


# ----------------------------------------------------------------------------- files and the command


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1120px;margin:1.5em auto;padding:0 16px;color:#222;"
    "line-height:1.4}h1{font-size:1.5em;overflow-wrap:anywhere}h2{border-bottom:1px solid #ddd;padding-bottom:2px;"
    "margin-top:1.6em}h3,h4{overflow-wrap:anywhere}.scroll{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;"
    "vertical-align:top;overflow-wrap:anywhere}th{background:#f3f3f3;text-align:left}td{max-width:420px}"
    "img{max-width:100%;height:auto;margin:.5em 0}code{background:#f5f5f5;padding:0 3px;overflow-wrap:anywhere}"
    "p{overflow-wrap:anywhere}"
)


def write(d: dict, out: Path) -> Page:
    """OUT/diff.md, OUT/diff.html (self-contained: the plots inline), OUT/diff.json and the plots as PNG files."""
    page = Page()
    render(d, page)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in page.images.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / "diff.md", "\n".join(page.md) + "\n")
    head = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ledgerlm diff</title><style>{_CSS}</style></head>"
    )
    atomic_write_text(out / "diff.html", head + "<body>" + "\n".join(page.html) + "</body></html>\n")
    atomic_write_json(out / "diff.json", d)
    return page


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", type=Path, help="run directory A (the baseline)")
    p.add_argument("run_b", type=Path, help="run directory B")
    p.add_argument(
        "--out", type=Path, default=None, help="write diff.md, diff.html (with the plots) and diff.json here"
    )
    p.add_argument("--json", action="store_true", help="print the whole diff as JSON instead of the summary")
    p.add_argument("--examples", type=int, default=EXAMPLES, help="documents shown per kind of curation move")
    p.add_argument("--top", type=int, default=8, help="changes listed in the terminal summary")
    p.add_argument("--iters", type=int, default=10000, help="bootstrap resamples for the six-task mean")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument(
        "--no-rehash", action="store_true", help="trust the artifacts: check the records' own hashes, not every file"
    )


def main(args) -> int:
    bad = (
        f"--out {args.out}: exists and is not a directory" if args.out is not None and args.out.exists()
        and not args.out.is_dir() else f"--iters {args.iters}: give at least 1" if args.iters < 1 else None
    )  # fmt: skip
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        a = load_run(args.run_a, rehash=not args.no_rehash)
        b = load_run(args.run_b, rehash=not args.no_rehash)
    except DiffInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = diff_runs(a, b, iters=args.iters, seed=args.seed, examples=max(0, args.examples))
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    else:
        print(summary(d, top=args.top), end="")
    if args.out:
        write(d, args.out)
        print(
            f"wrote {args.out / 'diff.md'} and {args.out / 'diff.html'}", file=sys.stderr if args.json else sys.stdout
        )
    return 0 if d["same"] else 1
