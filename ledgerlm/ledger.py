"""The run ledger: one record per stage, with every input and output hashed, and the audit that re-checks them.

Layout of a run directory:
    RUN/ledger/<stage>.json     the stage's record (written atomically, carries its own sha256)
    RUN/ledger/<stage>.attempt.json   written when a stage starts; lets a killed stage resume
    RUN/logs/<stage>.log        the stage's log
    RUN/<stage>/...             the stage's outputs

An artifact is hashed as a file (sha256 + size) or a directory (a manifest of every file's sha256 and size, itself
hashed once more), so `audit` can name the exact file that changed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ledgerlm import __version__
from ledgerlm.config import ConfigError
from ledgerlm.io import atomic_write_json

SCHEMA = 1
WARN_P = 0.05  # ctx.warn: a test with p >= WARN_P is "not significant" (no better than chance, no change)
_HASH_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, within one process


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def canonical_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _is_temp(p: Path) -> bool:
    return p.name.endswith(".tmp") or p.name.startswith(".")


def hash_artifact(path: Path, root: Path | None = None) -> dict:
    """Hash a file or directory. Paths inside `root` (the run directory) are recorded relative to it."""
    path = Path(path)
    rel = _rel(path, root)
    if not path.exists():
        return {"path": rel, "kind": "missing"}
    if path.is_file():
        return {"path": rel, "kind": "file", "size": path.stat().st_size, "sha256": sha256_file(path)}
    files = {}
    for p in sorted(path.rglob("*")):
        if (
            p.is_file()
            and not any(_is_temp(part) for part in p.relative_to(path).parents if part.name)
            and not _is_temp(p)
        ):
            files[p.relative_to(path).as_posix()] = [p.stat().st_size, sha256_file(p)]
    return {
        "path": rel,
        "kind": "dir",
        "size": sum(s for s, _ in files.values()),
        "n_files": len(files),
        "sha256": canonical_sha256(files),
        "files": files,
    }


def _rel(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(root))).as_posix()
        except ValueError:
            pass
    return str(Path(os.path.abspath(path)))


def resolve(rel: str, root: Path) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


# ----------------------------------------------------------------------------- provenance


def code_version() -> dict:
    """Git commit and dirty flag of the ledgerlm checkout, or the package version when installed from a wheel."""
    repo = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {"package_version": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
            )
            info.update(git_commit=commit.stdout.strip(), git_dirty=bool(status.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def environment() -> dict:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    env["torch"] = torch.__version__
    env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    return env


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- records


def ledger_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "ledger"


def record_path(run_dir: Path, stage: str) -> Path:
    return ledger_dir(run_dir) / f"{stage}.json"


def seal(record: dict) -> dict:
    """Add the record's own hash, so a hand-edited record is caught by audit."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return {**body, "record_sha256": canonical_sha256(body)}


def write_record(run_dir: Path, record: dict) -> Path:
    path = record_path(run_dir, record["stage"])
    atomic_write_json(path, seal(record))
    return path


def read_record(run_dir: Path, stage: str) -> dict | None:
    path = record_path(run_dir, stage)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def read_records(run_dir: Path) -> list[dict]:
    """All completed stage records of a run, in the order the stages started."""
    out = []
    for p in sorted(ledger_dir(run_dir).glob("*.json")):
        if p.name.endswith(".attempt.json"):
            continue
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            out.append({"stage": p.stem, "status": "unreadable", "started": ""})
    return sorted(out, key=lambda r: r.get("started", ""))


def existing_run(run_dir: Path) -> list[dict]:
    """The records of a run directory with at least one, or a one-line ConfigError that says what to give instead."""
    records = read_records(run_dir)
    if not records:
        what = "does not exist" if not Path(run_dir).exists() else f"has no stage records under {ledger_dir(run_dir)}"
        raise ConfigError("", f"{run_dir} {what}: give a run directory (ledgerlm run ... --out DIR made one)")
    return records


# ----------------------------------------------------------------------------- audit


def audit(run_dir: Path) -> tuple[list[str], int]:
    """Re-hash every recorded artifact and check the chain. Returns (problems, number of artifacts checked)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    checked = 0
    records = read_records(run_dir)
    if not records:
        return [f"{run_dir}: no ledger records found under {ledger_dir(run_dir)}"], 0
    produced: dict[str, tuple[str, dict]] = {}  # output path -> (stage, artifact), from every record
    for rec in records:
        for art in rec.get("outputs", {}).values():
            produced[art["path"]] = (rec.get("stage", "?"), art)
    for rec in records:
        stage = rec.get("stage", "?")
        if rec.get("status") == "unreadable":
            problems.append(f"{stage}: ledger record is not valid JSON")
            continue
        if seal(rec)["record_sha256"] != rec.get("record_sha256"):
            problems.append(f"{stage}: ledger record was modified after it was written (record_sha256 mismatch)")
        for name, art in rec.get("inputs", {}).items():
            checked += 1
            problems += _check_input(stage, name, art, produced, run_dir)
        for name, art in rec.get("outputs", {}).items():
            checked += 1
            problems += [f"{stage}: output {name!r}: {p}" for p in _verify(art, run_dir)]
    return problems, checked


def _check_input(stage: str, name: str, art: dict, produced: dict, run_dir: Path) -> list[str]:
    if art.get("kind") == "hub" and "mirror" in art:  # read from a local Hub mirror (ledgerlm/hub.py): re-hash it
        return [f"{stage}: input {name!r} ({art['path']}, Hub mirror): {p}" for p in _verify(art["mirror"], run_dir)]
    if art.get("kind") in ("hub", "missing"):
        return []  # a Hub dataset or an optional input that was absent: nothing on disk to re-hash
    up = produced.get(art["path"])
    if up is None:  # maybe a file inside an upstream output directory
        for out_path, (up_stage, up_art) in produced.items():
            prefix = out_path.rstrip("/") + "/"
            if art["path"].startswith(prefix) and up_art.get("kind") == "dir":
                entry = up_art["files"].get(art["path"][len(prefix) :])
                if entry is None:
                    return [f"{stage}: input {name!r} ({art['path']}) is not among {up_stage}'s recorded outputs"]
                if entry[1] != art.get("sha256"):
                    return [f"{stage}: input {name!r} ({art['path']}) differs from what {up_stage} recorded (stale)"]
                return []
    if up is not None:
        up_stage, up_art = up
        if up_art.get("sha256") != art.get("sha256"):
            return [
                f"{stage}: input {name!r} ({art['path']}) was consumed with sha256 {str(art.get('sha256'))[:12]}… "
                f"but {up_stage} now records {str(up_art.get('sha256'))[:12]}… (stale: re-run {stage})"
            ]
        return []
    if art["path"].startswith("ledger/"):  # another stage's record (the report reads them): must be unchanged
        return [f"{stage}: input {name!r}: {p} (stale: re-run {stage})" for p in _verify(art, run_dir)]
    if not Path(art["path"]).is_absolute():
        return [f"{stage}: input {name!r} ({art['path']}) is inside the run but no earlier stage recorded it"]
    return [f"{stage}: external input {name!r}: {p}" for p in _verify(art, run_dir)]


def _verify(art: dict, run_dir: Path) -> list[str]:
    """Compare an artifact on disk with its recorded hash; name each file that changed or disappeared."""
    path = resolve(art["path"], run_dir)
    if art.get("kind") in ("hub", "missing"):
        return []
    if not path.exists():
        return [f"{art['path']} is missing"]
    now_art = hash_artifact(path, run_dir)
    if art["kind"] == "file":
        if now_art.get("sha256") != art["sha256"]:
            return [
                f"{art['path']}: sha256 mismatch (recorded {art['sha256'][:12]}…, now {now_art.get('sha256', '')[:12]}…)"
            ]
        return []
    problems = []
    old, new = art.get("files", {}), now_art.get("files", {})
    for f in sorted(set(old) | set(new)):
        if f not in new:
            problems.append(f"{art['path']}/{f} is missing")
        elif f not in old:
            problems.append(f"{art['path']}/{f} was added after the stage ran")
        elif old[f][1] != new[f][1]:
            problems.append(f"{art['path']}/{f}: sha256 mismatch")
    if not problems and now_art["sha256"] != art["sha256"]:
        problems.append(f"{art['path']}: manifest hash mismatch")
    return problems
