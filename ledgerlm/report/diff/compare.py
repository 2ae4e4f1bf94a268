"""Comparing two runs stage by stage: loading a run's records, the pipeline order of their stages, which config keys,
inputs and output files changed (timings and incidental files aside), and why each differing stage differs."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledgerlm import ledger
from ledgerlm.io import iter_jsonl
from ledgerlm.stage import STAGES

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
    return x == y and type(x) is type(y) or (is_number(x) and is_number(y) and x == y)


def is_number(x: Any) -> bool:
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


def artifact_key(art: dict | None) -> Any:
    if art is None:
        return None
    return art.get("sha256", art.get("path")) if art.get("kind") != "missing" else "missing"


def _compare_outputs(ra: dict, rb: dict, a: Run, b: Run) -> list[dict]:
    out = []
    oa, ob = ra.get("outputs") or {}, rb.get("outputs") or {}
    for name in list(oa) + [n for n in ob if n not in oa]:
        xa, xb = oa.get(name), ob.get(name)
        if xa is not None and xb is not None and artifact_key(xa) == artifact_key(xb):
            continue
        row: dict[str, Any] = {"name": name, "path": (xa or xb)["path"], "a": artifact_key(xa), "b": artifact_key(xb)}
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
        if xa is not None and xb is not None and artifact_key(xa) == artifact_key(xb):
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
