"""Live progress, metric tracking (TensorBoard event files, wandb/trackio through their API), diverted third-party
output, stage summaries and the warnings a stage records when a result is quietly bad."""

from __future__ import annotations

import importlib.machinery
import io
import json
import logging
import sys
import time
import types
from dataclasses import dataclass

import pytest

from ledgerlm import ledger
from ledgerlm.progress import LoggingConfig, Progress, Tracker, divert_stderr, fmt_duration, fmt_value
from ledgerlm.stage import StageContext, StageResult, StageSpec


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a TensorBoard log directory, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ----------------------------------------------------------------------------- progress


def test_lines_mode_prints_step_loss_rate_elapsed_and_eta(monkeypatch):
    monkeypatch.delenv("LEDGERLM_PROGRESS", raising=False)
    out = io.StringIO()  # not a terminal: plain lines
    p = Progress(total=4, desc="[pretrain]", stream=out, every_s=0.0)
    assert p.mode == "lines"
    p.log({"step": 1, "loss": 3.21456, "tok_s": 12345.0, "lr": 1e-3})
    p.log({"step": 2, "loss": 2.5, "val_loss": float("nan"), "tok_s": 12000.0, "heldout_acc": 0.583})
    first, second = out.getvalue().splitlines()
    assert "heldout_acc 58%" in second
    assert first.startswith("[pretrain] step 1/4 (25%) loss 3.215 tok/s 12.3k") and "elapsed, ETA" in first
    assert "val_loss nan" in second and "lr" not in second  # only the chosen keys are shown
    p.close()
    assert len(out.getvalue().splitlines()) == 3  # stopped early: one more line says where


def test_lines_mode_is_rate_limited_but_always_prints_the_end(monkeypatch):
    monkeypatch.delenv("LEDGERLM_PROGRESS", raising=False)
    out = io.StringIO()
    for _ in Progress(range(50), desc="[tokenize]", unit="batch", stream=out, every_s=3600):
        pass
    assert out.getvalue().splitlines() == [out.getvalue().strip()]
    assert out.getvalue().startswith("[tokenize] batch 50/50 (100%)") and "ETA" not in out.getvalue()


def test_bar_mode_on_a_terminal_and_off(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("LEDGERLM_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    tty = Tty()
    with Progress(total=3, desc="[sft]", stream=tty) as p:
        assert p.mode == "bar"
        p.log({"step": 3, "loss": 1.5})
    assert "3/3" in tty.getvalue() and "loss 1.5" in tty.getvalue()
    monkeypatch.setenv("CI", "true")  # CI logs are files: lines even on a pseudo-terminal
    assert Progress(total=1, stream=Tty()).mode == "lines"
    monkeypatch.setenv("LEDGERLM_PROGRESS", "off")
    quiet = io.StringIO()
    with Progress(total=2, stream=quiet, every_s=0) as p:
        p.update(2)
    assert quiet.getvalue() == ""


def test_tokens_per_second_from_cumulative_tokens(monkeypatch):
    monkeypatch.delenv("LEDGERLM_PROGRESS", raising=False)
    from ledgerlm import progress

    now = [100.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(time=lambda: now[0]))
    out = io.StringIO()
    p = Progress(total=3, desc="[sft]", stream=out, every_s=0)
    p.log({"step": 1, "loss": 2.0, "tokens": 1000})
    now[0] = 102.0
    p.log({"step": 2, "loss": 1.9, "tokens": 5000})
    assert "tok/s 2000" in out.getvalue().splitlines()[-1]  # 4000 tokens in 2 s


def test_formatting():
    assert [fmt_value(x) for x in (3.21456, 0.00213, 12345.0, 2.5e6, 40.0, float("inf"), "scan")] == [
        "3.215",
        "0.00213",
        "12.3k",
        "2.5M",
        "40",
        "inf",
        "scan",
    ]
    assert fmt_duration(59.6) == "1:00" and fmt_duration(3725) == "1:02:05"


# ----------------------------------------------------------------------------- tracking


def test_tensorboard_events_hold_the_logged_scalars_and_resume_purges(tmp_path):
    t = Tracker(tmp_path, "pretrain")
    with Progress(total=3, tracker=t, stream=io.StringIO(), mode="off") as p:
        for step, loss in ((1, 4.0), (2, 3.0), (3, 2.5)):
            p.log({"step": step, "loss": loss, "flags": {"skipped": True}, "sub": {"x": 1.0}, "note": "text"})
    t.close()
    got = scalars(tmp_path / "tensorboard" / "pretrain")
    assert got["loss"] == [(1, 4.0), (2, 3.0), (3, 2.5)] and got["sub/x"] == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert "flags/skipped" not in got and "note" not in got and "step" not in got  # numbers only
    assert t.paths() == {"tensorboard": "tensorboard/pretrain"}
    # a resumed run from step 1 re-logs steps 2.. : TensorBoard drops the old ones. Its reader orders event files by
    # name (seconds, host, pid, a process-wide counter): within one second counter 10 sorts before 9, so wait a second
    time.sleep(1.1)
    t2 = Tracker(tmp_path, "pretrain")
    with Progress(total=3, start=1, tracker=t2, stream=io.StringIO(), mode="off") as p:
        p.log({"step": 2, "loss": 2.0})
    t2.close()
    assert scalars(tmp_path / "tensorboard" / "pretrain")["loss"] == [(1, 4.0), (2, 2.0)]


def test_backend_none_writes_nothing(tmp_path):
    t = Tracker(tmp_path, "sft", LoggingConfig(backend="none"))
    t.log({"loss": 1.0}, 1)
    t.close()
    assert not (tmp_path / "tensorboard").exists() and t.paths() == {}


@pytest.mark.parametrize("backend", ["wandb", "trackio"])
def test_wandb_and_trackio_get_the_same_scalars(tmp_path, monkeypatch, backend):
    calls = []
    fake = types.ModuleType(backend)
    fake.__spec__ = importlib.machinery.ModuleSpec(backend, None)
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda d, step=None: calls.append(("log", d, step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, backend, fake)
    cfg = LoggingConfig(backend=backend, project="proj")  # validates: the package is importable
    t = Tracker(tmp_path / "run1", "dpo", cfg, {"lr": 1e-4})
    t.log({"loss": 0.69}, 1)
    t.close()
    init = calls[0][1]
    assert init["project"] == "proj" and init["name"] == "run1/dpo" and init["config"] == {"lr": 1e-4}
    assert calls[1:] == [("log", {"loss": 0.69}, 1), ("finish",)]
    assert scalars(tmp_path / "run1" / "tensorboard" / "dpo")["loss"][0][0] == 1  # the offline copy too


def test_missing_tracking_extra_is_one_line_exit_2_before_compute(tmp_path, capsys, monkeypatch):
    from ledgerlm.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed (find_spec then raises)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "wandb" else object())
    run = tmp_path / "run"
    assert main(["run", "demo", "--out", str(run), "logging.backend=wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "logging: backend 'wandb' needs the wandb package" in err
    assert "pip install 'ledgerlm[wandb]'" in err and not run.exists()
    assert main(["plan", "demo", "logging.colour=1"]) == 2
    assert "logging.colour: unknown key" in capsys.readouterr().err


# ----------------------------------------------------------------------------- third-party output


def test_diverted_stderr_goes_to_the_stage_log(tmp_path, capsys):
    from loguru import logger

    log = tmp_path / "stage.log"
    with divert_stderr(log) as terminal:
        print("datatrove banner: Total Runtime: 0 seconds", file=sys.stderr)
        logger.info("loguru says hello")
        logging.getLogger("transformers").addHandler(handler := logging.StreamHandler())  # made during the stage
        logging.getLogger("transformers").warning("a library warning")
        print("ours", file=terminal)
    kept_after = sys.stderr
    print("after the stage", file=sys.stderr)
    logging.getLogger("transformers").warning("later library warning")  # its handler still works: terminal
    logging.getLogger("transformers").removeHandler(handler)
    err = capsys.readouterr().err
    text = log.read_text()
    assert "Total Runtime" in text and "loguru says hello" in text and "a library warning" in text
    assert "Total Runtime" not in err and "loguru" not in err and "ours" in err and "after the stage" in err
    assert "a library warning" not in err and "later library warning" in err
    assert kept_after is sys.stderr


# ----------------------------------------------------------------------------- summaries and warnings in the ledger


@dataclass
class _WarnConfig:
    val: float = 1.0


def _warn_stage():
    mod = types.ModuleType("toy_warn")

    def run(cfg, ctx):
        out = ctx.out_dir / "x.txt"
        out.write_text("x")
        ctx.warn("toy_bad", "the toy result is quietly bad")
        with ctx.steps(2) as view:
            for step in (1, 2):
                view.log({"step": step, "loss": 1.0 / step})
        return StageResult(
            outputs={"x": out},
            metrics={"val_loss": cfg.val, "per": [1.0, float("inf")]},
            summary=["toy kept 1 of 2", "second line"],
        )

    mod.SPEC = StageSpec(name="warn", config=_WarnConfig, run=run, help="toy: warns")
    return mod


def test_warnings_and_summary_are_printed_recorded_and_audited(tmp_path, monkeypatch, capsys, empty_registry):
    from ledgerlm import pipeline

    monkeypatch.setitem(sys.modules, "toy_warn", _warn_stage())
    empty_registry["warn"] = "toy_warn"
    run = tmp_path / "run"
    recipe = pipeline.build_recipe({"name": "t", "stages": ["warn", "audit"], "warn": {"val": float("nan")}})
    assert pipeline.run_pipeline(recipe, run) == 0
    out, err = capsys.readouterr()
    rec = ledger.read_record(run, "warn")
    assert rec["warnings"] == [
        {"code": "toy_bad", "message": "the toy result is quietly bad"},
        {"code": "nonfinite_metric", "message": "val_loss is nan: no usable number was measured (see logs/warn.log)"},
        {"code": "nonfinite_metric", "message": "per[1] is inf: no usable number was measured (see logs/warn.log)"},
    ]
    assert rec["summary"] == ["toy kept 1 of 2", "second line"]
    assert rec["logs"] == {"log": "logs/warn.log", "tensorboard": "tensorboard/warn"}
    assert "[warn] toy kept 1 of 2\n[warn] second line\n" in out
    assert "warning [warn] toy_bad: the toy result is quietly bad" in err
    assert "[audit] intact" in out and "3 warning(s): warn: toy_bad; warn: nonfinite_metric" in out
    assert scalars(run / "tensorboard" / "warn")["loss"] == [(1, 1.0), (2, 0.5)]
    assert ledger.audit(run)[0] == []  # event files are not hashed outputs: they may differ run to run
    # a warning cannot be edited away unnoticed: it is sealed with the record
    edited = json.loads(ledger.record_path(run, "warn").read_text())
    edited["warnings"] = []
    ledger.record_path(run, "warn").write_text(json.dumps(edited))
    assert any("record_sha256 mismatch" in p for p in ledger.audit(run)[0])
    ledger.write_record(run, rec)
    # skipped on the next run: the recorded warnings are repeated, the tensorboard files stay
    assert pipeline.run_pipeline(recipe, run) == 0
    out, err = capsys.readouterr()
    assert "skipped" in out and "warning [warn] toy_bad: the toy result is quietly bad (recorded)" in err


def test_preference_chance_warning():
    from ledgerlm.post.preference import heldout_summary

    ctx = StageContext(run_dir=None, stage="reward", recipe=None, terminal=io.StringIO())
    chance = {"heldout_accuracy": 0.48, "heldout_p_binomial": 0.69, "heldout_wilson95": [0.38, 0.58]}
    (line,) = heldout_summary(ctx, "reward model", chance, 100, ("before training", 0.51))
    assert line.startswith("held-out accuracy 48.0% (48/100 pairs") and "p = 0.69; before training 51.0%" in line
    assert [w["code"] for w in ctx.warnings] == ["not_better_than_chance"]
    assert "reward model held-out accuracy 48.0% (48/100) is not better than chance" in ctx.warnings[0]["message"]
    good = {"heldout_accuracy": 0.7, "heldout_p_binomial": 3e-5, "heldout_wilson95": [0.6, 0.78]}
    ctx2 = StageContext(run_dir=None, stage="dpo", recipe=None, terminal=io.StringIO())
    heldout_summary(ctx2, "DPO", good, 100)
    assert ctx2.warnings == []


def test_rl_zero_variance_and_no_change_warnings():
    from ledgerlm.post.rl import paired_exact_match, rl_summary

    ctx = StageContext(run_dir=None, stage="rl", recipe=None, terminal=io.StringIO())
    flat = paired_exact_match([False] * 97 + [True] * 3, [False] * 97 + [True] * 3)
    lines = rl_summary(ctx, flat, {"zero_std_groups": 72, "groups": 80}, 0.1)
    assert "held-out exact match 3.0% → 3.0% on 100 problems (+0 / -0, McNemar p = 1)" in lines[0]
    assert [w["code"] for w in ctx.warnings] == ["zero_variance_groups", "no_significant_change"]
    assert ctx.warnings[0]["message"].startswith("90% of 80 groups gave every sample the same reward")
    ctx2 = StageContext(run_dir=None, stage="rl", recipe=None, terminal=io.StringIO())
    better = paired_exact_match([False] * 100, [True] * 30 + [False] * 70)
    rl_summary(ctx2, better, {"zero_std_groups": 20, "groups": 80}, 0.0)
    assert ctx2.warnings == []


def _mc_task(correct: int, n: int, choices: int) -> dict:
    from ledgerlm.components.stats import binary_score

    items = [{"gold": 0, "ll": [0.0] * choices, "acc": int(i < correct)} for i in range(n)]
    score = binary_score([it["acc"] for it in items])
    return {"n": n, "items": items, "metrics": {"acc": score, "acc_norm": score}}


def test_eval_at_chance_per_task():
    from ledgerlm.components.stats import binary_score
    from ledgerlm.eval.eval_stage import chance_rate, chance_warnings, results_table

    gen = {"n": 50, "items": [{"ok_strict": 0}] * 50, "metrics": {"exact_match_strict": binary_score([0] * 50)}}
    results = {
        "model": "runs/x/rl/model",
        "tasks": {
            "piqa": _mc_task(52, 100, 2),  # 52% on two choices: chance
            "arc_easy": _mc_task(45, 100, 4),  # 45% on four choices: well above 25%
            "arith_0shot": gen,  # open answers: chance is none right
        },
    }
    assert chance_rate(results["tasks"]["arc_easy"]) == 0.25 and chance_rate(gen) == 0.0
    warned = dict(chance_warnings(results))
    assert set(warned) == {"piqa", "arith_0shot"}
    assert "not better than chance 50.0%" in warned["piqa"] and "0/50" in warned["arith_0shot"]
    table = results_table(results)
    assert table[0] == "evaluated runs/x/rl/model" and table[1].split() == ["task", "metric", "value", "stderr",
                                                                            "95%", "CI", "n"]  # fmt: skip
    assert any(row.split()[:3] == ["arc_easy", "acc", "45.0%"] for row in table)


def test_tokenize_warns_when_the_vocabulary_is_smaller_than_asked(tmp_path, capsys):
    """A request above what the text can support at all is refused up front (tests/test_errors.py); one under that
    bound that BPE still cannot fill (merges are shared between words) trains, with a warning."""
    from ledgerlm.cli import main
    from ledgerlm.data.tokenizer import max_learnable_vocab

    text = "the cat sat on the mat.\n\nthe dog sat on the log.\n" * 20
    (tmp_path / "tiny.txt").write_text(text)
    asked = max_learnable_vocab([text], 10**9)
    run = tmp_path / "run"
    assert main(["tokenize", "--input", str(tmp_path / "tiny.txt"), "--vocab-size", str(asked), "--out", str(run)]) == 0
    rec = ledger.read_record(run, "tokenize")
    got = rec["metrics"]["vocab_size"]
    assert got < asked
    (w,) = [w for w in rec["warnings"] if w["code"] == "vocab_smaller_than_asked"]
    assert w["message"].startswith(f"asked for {asked:,} vocabulary entries, the text supported {got:,}")
    assert "warning [tokenize] vocab_smaller_than_asked" in capsys.readouterr().err
    assert any(s.startswith(f"vocabulary {got:,} (asked {asked:,})") for s in rec["summary"])
