"""Post-training acceptance runs for dpo / reward / rl, through the real pipeline (ledger records and all).

    python -m bench.post_real --part arith   # small model SFT'ed on the built-in task, then DPO, reward model, GRPO:
                                             # held-out preference accuracy (binomial test) and held-out exact match
                                             # before/after GRPO (paired McNemar test, CI)
    python -m bench.post_real --part real    # the same loops on real data from ../shared/data: hh-rlhf preferences
                                             # (dpo, reward) and GSM8K train problems (rl); they run and log metrics
    python -m bench.post_real --part all

Everything is written under --run-dir (default runs/bench-post-*), never into the repository's tracked files; numbers
go to BENCHMARKS.md through bench/_record.py.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from bench._record import record
from ledgerlm import pipeline
from ledgerlm.data.tokenizer import train_tokenizer
from ledgerlm.io import iter_jsonl, write_jsonl
from ledgerlm.model.hf import save_model
from ledgerlm.model.llama import Llama, model_config
from ledgerlm.post import dpo, reward, rl, sft
from ledgerlm.tasks import arith

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

SIZE = dict(n_layer=4, d_model=128, n_head=4, n_kv_head=2, d_ff=384, max_seq_len=256)


def base_model(run: Path, texts: list[str], vocab: int, seed: int, size: dict) -> None:
    """A randomly initialised model + a BPE tokenizer trained on `texts`, saved as RUN/pretrain/model."""
    tok = train_tokenizer(texts, vocab_size=vocab)
    torch.manual_seed(seed)
    save_model(
        Llama(model_config(dict(size), vocab_size=tok.get_vocab_size())), run / "pretrain" / "model", tokenizer=tok
    )


def run_stages(run: Path, sections: dict, device: str, seed: int) -> dict:
    recipe = pipeline.Recipe(name="bench-post", seed=seed, device=device, stages=list(sections), sections=sections)
    out = {}
    for stage in sections:
        t0 = time.time()
        _, rec = pipeline.run_stage(recipe, stage, run, force=True)
        out[stage] = {**rec, "wall_s": time.time() - t0}
    return out


def arith_part(args) -> str:
    run = Path(args.run_dir) / "arith"
    run.mkdir(parents=True, exist_ok=True)
    train = arith.generate(args.n_sft, "train", args.seed)
    base_model(run, [p.question + "\n" + p.solution for p in train] + ["user\nassistant\n"], 512, args.seed, SIZE)
    data = run / "data" / "arith_sft.jsonl"
    # A share of the SFT answers end in another style ("The answer is N."): the strict GSM8K verifier only accepts
    # "#### N", so the SFT model starts with a format problem that a verifiable reward can see and fix (the usual
    # source of early RLVR gains), on top of arithmetic slips it mostly cannot.
    rng = random.Random(args.seed)

    def answer(p) -> str:
        if rng.random() < args.alt_format_frac:
            return p.solution.rsplit("\n#### ", 1)[0] + f"\nThe answer is {p.answer}."
        return p.solution

    rows = [
        {"messages": [{"role": "user", "content": p.question}, {"role": "assistant", "content": answer(p)}]}
        for p in train
    ]
    write_jsonl(data, rows)
    sections = {
        "sft": sft.Config(
            base="pretrain",
            data=str(data),
            max_steps=args.sft_steps,
            batch_size=32,
            lr=args.sft_lr,
            warmup_ratio=0.05,
            schedule="cosine",
            val_fraction=0.02,
            seq_len=256,
        ),
        "dpo": dpo.Config(
            init="sft",
            data="arith",
            n_train=args.n_pairs,
            n_heldout=args.n_heldout_pairs,
            beta=0.1,
            lr=args.dpo_lr,
            epochs=1.0,
            batch_size=16,
        ),
        "reward": reward.Config(
            init="sft",
            data=args.rm_data,
            n_train=args.n_pairs,
            n_heldout=args.n_heldout_pairs,
            lr=args.rm_lr,
            epochs=1.0,
            batch_size=16,
        ),
        "rl": rl.Config(
            init="sft",
            task="arith",
            n_eval=args.n_eval,
            steps=args.rl_steps,
            prompts_per_step=args.rl_prompts,
            group_size=args.group_size,
            max_new_tokens=64,
            lr=args.rl_lr,
            temperature=1.0,
            passk_problems=64,
        ),
    }
    res = run_stages(run, sections, args.device, args.seed)
    (run / "bench.json").write_text(json.dumps({k: v["metrics"] for k, v in res.items()}, indent=2, default=str))
    return summarise_arith(res, run, args)


def summarise_arith(res: dict, run: Path, args) -> str:
    d, r, g = res["dpo"]["metrics"], res["reward"]["metrics"], res["rl"]["metrics"]
    per = json.loads((run / "rl" / "heldout.json").read_text())["per_problem"]
    fmt = {k: sum("#### " in p[f"completion_{k}"] for p in per) / len(per) for k in ("before", "after")}
    lines = [
        "| loop | held-out n | metric | value | test |",
        "|---|---|---|---|---|",
        f"| dpo (sigmoid) | {res['dpo']['counters']['pairs_heldout']} | preference accuracy | {d['heldout_accuracy']:.3f} "
        f"(Wilson 95% {d['heldout_wilson95'][0]:.3f}–{d['heldout_wilson95'][1]:.3f}) | binomial vs 0.5: p = {d['heldout_p_binomial']:.2g} |",
        f"| reward (Bradley–Terry) | {res['reward']['counters']['pairs_heldout']} | preference accuracy | "
        f"{r['heldout_accuracy']:.3f} (Wilson 95% {r['heldout_wilson95'][0]:.3f}–{r['heldout_wilson95'][1]:.3f}) | "
        f"binomial vs 0.5: p = {r['heldout_p_binomial']:.2g} |",
        f"| rl (GRPO) | {g['heldout_n']} | greedy exact match | {g['heldout_em_before']:.3f} → {g['heldout_em_after']:.3f} "
        f"(diff {g['heldout_em_diff']:+.3f}, 95% CI {g['heldout_em_diff_ci95'][0]:+.3f}…{g['heldout_em_diff_ci95'][1]:+.3f}) "
        f"| McNemar: p = {g['heldout_p_mcnemar']:.2g} |",
        "",
        "Why GRPO can help here (start of RL, sampled at T=1 on 64 held-out problems): "
        + ", ".join(f"{k.removeprefix('start_')} = {v:.3f}" for k, v in g.items() if k.startswith("start_"))
        + f"; over training: zero-std group fraction {g['zero_std_frac']:.3f}, truncation rate {g['truncation_rate']:.3f}.",
        "",
        f"Greedy held-out completions with a `#### N` line: {fmt['before']:.3f} before RL, {fmt['after']:.3f} after "
        f"(SFT data: {args.alt_format_frac:.0%} of answers end in 'The answer is N.', which the strict verifier rejects).",
        "",
        "Stage wall time (s): " + ", ".join(f"{k} {v['wall_s']:.0f}" for k, v in res.items()),
    ]
    return "\n".join(lines)


def real_part(args) -> str:
    hh = DATA / "preference" / "hh_rlhf_harmless_base_test.jsonl.gz"
    gsm = DATA / "gsm8k" / "train.jsonl"
    if not hh.is_file() or not gsm.is_file():
        raise SystemExit(f"real data not found under {DATA}")
    run = Path(args.run_dir) / "real"
    run.mkdir(parents=True, exist_ok=True)
    texts = []
    with open(gsm) as f:
        for i, line in enumerate(f):
            if i >= 2000:
                break
            row = json.loads(line)
            texts.append(row["question"] + "\n" + row["answer"])
    import gzip

    with gzip.open(hh, "rt") as f:
        for i, line in enumerate(f):
            if i >= 1000:
                break
            texts.append(json.loads(line)["chosen"])
    base_model(run, texts + ["user\nassistant\n"], 2048, args.seed, SIZE)
    (run / "sft").mkdir(exist_ok=True)
    import shutil

    shutil.copytree(run / "pretrain" / "model", run / "sft" / "model", dirs_exist_ok=True)  # no SFT: loops only
    sections = {
        "dpo": dpo.Config(
            init="sft",
            data=str(hh),
            n_train=256,
            n_heldout=64,
            max_steps=args.real_steps,
            batch_size=8,
            loss="length_normalized",
            beta=5.0,
            lr=1e-4,
            max_len=256,
            max_prompt_len=160,
        ),
        "reward": reward.Config(
            init="sft",
            data=str(hh),
            n_train=256,
            n_heldout=64,
            max_steps=args.real_steps,
            batch_size=8,
            lr=1e-4,
            max_len=256,
            max_prompt_len=160,
        ),
        "rl": rl.Config(
            init="sft",
            task=str(gsm),
            n_train=500,
            n_eval=32,
            steps=args.real_steps,
            prompts_per_step=4,
            group_size=4,
            max_new_tokens=64,
            lr=1e-5,
            passk_problems=8,
        ),
    }
    res = run_stages(run, sections, args.device, args.seed)
    rows = ["| loop | data | steps | logged metrics (last step) | counters |", "|---|---|---|---|---|"]
    for stage, data_name in (("dpo", hh.name), ("reward", hh.name), ("rl", gsm.name)):
        last = [rec for _, rec in iter_jsonl(run / stage / "metrics.jsonl")][-1]
        keep = {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in last.items()
            if k not in ("lr", "elapsed_s", "step_s")
        }
        c = res[stage]["counters"]
        cnt = {
            k: v
            for k, v in c.items()
            if k.startswith(("data:", "pairs", "truncated", "train", "heldout", "quarantined"))
        }
        rows.append(f"| {stage} | {data_name} | {c.get('steps')} | `{json.dumps(keep)}` | `{json.dumps(cnt)}` |")
    return "\n".join(rows) + "\n\nStage wall time (s): " + ", ".join(f"{k} {v['wall_s']:.0f}" for k, v in res.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("arith", "real", "all"), default="all")
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-post"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-sft", type=int, default=4000)
    ap.add_argument("--sft-steps", type=int, default=400)
    ap.add_argument("--sft-lr", type=float, default=3e-3)
    ap.add_argument("--alt-format-frac", type=float, default=0.5)
    ap.add_argument("--n-pairs", type=int, default=1024)
    ap.add_argument("--n-heldout-pairs", type=int, default=200)
    ap.add_argument("--dpo-lr", type=float, default=1e-4)
    ap.add_argument("--rm-lr", type=float, default=1e-4)
    ap.add_argument("--rm-data", default="arith", help="arith | arith:final | arith:arith")
    ap.add_argument("--n-eval", type=int, default=400)
    ap.add_argument("--rl-steps", type=int, default=60)
    ap.add_argument("--rl-prompts", type=int, default=32)
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--rl-lr", type=float, default=1e-4)
    ap.add_argument("--real-steps", type=int, default=4)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    cmd = "python -m bench.post_real " + " ".join(sys.argv[1:])
    if args.part in ("arith", "all"):
        body = arith_part(args)
        print(body)
        if not args.no_record:
            record("post-training acceptance (built-in arith task)", body, cmd)
    if args.part in ("real", "all"):
        body = real_part(args)
        print(body)
        if not args.no_record:
            record("post-training loops on real data", body, cmd)


if __name__ == "__main__":
    main()
