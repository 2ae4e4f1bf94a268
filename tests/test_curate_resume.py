"""Curate at scale: verified clusters without chaining, eligible representatives, resume from every kill window."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledgerlm.data.curate import Config, curate
from ledgerlm.data.curate.config import NearDedupConfig
from ledgerlm.data.decontam import DecontamConfig
from ledgerlm.data.filters import QualityConfig
from ledgerlm.data.segdedup import SegDedupConfig
from ledgerlm.data.sources import SourceSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GSM8K_Q = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
    "did Natalia sell altogether in April and May?"
)


def _words(k: int, prefix: str) -> list[str]:
    return [f"{prefix}{i}q" for i in range(k)]


def _write(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _read(d: Path) -> list[dict]:
    return [json.loads(x) for p in sorted(d.glob("*.jsonl")) for x in p.read_text().split("\n") if x]


def _plain(**kw) -> Config:
    return Config(quality=QualityConfig(enabled=False), segment_dedup=SegDedupConfig(enabled=False), **kw)


def test_no_chaining_each_drop_is_verified_against_its_kept_copy(tmp_path):
    """A~B and B~C but A, C dissimilar: B is dropped for A, C is kept (components would have dropped C for A)."""
    w = _words(120, "w")
    a, b, c = " ".join(w[0:100]), " ".join(w[10:110]), " ".join(w[20:120])  # J(A,B)=J(B,C)=0.81, J(A,C)=0.66
    for name, text in (("a", a), ("b", b), ("c", c)):
        _write(tmp_path / f"{name}.jsonl", [text])
    src = [SourceSpec(name=n, path=str(tmp_path / f"{n}.jsonl"), priority=p) for n, p in (("a", 2), ("b", 1), ("c", 0))]
    loose = NearDedupConfig(bands=56, rows=2)  # every overlapping pair is a candidate; verified at 0.75
    res = curate(_plain(sources=src, near_dedup=loose), tmp_path / "out")
    kept = {d["text"] for d in _read(tmp_path / "out" / "kept")}
    assert kept == {a, c}
    (near,) = [r for r in _read(tmp_path / "out" / "excluded") if r["reason"] == "near_dup"]
    assert near["text"] == b and near["details"]["kept_id"] == [*_ids(tmp_path, "a")][0]
    assert 0.8 < near["details"]["jaccard"] < 0.82
    assert res["counters"]["candidate_edges"] >= 3 and res["counters"]["near_dup_clusters"] == 1


def _ids(tmp_path: Path, name: str) -> list[str]:
    from ledgerlm.data.sources import doc_id

    return [doc_id(name, json.loads(x)["text"]) for x in (tmp_path / f"{name}.jsonl").read_text().split("\n") if x]


def _page() -> str:
    return "\n".join(
        " ".join(
            f"{w}{i}{j}" for j, w in enumerate(("the page tells how river boats carry grain and wood " * 2).split())
        )
        + "."
        for i in range(12)
    )


def test_planted_leak_variant_never_stands_for_the_clean_copies(tmp_path):
    """A page, its exact copy, a near copy, and a higher-priority variant with a leaked GSM8K question: exactly one
    clean copy is kept (before, the variant was the kept member and decontamination then dropped every copy)."""
    page = _page()
    near = page.replace("grain07 ", "corn07 ").replace("wood19 ", "stone19 ")  # two words changed: J ~ 0.9
    variant = page + "\n" + GSM8K_Q
    _write(tmp_path / "web.jsonl", [page, page, near])
    _write(tmp_path / "forum.jsonl", [variant])
    src = [
        SourceSpec(name="web", path=str(tmp_path / "web.jsonl")),
        SourceSpec(name="forum", path=str(tmp_path / "forum.jsonl"), priority=5),
    ]
    dc = DecontamConfig(files=[f"gsm8k={DATA / 'gsm8k' / 'train.jsonl'}"])
    res = curate(_plain(sources=src, decontam=dc), tmp_path / "out")
    kept = [d["text"] for d in _read(tmp_path / "out" / "kept")]
    assert len(kept) == 1 and kept[0] in (page, near)
    reasons = sorted(r["reason"] for r in _read(tmp_path / "out" / "excluded"))
    assert reasons.count("near_dup") >= 2 and len(reasons) == 3
    assert res["counters"]["near_dup_clusters_lost"] == 0


def test_cluster_of_only_leaked_copies_is_recorded_as_lost(tmp_path):
    variant = _page() + "\n" + GSM8K_Q
    _write(tmp_path / "web.jsonl", [variant, variant])
    dc = DecontamConfig(files=[f"gsm8k={DATA / 'gsm8k' / 'train.jsonl'}"])
    res = curate(
        _plain(sources=[SourceSpec(name="web", path=str(tmp_path / "web.jsonl"))], decontam=dc), tmp_path / "o"
    )
    c = res["counters"]
    assert c["kept"] == 0 and c["dropped"] == {"contaminated:gsm8k": 1, "near_dup": 1}
    assert c["near_dup_clusters_lost"] == 1


def test_own_jsonl_with_line_separators_survives_every_step(tmp_path):
    """U+2028/U+2029/U+0085 inside text: our work files and outputs are split on "\\n" only."""
    texts = [" ".join(_words(40, f"d{k}x")) + " \u2028 line \u2029 para \x85 next" for k in range(5)]
    _write(tmp_path / "in.jsonl", texts)
    curate(_plain(sources=[SourceSpec(name="s", path=str(tmp_path / "in.jsonl"))]), tmp_path / "out")
    assert sorted(d["text"] for d in _read(tmp_path / "out" / "kept")) == sorted(texts)


# ----------------------------------------------------------------------------- kill -9 at every window, then resume

CORPUS_DOCS = 60


def _corpus(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    texts = []
    for k in range(CORPUS_DOCS):
        w = _words(60, f"t{k % 40}x")  # docs k and k+40 are copies: near-dup clusters exist
        texts.append(" ".join(w) + f" end{k // 40}" + "\nshared footer line that is boilerplate here")
    _write(root / "in.jsonl", texts)


_RUNNER = """
import json, sys
from pathlib import Path
from ledgerlm.data.curate import Config
from ledgerlm.data.curate.config import ExecutorConfig
from ledgerlm.data.filters import QualityConfig
from ledgerlm.data.segdedup import SegDedupConfig
from ledgerlm.data.sources import SourceSpec
from ledgerlm.data.curate import curate
root, out, workers, resume = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
cfg = Config(sources=[SourceSpec(name="s", path=str(root / "in.jsonl"))], quality=QualityConfig(enabled=False),
             segment_dedup=SegDedupConfig(min_docs=3, min_words=5), chunk_docs=16, segment_buckets=2,
             executor=ExecutorConfig(datatrove_tasks=2, workers=workers))
res = curate(cfg, out, resume=resume, logs_dir=out.parent / (out.name + "-logs"))
print(json.dumps(res["counters"]["kept"]))
"""


def _run(root: Path, out: Path, resume: bool, kill_at: str = "", workers: int = 1, wait: bool = True):
    env = {**os.environ, "LEDGERLM_TEST_KILL_AT": kill_at}
    args = [sys.executable, "-c", _RUNNER, str(root), str(out), str(workers), "1" if resume else "0"]
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file() and ".work" not in p.parts and p.name != ".curate-result.json":
            h.update(p.relative_to(d).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    _corpus(root)
    r = _run(root, root / "ref", resume=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return root, _tree_hash(root / "ref")


@pytest.mark.parametrize(
    "window", ["scan-chunk", "index-merge", "after-index", "after-lsh", "apply-chunk", "after-cleanup"]
)
def test_killed_at_any_window_resumes_to_identical_outputs(reference, tmp_path, window):
    root, ref = reference
    out = tmp_path / "out"
    r = _run(root, out, resume=False, kill_at=window)
    assert r.returncode == -signal.SIGKILL, (window, r.returncode, r.stderr[-2000:])
    if window == "scan-chunk":  # progress is kept: the completed chunk is not redone, the scan goes on after it
        done = out / ".work" / "scan" / "00000-00000.done.json"
        t0 = done.stat().st_mtime_ns
        assert not (out / ".work" / "scan" / "00000-00001.done.json").exists()
        r = _run(root, out, resume=True, kill_at="after-scan")
        assert r.returncode == -signal.SIGKILL
        assert done.stat().st_mtime_ns == t0 and (out / ".work" / "scan" / "00000-00001.done.json").exists()
    if window == "after-cleanup":
        assert not (out / ".work").exists()  # the window that used to need --force
    r = _run(root, out, resume=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _tree_hash(out) == ref


def test_two_workers_same_bytes(reference, tmp_path):
    root, ref = reference
    r = _run(root, tmp_path / "out", resume=False, workers=2)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _tree_hash(tmp_path / "out") == ref


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.add(k)
            todo.append(k)
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_killing_the_main_process_takes_its_workers_with_it(reference, tmp_path):
    root, _ = reference
    p = _run(root, tmp_path / "out", resume=False, workers=2, wait=False)
    kids: set[int] = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(kids) < 3:  # the Manager, the fork server and pool workers
        kids |= _descendants(p.pid)
        time.sleep(0.05)
    assert kids, "no worker processes seen"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)]
