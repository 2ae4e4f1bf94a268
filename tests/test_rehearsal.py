"""The rehearsal of the real recipe: smollm-135m-rehearsal differs from smollm-135m-1gpu only in sizes and its Hub
mirror; the mirror's repositories load through `datasets` with the Hub's layout, columns and types; and the whole
recipe runs offline, every stage, with a passing audit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ledgerlm import hub, rehearsal
from ledgerlm.cli import main
from ledgerlm.pipeline import load_recipe

REAL, REHEARSAL, FULLSHAPE = "smollm-135m-1gpu", "smollm-135m-rehearsal", "smollm-135m-fullshape"

# Keys the rehearsal may change, and only to another number: how much, never what or how. `[*]` = any list item.
SIZE_KEYS = {
    "curate.sources[*].limit",
    "curate.segment_dedup.min_docs",
    "curate.shards",
    "tokenize.val_fraction",
    "tokenize.shard_tokens",
    "pretrain.seq_len",
    "pretrain.micro_batch_size",
    "pretrain.batch_tokens",
    "pretrain.tokens",
    "pretrain.phases[*].tokens",
    "pretrain.warmup",
    "pretrain.eval_every",
    "pretrain.val_batches",
    "pretrain.ckpt_every",
    "pretrain.log_every",
    "sft.seq_len",
    "sft.epochs",
    "sft.batch_size",
    "sft.micro_batch_size",
    "sft.val_fraction",
    "sft.val_max",
    "interpolate.eval_limit",
    "rl.n_eval",
    "rl.steps",
    "rl.prompts_per_step",
    "rl.group_size",
    "rl.max_new_tokens",
    "rl.eval_batch_size",
    "eval.batch_size",
    "eval.gsm8k_max_new_tokens",
}
MODEL_DIMS = {"n_layer", "d_model", "n_head", "n_kv_head", "d_ff"}  # the model shrinks; its family stays
# the real-shape rehearsal also caps steps and items (two steps of each stage, a handful of eval items)
FULLSHAPE_KEYS = {"sft.max_steps", "eval.limit", "rl.passk_problems"}


def _leaves(x, path=""):
    if isinstance(x, dict) and path != "pretrain.model":  # the model is compared whole
        for k, v in x.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(x, list) and any(isinstance(v, dict) for v in x):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def recipe_differences(a: str, b: str, extra_keys: frozenset = frozenset()) -> list[str]:
    """Every difference between two validated recipes that is not a size (nor name, description or hub_mirror)."""
    da, db = load_recipe(a).to_dict(), load_recipe(b).to_dict()
    for d in (da, db):
        for k in ("name", "hub_mirror"):
            d.pop(k, None)
    la, lb = dict(_leaves(da)), dict(_leaves(db))
    problems = []
    for key in sorted(set(la) | set(lb)):
        va, vb = la.get(key, "<absent>"), lb.get(key, "<absent>")
        if va == vb:
            continue
        general = re.sub(r"\[\d+\]", "[*]", key)
        if general == "pretrain.model":  # a named size -> the same family with smaller dimensions
            ok = isinstance(vb, dict) and vb.get("size") == va and set(vb) - {"size"} <= MODEL_DIMS
        else:
            sizes = SIZE_KEYS | extra_keys
            unset = ("<absent>", None)  # a cap the real recipe leaves unset (e.g. eval.limit)
            num = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb) if v not in unset)
            ok = general in sizes and num and (general in extra_keys or (va not in unset and vb not in unset))
        if not ok:
            problems.append(f"{key}: {va!r} -> {vb!r}")
    return problems


def test_rehearsal_differs_from_the_real_recipe_only_in_sizes():
    assert recipe_differences(REAL, REHEARSAL) == []
    reh = load_recipe(REHEARSAL)
    assert reh.hub_mirror.path and reh.hub_mirror.generate == "rehearsal"
    assert not load_recipe(REAL).hub_mirror.path
    # the anneal phase is the same share of the run, so decay_frac (not a size) fits both
    for name in (REAL, REHEARSAL):
        p = load_recipe(name).section("pretrain")
        assert abs(p.phases[1]["tokens"] / p.tokens - p.decay_frac) < 0.005


def test_fullshape_is_the_real_model_and_sequence_and_differs_only_in_sizes():
    assert recipe_differences(REAL, FULLSHAPE, frozenset(FULLSHAPE_KEYS)) == []
    real, full = load_recipe(REAL).section("pretrain"), load_recipe(FULLSHAPE).section("pretrain")
    assert full.model == real.model == "smollm-135m" and full.seq_len == real.seq_len == 2048
    assert (full.compile, full.precision, full.loss_chunk_size) == (real.compile, real.precision, real.loss_chunk_size)
    assert load_recipe(FULLSHAPE).hub_mirror.vocab_size == 49152
    rl, real_rl = load_recipe(FULLSHAPE).section("rl"), load_recipe(REAL).section("rl")
    assert rl.max_new_tokens == real_rl.max_new_tokens == 256 and rl.steps == 1


@pytest.mark.slow
def test_fullshape_rehearsal_runs_at_the_real_shape_on_the_cpu(tmp_path):
    """bench.fullshape (stage by stage, each its own process): every stage and the audit pass at 134.5M parameters,
    sequence 2048, vocabulary 49152 (~10 CPU-minutes, 49 min wall at load 13-21; BENCHMARKS.md `fullshape-rehearsal`)."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != hub.ENV}
    cmd = [sys.executable, "-m", "bench.fullshape", "--out", str(run), "--no-record"]
    p = subprocess.run(cmd, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=5400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    pre = json.loads((run / "ledger" / "pretrain.json").read_text())
    mc = pre["extra"]["model_config"]
    assert pre["counters"]["params"] == 134_515_008 and mc["vocab_size"] == 49152 and mc["n_layer"] == 30
    assert pre["counters"]["steps"] == 2 and pre["extra"]["grad_accum"] == 2
    assert "fineweb_edu" in pre["metrics"]["val_loss_by_source"]
    assert json.loads((run / "ledger" / "sft.json").read_text())["counters"]["steps"] == 2
    assert json.loads((run / "ledger" / "rl.json").read_text())["status"] == "ok"
    results = json.loads((run / "eval" / "results.json").read_text())
    assert results["limit"] == 2 and results["tasks"]["gsm8k_0shot"]["generation_mode"] == "lm-eval"
    assert (run / "report" / "report.html").is_file() and "peak RSS" in p.stdout


def test_recipe_diff_catches_a_changed_setting(tmp_path):
    text = (Path(__file__).parents[1] / "recipes" / f"{REHEARSAL}.yaml").read_text()
    changed = text.replace("  eval_limit: 12\n", "  eval_limit: 12\n  choose: hellaswag\n")
    changed = changed.replace("hf_config: finemath-4plus", "hf_config: finemath-3plus")
    (tmp_path / "r.yaml").write_text(changed)
    assert recipe_differences(REAL, str(tmp_path / "r.yaml")) == [
        "curate.sources[1].hf_config: 'finemath-4plus' -> 'finemath-3plus'",
        "interpolate.choose: 'sft_val_loss' -> 'hellaswag'",
    ]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return rehearsal.write_mirror(tmp_path_factory.mktemp("hub") / "hub")


# What the Hub's repositories hold (their dataset cards' features), written out here independently of the
# generator: (repo, config, split) -> {column: type}. "list[x]" is a sequence, "{a,b}" a struct.
HUB_COLUMNS = {
    ("HuggingFaceFW/fineweb-edu", "sample-100BT", "train"): {
        "text": "str",
        "id": "str",
        "dump": "str",
        "url": "str",
        "file_path": "str",
        "language": "str",
        "language_score": "float",
        "token_count": "int",
        "score": "float",
        "int_score": "int",
    },
    ("HuggingFaceTB/finemath", "finemath-4plus", "train"): {
        "url": "str",
        "fetch_time": "int",
        "content_mime_type": "str",
        "warc_filename": "str",
        "warc_record_offset": "int",
        "warc_record_length": "int",
        "text": "str",
        "token_count": "int",
        "char_count": "int",
        "metadata": "str",
        "score": "float",
        "int_score": "int",
        "crawl": "str",
        "snapshot_type": "str",
        "language": "str",
        "language_score": "float",
    },
    ("codeparrot/codeparrot-clean", None, "train"): {
        "repo_name": "str",
        "path": "str",
        "copies": "str",
        "size": "str",
        "content": "str",
        "license": "str",
        "hash": "int",
        "line_mean": "float",
        "line_max": "int",
        "alpha_frac": "float",
        "autogenerated": "bool",
    },
    ("open-r1/OpenR1-Math-220k", "default", "train"): {
        "problem": "str",
        "solution": "str",
        "answer": "str",
        "problem_type": "str",
        "question_type": "str",
        "source": "str",
        "uuid": "str",
        "is_reasoning_complete": "list[bool]",
        "generations": "list[str]",
        "correctness_math_verify": "list[bool]",
        "correctness_llama": "list[bool]",
        "finish_reasons": "list[str]",
        "correctness_count": "int",
        "messages": "list[{content,role}]",
    },
    ("HuggingFaceTB/smol-smoltalk", None, "train"): {"messages": "list[{content,role}]", "source": "str"},
    ("HuggingFaceTB/smol-smoltalk", None, "test"): {"messages": "list[{content,role}]", "source": "str"},
    ("openai/gsm8k", "main", "train"): {"question": "str", "answer": "str"},
    ("openai/gsm8k", "main", "test"): {"question": "str", "answer": "str"},
    ("allenai/ai2_arc", "ARC-Easy", "test"): {
        "id": "str",
        "question": "str",
        "choices": "{text,label}",
        "answerKey": "str",
    },
    ("allenai/ai2_arc", "ARC-Challenge", "test"): {
        "id": "str",
        "question": "str",
        "choices": "{text,label}",
        "answerKey": "str",
    },
    ("Rowan/hellaswag", None, "validation"): {
        "ind": "int",
        "activity_label": "str",
        "ctx_a": "str",
        "ctx_b": "str",
        "ctx": "str",
        "endings": "list[str]",
        "source_id": "str",
        "split": "str",
        "split_type": "str",
        "label": "str",
    },
    ("baber/piqa", None, "validation"): {"goal": "str", "sol1": "str", "sol2": "str", "label": "int"},
    ("allenai/winogrande", "winogrande_xl", "validation"): {
        "sentence": "str",
        "option1": "str",
        "option2": "str",
        "answer": "str",
    },
    ("EleutherAI/lambada_openai", "default", "test"): {"text": "str"},
}


def _feature_type(f) -> str:
    import datasets

    if isinstance(f, datasets.Value):
        d = f.dtype
        return "str" if d == "string" else "bool" if d == "bool" else "int" if "int" in d else "float"
    if isinstance(f, list):  # the older spelling of a list feature
        f = datasets.Sequence(f[0])
    if hasattr(f, "feature"):  # Sequence (datasets < 4) or List (datasets >= 4)
        inner = f.feature
        return "list[{" + ",".join(inner) + "}]" if isinstance(inner, dict) else f"list[{_feature_type(inner)}]"
    if isinstance(f, dict):
        return "{" + ",".join(f) + "}"
    raise AssertionError(f"unexpected feature {f!r}")


def test_mirror_repositories_load_with_the_hub_columns_and_types(mirror):
    datasets = pytest.importorskip("datasets")
    with hub.using(mirror):
        for (repo, config, split), columns in HUB_COLUMNS.items():
            ds = datasets.load_dataset(hub.dataset(repo), config, split=split, streaming=True)
            row = next(iter(ds))
            assert list(row) == list(columns), repo
            feats = ds.features or datasets.load_dataset(hub.dataset(repo), config, split=split).features
            got = {k: _feature_type(feats[k]) for k in columns}
            assert got == columns, repo
    # the streamed sources the recipe reads without a limit are split by shards: several files each
    assert len(list((mirror / "datasets/open-r1/OpenR1-Math-220k/data").glob("*.parquet"))) == 3
    gsm = (mirror / "datasets/openai/gsm8k/main").glob("test-*.parquet")
    import pyarrow.parquet as pq

    answers = pq.read_table(next(gsm)).column("answer").to_pylist()
    assert all(re.search(r"\n#### -?\d+$", a) for a in answers)


def test_mirror_tokenizer_has_smollm_layout_and_loads_by_name(mirror):
    from ledgerlm.data.tokenizer import load_tokenizer

    with hub.using(mirror):
        tok = load_tokenizer("HuggingFaceTB/SmolLM-135M")  # the real recipe's name, resolved by the mirror
    assert [tok.token_to_id(t) for t in rehearsal.SMOLLM_SPECIALS] == list(range(17))
    assert tok.get_vocab_size() == rehearsal.VOCAB_SIZE
    text = "Tom has 12 apples <|im_end|> é 😀"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    with hub.using(mirror), pytest.raises(FileNotFoundError, match="not in the Hub mirror"):
        load_tokenizer("HuggingFaceTB/SmolLM2-135M")  # never falls back to the network


def test_mirror_is_deterministic(mirror, tmp_path):
    again = rehearsal.write_mirror(tmp_path / "hub")

    def digest(root):
        files = (p for p in sorted(root.rglob("*")) if p.is_file() and ".datasets-cache" not in p.parts)
        return {str(p.relative_to(root)): p.read_bytes() for p in files}

    a, b = digest(mirror), digest(again)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k] and not k.endswith(".json.gz")]  # gzip headers carry a time
    assert differing == []


def test_rehearsal_runs_every_stage_offline_and_its_audit_passes(tmp_path, demo_run, capsys):
    """`ledgerlm run smollm-135m-rehearsal`: the real recipe's whole path on generated Hub-schema data."""
    run = tmp_path / "run"
    # offline; one intra-op thread (2 threads on 2 busy cores spin-wait, 10x slower); torch.compile traces forward and
    # backward as on the GPU but generates no code (aot_eager: inductor's C++ build takes minutes on a CPU)
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "LEDGERLM_COMPILE_BACKEND": "aot_eager",
    }
    env.pop(hub.ENV, None)
    cmd = [sys.executable, "-m", "ledgerlm", "run", REHEARSAL, "--out", str(run)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[audit] intact" in p.stdout
    stages = load_recipe(REAL).stages
    records = {s: json.loads((run / "ledger" / f"{s}.json").read_text()) for s in stages if s != "audit"}
    assert all(r["status"] == "ok" for r in records.values())

    cur = records["curate"]["counters"]
    sources = ("fineweb_edu", "finemath", "code", "reasoning")
    assert cur["by_source"] == {"fineweb_edu": 600, "finemath": 150, "code": 100, "reasoning": 90}  # limits cut
    kept = {s: 0 for s in sources}
    for f in (run / "curate" / "kept").glob("*.jsonl"):
        for line in f.read_text(encoding="utf-8").split("\n"):
            if line:
                kept[json.loads(line)["source"]] += 1
    assert all(kept[s] > 0.3 * cur["by_source"][s] for s in sources), kept  # each source passes its own gates
    assert cur["dropped"]["malformed:empty"] == 1  # the empty FineWeb-Edu row, quarantined
    # decontamination against the seven tasks finds the two planted items of each and drops their documents (and
    # at most one more: a generated train problem may share a 13-gram with a test one, as in GSM8K itself)
    for task in ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "lambada_openai", "gsm8k"):
        assert 2 <= cur["dropped"].get(f"contaminated:{task}", 0) <= 3, (task, cur["dropped"])

    tok = json.loads((run / "tokenize" / "tokenizer.json").read_text())
    assert [t["content"] for t in tok["added_tokens"][:3]] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert records["tokenize"]["inputs"]["tokenizer"]["mirror"]["kind"] == "dir"  # the mirrored repo, hashed

    # both phases ran: the anneal mixture drew from all four sources
    drawn = records["pretrain"]["extra"]["loader"]["drawn"]
    assert sorted(drawn) == sorted(sources) and all(sum(v.values()) > 0 for v in drawn.values()), drawn
    assert records["pretrain"]["counters"]["tokens"] == load_recipe(REHEARSAL).section("pretrain").tokens
    # a validation loss per source, logged and reported; the headline is the declared mixture's (stable: FineWeb-Edu)
    pm, px = records["pretrain"]["metrics"], records["pretrain"]["extra"]
    by = pm["val_loss_by_source"]
    assert "fineweb_edu" in by and len(by) >= 2 and px["val_on"] == "stable"
    assert pm["final_val_loss"] == pytest.approx(by["fineweb_edu"], abs=1e-6)
    assert all(r["passes"] is not None for r in px["supply"]) and len(px["supply"]) == 5
    rows = [json.loads(x) for x in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_src.fineweb_edu" in r and "val_mix.anneal" in r for r in rows)
    html = (run / "report" / "report.html").read_text()
    assert "held-out loss, source fineweb_edu" in html and "(on stable)" in html
    # SFT on smol-smoltalk's messages, GRPO on GSM8K's train split: both read from the mirror by their Hub names
    assert records["sft"]["inputs"]["data"]["path"] == "hub:HuggingFaceTB/smol-smoltalk"
    assert records["sft"]["counters"]["quarantined"] == 0 and records["sft"]["counters"]["steps"] > 0
    assert records["rl"]["inputs"]["task"]["mirror"]["kind"] == "dir"
    assert records["rl"]["counters"]["rows"] == rehearsal.N["gsm8k_train"]

    results = json.loads((run / "eval" / "results.json").read_text())
    assert set(load_recipe(REAL).section("eval").tasks) <= set(json.dumps(results).split('"'))
    assert (run / "report" / "report.html").is_file()

    # `ledgerlm diff` across recipes (the session's demo-fast run against this one): readable, not a traceback
    capsys.readouterr()
    assert main(["diff", str(demo_run), str(run), "--no-rehash"]) == 1
    out = capsys.readouterr().out
    assert "recipe: demo-fast → smollm-135m-rehearsal" in out and "The runs differ. They part ways at curate" in out
    assert "dpo          ran only in A" in out and "eval: no paired tests (the two results share no task)" in out


# ----------------------------------------------------------------------------- what the rehearsal found, one by one


def test_malformed_records_with_several_output_shards(tmp_path):
    """An empty or broken record crashed curation whenever curate.shards > 1 (its id is 'bad-<hex>')."""
    from ledgerlm.cli import main

    good = " ".join(f"word{i} is part of a plain sentence about the harbor and the boats." for i in range(12))
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": good}) + "\n{broken\n" + json.dumps({"text": ""}) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["curate", "--input", f"s={src}", "--out", str(run), "shards=4", "executor.workers=1"]) == 0
    counters = json.loads((run / "ledger" / "curate.json").read_text())["counters"]
    malformed = {k: v for k, v in counters["dropped"].items() if k.startswith("malformed:")}
    assert malformed == {"malformed:json": 1, "malformed:empty": 1} and counters["read"] == 3
    excluded = "".join(p.read_text() for p in (run / "curate" / "excluded").glob("*.jsonl"))
    assert excluded.count('"malformed:') == 2


def test_text_field_list_joins_just_those_fields(tmp_path):
    """OpenR1-Math-220k: "problem,solution,generations", not "*" (whose `messages` repeat a generation verbatim)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ledgerlm.data.sources import SourceSpec, iter_records

    row = rehearsal.reasoning_rows()[0]
    pq.write_table(
        pa.Table.from_pylist([row], schema=rehearsal.SCHEMAS["open-r1/OpenR1-Math-220k"]), tmp_path / "r.parquet"
    )
    spec = SourceSpec(name="r", path=str(tmp_path / "r.parquet"), text_field="problem,solution,generations")
    (rec,) = list(iter_records(spec))
    assert rec.text == "\n".join([row["problem"], row["solution"], *row["generations"]])
    assert rec.text.count(row["generations"][0]) == 1
    (star,) = list(iter_records(SourceSpec(name="r", path=str(tmp_path / "r.parquet"), text_field="*")))
    assert star.text.count(row["generations"][0]) == 2  # what made every document a 10-gram repeat
    bad = SourceSpec(name="r", path=str(tmp_path / "r.parquet"), text_field="problem,nope")
    with pytest.raises(ValueError, match="no column 'nope'"):
        list(iter_records(bad))
