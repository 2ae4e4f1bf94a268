"""The pieces every post-training loop shares (ledgerlm/post/common.py) and the flags generated for the training
stages' commands."""

import dataclasses
import json
import logging
import random

import pytest
import torch

from ledgerlm import cli
from ledgerlm.components.schedule import lr_at
from ledgerlm.post import dpo, rl, sft
from ledgerlm.post.common import LoopSchedule, Shuffled, StepLog, init_inputs, optimizer_step, trained_outputs
from ledgerlm.stage import StageContext


def test_shuffled_is_endless_passes_in_a_fresh_order_each():
    gen = torch.Generator().manual_seed(3)
    got = Shuffled(5, gen).take(12)
    ref = torch.Generator().manual_seed(3)
    want = [i for _ in range(3) for i in reversed(torch.randperm(5, generator=ref).tolist())][:12]
    assert got == want
    s = Shuffled(5, torch.Generator().manual_seed(3))
    s.take(6)
    assert s.epoch == 2 and len(s.queue) == 4  # the state a checkpoint saves: passes begun, what is left of this one
    assert sorted(s.take(4)) == sorted(set(range(5)) - {want[5]}) and s.epoch == 2
    rng = random.Random("x")
    order = list(range(4))
    random.Random("x").shuffle(order)
    assert Shuffled(4, rng).take(4) == order[::-1]  # random.Random: its shuffle, popped from the end


def test_schedule_from_epochs_and_its_lr():
    cfg = sft.Config(data="x", epochs=2.0, batch_size=4, lr=1e-3, warmup_ratio=0.25, schedule="cosine")
    s = LoopSchedule.from_epochs(cfg, n_items=10, evals=10, min_lr_ratio=0.1)
    assert (s.per_epoch, s.total, s.warmup, s.eval_every) == (3, 6, 1, 1)
    assert [s.lr_at(i) for i in range(6)] == [lr_at(i, 6, 1e-3, 1, "cosine", 0.1) for i in range(6)]
    cfg.max_steps, cfg.eval_every = 7, 3
    s = LoopSchedule.from_epochs(cfg, n_items=10, evals=10)
    assert s.total == 7 and [i for i in range(7) if s.evaluates(i)] == [2, 5, 6]  # and always the last step
    assert not any(LoopSchedule(5, 1e-3).evaluates(i) for i in range(5))  # eval_every 0: never


def test_optimizer_step_sets_lr_times_group_mult_and_returns_the_preclip_norm():
    torch.manual_seed(0)
    body, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    model = torch.nn.Sequential(body, head)
    opt = torch.optim.SGD(body.parameters(), lr=0.0)
    opt.add_param_group({"params": list(head.parameters()), "lr_mult": 10.0})
    model(torch.randn(3, 4)).pow(2).sum().mul(100).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()
    assert optimizer_step(model, opt, 0.01, grad_clip=1.0) == pytest.approx(norm, rel=1e-5) and norm > 1
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert all(p.grad is None for p in model.parameters())


def test_step_log_writes_rows_keeps_first_and_last_and_stops_on_a_nonfinite_loss(tmp_path):
    ctx = StageContext(run_dir=tmp_path, stage="dpo", recipe=None, log=logging.getLogger("t"))
    ctx.out_dir.mkdir()
    with pytest.raises(FloatingPointError, match="dpo: loss is nan at step 3"):
        with StepLog(ctx, total=3, show=("loss",)) as log:
            log.write({"step": 0, "heldout_acc": 0.5})
            log.step({"step": 1, "loss": 0.7})
            log.step({"step": 2, "loss": 0.6})
            log.step({"step": 3, "loss": float("nan")})
    assert log.first["loss"] == 0.7 and log.last["loss"] == 0.6
    rows = [json.loads(x) for x in (ctx.out_dir / "metrics.jsonl").read_text().split("\n") if x]
    assert [r["step"] for r in rows] == [0, 1, 2]  # the NaN row is not written


def test_init_inputs_hash_files_but_not_the_builtin_task(tmp_path):
    run = tmp_path / "run"
    (run / "sft" / "model").mkdir(parents=True)
    (run / "sft" / "model" / "config.json").write_text("{}")
    ctx = StageContext(run_dir=run, stage="dpo", recipe=None)
    pairs = tmp_path / "arith_pairs.jsonl"  # a file whose name starts like the built-in task is still data
    pairs.write_text("")
    assert init_inputs(dpo.SPEC, "auto", ctx, data="arith:max_ops=1") == {"init_model": run / "sft" / "model"}
    assert init_inputs(dpo.SPEC, "sft", ctx, data=str(pairs))["data"] == pairs
    assert init_inputs(rl.SPEC, "sft", ctx, task="openai/gsm8k")["task"] == "hub:openai/gsm8k"
    assert trained_outputs(run / "rl", "heldout.json") == {
        "model": run / "rl" / "model",
        "metrics": run / "rl" / "metrics.jsonl",
        "heldout": run / "rl" / "heldout.json",
        "quarantine": run / "rl" / "quarantine.jsonl",
    }


@pytest.mark.parametrize("stage", ["pretrain", "sft", "interpolate", "dpo", "reward", "rl"])
def test_training_stage_flags_are_the_config_fields_each_with_help(stage):
    sub = cli.build_parser(stage)._subparsers._group_actions[0].choices[stage]
    flags = {a.dest.removeprefix(cli.CONFIG_FLAG): a.help for a in sub._actions if a.dest.startswith(cli.CONFIG_FLAG)}
    config = cli.get(stage).config
    assert set(flags) == {f.name for f in dataclasses.fields(config)}  # every field (not a ClassVar), no copy beside it
    bare = [f for f, h in flags.items() if h.split(" (default: ")[0] == f.replace("_", " ")]
    assert not bare, f"fields without a comment (their --help says only the name): {bare}"
