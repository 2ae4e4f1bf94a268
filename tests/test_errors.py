"""Every user mistake is one line on stderr, exit 2, no traceback, and (when caught before compute) nothing created."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from ledgerlm.cli import main


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text(json.dumps({"text": "a few words of text"}) + "\n")
    return tmp_path


def _one_line_exit_2(argv, capsys, root) -> str:
    before = _tree(root)
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert _tree(root) == before, f"{argv} created {sorted(set(_tree(root)) - set(before))}"
    return err


MISTAKES = [
    (["plan", "demo", "pretrain.micro_batch_size=-4"], "pretrain.micro_batch_size: must be >= 1, got -4"),
    (["run", "demo", "--out", "run", "pretrain.micro_batch_size=-4"], "pretrain.micro_batch_size: must be >= 1"),
    (["run", "demo", "--out", "run", "pretrain.lr=0"], "pretrain.lr: must be > 0"),
    (["plan", "demo", "curate.quality.c4_min_sentences=-1"], "curate.quality.c4_min_sentences: must be >= 0, got -1"),
    (["plan", "demo", "tokenize.val_fraction=0"], "tokenize.val_fraction: is 0, so pretraining has no held-out"),
    (["plan", "demo", "sft.val_fraction=0"], "interpolate.metrics: sft_val_loss needs held-out conversations"),
    (["plan", "demo", "sft.data="], "interpolate.data: sft_val_loss needs held-out conversations"),
    (["plan", "demo", "--gpu", "b999"], "--gpu: unknown GPU 'b999' (known: h100nvl, h100pcie, h100,"),
    (["pretrain", "--out", "run"], "pretrain.tokens: "),  # nothing tokenized in `run`: which input, made by whom
    (["eval", "--model", "no/such/dir", "--tasks", "arith"], "eval.model: no model at no/such/dir"),
    (["eval", "--model", "no/such/dir", "--tasks", "arith", "--out", "r.json"], "no model at no/such/dir"),
    (["eval", "--model", ".", "--tasks", "arith", "--out", "r.json"], "has no config.json"),
    (["inspect", "no/such/run"], "no/such/run"),
    (["report", "no/such/run"], "no/such/run does not exist"),
    (["audit", "no/such/run"], "no/such/run does not exist"),
    (
        ["plan", "demo", "rl.task=arith:max_ops=1,max_value=10", "rl.n_train=90"],
        "only 47 distinct heldout problems found (asked 100)",
    ),
]


@pytest.mark.parametrize(("argv", "message"), MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_mistake_is_one_line_exit_2_and_creates_nothing(argv, message, cwd, capsys):
    assert message in _one_line_exit_2(argv, capsys, cwd)


WITHOUT_HF = [
    ["contamination", "data.jsonl", "--against", "piqa"],
    ["curate", "--input", "data.jsonl", "--decontaminate", "piqa", "--out", "run"],
    ["eval", "--model", "no/such/dir", "--tasks", "piqa", "--out", "r.json"],
]


@pytest.mark.parametrize("argv", WITHOUT_HF, ids=[a[0] for a in WITHOUT_HF])
def test_hub_task_without_the_hf_extra_says_what_to_install(argv, cwd, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails, as without the hf extra
    err = _one_line_exit_2(argv, capsys, cwd)
    assert "pip install 'ledgerlm[hf]'" in err and "--data-dir" in err


def test_unknown_hub_model_is_one_line(cwd, capsys, monkeypatch):
    transformers = pytest.importorskip("transformers")

    def offline(*a, **k):  # what from_pretrained raises for a name that is not a folder when the Hub cannot give it
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    err = _one_line_exit_2(["eval", "--model", "nope", "--tasks", "arith", "--out", "r.json"], capsys, cwd)
    assert "eval.model" in err and "nope: no model folder here, and the Hub gave none" in err


def test_existing_dir_without_a_ledger_is_not_a_run(cwd, capsys):
    (cwd / "empty").mkdir()
    assert "has no stage records" in _one_line_exit_2(["report", "empty"], capsys, cwd)


def test_vocabulary_larger_than_the_data_can_give(cwd, capsys):
    from ledgerlm.data.tokenizer import MIN_VOCAB, max_learnable_vocab

    # "ab ab" pre-tokenises to "ab", "Ġab": 1 + 2 merges at most
    assert max_learnable_vocab(["ab ab"], 10_000) == MIN_VOCAB + 3
    assert max_learnable_vocab(["the cat", "a dog"] * 100, MIN_VOCAB + 1) >= MIN_VOCAB + 1  # stops early
    assert main(["tokenize", "--input", "data.jsonl", "--vocab-size", "5000", "--out", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tokenize.vocab_size: 5,000 tokens asked, but this data can give at most" in err and "\n" not in err


def test_generation_defaults_follow_task_and_model_context():
    from ledgerlm.eval.eval_stage import generation_defaults

    assert generation_defaults("arith", 256) == ([0], 64)  # the demo's 1M-parameter model
    assert generation_defaults("gsm8k", 256) == ([0], 64)
    assert generation_defaults("arith", 2048) == ([0, 5], 96)  # SmolLM-135M's context
    assert generation_defaults("gsm8k", 2048) == ([0, 5], 256)
    assert generation_defaults("gsm8k", 1024) == ([0], 256)  # five GSM8K shots + 256 tokens do not fit


def test_arith_task_options():
    from ledgerlm.tasks import arith

    assert arith.task_options("arith") == {}
    assert arith.task_options("arith:max_ops=1,max_value=10") == {"max_ops": 1, "max_value": 10}
    with pytest.raises(ValueError, match="options are max_ops=N"):
        arith.task_options("arith:ops=2")
    easy = arith.generate(20, "heldout", 0, **arith.task_options("arith:max_ops=1,max_value=9"))
    assert all(len(p.steps) == 1 for p in easy)


def test_unfinished_pairs_stop_before_the_answer_line():
    from ledgerlm.tasks import arith

    pairs = arith.preference_pairs(40, "train", seed=0, kinds=("final", "unfinished"))
    assert {p["kind"] for p in pairs} == {"final", "unfinished"}
    for p in pairs:
        if p["kind"] == "unfinished":
            assert "####" not in p["rejected"] and p["chosen"].startswith(p["rejected"])
    # the default kinds draw exactly as before (arith twice as often as final)
    assert arith.preference_pairs(5, "train", seed=0) == arith.preference_pairs(
        5, "train", seed=0, kinds=("final", "arith")
    )


def test_a_renamed_key_is_read_with_a_warning_and_the_later_name_wins():
    """The pretrain micro-batch key is now micro_batch_size (the name every other stage uses): old recipes load."""
    from ledgerlm.config import from_dict
    from ledgerlm.train.pretrain import Config

    old = "micro_batch"  # rewrite_imports: keep
    with pytest.warns(UserWarning, match=rf"pretrain.{old}: renamed to pretrain.micro_batch_size"):
        cfg = from_dict(Config, {old: 3}, "pretrain")
    assert cfg.micro_batch_size == 3
    with pytest.warns(UserWarning):  # both names: the later one wins (an old override over a recipe's new key)
        assert from_dict(Config, {"micro_batch_size": 4, old: 3}, "pretrain").micro_batch_size == 3
        assert from_dict(Config, {old: 3, "micro_batch_size": 4}, "pretrain").micro_batch_size == 4
    assert main(["plan", "demo", f"pretrain.{old}=5"]) == 0  # demo.yaml says micro_batch_size: the override wins


def test_curate_tasks_flag_renamed_to_datatrove_tasks(tmp_path):
    """`curate --tasks` (datatrove's shares of the corpus, not eval's benchmarks) is now --datatrove-tasks; the old
    flag and the old recipe key still work, with a warning."""
    from ledgerlm.config import from_dict
    from ledgerlm.data.curate import SPEC
    from ledgerlm.data.curate.config import ExecutorConfig

    p = argparse.ArgumentParser()
    SPEC.add_cli_args(p)
    with pytest.warns(UserWarning, match="--tasks: renamed to --datatrove-tasks"):
        assert SPEC.cli_overrides(p.parse_args(["--tasks", "3"]))["executor.datatrove_tasks"] == 3
    assert SPEC.cli_overrides(p.parse_args(["--datatrove-tasks", "2"]))["executor.datatrove_tasks"] == 2
    with pytest.warns(UserWarning, match="executor.tasks: renamed to curate.executor.datatrove_tasks"):
        assert from_dict(ExecutorConfig, {"tasks": 4}, "curate.executor").datatrove_tasks == 4
