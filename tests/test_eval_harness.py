"""The scoring harness on a tiny random ledgerlm Llama saved as an HF folder: lm-eval tokenisation, tree packing,
backends, metrics, GSM8K generation, the eval stage, `ledgerlm eval --out` and `ledgerlm compare`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ledgerlm.eval import evaluate as ev
from ledgerlm.eval.backends import load_lm
from ledgerlm.eval.harness import encode_pairs
from ledgerlm.tasks import SIX_TASKS, TASKS, Item, TaskData, load_task

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"
sys.path.insert(0, str(FIX))
from tiny_model import make_tiny_model  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models gain nothing from threads, and on a busy machine idle OpenMP threads spin (restored after)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return make_tiny_model(d / "a", seed=0), make_tiny_model(d / "b", seed=1)


@pytest.fixture(scope="module")
def lm_hf(models):
    return load_lm(str(models[0]), backend="hf")


@pytest.fixture(scope="module")
def lm_ours(models):
    return load_lm(str(models[0]), backend="ledgerlm")


def _groups(names=("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "lambada_openai")):
    return [it.requests for n in names for it in load_task(n, FIX).items]


def test_encode_pairs_follows_lm_eval(lm_hf):
    tok = lm_hf.tok
    (r,) = encode_pairs(tok, [("Question: why?\nAnswer: ", "because")], lm_hf.max_length)
    # the trailing space moves to the continuation; whole string encoded, then split at the context's length
    whole = tok.encode("Question: why?\nAnswer: because")
    ctx = tok.encode("Question: why?\nAnswer:")
    assert r.seq == whole and r.n_cont == len(whole) - len(ctx)
    # left truncation to max_length + 1 tokens keeps the continuation whole
    long_ctx = "word " * 600
    (t,) = encode_pairs(tok, [(long_ctx.strip(), " end")], 64)
    assert len(t.seq) == 65 and t.seq[-t.n_cont :] == tok.encode(long_ctx.strip() + " end")[-t.n_cont :]


def _naive(lm, ctx, cont):
    """Independent reference: one forward over context+continuation, sum of continuation log-probs."""
    (r,) = encode_pairs(lm.tok, [(ctx, cont)], lm.max_length)
    ids = torch.tensor([r.seq[:-1]])
    logp = torch.log_softmax(lm.logits(ids)[0].float(), -1)
    n = r.n_cont
    tgt = torch.tensor(r.seq[-n:])
    rows = logp[-n:]
    return float(rows.gather(1, tgt[:, None]).sum()), bool((rows.argmax(-1) == tgt).all())


def test_tree_packing_equals_separate_scoring(lm_hf, lm_ours):
    groups = _groups()
    assert lm_hf.tree and lm_ours.tree
    packed = [x for g in lm_hf.loglikelihood(groups, batch_size=4) for x in g]
    lm_hf.tree = False
    try:
        flat = [x for g in lm_hf.loglikelihood(groups, batch_size=3) for x in g]
    finally:
        lm_hf.tree = True
    ours = [x for g in lm_ours.loglikelihood(groups, batch_size=5) for x in g]
    lm_ours.tree = False
    try:
        ours_flat = [x for g in lm_ours.loglikelihood(groups, batch_size=2) for x in g]
    finally:
        lm_ours.tree = True
    assert max(abs(o[0] - f[0]) for o, f in zip(ours, ours_flat)) < 1e-4
    # eager attention takes the tree mask in additive form
    lm_hf.attn_impl = lm_hf.model.config._attn_implementation = "eager"
    try:
        eager = [x for g in lm_hf.loglikelihood(groups, batch_size=4) for x in g]
    finally:
        lm_hf.attn_impl = lm_hf.model.config._attn_implementation = "sdpa"
    assert max(abs(p[0] - e[0]) for p, e in zip(packed, eager)) < 1e-3
    assert len(packed) == len(flat) == len(ours) == sum(len(g) for g in groups)
    for p, f, o in zip(packed, flat, ours):
        assert abs(p[0] - f[0]) < 1e-3 and abs(p[0] - o[0]) < 1e-3
        assert p[1:] == f[1:] == o[1:]
    # and against the independent one-request-at-a-time reference
    pairs = [pair for g in groups for pair in g]
    for k in (0, 5, len(pairs) - 1):
        ll, greedy = _naive(lm_hf, *pairs[k])
        assert abs(ll - packed[k][0]) < 1e-3 and greedy == packed[k][1]


def test_acc_vs_acc_norm_and_lambada_metrics(monkeypatch, lm_hf):
    mc = TaskData(
        TASKS["piqa"], "validation", "mem", [Item(0, [("q", " a"), ("q", " bbbbbbbbbb")], ["a", "bbbbbbbbbb"], gold=1)]
    )
    monkeypatch.setattr(lm_hf, "loglikelihood", lambda groups, **kw: [[(-2.0, False, 1), (-5.0, False, 3)]])
    r = ev.score_loglikelihood_task(lm_hf, mc)
    # acc picks the higher total log-likelihood; acc_norm divides by the choice's length in characters
    assert r["items"][0]["pred"] == 0 and r["items"][0]["pred_norm"] == 1
    assert r["metrics"]["acc"]["value"] == 0 and r["metrics"]["acc_norm"]["value"] == 1
    lam = TaskData(TASKS["lambada_openai"], "test", "mem", [Item(i, [("c", " w")], target="w") for i in range(2)])
    monkeypatch.setattr(lm_hf, "loglikelihood", lambda groups, **kw: [[(-1.0, True, 1)], [(-3.0, False, 2)]])
    r = ev.score_loglikelihood_task(lm_hf, lam)
    assert r["metrics"]["acc"]["value"] == 0.5
    assert r["metrics"]["perplexity"]["value"] == pytest.approx(math.exp(2.0))  # exp(-mean ll) over items


def test_ensemble_modes(models, lm_hf):
    a, b = str(models[0]), str(models[1])
    same = load_lm(f"{a},{a}", backend="hf")
    ids = torch.tensor([lm_hf.tok.encode("To be or not to be")])
    ref = torch.log_softmax(lm_hf.logits(ids).float(), -1)
    assert torch.allclose(torch.log_softmax(same.logits(ids), -1), ref, atol=1e-5)
    ens = load_lm(f"{a},{b}", backend="hf", ensemble_mode="logit")
    lb = load_lm(b, backend="hf")
    assert torch.allclose(ens.logits(ids), (lm_hf.logits(ids).float() + lb.logits(ids).float()) / 2, atol=1e-5)
    g = _groups(("piqa", "winogrande"))
    assert len(load_lm(f"{a},{b}", backend="hf").loglikelihood(g)) == len(g)
    # ensemble generation: KV-cached ledgerlm Ensemble == full recomputation of the averaged distribution
    prompts = ["Question: 2 + 2?\nAnswer:", "Question: why is the sky so blue today?\nAnswer:"]
    ens = load_lm(f"{a},{b}", backend="hf")
    cached = ens.generate(prompts, 8, ["Question:"])
    assert ens._kv_model
    ens._kv_model = False
    assert ens.generate(prompts, 8, ["Question:"]) == cached


def test_gsm8k_generation_backends_agree(lm_hf, lm_ours):
    task = load_task("gsm8k", FIX)
    train = load_task("gsm8k", FIX, split="train")
    r_hf = ev.score_generative(lm_hf, task, 2, train, max_new_tokens=12, batch_size=2)
    r_ours = ev.score_generative(lm_ours, task, 2, train, max_new_tokens=12, batch_size=3)
    assert [x["completion"] for x in r_hf["items"]] == [x["completion"] for x in r_ours["items"]]
    assert (
        r_hf["n"] == 3 and r_hf["shots"] == 2 and set(r_hf["metrics"]) == {"exact_match_strict", "exact_match_flexible"}
    )
    assert r_hf["items"][1]["gold"] == "250"
    # the batched, left-padded generation equals generating each prompt alone
    prompts = ["Question: 1 + 1?\nAnswer:", "Question: A much longer question about apples and pears?\nAnswer:"]
    batched = lm_hf.generate(prompts, 10, ["Question:"])
    alone = [lm_hf.generate([p], 10, ["Question:"])[0] for p in prompts]
    assert batched == alone


def test_eval_stage_through_the_pipeline(models, tmp_path):
    from ledgerlm.ledger import read_record
    from ledgerlm.pipeline import build_recipe, run_stage

    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "model").symlink_to(models[0], target_is_directory=True)
    raw = {
        "name": "t",
        "stages": ["eval"],
        "eval": {
            "tasks": list(SIX_TASKS) + ["gsm8k"],
            "data_dir": str(FIX),
            "gsm8k_shots": [0],
            "gsm8k_max_new_tokens": 8,
        },
    }
    recipe = build_recipe(raw, need_all=False)
    status, rec = run_stage(recipe, "eval", run, echo=lambda *_: None)
    assert status == "ran" and rec["status"] == "ok"
    res = json.loads((run / "eval" / "results.json").read_text())
    assert res["model"].endswith("pretrain/model")
    assert set(res["tasks"]) == set(SIX_TASKS) | {"gsm8k_0shot"}
    mean = sum(res["tasks"][t]["metrics"][ev.HEADLINE[t]]["value"] for t in SIX_TASKS) / 6
    assert res["six_task_mean"]["value"] == pytest.approx(mean)
    assert rec["metrics"]["six_task_mean"] == pytest.approx(mean)
    assert rec["counters"]["arc_easy.quarantined"] == 1
    md = (run / "eval" / "results.md").read_text()
    assert "six-task mean" in md and "reported, not re-run" in md and "0.4767" in md
    assert read_record(run, "eval")["outputs"]["results"]["kind"] == "file"
    assert run_stage(recipe, "eval", run, echo=lambda *_: None)[0] == "skipped"


def test_cli_eval_out_json_and_compare(models, tmp_path, capsys):
    from ledgerlm.cli import main

    outs = []
    for m, name in zip(models, "ab"):
        out = tmp_path / f"{name}.json"
        rc = main(
            ["eval", "--model", str(m), "--tasks", ",".join(SIX_TASKS), "--data-dir", str(FIX), "--out", str(out)]
        )
        assert rc == 0 and out.is_file() and out.with_suffix(".md").is_file()
        outs.append(out)
    res = json.loads(outs[0].read_text())
    assert res["tasks"]["piqa"]["items"][0]["ll"] and "six_task_mean" in res
    capsys.readouterr()
    assert main(["compare", str(outs[0]), str(outs[1]), "--iters", "500", "--json", str(tmp_path / "c.json")]) == 0
    text = capsys.readouterr().out
    assert "p (McNemar)" in text and "Six-task mean" in text
    c = json.loads((tmp_path / "c.json").read_text())
    assert {r["task"] for r in c["tasks"]} == set(SIX_TASKS)
    assert main(["compare", str(outs[0]), str(tmp_path / "missing.json")]) == 2
    assert main(["eval", "--model", str(models[0]), "--tasks", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert main(["eval", "--out", str(tmp_path / "empty_run")]) == 2  # model=auto but the run has no model
    assert "no model in" in capsys.readouterr().err
