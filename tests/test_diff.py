"""`ledgerlm diff RUN_A RUN_B`: two runs that differ in one curation knob, a run and its re-run, runs of different
stage lists, a report against a baseline, and bad input.

The runs are the session's demo-fast run cut to curate → tokenize → pretrain (4 steps) → eval: A keeps the
session run's curate and tokenize records (skipped), B changes `curate.near_dedup.exact_jaccard`, R is A re-run
from scratch with `--force`.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ledgerlm import ledger
from ledgerlm.cli import main
from ledgerlm.eval.compare import compare
from ledgerlm.eval.eval_stage import load_results
from ledgerlm.io import iter_jsonl

SMALL = ["stages=[curate,tokenize,pretrain,eval,audit]", "pretrain.steps=4", "pretrain.eval_every=2"]
KNOB = "near_dedup.exact_jaccard"


def _trimmed_copy(src, dst, keep: set[str]):
    """A copy of a run without the records, outputs and logs of the stages not in `keep`."""
    shutil.copytree(src, dst, symlinks=True)
    for rec in ledger.read_records(dst):
        stage = rec["stage"]
        if stage in keep:
            continue
        ledger.record_path(dst, stage).unlink()
        (dst / "logs" / f"{stage}.log").unlink(missing_ok=True)
        for d in (dst / stage, dst / "tensorboard" / stage):
            shutil.rmtree(d, ignore_errors=True)
    return dst


@pytest.fixture(scope="module")
def runs(demo_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    a = _trimmed_copy(demo_run, root / "a", {"curate", "tokenize"})
    assert main(["run", "demo-fast", "--out", str(a), *SMALL]) == 0
    b = _trimmed_copy(a, root / "b", {"curate", "tokenize", "pretrain", "eval"})
    assert main(["run", "demo-fast", "--out", str(b), *SMALL, f"curate.{KNOB}=0.9"]) == 0
    r = _trimmed_copy(a, root / "r", {"curate", "tokenize", "pretrain", "eval"})
    assert main(["run", "demo-fast", "--out", str(r), "--force", *SMALL]) == 0
    return a, b, r


def _diff(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main(["diff", *map(str, args), "--json", "--iters", "2000"])
    return rc, json.loads(capsys.readouterr().out)


def test_one_curation_knob_names_the_key_the_documents_and_the_metric_tests(runs, capsys, tmp_path):
    a, b, _ = runs
    capsys.readouterr()
    assert main(["diff", str(a), str(b), "--out", str(tmp_path / "out"), "--iters", "2000"]) == 1
    text = capsys.readouterr().out
    d = json.loads((tmp_path / "out" / "diff.json").read_text())

    # what changed: that one key, nothing else; where: curate first, every later stage through its inputs
    assert [(c["stage"], c["key"], c["a"], c["b"]) for c in d["changes"]["config"]] == [("curate", KNOB, 0.7, 0.9)]
    # (the code's dirty flag moves too if the tree was edited while the session's runs were made)
    assert [c for c in d["changes"]["other"] if c["kind"] != "code"] == [] and d["changes"]["recipe"] == []
    assert d["changes"]["recipe_keys"] == []
    assert d["first_divergent"] == "curate" and d["downstream"] == ["tokenize", "pretrain", "eval"]
    rows = {r["stage"]: r for r in d["stages"]}
    assert rows["curate"]["cause"] == "config" and "outputs" in rows["curate"]["why"]
    assert all("inputs" in rows[s]["why"] and "config" not in rows[s]["why"] for s in ("tokenize", "pretrain", "eval"))

    # the documents that moved: their count agrees with both runs' counters, and each example is where it is said
    cur = d["data"]["curate"]
    moves = cur["documents"]["moves"]
    (ka, kb), (ra, rb) = cur["kept"], cur["read"]
    into = sum(m["n"] for m in moves if m["b"] == "kept")
    out = sum(m["n"] for m in moves if m["a"] == "kept")
    assert into > 0 and kb - ka == into - out and cur["documents"]["same"] + sum(m["n"] for m in moves) == ra == rb
    back = next(m for m in moves if (m["a"], m["b"]) == ("near_dup", "kept"))
    kept_b = {r["id"] for p in (b / "curate" / "kept").glob("part-*.jsonl") for _, r in iter_jsonl(p)}
    near_a = {
        r["id"] for p in (a / "curate" / "excluded").glob("part-*.jsonl") for _, r in iter_jsonl(p) if r["reason"] == "near_dup"
    }
    assert back["examples"] and all(pair[0]["id"] in near_a and pair[1]["id"] in kept_b for pair in back["examples"])
    assert all(0.7 <= pair[0]["details"]["jaccard"] < 0.9 for pair in back["examples"])  # why they moved
    assert all(pair[0]["twin"]["id"] == pair[0]["details"]["kept_id"] for pair in back["examples"])  # as inspect
    dropped = {r["key"]: (r["a"], r["b"]) for r in cur["dropped"]}
    counters = [ledger.read_record(run, "curate")["counters"]["dropped"] for run in (a, b)]
    assert dropped["near_dup"] == (counters[0]["near_dup"], counters[1]["near_dup"])

    # what it did to the model: the records' numbers, the curves, and `compare`'s paired tests, reused
    val = next(m for m in d["model"]["metrics"] if (m["stage"], m["key"]) == ("pretrain", "val_loss"))
    assert [val["a"], val["b"]] == [ledger.read_record(run, "pretrain")["metrics"]["val_loss"] for run in (a, b)]
    curve = next(c for c in d["model"]["curves"] if c["stage"] == "pretrain")
    loss_a = [[r["step"], r["loss"]] for _, r in iter_jsonl(a / "pretrain" / "metrics.jsonl") if "loss" in r]
    assert curve["a"]["loss"] == loss_a
    want = json.loads(json.dumps(compare(load_results(a), load_results(b), iters=2000)))
    assert d["model"]["eval"] == want and want["tasks"]

    # the terminal summary, Markdown and the self-contained page say the same
    assert "*curate" in text and f"curate.{KNOB}: 0.7 → 0.9" in text and "McNemar p = " in text
    assert f"{back['n']:>6,}  dropped in A (near_dup), kept in B" in text
    md, page = (tmp_path / "out" / "diff.md").read_text(), (tmp_path / "out" / "diff.html").read_text()
    for section in ("What changed", "What it did to the data", "What it did to the model"):
        assert f"## {section}" in md and f"<h2>{section}</h2>" in page
    assert KNOB in page and back["examples"][0][0]["id"] in page and "data:image/png;base64," in page
    assert "src=\"http" not in page and "<script" not in page  # self-contained, nothing fetched


def test_a_rerun_is_identical_except_timings(runs, capsys):
    a, _, r = runs
    rc, d = _diff(capsys, a, r)
    assert rc == 0 and d["same"] and d["identical_except_timings"] and d["first_divergent"] is None
    assert [s["stage"] for s in d["stages"]] == ["curate", "tokenize", "pretrain", "eval"]
    assert all(s["same"] for s in d["stages"])
    # every stage really ran again: its record's start time (ms) moved (rounded durations can tie)
    stages = ("curate", "tokenize", "pretrain", "eval")
    assert all(ledger.read_record(a, st)["started"] < ledger.read_record(r, st)["started"] for st in stages)
    assert main(["diff", str(a), str(r), "--no-rehash"]) == 0
    assert "The runs are identical except timings" in capsys.readouterr().out


def test_a_changed_output_with_the_same_inputs_is_named_not_reproducible(runs, capsys, tmp_path):
    """The same config, code and inputs with a different output: the diff says so (a hand-made record of it)."""
    a, _, _ = runs
    c = _trimmed_copy(a, tmp_path / "c", {"curate", "tokenize", "pretrain", "eval"})
    rec = ledger.read_record(c, "eval")
    key = next(k for k, v in rec["metrics"].items() if isinstance(v, float) and not k.endswith("_stderr"))
    rec["metrics"][key] += 0.5
    effect = {"metric": "exact_match", "before": 0.25, "after": 0.5, "n": 16, "test": "mcnemar_exact", "p": 0.125}
    rec["metrics"]["effect"] = {**effect, "improved": True}  # a stage's own before/after test, when it records one
    ledger.write_record(c, {k: v for k, v in rec.items() if k != "record_sha256"})
    rc, d = _diff(capsys, a, c)
    assert rc == 1 and d["first_divergent"] == "eval" and d["stages"][-1]["cause"] == "nondeterminism"
    assert [m["key"] for m in d["model"]["metrics"]] == [key]
    assert d["model"]["effects"] == [{"stage": "eval", "a": None, "b": {**effect, "improved": True}}]
    assert main(["diff", str(a), str(c), "--no-rehash"]) == 1
    out = capsys.readouterr().out
    assert "not reproducible" in out
    assert "eval effect: A not recorded; B exact_match 0.25 → 0.5 (n = 16, mcnemar_exact p = 0.125)" in out


def test_runs_with_different_stages_give_a_readable_diff(runs, demo_run, capsys):
    a, _, _ = runs
    rc, d = _diff(capsys, demo_run, a)
    assert rc == 1 and d["first_divergent"] == "pretrain"
    assert d["changes"]["only_in_a"] == ["sft", "interpolate", "dpo", "reward", "rl", "report"]
    assert [s["stage"] for s in d["stages"]][:4] == ["curate", "tokenize", "pretrain", "sft"]
    assert {c["key"] for c in d["changes"]["config"] if c["stage"] == "pretrain"} == {"steps", "eval_every"}
    assert [c["key"] for c in d["changes"]["recipe_keys"]] == ["stages"]
    assert main(["diff", str(demo_run), str(a), "--no-rehash"]) == 1
    out = capsys.readouterr().out
    assert "sft          ran only in A" in out and "Traceback" not in out


def test_report_with_a_baseline_has_the_diff_section(runs, tmp_path):
    a, b, _ = runs
    run = _trimmed_copy(b, tmp_path / "b", {"curate", "tokenize", "pretrain", "eval"})
    assert main(["report", str(run), "--baseline", str(a)]) == 0
    md = (run / "report" / "report.md").read_text()
    assert "## Difference from the baseline" in md and f"`{KNOB}`" in md and "They part ways at **curate**" in md
    rec = ledger.read_record(run, "report")
    assert rec["config"]["baseline"] == str(a) and "baseline:curate" in rec["inputs"]  # a re-run baseline: stale
    assert ledger.audit(run)[0] == []
    assert main(["report", str(run), "--baseline", str(tmp_path / "nope")]) == 2


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    a, _, _ = runs
    (tmp_path / "empty").mkdir()
    broken = _trimmed_copy(a, tmp_path / "broken", {"curate", "tokenize", "pretrain", "eval"})
    shard = next((broken / "tokenize" / "shards").rglob("*.bin"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    shard.write_bytes(bytes(raw))
    for other, named in ((tmp_path / "nope", "no such run directory"), (tmp_path / "empty", "no stage records"),
                         (broken, shard.name)):  # fmt: skip
        capsys.readouterr()
        assert main(["diff", str(a), str(other)]) == 2
        cap = capsys.readouterr()
        assert cap.out == "" and cap.err.count("\n") == 1 and named in cap.err and str(other) in cap.err
    assert "broken ledger, audit found" in cap.err
    (tmp_path / "file").write_text("not a directory")
    assert main(["diff", str(a), str(a), "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
