"""What pretraining's validation loss measures (per source, per mixture, interleaved; the declared one is the
headline and picks the final weights) and data supply vs demand (plan and run warn about a source that runs dry)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ledgerlm.cli import main
from ledgerlm.data import documents, token_index
from ledgerlm.data import shards as sh
from ledgerlm.data.loader import TokenLoader
from ledgerlm.data.mixture import Phase
from ledgerlm.data.tokenizer import train_tokenizer
from ledgerlm.train import pretrain, supply

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _docs():
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA}")
    plays = (DATA / "text" / "tinyshakespeare.txt").read_text()[:150_000].split("\n\n")
    math = [json.loads(line)["answer"] for i, line in enumerate(open(DATA / "gsm8k" / "train.jsonl")) if i < 600]
    return [("prose", p) for p in plays] + [("math", m) for m in math]


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    docs = _docs()
    tok = train_tokenizer([t for _, t in docs[:800]], vocab_size=512)
    items = ((s, documents.split_of(f"{s}\0{i}", 0, 0.1), t) for i, (s, t) in enumerate(docs))
    sh.write_index(out, sh.write_shards(items, tok, out, eot=0, shard_tokens=50_000, workers=1, batch_bytes=200_000))
    return out


def _rows(batches) -> list[bytes]:
    return [row.numpy().tobytes() for b in batches for row in b[0]]


def test_val_mixture_interleaves_sources_row_by_row(tokdir):
    loader = TokenLoader(tokdir, seq_len=32, batch_size=4, seed=0)
    own = {s: _rows(loader.val_batches(None, mixture={s: 1.0})) for s in ("math", "prose")}
    mixed = _rows(loader.val_batches(8, mixture={"prose": 0.5, "math": 0.5}))
    assert len(mixed) == 32
    src = ["math" if r in own["math"] else "prose" for r in mixed]
    assert all(r in own["math"] or r in own["prose"] for r in mixed)
    # every batch of 4 mixes both sources (sorted-name concatenation would give 8 batches of math alone) ...
    assert all(len(set(src[i : i + 4])) == 2 for i in range(0, 32, 4))
    # ... each source's rows come in its own order (a prefix of its windows), in the mixture's proportions
    for s in ("math", "prose"):
        got = [r for r, k in zip(mixed, src) if k == s]
        assert got == own[s][: len(got)] and 14 <= len(got) <= 18
    # the default (no mixture) is every source in proportion to its val size, still interleaved
    default = _rows(loader.val_batches(4))
    assert {("math" if r in own["math"] else "prose") for r in default[:8]} == {"math", "prose"}


def _recipe(tmp_path, tokdir_jsonl, **pre):
    from ledgerlm.pipeline import build_recipe

    p = {
        "model": "tiny",
        "seq_len": 32,
        "micro_batch_size": 4,
        "batch_tokens": 128,
        "phases": [{"name": "mix", "tokens": 128 * 80, "mixture": {"prose": 0.5, "math": 0.5}}],
        "lr": 0.01,
        "eval_every": 40,
        "val_batches": 3,
        "average_last_k": 2,
    }
    p.update(pre)
    raw = {
        "name": "t",
        "seed": 1,
        "device": "cpu",
        "stages": ["tokenize", "pretrain"],
        "tokenize": {"input": [str(tokdir_jsonl)], "vocab_size": 512, "val_fraction": 0.1, "workers": 1},
        "pretrain": p,
    }
    return build_recipe(raw, None, need_all=False)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("in") / "docs.jsonl"
    p.write_text("".join(json.dumps({"id": str(i), "source": s, "text": t}) + "\n" for i, (s, t) in enumerate(_docs())))
    return p


def _run(tmp_path, jsonl, name, **pre) -> dict:
    from ledgerlm.pipeline import run_pipeline

    out = tmp_path / name
    assert run_pipeline(_recipe(tmp_path, jsonl, **pre), out, echo=lambda *a: None) == 0
    return out


def test_declared_mixture_is_the_headline_and_picks_the_weights(tmp_path, jsonl):
    out = _run(tmp_path, jsonl, "mix")
    rec = json.loads((out / "ledger" / "pretrain.json").read_text())
    m, x = rec["metrics"], rec["extra"]
    by = m["val_loss_by_source"]
    assert set(by) == {"math", "prose"} and abs(by["math"] - by["prose"]) > 0.1  # the sources differ in loss
    want = 0.5 * by["math"] + 0.5 * by["prose"]
    # the headline (the StageSpec's `final_val_loss`, which sweep reads) is the declared mixture's loss
    assert pretrain.SPEC.headline == ("final_val_loss",)
    assert m["final_val_loss"] == pytest.approx(want, abs=1e-6) and m["val_loss"] == m["final_val_loss"]
    assert x["val_on"] == "mix" and x["val_mixture"] == {"math": 0.5, "prose": 0.5}
    # select_final compared candidates on the same declared loss
    assert m["val_loss_by_weights"][x["final_weights"]] == pytest.approx(want, abs=1e-6)
    assert m["val_loss_by_weights"][x["final_weights"]] == min(m["val_loss_by_weights"].values())
    rows = [json.loads(r) for r in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r]
    assert len(val) == 2 and all("val_src.math" in r and "val_src.prose" in r for r in val)
    for r in val:  # logged every eval: the curve is the mixture's, per-source rows beside it
        assert r["val_loss"] == pytest.approx(0.5 * r["val_src.math"] + 0.5 * r["val_src.prose"], abs=2e-6)

    # naming one source makes it the headline, the curve and the choice of weights
    out2 = _run(tmp_path, jsonl, "prose", val_on="prose")
    m2 = json.loads((out2 / "ledger" / "pretrain.json").read_text())["metrics"]
    assert m2["final_val_loss"] == pytest.approx(m2["val_loss_by_source"]["prose"], abs=1e-6)
    assert m2["val_loss_by_source"] == pytest.approx(by, abs=1e-6)  # same training, other measure
    assert m2["final_val_loss"] != pytest.approx(m["final_val_loss"], abs=1e-3)


def test_report_shows_validation_by_source(tmp_path, jsonl):
    from ledgerlm.card import label

    out = _run(tmp_path, jsonl, "rep")
    assert main(["report", str(out)]) == 0
    md = next(p for p in (out / "report").glob("*.md")).read_text()
    assert "held-out loss, source math" in md and "held-out loss, source prose" in md and "(on mix)" in md
    assert label("val_src.math") == "held-out math" and label("val_mix.anneal") == "held-out anneal mixture"


def test_unknown_val_on_is_refused_naming_the_setting(tmp_path, jsonl):
    from ledgerlm.config import ConfigError
    from ledgerlm.pipeline import run_pipeline

    with pytest.raises(ConfigError, match="pretrain.val_on: 'books' is neither a phase nor a source"):
        run_pipeline(_recipe(tmp_path, jsonl, val_on="books"), tmp_path / "bad", echo=lambda *a: None)


def test_run_warns_when_a_phase_repeats_a_source_and_records_supply(tmp_path, jsonl, capsys):
    # `math` holds ~85k training tokens; the second phase asks ~4.7x that of it
    idx = token_index.TokenIndex
    phases = [
        {"name": "a", "tokens": 128 * 4, "mixture": {"prose": 1.0}},
        {"name": "b", "tokens": 400_000, "mixture": {"math": 1.0}},
    ]
    from ledgerlm.config import ConfigError
    from ledgerlm.pipeline import run_pipeline

    with pytest.raises(ConfigError, match="max_source_passes: the phases draw .* passes over source 'math'"):
        run_pipeline(_recipe(tmp_path, jsonl, phases=phases, steps=6), tmp_path / "dry", echo=lambda *a: None)
    out = _run(tmp_path, jsonl, "dry2", phases=phases, steps=6, max_source_passes=0)
    rec = json.loads((out / "ledger" / "pretrain.json").read_text())
    warn = [w for w in rec["warnings"] if w["code"] == "source_repeated"]
    assert len(warn) == 1 and "'math' runs dry" in warn[0]["message"]
    rows = {(r["phase"], r["source"]): r for r in rec["extra"]["supply"]}
    have = idx(out / "tokenize").n_tokens("math", "train")
    assert rows[("b", "math")]["available"] == have and rows[("b", "math")]["passes"] == pytest.approx(400_000 / have)
    assert rows[("a", "prose")]["passes"] < 1

    # plan reads the same counts from the run's tokenize record
    import yaml

    raw = _recipe(tmp_path, jsonl, phases=phases, steps=6).to_dict()
    raw["pretrain"]["max_source_passes"] = 0
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump({k: raw[k] for k in ("name", "seed", "device", "stages", "tokenize", "pretrain")}))
    assert main(["plan", str(f), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.split()[:2] == ["b", "math"])
    assert "(tokenize record)" in line and f"{400_000 / have:.2f} passes  REPEATS" in line
    assert "WARNING: source 'math' runs dry" in text


def test_plan_prints_supply_per_phase_and_source_and_warns_on_every_repeat(capsys):
    assert main(["plan", "smollm-135m-1gpu"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if " asks " in line]
    pairs = {tuple(line.split()[:2]) for line in table}
    assert pairs == {
        ("stable", "fineweb_edu"),
        ("anneal", "fineweb_edu"),
        ("anneal", "finemath"),
        ("anneal", "code"),
        ("anneal", "reasoning"),
    }
    assert "REPEATS" not in out and "runs dry" not in out
    # code and finemath both run dry when each document is short
    over = ["pretrain.supply_estimate.code.tokens_per_doc=1000", "pretrain.supply_estimate.finemath.tokens_per_doc=500"]
    assert main(["plan", "smollm-135m-1gpu", *over]) == 0
    out = capsys.readouterr().out
    warns = [line for line in out.splitlines() if "WARNING: source" in line]
    assert len(warns) == 2 and any("'code' runs dry" in w for w in warns) and any("'finemath'" in w for w in warns)
    assert sum("REPEATS" in line for line in out.splitlines()) == 2
    # above the recipe's limit: refused, one line, exit 2
    assert main(["plan", "smollm-135m-1gpu", "pretrain.supply_estimate.code.tokens_per_doc=100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_source_passes" in err[0] and "'code'" in err[0]


def test_supply_table_counts_passes_cumulatively():
    phases = [Phase("s", 100, {"a": 1.0}), Phase("t", 100, {"a": 0.5, "b": 0.5})]
    rows = supply.table(phases, {"a": (120, "x"), "b": (0, "x")})
    assert [r.passes for r in rows] == [pytest.approx(100 / 120), pytest.approx(150 / 120), float("inf")]
    assert set(supply.repeats(rows)) == {"a", "b"} and supply.over_limit(rows, 2.0) == {"b": float("inf")}
    assert np.isclose(supply.repeats(rows)["a"], 1.25)


def test_sweep_of_pretrain_without_metric_uses_the_headline(tmp_path, jsonl, capsys):
    import csv

    import yaml

    out = _run(tmp_path, jsonl, "sw")
    raw = _recipe(tmp_path, jsonl, eval_every=0).to_dict()
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump({k: raw[k] for k in ("name", "seed", "device", "stages", "tokenize", "pretrain")}))
    argv = ["sweep", str(f), "--stage", "pretrain", "--grid", "pretrain.lr=0.01,0.002", "--out", str(out)]
    assert main(argv) == 0  # no --metric: the stage's headline, final_val_loss, which the stage writes
    rows = list(csv.DictReader((out / "sweep" / "sweep.csv").open()))
    assert len(rows) == 2 and len({r["final_val_loss"] for r in rows}) == 2
    for r in rows:
        rec = json.loads((out / "sweep" / r["cell"] / "ledger" / "pretrain.json").read_text())
        assert float(r["final_val_loss"]) == pytest.approx(rec["metrics"]["final_val_loss"])
