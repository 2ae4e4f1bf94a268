"""Weight interpolation: the maths, the endpoints, the choice rule and the stage outputs."""

from __future__ import annotations

import json

import pytest
import torch
from test_sft import _one_thread, make_base_run, sft_recipe  # noqa: F401 - autouse fixture

from ledgerlm.post import interpolate


def test_interpolate_state_is_linear():
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor([5])}
    mid = interpolate.interpolate_state(a, b, 0.25)
    assert torch.allclose(mid["w"], torch.tensor([1.0, 3.0]))
    assert mid["n"].item() == 5  # integer buffers come from the tuned model
    assert torch.equal(interpolate.interpolate_state(a, b, 0.0)["w"], a["w"])
    with pytest.raises(ValueError, match="shape"):
        interpolate.interpolate_state(a, {"w": torch.zeros(3), "n": b["n"]}, 0.5)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate.interpolate_state(a, {"w": b["w"]}, 0.5)


def test_choose_rule():
    rows = [
        {"alpha": 0.0, "loss": 2.0, "acc": 0.5},
        {"alpha": 0.5, "loss": 1.0, "acc": 0.7},
        {"alpha": 1.0, "loss": 1.0, "acc": 0.6},
    ]
    assert interpolate.choose(rows, "loss", "auto")["alpha"] == 0.5  # min, tie -> smaller alpha
    assert interpolate.choose(rows, "acc", "auto")["alpha"] == 0.5
    assert interpolate.choose(rows, "acc", "min")["alpha"] == 0.0


def test_interpolate_stage_end_to_end(tmp_path, monkeypatch):
    from ledgerlm.model.hf import load_model
    from ledgerlm.pipeline import build_recipe, run_stage

    run, data = make_base_run(tmp_path, n_convs=120)
    _, sft_rec = run_stage(sft_recipe(data, max_steps=15), "sft", run, echo=lambda *_: None)
    # a pluggable metric: distance of the first weight from the base (max -> alpha 1)
    base = load_model(run / "pretrain" / "model")
    w0 = base.embed_tokens.weight.detach().clone()
    monkeypatch.setitem(
        interpolate.METRICS, "drift", lambda model, tok, env: float((model.embed_tokens.weight.detach() - w0).norm())
    )
    raw = {
        "name": "t",
        "device": "cpu",
        "stages": ["interpolate"],
        "sft": sft_recipe(data, max_steps=15).to_dict()["sft"],
        "interpolate": {"alphas": [0.0, 0.5, 1.0], "metrics": ["sft_val_loss", "drift"]},
    }
    status, rec = run_stage(build_recipe(raw, need_all=False), "interpolate", run, echo=lambda *_: None)
    assert status == "ran"
    m = rec["metrics"]
    # the endpoints are exactly the base and the fine-tuned model
    assert m["sft_val_loss@0"] == pytest.approx(sft_rec["metrics"]["initial_val_loss"], abs=1e-5)
    assert m["sft_val_loss@1"] == pytest.approx(sft_rec["metrics"]["final_val_loss"], abs=1e-5)
    assert m["drift@0"] == 0.0 and m["drift@1"] > m["drift@0.5"] > 0
    rows = json.loads((run / "interpolate" / "sweep.json").read_text())["rows"]
    best = min(rows, key=lambda r: r["sft_val_loss"])
    assert m["chosen_alpha"] == best["alpha"] and m["chosen_sft_val_loss"] == best["sft_val_loss"]
    # judged against the SFT model it started from (α = 1), per held-out conversation, on the metric that chose α
    eff = m["effect"]
    assert eff["metric"] == "sft_val_loss" and eff["higher_is_better"] is False and eff["test"] == "paired_bootstrap"
    assert eff["before"] == m["sft_val_loss@1"] and eff["after"] == m["chosen_sft_val_loss"]
    assert eff["n"] == sft_rec["counters"]["conversations_val"]
    assert eff["improved"] == (m["chosen_sft_val_loss"] < m["sft_val_loss@1"])
    md = (run / "interpolate" / "sweep.md").read_text()
    assert md.count("\n| ") == 4 and "(chosen)" in md
    # the saved model is the chosen interpolation
    chosen = load_model(run / "interpolate" / "model")
    tuned = load_model(run / "sft" / "model")
    a = m["chosen_alpha"]
    want = torch.lerp(base.embed_tokens.weight, tuned.embed_tokens.weight, a)
    assert torch.allclose(chosen.embed_tokens.weight, want, atol=1e-6)
    # choosing by the other metric picks the other end
    raw["interpolate"]["choose"] = "drift"
    _, rec2 = run_stage(build_recipe(raw, need_all=False), "interpolate", run, echo=lambda *_: None)
    assert rec2["metrics"]["chosen_alpha"] == 1.0
    # a metric without per-item scores: before/after only, no test; α = 1 chosen is the start itself
    e2 = rec2["metrics"]["effect"]
    assert e2["test"] is None and e2["p"] is None and e2["before"] == e2["after"] == m["drift@1"]
    assert not e2["improved"] and "made_own_metric_worse" not in [w["code"] for w in rec2.get("warnings") or []]
    # without α = 1 in the sweep the stage scores the tuned model itself for its effect
    raw["interpolate"].update(alphas=[0.0, 0.5], choose="sft_val_loss")
    _, rec3 = run_stage(build_recipe(raw, need_all=False), "interpolate", run, echo=lambda *_: None)
    e3 = rec3["metrics"]["effect"]
    assert (
        e3["before"] == pytest.approx(m["sft_val_loss@1"], abs=1e-6)
        and e3["after"] == rec3["metrics"]["chosen_sft_val_loss"]
    )


def test_interpolate_config_errors(tmp_path):
    from ledgerlm.config import ConfigError
    from ledgerlm.pipeline import build_recipe

    with pytest.raises(ConfigError, match="choose"):
        build_recipe({"name": "t", "interpolate": {"metrics": ["a"], "choose": "b"}}, need_all=False)
    from ledgerlm.post.interpolate import metric_fn

    with pytest.raises(ConfigError, match="not sft_val_loss nor a task"):
        metric_fn("pqia")
    with pytest.raises(ConfigError, match="alphas"):
        build_recipe({"name": "t", "interpolate": {"alphas": []}}, need_all=False)


def test_interpolate_with_benchmark_metric(tmp_path, shared_data):
    """A task from ledgerlm.eval as a metric, scored by the harness on the interpolated weights (real PIQA items)."""
    from ledgerlm.pipeline import build_recipe, run_stage

    run, data = make_base_run(tmp_path, n_convs=60, max_seq_len=1024)  # PIQA items are long in a 400-token vocab
    run_stage(sft_recipe(data, max_steps=3), "sft", run, echo=lambda *_: None)
    raw = {
        "name": "t",
        "device": "cpu",
        "sft": sft_recipe(data, max_steps=3).to_dict()["sft"],
        "interpolate": {
            "alphas": [0.0, 1.0],
            "metrics": ["piqa", "piqa.acc", "arith", "sft_val_loss"],  # arith: a generative task, `arith_0shot`
            "choose": "piqa",
            "eval_limit": 16,
            "eval_data_dir": str(shared_data),
        },
    }
    _, rec = run_stage(build_recipe(raw, need_all=False), "interpolate", run, echo=lambda *_: None)
    m = rec["metrics"]
    for a in ("0", "1"):
        assert 0.0 <= m[f"piqa@{a}"] <= 1.0 and m[f"piqa.acc@{a}"] * 16 == round(m[f"piqa.acc@{a}"] * 16)
        assert m[f"arith@{a}"] * 16 == round(m[f"arith@{a}"] * 16)
    best = max((m["piqa@0"], 0.0), (m["piqa@1"], 1.0), key=lambda t: (t[0], -t[1]))
    assert m["chosen_alpha"] == best[1]
