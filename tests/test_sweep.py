"""`ledgerlm sweep`: an LR x batch-size grid of the sft stage, end to end on CPU, with table and contour plots."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from test_sft import _one_thread, make_base_run  # noqa: F401 - autouse fixture

from ledgerlm import sweep
from ledgerlm.config import ConfigError


def test_parse_grid():
    g = sweep.parse_grid(["sft.lr=1e-4, 3e-4", "sft.batch_size=4,8", "sft.pack=true,false"])
    assert g == {"sft.lr": [1e-4, 3e-4], "sft.batch_size": [4, 8], "sft.pack": [True, False]}
    for bad in (["sft.lr"], ["sft.lr="], ["sft.lr=1,1"], []):
        with pytest.raises(ConfigError):
            sweep.parse_grid(bad)
    assert sweep.cell_name({"sft.lr": 0.0003, "sft.batch_size": 4}) == "lr=0.0003_batch_size=4"


def test_sweep_lr_by_batch_size_end_to_end(tmp_path, capsys):
    from ledgerlm.cli import main

    run, data = make_base_run(tmp_path, n_convs=80)
    recipe = tmp_path / "r.yaml"
    sft = {"data": str(data), "max_steps": 4, "seq_len": 128, "val_fraction": 0.1, "eval_every": 100}
    recipe.write_text(yaml.safe_dump({"name": "t", "device": "cpu", "stages": ["sft"], "sft": sft}))
    argv = ["sweep", str(recipe), "--stage", "sft", "--grid", "sft.lr=1e-3,1e-2", "--grid", "sft.batch_size=2,4"]
    argv += ["--metric", "final_val_loss", "--metric", "final_train_loss", "--out", str(run)]
    assert main(argv) == 0
    out = run / "sweep"
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(float(r["sft.lr"]), int(r["sft.batch_size"])) for r in rows] == [
        (1e-3, 2),
        (1e-3, 4),
        (1e-2, 2),
        (1e-2, 4),
    ]
    # each cell is a real run with its own ledger record, and the table carries that record's metrics
    for r in rows:
        rec = json.loads((out / r["cell"] / "ledger" / "sft.json").read_text())
        assert rec["config"]["lr"] == float(r["sft.lr"]) and rec["config"]["batch_size"] == int(r["sft.batch_size"])
        assert float(r["final_val_loss"]) == pytest.approx(rec["metrics"]["final_val_loss"])
    assert len({r["final_val_loss"] for r in rows}) == 4  # the grid really changed the training
    for m in ("final_val_loss", "final_train_loss"):
        assert (out / f"{m}.png").read_bytes()[:4] == b"\x89PNG"
        assert b"<svg" in (out / f"{m}.svg").read_bytes()[:400]
    md = (out / "sweep.md").read_text()
    assert md.count("\n| lr=") == 4 and "best final_val_loss" in md
    assert "final_val_loss.png" in capsys.readouterr().out
    # a second invocation finds every cell up to date and reproduces the same table
    before = (out / "sweep.csv").read_text()
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    after = (out / "sweep.csv").read_text()
    strip = lambda t: [line.rsplit(",", 1)[0] for line in t.splitlines()]  # noqa: E731 - drop the timing column
    assert strip(after) == strip(before)


def test_sweep_errors(tmp_path):
    run, data = make_base_run(tmp_path, n_convs=20)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "t", "device": "cpu", "sft": {"data": str(data), "max_steps": 1}}))
    with pytest.raises(ConfigError, match="lr"):
        sweep.run_sweep(recipe, "sft", {"sft.lr": ["fast"]}, run)  # validated before any cell runs
    with pytest.raises(ConfigError, match="unknown stage"):
        sweep.run_sweep(recipe, "nope", {"sft.lr": [1e-3]}, run)
    with pytest.raises(ConfigError, match="not in the sft record"):
        sweep.run_sweep(recipe, "sft", {"sft.lr": [1e-3]}, run, metrics=["accuracy"], echo=lambda *_: None)
