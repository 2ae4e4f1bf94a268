"""The spine: recipe validation, atomic ledger records, skip/re-run, resume, and audit."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from ledgerlm import io as lio
from ledgerlm import ledger
from ledgerlm.cli import main
from ledgerlm.config import ConfigError, apply_overrides, builtin_recipes
from ledgerlm.recipe import load_recipe


def _recipe(toy, tmp_path, **over):
    raw = {"name": "toy", "seed": 1, "stages": ["make", "upper", "audit"], "make": {"text": "hi"}}
    return toy.build_recipe(apply_overrides(raw, over), tmp_path / "toy.yaml")


def test_unknown_key_wrong_type_and_missing_path_are_named(toy_stages, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"make\.txet: unknown key"):
        _recipe(toy_stages, tmp_path, **{"make.txet": "x"})
    with pytest.raises(ConfigError, match=r"toy.yaml: make\.repeat: expected an integer"):
        _recipe(toy_stages, tmp_path, **{"make.repeat": "many"})
    recipe = _recipe(toy_stages, tmp_path, **{"make.source": str(tmp_path / "nope.txt")})
    with pytest.raises(ConfigError, match=r"make\.source: path does not exist"):
        toy_stages.run_pipeline(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "make").exists()  # nothing ran


def test_cli_exits_2_naming_key_and_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [curate]\ncurate:\n  no_such_key: 1\n")
    code = main(["plan", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.yaml" in err and ("curate.no_such_key" in err or "curate" in err)
    bad.write_text("name: x\nseed: lots\n")
    assert main(["plan", str(bad)]) == 2
    assert "seed: expected an integer" in capsys.readouterr().err
    assert main(["plan", "no-such-recipe"]) == 2


def test_count_suffixes_and_yaml_floats(toy_stages, tmp_path):
    from ledgerlm.config import coerce

    assert coerce("10B", int, "k") == 10_000_000_000 and coerce("3e-4", float, "k") == 3e-4
    with pytest.raises(ConfigError):
        coerce(True, int, "k")


def test_run_skips_unchanged_and_reruns_changed_and_downstream(toy_stages, tmp_path):
    run = tmp_path / "run"
    msgs = []
    assert toy_stages.run_pipeline(_recipe(toy_stages, tmp_path), run, echo=msgs.append) == 0
    assert (run / "upper" / "upper.txt").read_text() == "HI\nHI\n"
    msgs.clear()
    assert toy_stages.run_pipeline(_recipe(toy_stages, tmp_path), run, echo=msgs.append) == 0
    assert sum("skipped" in m for m in msgs) == 2
    msgs.clear()
    toy_stages.run_pipeline(_recipe(toy_stages, tmp_path, **{"make.repeat": 3}), run, echo=msgs.append)
    assert not any("skipped" in m for m in msgs)
    assert (run / "upper" / "upper.txt").read_text() == "HI\nHI\nHI\n"
    rec = ledger.read_record(run, "upper")
    assert rec["inputs"]["data"]["sha256"] == ledger.read_record(run, "make")["outputs"]["data"]["sha256"]
    for key in ("started", "ended", "config", "code", "env", "inputs", "outputs", "counters", "metrics"):
        assert key in rec


def test_killed_write_leaves_previous_record_intact(toy_stages, tmp_path, monkeypatch):
    run = tmp_path / "run"
    toy_stages.run_pipeline(_recipe(toy_stages, tmp_path), run, echo=lambda m: None)
    before = ledger.record_path(run, "make").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt("killed during rename")

    monkeypatch.setattr(lio.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ledger.write_record(run, {**json.loads(before), "counters": {"lines": 99}})
    monkeypatch.undo()
    assert ledger.record_path(run, "make").read_bytes() == before
    assert not [p for p in (run / "ledger").iterdir() if p.name.endswith(".tmp")]


def test_failed_stage_resumes_with_same_config(toy_stages, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        toy_stages.run_pipeline(_recipe(toy_stages, tmp_path, **{"upper.fail": True}), run, echo=lambda m: None)
    assert ledger.read_record(run, "upper") is None and (run / "ledger" / "upper.attempt.json").exists()
    # same config: the make stage is skipped, upper starts again (its config changed, so not a resume)
    toy_stages.run_pipeline(_recipe(toy_stages, tmp_path), run, echo=lambda m: None)
    assert ledger.read_record(run, "upper")["status"] == "ok"
    assert not (run / "ledger" / "upper.attempt.json").exists()


def test_audit_catches_flipped_byte_deleted_file_and_edited_record(toy_stages, tmp_path):
    run = tmp_path / "run"
    toy_stages.run_pipeline(_recipe(toy_stages, tmp_path), run, echo=lambda m: None)
    assert ledger.audit(run)[0] == []
    data = run / "make" / "data.txt"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0x01
    data.write_bytes(bytes(raw))
    problems, _ = ledger.audit(run)
    assert any("make/data.txt" in p and "sha256" in p for p in problems)
    data.write_bytes(bytes([raw[0] ^ 0x01]) + bytes(raw[1:]))
    assert ledger.audit(run)[0] == []
    os.remove(run / "make" / "parts" / "a.txt")
    assert any("parts/a.txt is missing" in p for p in ledger.audit(run)[0])
    assert main(["audit", str(run)]) == 1


def test_audit_catches_edited_record_and_stale_chain(toy_stages, tmp_path):
    run = tmp_path / "run"
    toy_stages.run_pipeline(_recipe(toy_stages, tmp_path), run, echo=lambda m: None)
    rec_path = ledger.record_path(run, "make")
    rec = json.loads(rec_path.read_text())
    rec["counters"]["lines"] = 1000
    rec_path.write_text(json.dumps(rec))
    assert any("modified after it was written" in p for p in ledger.audit(run)[0])
    # re-run only `make` with a new config: `upper` now consumed a stale input
    toy_stages.run_stage(_recipe(toy_stages, tmp_path, **{"make.text": "yo"}), "make", run, echo=lambda m: None)
    assert any("stale" in p for p in ledger.audit(run)[0])


def test_atomic_jsonl_roundtrip_compressed(tmp_path):
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst"):
        lio.write_jsonl(tmp_path / name, [{"i": i, "t": "é"} for i in range(3)])
        assert [r["i"] for r in lio.read_jsonl(tmp_path / name)] == [0, 1, 2]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
        list(lio.read_jsonl(tmp_path / "bad.jsonl"))


def test_every_subcommand_has_help(capsys):
    from ledgerlm.cli import TOOLS
    from ledgerlm.stage import STAGES

    for cmd in ["run", "plan", "report", "audit", *STAGES, *TOOLS]:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "demo-fast" in capsys.readouterr().out  # the built-in recipes are listed
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "RLVR / GRPO with verifiable rewards" in capsys.readouterr().out  # a stage's help comes from its spec
    from ledgerlm.cli import build_parser

    for stage in STAGES:  # every option of every stage command has help (flags made from Config fields included)
        sub = next(a for a in build_parser(stage)._actions if isinstance(a, argparse._SubParsersAction))
        unhelped = [a.dest for a in sub.choices[stage]._actions if not a.help]
        assert unhelped == [], (stage, unhelped)
    with pytest.raises(SystemExit):
        main(["curate", "--help"])
    out = capsys.readouterr().out  # a nested section is explained, not printed as a dataclass repr
    assert "quality.KEY=VALUE" in out and "QualityConfig(" not in out


def test_plan_validates_real_recipes_and_estimates(capsys):
    assert main(["plan", "smollm-135m-1gpu", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008 params" in out and "GPU-hours" in out and "GiB of 80 GiB" in out
    assert "hub:HuggingFaceFW/fineweb-edu" in out  # the Hub input is listed with what could be checked
    assert main(["plan", "demo", "--gpu", "nosuchgpu"]) == 2  # one line naming the GPUs it knows
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown GPU 'nosuchgpu'" in err and "h100" in err and "b200" in err


def test_every_builtin_recipe_validates():
    names = builtin_recipes()
    assert {"demo", "demo-fast", "smollm-135m-1gpu", "smollm-135m-rehearsal"} <= set(names)
    for name in names:
        assert load_recipe(name).name  # every section checked against its stage's Config and across sections


def test_every_stage_config_field_is_documented():
    """`--help` of every stage command explains every option: each Config field has a comment (config.field_docs)."""
    import dataclasses

    from ledgerlm.config import field_docs
    from ledgerlm.stage import STAGES, get

    bare = {
        stage: missing
        for stage in STAGES
        if (
            missing := sorted(
                {f.name for f in dataclasses.fields(get(stage).config)} - set(field_docs(get(stage).config))
            )
        )
    }
    assert bare == {}


def test_list_flags_take_comma_separated_values():
    """`--alphas 0,0.5,1` and `--alphas '[0, 0.5, 1]'` set the same list; a scalar list item is a one-item list."""
    from ledgerlm.cli import CONFIG_FLAG, build_parser
    from ledgerlm.config import parse_override
    from ledgerlm.recipe import build_recipe

    def alphas(*flags):
        args = build_parser("interpolate").parse_args(["interpolate", *flags])
        key, value = parse_override("interpolate.alphas=" + getattr(args, CONFIG_FLAG + "alphas"))
        raw = apply_overrides({"name": "t"}, {".".join(key): value})
        return build_recipe(raw, need_all=False).section("interpolate").alphas

    assert alphas("--alphas", "0,0.5,1") == alphas("--alphas", "[0, 0.5, 1]") == [0.0, 0.5, 1.0]
    assert alphas("--alphas", "1") == [1.0]
