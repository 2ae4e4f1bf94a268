"""Curation on real text with planted duplicates, near-duplicates of known Jaccard, junk, boilerplate and leaks."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from ledgerlm.data.curate import Config, curate
from ledgerlm.data.curate.config import ExecutorConfig
from ledgerlm.data.decontam import DecontamConfig
from ledgerlm.data.filters import QualityConfig, QualityGates
from ledgerlm.data.inspect_docs import inspect_main
from ledgerlm.data.segdedup import SegDedupConfig
from ledgerlm.data.sources import SourceSpec, doc_id
from ledgerlm.data.workdir import WorkDir

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BOILER = [
    "Subscribe to our newsletter for more great stories every single week.",
    "All rights reserved by the publisher of this fine collection of tales.",
    "Share this story with your friends and family if you enjoyed reading it.",
]
JUNK = {
    "lorem": "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8,
    "code": "function main() { var x = 1; return x + 2; } and the value of the thing is returned to you. " * 5,
    "symbols": "#### #### #### buy now #### ### the best deals of the year ### and more ### " * 6,
    "short": "Too short to keep.",
    "repeat": "\n".join(["This line is the same in every row of the page."] * 12),
}


def _need_data():
    if not (DATA / "text" / "tinyshakespeare.txt").is_file():
        pytest.skip("shared data not available")


def shakespeare_docs(n: int, seed: int = 0) -> list[str]:
    """Prose documents of 60-220 words cut at sentence ends from tinyshakespeare (speaker names dropped)."""
    lines = [ln.strip() for ln in (DATA / "text" / "tinyshakespeare.txt").read_text().splitlines()]
    text = " ".join(ln for ln in lines if ln and not ln.endswith(":"))
    sents = re.split(r"(?<=[.!?])\s+", text)
    rng = random.Random(seed)
    docs, i = [], 0
    while len(docs) < n:
        target, cur, w = rng.randrange(60, 220), [], 0
        while w < target:
            cur.append(sents[i])
            w += len(sents[i].split())
            i += 1
        docs.append(" ".join(cur))
    return docs


def piqa_items(k: int = 5) -> list[dict]:
    """The first k PIQA items long enough (>= 15 words in goal + sol1) to be matchable with N <= 13."""
    rows = [json.loads(x) for x in (DATA / "piqa" / "valid.jsonl").read_text().splitlines()]
    return [r for r in rows if len((r["goal"] + " " + r["sol1"]).split()) >= 15][:k]


def ref_shingles(text: str, n: int = 5) -> set[str]:
    """Independent reference: lowercase, punctuation -> space, word 5-grams."""
    w = re.sub(r"[^\w\s]|_", " ", text.lower()).split()
    return {" ".join(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))}


def jaccard(a: str, b: str) -> float:
    x, y = ref_shingles(a), ref_shingles(b)
    return len(x & y) / len(x | y)


def near_dup(text: str, lo: float, hi: float, rng: random.Random) -> tuple[str, float]:
    """Replace random words until the shingle Jaccard with the original falls in [lo, hi]."""
    words = text.split()
    for _ in range(200):
        j = jaccard(text, " ".join(words))
        if lo <= j <= hi:
            return " ".join(words), j
        if j < lo:  # overshot: start again
            words = text.split()
        words[rng.randrange(len(words))] = f"zq{rng.randrange(10**6)}"
    raise AssertionError("could not plant a near-duplicate in range")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory)


def _corpus(tmp_path_factory):
    _need_data()
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    gates = QualityGates(QualityConfig())
    base = [d for d in shakespeare_docs(320) if gates.check(d)[0] is None][:230]
    piqa = piqa_items()
    from ledgerlm.tasks import benchmark_texts

    wino = benchmark_texts("winogrande", data_dir=DATA)[:3]
    web, books = [], []
    truth = {"clusters": [], "junk": [], "leaks": [], "boiler": []}
    for i in range(200):
        web.append({"text": base[i]})
    for i in range(20):  # near-duplicates, Jaccard 0.8-0.9, same source
        t, j = near_dup(base[i], 0.8, 0.9, rng)
        web.append({"text": t})
        truth["clusters"].append([base[i], t])
    for i in range(20, 25):  # exact copies in the same source (same id)
        web.append({"text": base[i]})
        truth["clusters"].append([base[i]])
    for i in range(25, 30):  # exact copies in a higher-priority source: the books copy must be the one kept
        books.append({"text": base[i], "title": f"book {i}"})
        truth["clusters"].append([base[i]])
    for t in JUNK.values():
        web.append({"text": t})
        truth["junk"].append(t)
    for i, p in enumerate(piqa):  # leaked benchmark items inside otherwise normal documents
        t = base[200 + i] + " " + p["goal"] + " " + p["sol1"] + " " + base[210 + i]
        web.append({"text": t})
        truth["leaks"].append(t)
    for i, s in enumerate(wino):
        t = base[220 + i] + " " + s + " " + base[225 + i]
        books.append({"text": t})
        truth["leaks"].append(t)
    for i in range(40, 46):  # one boilerplate line appended to 6 documents
        web[i] = {"text": web[i]["text"] + "\n" + BOILER[0]}
    for k in range(3):  # mostly boilerplate (+25 words of their own, two sentences, so that C4's 5 are there): too
        own = base[100 + k].split()[:25]  # short once it is removed
        web.append(
            {
                "text": "\n".join(BOILER)
                + "\n"
                + " ".join(own[:12]).rstrip(".")
                + ".\n"
                + " ".join(own[12:]).rstrip(".")
                + "."
            }
        )
    truth["boiler"] = [r["text"] for r in web if BOILER[0] in r["text"]]
    (root / "web").mkdir()
    lines = [json.dumps(r) for r in web]
    lines[3:3] = [
        "{not json",
        json.dumps({"body": "no text field"}),
        json.dumps({"text": "   "}),
        json.dumps({"text": 42}),
        json.dumps([1, 2]),
    ]
    raw = ("\n".join(lines) + "\n").encode() + b'{"text": "bad \xff\xfe bytes"}\n'
    truth["utf8_line"] = len(lines) + 1
    (root / "web" / "part-0.jsonl").write_bytes(raw)
    with gzip.open(root / "books.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in books))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": base[230 - 5 :], "id": list(range(5))}), root / "extra.parquet")
    (root / "txt").mkdir()
    (root / "txt" / "a.txt").write_text(shakespeare_docs(300, seed=9)[-1])
    truth["n_read"] = len(web) + 6 + len(books) + 5 + 1
    return root, truth


def make_cfg(root: Path, tasks: int = 1, workers: int = 1, action: str = "drop", **kw) -> Config:
    return Config(
        sources=[
            SourceSpec(name="web", path=str(root / "web")),
            SourceSpec(name="books", path=str(root / "books.jsonl.gz"), priority=1),
            SourceSpec(name="extra", path=str(root / "extra.parquet"), id_field="id"),
            SourceSpec(name="txt", path=str(root / "txt")),
        ],
        decontam=DecontamConfig(
            files=[f"piqa={DATA / 'piqa' / 'valid.jsonl'}"], tasks=["winogrande"], data_dir=str(DATA), action=action
        ),
        segment_dedup=SegDedupConfig(min_words=30),
        executor=ExecutorConfig(datatrove_tasks=tasks, workers=workers),
        **kw,
    )


def read_dir(d: Path) -> list[dict]:
    return [json.loads(x) for p in sorted(d.glob("*.jsonl")) for x in p.read_text().split("\n") if x]


def dir_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(d).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def result(corpus, tmp_path_factory):
    root, truth = corpus
    out = tmp_path_factory.mktemp("run1")
    res = curate(make_cfg(root), out)
    return out, res, truth


def test_nothing_lost_and_every_exclusion_has_a_reason(result):
    out, res, truth = result
    kept, excl = read_dir(out / "kept"), read_dir(out / "excluded")
    c = res["counters"]
    assert c["read"] == truth["n_read"]
    assert len(kept) == c["kept"] and len(excl) == sum(c["dropped"].values())
    assert len(kept) + len(excl) == c["read"]
    assert all(r["reason"] and "details" in r for r in excl)
    bad = {r["reason"]: r for r in excl if r["reason"].startswith("malformed:")}
    assert set(bad) == {
        "malformed:json",
        "malformed:missing_field",
        "malformed:empty",
        "malformed:type",
        "malformed:utf8",
    }
    assert (
        bad["malformed:utf8"]["file"].endswith("part-0.jsonl") and bad["malformed:utf8"]["line"] == truth["utf8_line"]
    )
    assert [s["step"] for s in c["by_step"]] == ["read", "quality", "near_dedup", "segment_dedup", "decontaminate"]
    assert c["by_step"][-1]["kept"] == c["kept"]
    # token funnel (whitespace words) matches what was actually written
    assert c["tokens_kept"] == c["by_step"][-1]["tokens_kept"] == sum(len(d["text"].split()) for d in kept)
    assert c["tokens_read"] == c["tokens_kept"] + sum(c["dropped_tokens"].values()) + c["by_step"][3]["tokens_removed"]
    assert c["by_source"] == {"books": 8, "extra": 5, "txt": 1, "web": truth["n_read"] - 14}


def test_each_cluster_kept_once_with_keep_rule(result):
    out, _, truth = result
    kept, excl = read_dir(out / "kept"), read_dir(out / "excluded")
    texts = [d["text"] for d in kept]
    for members in truth["clusters"]:
        assert sum(t in members for t in texts) == 1, members[0][:60]
    # the higher-priority source keeps its copy of a cross-source duplicate
    for d in kept:
        if d["text"] in [m[0] for m in truth["clusters"][25:30]]:
            assert d["source"] == "books"
    near = [r for r in excl if r["reason"] == "near_dup"]
    assert len(near) == 30
    ids = {d["id"] for d in kept}
    # verified by default: each dropped copy's exact Jaccard against the copy kept in its place is recorded
    assert all(r["details"]["kept_id"] in ids and 0.75 <= r["details"]["jaccard"] <= 1.0 for r in near)
    # planted near-duplicates have true Jaccard 0.8-0.9
    exact = [r["details"]["jaccard"] for r in near if r["details"]["jaccard"] < 1.0]
    assert len(exact) == 20 and 0.8 <= np.mean(exact) < 0.95


def test_junk_and_leaks_gone(result):
    out, res, truth = result
    kept, excl = read_dir(out / "kept"), read_dir(out / "excluded")
    texts = {d["text"] for d in kept}
    by_text = {r["text"]: r["reason"] for r in excl}
    for t in truth["junk"]:
        assert t not in texts and by_text[t].startswith("quality:"), by_text.get(t)
    for t in truth["leaks"]:
        assert t not in texts and by_text[t].startswith("contaminated:"), by_text.get(t)
    leak = [r for r in excl if r["reason"] == "contaminated:piqa"]
    assert len(leak) == 5 and all(len(r["details"]["ngram"].split()) >= 8 for r in leak)
    table = {r["benchmark"]: r for r in res["contamination"]}
    assert table["piqa"]["items_contaminated"] == 5 and table["piqa"]["docs_touched"] == 5
    assert table["winogrande"]["docs_touched"] == 3 and table["winogrande"]["items_contaminated"] >= 3
    md = (out / "contamination.md").read_text()
    csv = (out / "contamination.csv").read_text().splitlines()
    assert "| piqa |" in md and csv[0].startswith("benchmark,n,items,") and len(csv) == 3


def test_segment_dedup_keeps_first_occurrence(result):
    out, res, truth = result
    kept, excl = read_dir(out / "kept"), read_dir(out / "excluded")
    with_line = [d for d in kept if BOILER[0] in d["text"]]
    assert len(with_line) == 1  # the document with the smallest id among those that had it
    had = sorted(doc_id("web", t) for t in truth["boiler"])
    assert with_line[0]["id"] == had[0]
    short = [r for r in excl if r["reason"] == "segment_dedup:too_short"]
    assert len(short) == 2 and all(r["details"]["words_left"] == 25 for r in short)


def test_deterministic_and_independent_of_workers(corpus, result, tmp_path):
    root, _ = corpus
    out1, _, _ = result
    curate(make_cfg(root), tmp_path / "again")
    # 3 tasks on 2 worker processes, in chunks of 7 documents (every step is split, same bytes out)
    curate(make_cfg(root, tasks=3, workers=2, chunk_docs=7, segment_buckets=3), tmp_path / "par")
    curate(make_cfg(root, segment_buckets=37), tmp_path / "ranges")  # boilerplate by 37 ranges of segment hashes
    for sub in ("kept", "excluded"):
        h = dir_hash(out1 / sub)
        assert dir_hash(tmp_path / "again" / sub) == h
        assert dir_hash(tmp_path / "par" / sub) == h, sub
        assert dir_hash(tmp_path / "ranges" / sub) == h, sub
    assert (tmp_path / "ranges" / "boilerplate.jsonl").read_bytes() == (out1 / "boilerplate.jsonl").read_bytes()


def test_boilerplate_tasks_grow_with_the_segments(corpus, result, tmp_path, monkeypatch):
    """More segments than one task may hold: more boilerplate tasks (ranges of hashes), the same bytes out."""
    import ledgerlm.data.curate.base as curate_base

    root, _ = corpus
    out1, _, _ = result
    monkeypatch.setattr(curate_base, "SEGMENT_BYTES", 2**20 // 50)  # 50 segments per task at sort_buffer_mb 1
    cfg = make_cfg(root, keep_work=True, segment_buckets=2, sort_buffer_mb=1)
    curate(cfg, tmp_path / "out")
    wd = WorkDir(tmp_path / "out" / ".work")
    segments = sum(len(np.load(wd.scan(c, "seg-h.npy"))) for c, _ in wd.scan_chunks(1))
    tasks = len(list(wd.root.glob("plan/boiler-*.npz")))
    assert tasks == -(-segments // 50) > 2
    for sub in ("kept", "excluded"):
        assert dir_hash(tmp_path / "out" / sub) == dir_hash(out1 / sub), sub


def test_cut_action_removes_span_with_margin(corpus, tmp_path):
    root, truth = corpus
    res = curate(make_cfg(root, action="cut"), tmp_path / "cut")
    kept = read_dir(tmp_path / "cut" / "kept")
    for p in piqa_items():
        assert not any(p["sol1"][:60] in d["text"] for d in kept)
    assert sum(r["docs_cut"] for r in res["contamination"]) >= 5
    assert res["counters"]["by_step"][-1]["tokens_cut"] > 0


def test_inspect_prints_samples(result, capsys):
    out, _, _ = result
    assert inspect_main([str(out.parent / out.name), "--reason", "near_dup", "-n", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("30 documents excluded for 'near_dup'; showing 2") and text.count("\n--- ") == 2
    # each near-duplicate is shown beside the text of the copy kept in its place
    assert text.count("+++ kept twin ") == 2
    twin = text.split("+++ kept twin ")[1].split("\n")[1].strip()
    kept = {d["text"][:40] for d in read_dir(out / "kept")}
    assert twin[:40] in kept
    # removed boilerplate lines, with the number of documents each was in
    assert inspect_main([str(out), "--boilerplate", "-n", "3"]) == 0
    text = capsys.readouterr().out
    assert "boilerplate lines removed" in text and BOILER[0][:30] in text
    assert inspect_main([str(out), "--reason", "quality"]) == 0
    assert "quality:" in capsys.readouterr().out
    assert inspect_main([str(out), "--reason", "nonexistent"]) == 1


def _lexsort_index(wd: WorkDir, cfg: Config, tasks: int) -> dict[str, np.ndarray]:
    """The index as one in-memory lexsort over the whole corpus (what the external sort replaced): the reference."""
    chunks = wd.scan_chunks(tasks)
    pos = {f: i for i, f in enumerate(sorted({f for _, d in chunks for f in d["files"]}))}
    col: dict[str, list] = {k: [] for k in ("ids", "file", "line", "source", "score", "eligible")}
    for c, d in chunks:
        z = np.load(wd.scan(c, "meta.npz"))
        for k in ("ids", "line", "source", "score"):
            col[k].append(z[k])
        col["file"].append(np.array([pos[f] for f in d["files"]] or [0])[z["file_idx"]])
        eligible = np.ones(d["n"], dtype=bool)
        eligible[np.load(wd.scan(c, "match.npz"))["doc"]] = False
        col["eligible"].append(eligible)
    a = {k: np.concatenate(v) for k, v in col.items()}
    n = len(a["ids"])
    order = np.lexsort((a["line"], a["file"], a["ids"]))
    id_rank = np.empty(n, np.int64)
    id_rank[order] = np.arange(n)
    priority = np.array([s.priority for s in cfg.sources])[a["source"]]
    keep = np.lexsort((id_rank, -a["score"], -priority, ~a["eligible"]))
    keep_pos = np.empty(n, np.int64)
    keep_pos[keep] = np.arange(n)
    same = np.flatnonzero(a["ids"][order][1:] == a["ids"][order][:-1])
    edges = np.sort(np.stack([order[same], order[same + 1]], axis=1), axis=1)
    return {"id_rank": id_rank, "keep_pos": keep_pos, "edges-same": edges, "ids": a["ids"], "source": a["source"]}


def test_index_by_external_sort_equals_one_global_sort(corpus, tmp_path, monkeypatch):
    """Sorted runs per scan chunk merged in small blocks give the ranks one lexsort over the corpus gives."""
    import ledgerlm.data.curate.index as curate_index

    root, _ = corpus
    merge = curate_index.rank_runs
    rounds = []

    def small_merge(runs, ranks, _rows, on_block=None):
        rounds.append(len(runs))
        merge(runs, ranks, 5, on_block)  # five keys at once: many rounds

    monkeypatch.setattr(curate_index, "rank_runs", small_merge)
    cfg = make_cfg(root, tasks=3, chunk_docs=7, keep_work=True)
    cfg.sources[2].priority = -1  # three priorities, eligible and leaked documents, identical copies (one id)
    curate(cfg, tmp_path / "out")
    wd = WorkDir(tmp_path / "out" / ".work")
    want = _lexsort_index(wd, cfg, 3)
    assert rounds[0] > 5 and len(want["edges-same"]) > 0 and len(set(want["source"].tolist())) == 4
    assert any(len(np.load(wd.scan(c, "match.npz"))["doc"]) for c, _ in wd.scan_chunks(3))  # ineligible ones too
    for k, v in want.items():
        assert np.array_equal(np.load(wd.plan(f"{k}.npy")), v), k
