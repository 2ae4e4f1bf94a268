"""Quality gates, sources, segment dedup, decontamination spans, and the curate/contamination/inspect commands."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from ledgerlm.data import segdedup
from ledgerlm.data.decontam import DecontamConfig, Matcher, build_benchmark, cut_spans
from ledgerlm.data.filters import QualityConfig, QualityGates
from ledgerlm.data.sources import SourceSpec, doc_id, iter_records

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THREE = (
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. He had done this for forty years, "
    "and the ships that passed in the night never knew his name. One winter a storm broke the great window, and he "
    "sat with the flame until morning so that no boat would be lost on the rocks below the cliff."
)
GOOD = (  # six sentences, ~100 words: passes every gate at datatrove's FineWeb settings
    THREE + " In spring the village children came to ask him about the sea. He told them of whales, of wrecks, and of "
    "the lights of distant towns. When he grew too old to climb, his granddaughter carried the oil up for him."
)
PLAIN = GOOD.replace(".", "").replace(",", "").split()
NO_STOP = (
    "Red apples grow fast in warm valleys. Blue rivers run deep near quiet towns. Tall trees bend slowly under heavy "
    "snow. Young foxes play outside old barns. Bright lamps glow inside small houses every night. Cold winds blow over "
    "grey hills. Green frogs sing loudly beside muddy ponds. Little birds build nests among thorny bushes. Brave "
    "sailors cross stormy seas. Quiet monks read ancient books."
)


@pytest.mark.parametrize(
    "text,reason",
    [
        (GOOD, None),
        ("Too few words here.", "quality:gopher_top_2gram"),  # datatrove: one 2-gram is over 20% of a tiny text
        (" ".join(PLAIN[:40]) + ".", "quality:gopher_word_count"),
        (GOOD + " " + " ".join(f"supercalifragilistic{i:03d}" for i in range(80)), "quality:gopher_mean_word_length"),
        (GOOD + " " + " ".join("#" + w for w in PLAIN[:20]), "quality:gopher_symbol_ratio"),
        ("\n".join("- " + " ".join(PLAIN[i : i + 8]) + "." for i in range(0, 96, 8)), "quality:gopher_bullet_lines"),
        (NO_STOP, "quality:gopher_stop_words"),
        ((GOOD + "\n") * 3, "quality:gopher_dup_lines"),
        (GOOD + " Lorem ipsum dolor sit amet.", "quality:c4_lorem_ipsum"),
        (GOOD + " {x}", "quality:c4_curly_bracket"),
        (THREE, "quality:c4_too_few_sentences"),
        ("\n".join(" ".join(PLAIN[i : i + 6]) for i in range(0, 90, 6)) + ".", "quality:fineweb_line_punct"),
    ],
)
def test_quality_gates(text, reason):
    got, details, score = QualityGates(QualityConfig()).check(text)
    assert got == reason, (got, details)
    assert 0.0 <= score <= 1.0
    if reason:
        assert "value" in details and "threshold" in details and details["ref"].startswith("datatrove ")


def test_quality_gates_can_be_switched_off():
    cfg = QualityConfig(
        min_words=None, c4_min_sentences=None, min_line_punct_ratio=None, min_stop_words=None, top_ngram_char_frac={}
    )
    assert QualityGates(cfg).check("A few words without an end")[0] == "quality:fineweb_short_lines"
    cfg.max_short_lines_ratio = None
    assert QualityGates(cfg).check("A few words without an end")[0] is None
    assert QualityGates(QualityConfig(enabled=False)).check("x")[0] is None


def test_sources_formats_sharding_and_bad_input(tmp_path):
    import zstandard

    lines = [json.dumps({"text": f"doc {i}", "id": i}) for i in range(10)] + ["{oops", json.dumps({"text": None})]
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))
    spec = SourceSpec(name="z", path=str(tmp_path / "a.jsonl.zst"), id_field="id")
    recs = list(iter_records(spec))
    assert [r.text for r in recs[:10]] == [f"doc {i}" for i in range(10)] and recs[3].orig_id == "3"
    assert [(r.reason, r.line) for r in recs[10:]] == [("malformed:json", 11), ("malformed:type", 12)]
    # two tasks split the records without overlap or loss; ids do not depend on the split
    shards = [list(iter_records(spec, r, 2)) for r in range(2)]
    assert sorted(r.id for s in shards for r in s) == sorted(r.id for r in recs)
    assert recs[0].id == doc_id("z", "doc 0") != doc_id("other", "doc 0")
    assert len(list(iter_records(SourceSpec(name="z", path=str(tmp_path / "a.jsonl.zst"), limit=4)))) == 4
    (tmp_path / "t.txt").write_text("first block line\nstill first\n\n\nsecond block\n")
    blocks = list(iter_records(SourceSpec(name="t", path=str(tmp_path / "t.txt"), text_split="blank_line")))
    assert [(b.text, b.line) for b in blocks] == [("first block line\nstill first", 1), ("second block", 5)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.json").write_text('{\n  "not": "data"\n}\n')
    (tmp_path / "d" / ".tmp.jsonl").write_text("partial")
    (tmp_path / "d" / "a.jsonl").write_text("\ufeff" + json.dumps({"text": "only this"}) + "\n")
    assert [r.text for r in iter_records(SourceSpec(name="d", path=str(tmp_path / "d")))] == ["only this"]
    (tmp_path / "x.jsonl").write_text(json.dumps({"prompt": "p", "response": {"a": "r"}}) + "\n")
    assert next(iter_records(SourceSpec(name="x", path=str(tmp_path / "x.jsonl"), text_field="*"))).text == "p\nr"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_records(SourceSpec(name="m", path=str(tmp_path / "missing.jsonl"))))


def test_segment_plan_and_apply():
    cfg = segdedup.SegDedupConfig(min_docs=2, min_chars=10)
    docs = ["intro one\nThis is the shared footer line.\nend one", "This is the shared footer line.\nother text"]
    hs = [segdedup.doc_segment_hashes(d, cfg) for d in docs]
    h = np.concatenate(hs)
    r = np.concatenate([np.full(len(x), i) for i, x in enumerate(hs)])
    boiler, owner = segdedup.plan(h, r, cfg.min_docs)
    assert len(boiler) == 1 and owner[0] == 0
    assert segdedup.apply(docs[0], cfg, boiler, owner, 0) == (docs[0], 0)
    assert segdedup.apply(docs[1], cfg, boiler, owner, 1) == ("other text", 1)


def test_segment_hashes_of_a_document_equal_hashing_each_segment():
    """The whole-document normalisation of lines gives each line's `segment_hash` (tabs, runs of spaces, every line
    break of str.splitlines, blank lines, final sigma and 'İ' whose lowercase depends on context or is longer); text
    with non-ASCII whitespace and paragraphs take the per-segment path."""
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    letters = list("abcXYZ ΣσςΑİıé日\u0307.,'") + ["ΑΣ", "İΣ"]
    rng = random.Random(0)
    for alphabet in (
        [c for c in spaces if c.isascii()] * 4 + list("abcXYZ .,'") + ["\r\n", "  ", "\t\t"],
        [c for c in spaces if c.isascii()] * 4 + letters + ["\r\n", "  ", "\t\t"],
        spaces * 2 + letters + ["\r\n"],
    ):
        for unit, min_chars in (("line", 0), ("line", 3), ("line", 20), ("paragraph", 3)):
            cfg = segdedup.SegDedupConfig(unit=unit, min_chars=min_chars)
            for _ in range(2000):
                text = "".join(rng.choices(alphabet, k=rng.randint(0, 60)))
                want = [segdedup.segment_hash(x, min_chars) for x in segdedup.split_segments(text, unit)]
                assert segdedup.segment_hashes(text, cfg) == want, (unit, min_chars, repr(text))


@pytest.mark.parametrize("unit", ["line", "paragraph"])
def test_words_left_after_segment_removal_are_the_words_minus_the_removed_segments_words(unit):
    """Curate counts the words left as (words - words of the removed segments) instead of re-splitting the text."""
    rng = random.Random(0)
    pieces = [
        "alpha beta",
        "gamma",
        " ",
        "\n",
        "\n\n",
        "\r\n",
        "\t",
        "  \n \n",
        "a shared footer",
        "x\u2028y",
        "\u3000w",
    ]
    cfg = segdedup.SegDedupConfig(unit=unit, min_chars=1, min_docs=2)
    removed = 0
    for _ in range(500):
        text = "".join(rng.choices(pieces, k=rng.randint(0, 30)))
        hs = np.array(sorted({h for h in segdedup.segment_hashes(text, cfg) if h is not None}), dtype=np.uint64)
        boiler = hs[::2]  # every other distinct segment: boilerplate owned by another document
        gone: list = []
        new, k = segdedup.apply(text, cfg, boiler, np.ones(len(boiler), np.int64), 0, removed_segments=gone)
        assert len(new.split()) == len(text.split()) - sum(len(s.split()) for s in gone) and len(gone) == k
        removed += k
    assert removed > 100


def test_segment_paragraph_unit():
    cfg = segdedup.SegDedupConfig(unit="paragraph", min_docs=2, min_chars=10)
    foot = "Thanks for reading this far.\nSee you next week!"
    docs = ["Story one starts here.\n\n" + foot + "\n\nThe end of one.", "Story two.\n\n" + foot]
    hs = [segdedup.doc_segment_hashes(d, cfg) for d in docs]
    r = np.concatenate([np.full(len(x), i) for i, x in enumerate(hs)])
    boiler, owner = segdedup.plan(np.concatenate(hs), r, cfg.min_docs)
    assert len(boiler) == 1
    assert segdedup.apply(docs[1], cfg, boiler, owner, 1) == ("Story two.", 1)
    assert segdedup.apply(docs[0], cfg, boiler, owner, 1)[0] == "Story one starts here.\n\nThe end of one."


def test_decontam_n_choice_and_cut_margin():
    cfg = DecontamConfig(margin=20, min_piece_chars=10)
    items = ["one two three four five six seven eight nine ten eleven twelve thirteen fourteen"] * 3 + ["tiny item"]
    b = build_benchmark("toy", items, cfg)
    assert b.n == 8 and b.short_items == 1  # 5th percentile of lengths clamped to min_n
    prefix, suffix = "A" * 100 + " ", " " + "B" * 100
    text = prefix + "One, two THREE four five six seven eight nine ten." + suffix
    found, pos, s, e = Matcher([b]).match(text, with_positions=True)
    assert list(found) == ["toy"]
    new, spans = cut_spans(text, pos["toy"], b.n, s, e, cfg)
    start, end = text.index("One"), text.index("ten.") + 3
    assert spans == 1 and new == text[: start - 20].strip() + "\n\n" + text[end + 20 :].strip()  # 20-char margins
    assert cut_spans(text, pos["toy"], b.n, s, e, DecontamConfig(margin=200))[0] is None  # nothing left


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_curate_through_the_ledger_and_contamination_readonly(tmp_path, capsys):
    if not (DATA / "piqa" / "valid.jsonl").is_file():
        pytest.skip("shared data not available")
    from ledgerlm.cli import main

    piqa = [json.loads(x) for x in (DATA / "piqa" / "valid.jsonl").read_text().splitlines()[:40]]
    leak = piqa[0]["goal"] + " " + piqa[0]["sol1"]
    docs = [GOOD, GOOD.replace("lighthouse", "watchtower"), GOOD + " " + leak, "bad", "{nope"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": d}) if d != "{nope" else d for d in docs) + "\n")
    run = tmp_path / "run"
    rc = main(
        ["curate", "--input", f"demo={src}", "--decontaminate", str(DATA / "piqa" / "valid.jsonl"), "--out", str(run)]
    )
    assert rc == 0
    rec = json.loads((run / "ledger" / "curate.json").read_text())
    c = rec["counters"]
    assert c["read"] == 5 and c["kept"] == 1
    assert c["dropped"] == {"near_dup": 1, "contaminated:valid": 1, "malformed:json": 1, "quality:gopher_word_count": 1}
    assert rec["metrics"]["contamination"][0]["docs_touched"] == 1
    assert {"kept", "excluded", "contamination_md", "contamination_csv"} <= set(rec["outputs"])
    capsys.readouterr()
    assert main(["inspect", str(run), "--reason", "contaminated", "-n", "1"]) == 0
    assert "contaminated:valid" in capsys.readouterr().out
    # the contamination command reads a dataset (here: the SFT mixture plus a leak) without changing it
    sft = tmp_path / "sft.jsonl"
    rows = [json.loads(x) for x in (DATA / "sft" / "dolly_hhrlhf_train_small.jsonl").read_text().splitlines()[:200]]
    rows.append({"prompt": leak, "response": "ok"})
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = _sha(sft)
    assert (
        main(
            [
                "contamination",
                str(sft),
                "--against",
                f"piqa={DATA / 'piqa' / 'valid.jsonl'}",
                "--out",
                str(tmp_path / "tab"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert _sha(sft) == before
    line = next(x for x in out.splitlines() if x.startswith("| piqa |"))
    assert line.split("|")[4].strip() == "1" and line.split("|")[7].strip() == "1"  # items hit, docs touched
    assert (tmp_path / "tab" / "contamination.csv").read_text().startswith("benchmark,")


def test_exact_jaccard_check_rejects_loose_candidates(tmp_path):
    from ledgerlm.data.curate import Config, curate
    from ledgerlm.data.curate.config import NearDedupConfig

    words = GOOD.split()
    other = " ".join(w if i % 8 else f"zz{i}" for i, w in enumerate(words))  # shingle Jaccard about 0.25
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": GOOD}) + "\n" + json.dumps({"text": other}) + "\n")
    src = [SourceSpec(name="s", path=str(tmp_path / "in.jsonl"))]
    loose = NearDedupConfig(bands=56, rows=2, exact_jaccard=None)  # 2-row bands, unverified: any overlap drops
    c1 = curate(Config(sources=src, near_dedup=loose), tmp_path / "a")["counters"]
    assert c1["dropped"].get("near_dup") == 1
    strict = NearDedupConfig(bands=56, rows=2)  # verified by default (exact_jaccard 0.75)
    c2 = curate(Config(sources=src, near_dedup=strict), tmp_path / "b")["counters"]
    assert c2["kept"] == 2 and "near_dup" not in c2["dropped"]


def test_hf_streaming_source_offline(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"doc {i}", "n": i}) + "\n" for i in range(6)))
    spec = SourceSpec(name="h", format="hf", hf_name="json", hf_data_files=str(tmp_path / "d.jsonl"), id_field="n")
    recs = list(iter_records(spec))
    assert [(r.text, r.orig_id, r.line) for r in recs[:2]] == [("doc 0", "0", 1), ("doc 1", "1", 2)]
    assert sorted(r.text for k in range(2) for r in iter_records(spec, k, 2)) == [r.text for r in recs]
    assert len(list(iter_records(SourceSpec(**{**spec.__dict__, "limit": 3})))) == 3


def test_resume_skips_completed_tasks(tmp_path):
    from ledgerlm.data.curate import Config, curate

    (tmp_path / "in.jsonl").write_text(json.dumps({"text": GOOD}) + "\n{broken\n")
    cfg = Config(sources=[SourceSpec(name="s", path=str(tmp_path / "in.jsonl"))], keep_work=True)
    first = curate(cfg, tmp_path / "out", logs_dir=tmp_path / "logs")
    kept = (tmp_path / "out" / "kept" / "part-00000.jsonl").read_bytes()
    (tmp_path / "in.jsonl").write_text("")  # a resumed run must not read the sources again
    again = curate(cfg, tmp_path / "out", resume=True, logs_dir=tmp_path / "logs")
    assert again["counters"] == first["counters"] and again["counters"]["read"] == 2
    assert (tmp_path / "out" / "kept" / "part-00000.jsonl").read_bytes() == kept
    from ledgerlm.config import ConfigError

    with pytest.raises(ConfigError, match="input is empty"):  # not resuming: reads the (now empty) input again
        curate(cfg, tmp_path / "out", logs_dir=tmp_path / "logs")


# ----------------------------------------------------------------------------- per-source quality gates

CODEY = GOOD + " In code the lamp is lit with {lamp.on()} before dark."  # fails only the C4 curly-bracket gate


def _two_sources(tmp_path, override: dict | None) -> str:
    """A recipe whose `web` and `code` sources hold the same two documents; only `code` carries `override`."""
    import yaml

    for name in ("web", "code"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in (GOOD, CODEY)))
    code = {"name": "code", "path": str(tmp_path / "code.jsonl")}
    if override is not None:
        code["quality"] = override
    recipe = {
        "name": "gates",
        "stages": ["curate"],
        "curate": {
            "sources": [{"name": "web", "path": str(tmp_path / "web.jsonl")}, code],
            "near_dedup": {"enabled": False},  # the same text in two sources is not what this test is about
        },
    }
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_source_quality_override_keeps_what_the_stage_gates_drop_and_is_recorded(tmp_path):
    from ledgerlm.cli import main

    recipe = _two_sources(tmp_path, {"c4_curly_bracket": False, "min_words": 10})
    run = tmp_path / "run"
    assert main(["curate", "--recipe", recipe, "--out", str(run)]) == 0
    kept = [
        json.loads(x) for p in sorted((run / "curate" / "kept").glob("*.jsonl")) for x in p.read_text().splitlines()
    ]
    excl = [json.loads(x) for p in (run / "curate" / "excluded").glob("*.jsonl") for x in p.read_text().splitlines()]
    assert sorted((d["source"], d["text"] == CODEY) for d in kept) == [("code", False), ("code", True), ("web", False)]
    assert [(d["source"], d["reason"], d["text"] == CODEY) for d in excl] == [("web", "quality:c4_curly_bracket", True)]
    assert excl[0]["details"]["threshold"] is True
    rec = json.loads((run / "ledger" / "curate.json").read_text())
    assert rec["counters"]["dropped"] == {"quality:c4_curly_bracket": 1}
    assert rec["counters"]["quality_dropped_by_source"] == {"web": {"quality:c4_curly_bracket": 1}}
    # the audit trail: the override is in the config (so in its sha), the effective gates per source in `extra`
    assert rec["config"]["sources"][1]["quality"] == {"c4_curly_bracket": False, "min_words": 10}
    assert rec["config"]["sources"][0]["quality"] is None
    qbs = rec["extra"]["quality_by_source"]
    assert list(qbs) == ["code"] and qbs["code"]["changed"] == {"c4_curly_bracket": False, "min_words": 10}
    assert qbs["code"]["effective"] == {**rec["config"]["quality"], "c4_curly_bracket": False, "min_words": 10}


def test_source_quality_override_changes_the_config_sha_and_shares_gates(tmp_path):
    from ledgerlm.config import to_dict
    from ledgerlm.data.curate import Config, quality_by_source
    from ledgerlm.data.curate.config import source_gates
    from ledgerlm.ledger import canonical_sha256
    from ledgerlm.recipe import build_recipe, load_raw_recipe

    def sha(override):
        raw, path = load_raw_recipe(_two_sources(tmp_path, override))
        return canonical_sha256(to_dict(build_recipe(raw, path).section("curate")))

    assert len({sha(None), sha({"min_words": 10}), sha({"min_words": 11}), sha({"min_words": "11"})}) == 3
    same = {"min_stop_words": None, "top_ngram_char_frac": {}}
    cfg = Config(
        sources=[
            SourceSpec(name="a", path="x"),
            SourceSpec(name="b", path="x", quality=same),
            SourceSpec(name="c", path="x", quality=dict(same)),
            SourceSpec(name="d", path="x", quality={"min_words": 50}),  # = curate.quality: no gates of its own
        ]
    )
    g = source_gates(cfg)
    assert g["a"] is g["d"] and g["b"] is g["c"] and g["a"] is not g["b"]
    assert g["a"].cfg is cfg.quality and g["b"].cfg.min_stop_words is None and g["b"].cfg.min_words == 50
    assert sorted(quality_by_source(cfg)) == ["b", "c"]


@pytest.mark.parametrize(
    "override,message",
    [
        ({"min_wrds": 10}, r"curate\.sources\[1\]\.quality\.min_wrds: unknown key"),
        ({"min_words": "lots"}, r"curate\.sources\[1\]\.quality\.min_words: expected"),
        ({"dup_ngram_char_frac": {100: 0.1}}, r"curate\.sources\[1\]\.quality: n-gram sizes must be in 1\.\.64"),
        ([1, 2], r"curate\.sources\[1\]\.quality: expected"),
    ],
)
def test_bad_source_quality_override_fails_before_anything_runs(tmp_path, capsys, override, message):
    import re

    from ledgerlm.cli import main
    from ledgerlm.config import ConfigError
    from ledgerlm.data.curate import Config, curate

    recipe = _two_sources(tmp_path, override)
    assert main(["plan", recipe]) == 2
    err = capsys.readouterr().err
    assert "gates.yaml" in err and re.search(message, err), err
    assert main(["curate", "--recipe", recipe, "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run" / "curate").exists()
    if isinstance(override, dict) and "min_wrds" in override:  # a Config built in code fails the same way
        src = [SourceSpec(name="a", path=str(tmp_path / "web.jsonl"), quality=override)]
        with pytest.raises(ConfigError, match=r"sources\[0\]\.quality\.min_wrds: unknown key"):
            curate(Config(sources=src), tmp_path / "direct")
        assert not (tmp_path / "direct").exists()


def test_override_reaches_a_list_item(tmp_path):
    """`curate.sources[1].quality.x=v` on the command line sets one source's gate; a bad index names the key."""
    from ledgerlm.config import ConfigError, apply_overrides, load_raw_recipe

    raw, _ = load_raw_recipe(_two_sources(tmp_path, None))
    out = apply_overrides(raw, ["curate.sources[1].quality.c4_curly_bracket=false", "curate.sources[0].limit=1"])
    assert out["curate"]["sources"][1]["quality"] == {"c4_curly_bracket": False}
    assert out["curate"]["sources"][0]["limit"] == 1
    assert "quality" not in raw["curate"]["sources"][1] and "limit" not in raw["curate"]["sources"][0]  # a copy
    with pytest.raises(ConfigError, match=r"curate\.sources\[2\]: sources has 2 items"):
        apply_overrides(raw, ["curate.sources[2].limit=1"])
    with pytest.raises(ConfigError, match=r"curate\.near_dedup\[0\]: near_dedup is not a list"):
        apply_overrides(raw, ["curate.near_dedup[0].bands=4"])


def test_c4_edits_are_kept_recorded_and_inspectable_and_ids_traceable(tmp_path, capsys):
    """C4 removes lines: the kept text is the edited text, c4_edits.jsonl and the ledger say what went and why,
    `inspect --reason c4_edit` shows it; kept + excluded = read; the source's own `id` stays on the kept record."""
    from ledgerlm.cli import main
    from ledgerlm.data.inspect_docs import inspect_main

    page = GOOD + "\nPlease enable JavaScript to see the comments.\nMenu\nWe use cookies, see our privacy policy."
    other = " ".join(reversed(GOOD.split())) + "."  # no 5-gram in common with GOOD
    docs = [{"id": "page-1", "text": page}, {"id": 7, "text": other}, {"text": "Too short."}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    run = tmp_path / "run"
    assert main(["curate", "--input", f"web={tmp_path / 'in.jsonl'}", "--out", str(run)]) == 0
    cur = run / "curate"
    kept = {
        r["orig_id"]: r for p in (cur / "kept").glob("*.jsonl") for r in map(json.loads, p.read_text().splitlines())
    }
    assert set(kept) == {"page-1", "7"} and kept["page-1"]["text"] == GOOD
    assert kept["page-1"]["id"] == doc_id("web", page)  # the id is of the text as read
    edits = [json.loads(x) for x in (cur / "c4_edits.jsonl").read_text().splitlines()]
    assert len(edits) == 1 and edits[0]["id"] == kept["page-1"]["id"]
    assert edits[0]["removed"] == {"javascript": [1, 45], "too_few_words": [1, 4], "policy": [1, 39]}
    rec = json.loads((run / "ledger" / "curate.json").read_text())["counters"]
    assert rec["kept"] + sum(rec["dropped"].values()) == rec["read"] == 3
    q = next(s for s in rec["by_step"] if s["step"] == "quality")
    assert q["c4_edits"]["docs_edited"] == 1 and q["c4_edits"]["removed"]["policy"] == {"lines": 1, "chars": 39}
    assert q["tokens_in"] - q["tokens_dropped"] - q["tokens_kept"] == q["c4_edits"]["tokens_removed"] == 15
    capsys.readouterr()
    assert inspect_main([str(run), "--reason", "c4_edit:javascript"]) == 0
    out = capsys.readouterr().out
    assert "[javascript] 'Please enable JavaScript to see the comments.'" in out and "[policy]" not in out
    assert inspect_main([str(run)]) == 0 and "--reason c4_edit" in capsys.readouterr().out


def test_retired_gate_keys_of_an_old_recipe_load_with_a_warning():
    """A run recorded before the datatrove-parity gates still loads its recipe: the retired keys are ignored, said."""
    import warnings

    from ledgerlm.config import ConfigError, from_dict
    from ledgerlm.data.filters import QualityConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = from_dict(QualityConfig, {"c4_max_javascript_lines_ratio": 0.1, "min_words": 40}, "curate.quality")
    assert cfg.min_words == 40 and not hasattr(cfg, "c4_max_javascript_lines_ratio")
    assert any("curate.quality.c4_max_javascript_lines_ratio: ignored" in str(w.message) for w in caught)
    with pytest.raises(ConfigError, match="c4_no_such_key"):
        from_dict(QualityConfig, {"c4_no_such_key": 1}, "curate.quality")
