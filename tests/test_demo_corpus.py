"""The built-in demo corpus: deterministic, and every planted defect is there in exactly the recorded quantity.

The checks here recount everything from the records with our own small helpers (not the generator's), and the last
test runs the real curate stage on a small corpus and expects each gate to remove exactly what was planted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest

from ledgerlm.demo import corpus as dc
from ledgerlm.demo.__main__ import main as demo_main
from ledgerlm.demo.posttrain import demo_preference_pairs, demo_sft_conversations
from ledgerlm.tasks import arith

N_DOCS = 600  # small: every test here together stays within a few seconds


@pytest.fixture(scope="module")
def corpus():
    return dc.generate_demo_corpus(seed=3, n_docs=N_DOCS)


def _grams(text: str, n: int) -> set:
    w = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def _jac(a: str, b: str) -> float:
    x, y = _grams(a, 5), _grams(b, 5)
    return len(x & y) / len(x | y)


def _by_kind(records):
    out = {}
    for r in records:
        out.setdefault(r["planted"]["kind"], []).append(r)
    return out


def test_same_seed_same_bytes_other_seed_other_text(tmp_path):
    m1 = dc.write_demo_corpus(tmp_path / "a", seed=5, n_docs=300, docs_per_file=128)
    m2 = dc.write_demo_corpus(tmp_path / "b", seed=5, n_docs=300, docs_per_file=128)
    assert m1 == m2 and [f["path"] for f in m1["files"]] == ["demo-000.jsonl", "demo-001.jsonl", "demo-002.jsonl"]
    for f in m1["files"]:
        a, b = (tmp_path / d / f["path"] for d in "ab")
        assert a.read_bytes() == b.read_bytes()
        assert hashlib.sha256(a.read_bytes()).hexdigest() == f["sha256"]
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["files"] == m1["files"]
    other, _ = dc.generate_demo_corpus(seed=6, n_docs=300)
    mine = [json.loads(line)["text"] for f in m1["files"] for line in (tmp_path / "a" / f["path"]).open()]
    assert len(mine) == 300 and len(set(mine) & {r["text"] for r in other}) < 10


def test_records_match_the_manifest(corpus):
    records, m = corpus
    kinds = _by_kind(records)
    assert len(records) == m["n_docs"] == N_DOCS
    assert len({r["id"] for r in records}) == N_DOCS and all(set(r) == {"id", "text", "planted"} for r in records)
    assert len(kinds["clean"]) == m["clean_docs"] == m["expected_kept_docs"]
    assert len(kinds["junk"]) == m["junk_total"] == sum(m["junk"].values())
    assert Counter(r["planted"]["topic"] for r in kinds["junk"]) == Counter({k: v for k, v in m["junk"].items() if v})
    assert set(m["junk"]) == set(dc.JUNK_KINDS) and all(m["junk"].values())
    assert len(kinds["exact_dup"]) == m["exact_duplicates"] > 0
    assert len(kinds["near_dup"]) == m["near_duplicates"] > 0
    assert len(kinds["leak"]) == m["leak_docs"] > 0
    assert Counter(r["planted"]["genre"] for r in kinds["clean"]) == Counter(m["genres"])
    assert set(m["genres"]) == {"story", "explanation", "arith"}
    # ~3-6 MB of text at the default size: here 1/10 of it
    assert 0.25e6 < m["text_bytes"] == sum(len(r["text"].encode()) for r in records) < 0.7e6


def test_duplicates_point_at_their_source(corpus):
    records, m = corpus
    by_id = {r["id"]: r for r in records}
    texts = Counter(r["text"] for r in records)
    for r in records:
        p = r["planted"]
        if p["kind"] == "exact_dup":
            assert by_id[p["of"]]["text"] == r["text"] and by_id[p["of"]]["planted"]["kind"] == "clean"
        elif p["kind"] == "near_dup":
            src = by_id[p["of"]]
            assert src["planted"]["kind"] == "clean" and src["text"] != r["text"]
            j = _jac(src["text"], r["text"])
            assert 0.82 <= j <= 0.9 and abs(j - p["jaccard5"]) < 1e-3
        else:
            # only exact duplicates (and their sources) share a text
            assert texts[r["text"]] == 1 or any(
                q["planted"].get("of") == r["id"] for q in records if q["planted"]["kind"] == "exact_dup"
            )
    js = [r["planted"]["jaccard5"] for r in records if r["planted"]["kind"] == "near_dup"]
    assert m["near_duplicate_jaccard5"]["min"] == min(js) and m["near_duplicate_jaccard5"]["max"] == max(js)
    # one copy removed per extra copy: sources + copies = distinct texts lost by exact dedup
    assert len(texts) == N_DOCS - m["exact_duplicates"]


def test_clean_documents_are_far_from_each_other(corpus):
    """Templated text must not look like near duplicates to MinHash (else dedup removes unplanned documents)."""
    records, _ = corpus
    clean = [r["text"] for r in records if r["planted"]["kind"] == "clean" and r["planted"]["genre"] != "arith"][:260]
    grams = [_grams(t, 5) for t in clean]
    worst = max(len(a & b) / len(a | b) for i, a in enumerate(grams) for b in grams[i + 1 :])
    assert worst < 0.65, worst


def test_only_leak_documents_contain_benchmark_ngrams(corpus):
    records, m = corpus
    bench = dc.benchmark(m["benchmark"]["n"], m["benchmark"]["seed"])
    # the demo's benchmark is the eval stage's built-in `arith` task, item for item
    from ledgerlm.tasks import benchmark_texts

    assert [p.question + "\n" + p.solution for p in bench] == benchmark_texts("arith")
    # the benchmark as decontamination sees it: question + answer joined, and the question alone
    for texts in ([p.question + "\n" + p.solution for p in bench], [p.question for p in bench]):
        grams = set().union(*(_grams(t, 13) for t in texts))
        hit = [r for r in records if _grams(r["text"], 13) & grams]
        assert sorted(r["id"] for r in hit) == sorted(r["id"] for r in records if r["planted"]["kind"] == "leak")
    leaked = [k for r in records for k in r["planted"].get("leaks", [])]
    assert sorted(leaked) == m["leaked_items"] and len(set(leaked)) == m["leak_docs"]
    assert all(arith.split_of(k) == "heldout" for k in leaked)
    for r in records:
        for k in r["planted"].get("leaks", []):
            p = next(p for p in bench if p.key == k)
            assert dc.qa_text(p) in r["text"]  # verbatim


def test_boilerplate_lines_are_counted_and_stand_out(corpus):
    records, m = corpus
    lines = Counter(x for r in records for x in r["text"].split("\n"))
    assert {b: lines[b] for b in dc.BOILERPLATE} == m["boilerplate_lines"]
    assert (
        sum("boilerplate" in r["planted"] for r in records if r["planted"]["kind"] == "clean") == m["boilerplate_docs"]
    )
    # a segment-dedup threshold exists that removes every boilerplate line and no content line
    content = Counter()
    for r in records:
        if r["planted"]["kind"] != "junk":
            for x in {" ".join(x.lower().split()) for x in r["text"].split("\n") if x not in dc.BOILERPLATE}:
                content[x] += len(x) >= 20
    clean_boiler = Counter(x for r in records if r["planted"]["kind"] == "clean" for x in r["text"].split("\n"))
    assert max(content.values()) == m["max_docs_sharing_a_content_line"] < min(clean_boiler[b] for b in dc.BOILERPLATE)


def test_worksheets_are_gsm8k_format_and_correct(corpus):
    from ledgerlm.tasks.gsm8k import extract_strict

    records, _ = corpus
    sheets = [r["text"] for r in records if r["planted"]["genre"] == "arith"]
    n = 0
    for text in sheets:
        for block in (b for b in text.split("\n\n") if b.startswith("Question: ")):
            q, a = block.split("\nAnswer: ")
            assert re.search(r"\n#### \d+$", a)
            # every equation in the worked solution is right, and the last result is the final answer
            eqs = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", a)
            ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "/": int.__floordiv__}
            assert eqs and all(ops[o](int(x), int(y)) == int(z) for x, o, y, z in eqs)
            assert extract_strict(a) == eqs[-1][3]
            n += 1
    assert n > 100


def test_quality_gates_separate_junk_from_clean(corpus):
    """With the demo's two math-friendly thresholds, the curate gates drop every junk document and nothing else."""
    from ledgerlm.data.filters import QualityGates
    from ledgerlm.pipeline import load_recipe

    records, _ = corpus
    gates = QualityGates(load_recipe("demo").section("curate").quality)  # the demo's settings, as the demo runs them
    verdict = Counter((r["planted"]["kind"] == "junk", gates.check(r["text"])[0] is None) for r in records)
    assert verdict == Counter(
        {
            (True, False): sum(r["planted"]["kind"] == "junk" for r in records),
            (False, True): sum(r["planted"]["kind"] != "junk" for r in records),
        }
    )


def test_sft_and_preference_data():
    from ledgerlm.components.chat import validate
    from ledgerlm.tasks.gsm8k import extract_strict

    convs = demo_sft_conversations(seed=1, n=300)
    assert convs == demo_sft_conversations(seed=1, n=300)
    assert {c["kind"] for c in convs} == {"arith", "explanation", "story", "animals", "numbers"}
    held = {p.question for p in dc.benchmark()}
    for c in convs:
        msgs = validate(c["messages"])
        assert [m["role"] for m in msgs] == ["user", "assistant"] and msgs[1]["content"].strip()
        if c["kind"] == "arith":
            assert msgs[0]["content"] not in held and extract_strict(msgs[1]["content"]) is not None
    pairs = demo_preference_pairs(seed=1, n=200)
    assert len(pairs) == 200 and {p["kind"] for p in pairs} >= {"off_topic", "unhelpful"}
    assert all(p["chosen"] != p["rejected"] and p["prompt"] for p in pairs)


def test_sft_arith_share_is_an_option_of_the_demo_data():
    """`sft.data: demo:arith=F` sets the share of worked arithmetic answers; the other kinds keep their proportions,
    and the default (0.4) is the plain "demo" data."""
    from collections import Counter

    from ledgerlm.components.chat import demo_options, load_conversations

    assert demo_options("demo") == {} and demo_options("demo:arith=0.7") == {"arith_share": 0.7}
    for bad in ("demo:arith=1.5", "demo:arith=x", "demo:stories=0.2", "demo:arith"):
        with pytest.raises(ValueError, match="arith=F"):
            demo_options(bad)
    assert demo_sft_conversations(seed=1, n=300, arith_share=0.4) == demo_sft_conversations(seed=1, n=300)
    base, more = (Counter(c["kind"] for c in demo_sft_conversations(1, 2000, arith_share=a)) for a in (0.4, 0.7))
    assert 0.36 < base["arith"] / 2000 < 0.44 and 0.66 < more["arith"] / 2000 < 0.74
    assert 1.0 < more["explanation"] / more["story"] < 1.6  # 25 : 20 stays about 1.25
    assert demo_sft_conversations(1, 200, arith_share=0.0) and all(
        c["kind"] != "arith" for c in demo_sft_conversations(1, 200, arith_share=0.0)
    )
    convs = load_conversations("demo:arith=0.7", limit=300)
    assert len(convs.messages) == 300


def test_python_m_ledgerlm_demo_writes_every_file(tmp_path, capsys):
    assert demo_main([str(tmp_path), "--n-docs", "200", "--n-sft", "20", "--n-pref", "10", "--benchmark-n", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["n_docs"] == 200
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert sum(f["docs"] for f in manifest["files"]) == 200
    lines = {name: (tmp_path / name).read_bytes().count(b"\n") for name in ("sft.jsonl", "preference.jsonl")}
    assert lines == {"sft.jsonl": 20, "preference.jsonl": 10}
    assert (tmp_path / "benchmark.jsonl").read_bytes().count(b"\n") == 50


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="too small"):
        dc.generate_demo_corpus(0, n_docs=10)
    with pytest.raises(ValueError, match="unknown fraction"):
        dc.generate_demo_corpus(0, n_docs=200, fractions={"junkk": 0.1})
    with pytest.raises(ValueError, match=r"\[0, 0.5\]"):
        dc.generate_demo_corpus(0, n_docs=200, fractions={"junk": -0.1})
    with pytest.raises(ValueError, match="benchmark_n"):
        dc.generate_demo_corpus(0, n_docs=200, benchmark_n=0)


def test_curate_removes_exactly_what_was_planted(tmp_path):
    """End to end through the real curate stage: each gate catches its planted quantity, nothing else is lost."""
    from ledgerlm.data.curate import Config, curate
    from ledgerlm.data.decontam import DecontamConfig
    from ledgerlm.data.segdedup import SegDedupConfig
    from ledgerlm.data.sources import SourceSpec
    from ledgerlm.pipeline import load_recipe

    demo = load_recipe("demo").section("curate")  # the demo's settings, as the demo runs them

    m = dc.write_demo_corpus(tmp_path / "corpus", seed=2, n_docs=400)
    dc.write_benchmark(tmp_path / "bench.jsonl", m["benchmark"]["n"], m["benchmark"]["seed"])
    cfg = Config(
        sources=[SourceSpec(name="demo", path=str(tmp_path / "corpus"))],
        quality=demo.quality,
        near_dedup=demo.near_dedup,
        segment_dedup=SegDedupConfig(min_docs=m["max_docs_sharing_a_content_line"] + 1),
        decontam=DecontamConfig(files=[f"arith={tmp_path / 'bench.jsonl'}"]),  # = the `arith` task (tested above)
    )
    res = curate(cfg, tmp_path / "out")["counters"]
    steps = {s["step"]: s for s in res["by_step"]}
    assert steps["quality"]["in"] - steps["quality"]["kept"] == m["junk_total"]
    # with the demo's LSH settings a planted pair is missed with probability < 1e-4
    assert steps["near_dedup"]["dropped"] == {"near_dup": m["exact_duplicates"] + m["near_duplicates"]}
    assert steps["decontaminate"]["dropped"] == {"contaminated:arith": m["leak_docs"]}
    # C4 removes policy lines (cookies, terms of use) itself, on the record; the other boilerplate lines are left to
    # segment dedup
    from ledgerlm.data.quality import POLICY_SUBSTRINGS

    policy = {k for k in m["boilerplate_lines"] if any(p in k.lower() for p in POLICY_SUBSTRINGS)}
    assert res["boilerplate_segments"] == sum(1 for k, v in m["boilerplate_lines"].items() if v and k not in policy)
    edits = steps["quality"]["c4_edits"]
    assert edits["removed"]["policy"]["lines"] > 0 and edits["docs_edited"] >= edits["removed"]["policy"]["lines"]
    # nothing else is lost
    assert steps["decontaminate"]["kept"] == res["kept"] == m["expected_kept_docs"]


@pytest.mark.parametrize("name", ["smollm-135m-1gpu", "smollm-135m-torchrun", "curate-slurm", "curate-ray"])
def test_real_scale_recipes_validate_and_agree(name):
    """The shipped recipes validate against the stages' configs, and their numbers agree with each other."""
    from ledgerlm.pipeline import load_recipe

    r = load_recipe(name)
    cur, pre = r.section("curate"), r.section("pretrain")
    sources = {s.name for s in cur.sources}
    assert {"fineweb_edu", "finemath", "code", "reasoning"} == sources
    assert all(set(p["mixture"]) <= sources for p in pre.phases)
    total = sum(int(p["tokens"]) for p in pre.phases)
    assert pre.tokens == total and pre.model == "smollm-135m" and pre.seq_len == 2048
    # the LR decays over exactly the last phase
    assert abs(pre.decay_frac - int(pre.phases[-1]["tokens"]) / total) < 0.01
    assert set(r.section("eval").tasks) >= {
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "piqa",
        "winogrande",
        "lambada_openai",
    }
    assert set(cur.decontam.tasks) >= set(r.section("eval").tasks)  # never train on what is evaluated
    assert r.section("tokenize").tokenizer == "HuggingFaceTB/SmolLM-135M"
    assert (pre.parallel == "ddp") == (name == "smollm-135m-torchrun")
    assert cur.executor.kind == {"curate-slurm": "slurm", "curate-ray": "ray"}.get(name, "local")
