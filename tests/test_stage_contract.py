"""The StageSpec is the whole contract: every registered stage declares its plan and report section, every
headline is a metric (tests/test_e2e.py checks each is written), and the runner, plan and CLI treat a missing
input, an unknown GPU and the audit the same for every stage."""

from __future__ import annotations

import pytest

from ledgerlm import ledger, stage
from ledgerlm.card import Section
from ledgerlm.cli import main
from ledgerlm.config import ConfigError
from ledgerlm.pipeline import run_stage
from ledgerlm.recipe import build_recipe


@pytest.mark.parametrize("name", list(stage.STAGES))
def test_every_stage_declares_its_plan_and_report(name):
    spec = stage.get(name)
    assert spec.plan is not None, f"{name}: no plan"
    if name != "report":  # the report is the sections' page, not one of them
        sections = spec.report if isinstance(spec.report, tuple) else (spec.report,)
        assert sections and all(isinstance(s, Section) for s in sections), f"{name}: no report section"


def test_a_missing_input_is_one_line_naming_it_and_its_maker(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"error: pretrain.tokens: {run.resolve()}/tokenize/index.json does not exist")
    assert f"made by the tokenize stage (`ledgerlm tokenize --out {run.resolve()}`)" in err
    assert not run.exists()  # refused before anything was made
    # the runner says the same when a recipe's earlier stage did not make it after all
    recipe = build_recipe({"name": "t", "stages": ["tokenize", "pretrain"]})
    with pytest.raises(ConfigError, match=r"^pretrain\.tokens: .*tokenize/index\.json does not exist"):
        run_stage(recipe, "pretrain", run)


def test_plan_refuses_an_unknown_gpu_naming_the_known(capsys):
    assert main(["plan", "demo-fast", "--gpu", "b999"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "b200" in out.err and "rtx4090" in out.err


def test_the_audit_step_and_command_print_the_same_line(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("name: t\nstages: [report, audit]\n")
    run = tmp_path / "run"
    run.mkdir()
    # a run with one record of a toy kind: audit re-hashes it whoever asks
    ledger.write_record(run, {"stage": "x", "status": "ok", "started": ledger.now(), "outputs": {}, "inputs": {}})
    assert main(["audit", str(run)]) == 0
    command = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[audit]")]
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(run)]) == 0
    step = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[audit]")]
    assert len(command) == 1 and len(step) == 1 and command[0].startswith("[audit] intact: ")
    assert step[0].split(" re-hashed")[0].startswith("[audit] intact: ")


START_MISTAKES = [
    (["rl.init=reward"], "rl.init: reward makes a reward model, not a language model to start from"),
    (["eval.model=report"], "eval.model: report makes no model, not a language model to start from"),
    (["stages=[curate,tokenize,pretrain,rl,sft]"], "rl.init: sft runs after rl in this recipe's stages"),
    (["interpolate.tuned=reward"], "interpolate.tuned: reward makes a reward model"),
]


@pytest.mark.parametrize(("over", "message"), START_MISTAKES, ids=[o[0] for o, _ in START_MISTAKES])
def test_a_start_from_a_stage_is_checked_at_load(over, message, capsys):
    assert main(["plan", "demo", *over]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err
