"""Post-training acceptance runs for dpo / reward / rl, through the real pipeline (ledger records and all).

    python -m bench.post_real --part arith   # small model SFT'ed on the built-in task, then DPO, reward model, GRPO:
                                             # held-out preference accuracy (binomial test) and held-out exact match
                                             # before/after GRPO (paired McNemar test, CI)
    python -m bench.post_real --part real    # real data from ../shared/data: SFT on the dolly/HH SFT file, then DPO
                                             # and the reward model (3 seeds) on the hh-rlhf harmless pairs, each
                                             # judged against the model it started from (McNemar / paired bootstrap)
                                             # and the reward model also against chance (binomial)
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


def run_stages(run: Path, sections: dict, device: str, seed: int, force: bool = True) -> dict:
    """Run `sections` in order through the pipeline (ledger records and all); force=False skips a stage whose record
    is up to date (same config and inputs), as `ledgerlm run` does."""
    recipe = pipeline.Recipe(name="bench-post", seed=seed, device=device, stages=list(sections), sections=sections)
    out = {}
    for stage in sections:
        t0 = time.time()
        status, rec = pipeline.run_stage(recipe, stage, run, force=force)
        out[stage] = {**rec, "wall_s": time.time() - t0 if status == "ran" else rec.get("seconds", 0.0)}
    return out


def _reward_seed(run: str, cfg: reward.Config, device: str, seed: int, force: bool, threads: int) -> dict:
    """One reward-model run in its own run directory (seeds run side by side, in separate processes)."""
    torch.set_num_threads(threads)
    return run_stages(Path(run), {"reward": cfg}, device, seed, force)["reward"]


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


def _effect_cell(e: dict) -> str:
    if e.get("test") == "mcnemar_exact":
        return (
            f"{e['before']:.3f} → {e['after']:.3f} (n = {e['n']}; {e['gained']} gained, {e['lost']} lost; "
            f"McNemar p = {e['p']:.2g})"
        )
    return f"{e['before']:.4g} → {e['after']:.4g} (n = {e['n']}; paired bootstrap p = {e['p']:.2g})"


def real_part(args) -> tuple[str, dict]:
    """SFT on the real SFT file (dolly + HH helpful, disjoint from the preference pairs), then DPO and the reward
    model (one run per seed: each seed draws its own held-out pairs) on the real hh-rlhf harmless pairs. Every stage
    is judged against the model it started from on held-out items (its `effect`); the reward model also against
    chance (it starts from an untrained head)."""
    hh = DATA / "preference" / "hh_rlhf_harmless_base_test.jsonl.gz"
    sft_file = DATA / "sft" / "dolly_hhrlhf_train_small.jsonl"
    if not hh.is_file() or not sft_file.is_file():
        raise SystemExit(f"real data not found under {DATA}")
    run = Path(args.run_dir) / "real"
    run.mkdir(parents=True, exist_ok=True)
    texts = [r["prompt"] + r["response"] for _, r in iter_jsonl(sft_file)]  # the tokenizer sees the SFT text only
    if not (args.reuse and (run / "pretrain" / "model" / "config.json").is_file()):
        base_model(run, texts + ["user\nassistant\n"], args.real_vocab, args.seed, SIZE)
    pairs = dict(data=str(hh), n_train=0, n_heldout=args.real_heldout, max_len=256, max_prompt_len=128, batch_size=16)
    sections = {
        "sft": sft.Config(
            base="pretrain",
            data=str(sft_file),
            epochs=args.real_sft_epochs,
            batch_size=16,
            lr=3e-3,
            warmup_ratio=0.05,
            schedule="cosine",
            seq_len=256,
        ),
        "dpo": dpo.Config(
            init="sft",
            loss=args.real_dpo_loss,
            beta=args.real_dpo_beta,
            lr=args.real_dpo_lr,
            epochs=1.0,
            **pairs,
        ),
    }
    res = run_stages(run, sections, args.device, args.seed, force=not args.reuse)
    # every seed from the same SFT model, each in its own run dir (its own held-out draw), `--jobs` at a time;
    # evaluated at the start, halfway and at the end (scoring all held-out pairs is a good part of the cost)
    rm_cfg = reward.Config(init=str(run / "sft" / "model"), lr=args.real_rm_lr, epochs=1.0, eval_every=50, **pairs)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futs = {
            seed: pool.submit(
                _reward_seed, str(run / f"reward-seed{seed}"), rm_cfg, args.device, seed, not args.reuse, args.threads
            )
            for seed in args.real_rm_seeds
        }
        rms = {seed: f.result() for seed, f in futs.items()}
    s, d = res["sft"]["metrics"], res["dpo"]["metrics"]
    c = res["dpo"]["counters"]
    rows = [
        "| stage | start → end on held-out items | also |",
        "|---|---|---|",
        f"| sft ({sft_file.name}, {res['sft']['counters']['steps']} steps) | held-out assistant loss per conversation "
        f"{_effect_cell(s['effect'])} | token-mean held-out loss {s['initial_val_loss']:.3f} → {s['final_val_loss']:.3f} |",
        f"| dpo ({args.real_dpo_loss}, β {args.real_dpo_beta:g}, lr {args.real_dpo_lr:g}, {c['pairs_train']} pairs, "
        f"{c['steps']} steps, seed {args.seed}) | chosen-preference (own log-probs"
        f"{', per token' if args.real_dpo_loss == 'length_normalized' else ''}) {_effect_cell(d['effect'])} | "
        f"log-prob margin {_effect_cell(d['effects'][1])}; implicit-reward accuracy {d['heldout_accuracy']:.3f} |",
    ]
    for seed, r in rms.items():
        m, rc = r["metrics"], r["counters"]
        rows.append(
            f"| reward (lr {args.real_rm_lr:g}, {rc['pairs_train']} pairs, {rc['steps']} steps, seed {seed}) | pair "
            f"accuracy vs the untrained head {_effect_cell(m['effect'])} | vs chance: {m['heldout_accuracy']:.3f}, "
            f"Wilson 95% {m['heldout_wilson95'][0]:.3f}–{m['heldout_wilson95'][1]:.3f}, one-sided binomial "
            f"p = {m['heldout_p_binomial']:.2g} |"
        )
    wall = {**{k: v["wall_s"] for k, v in res.items()}, **{f"reward seed {k}": v["wall_s"] for k, v in rms.items()}}
    body = "\n".join(rows) + "\n\nStage wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items())
    numbers = {
        "sft_heldout_loss_before": s["effect"]["before"],
        "sft_heldout_loss_after": s["effect"]["after"],
        "dpo_chosen_pref_before": d["effect"]["before"],
        "dpo_chosen_pref_after": d["effect"]["after"],
        "dpo_chosen_pref_p": d["effect"]["p"],
        "dpo_implicit_reward_acc": d["heldout_accuracy"],
        "rm_acc": [r["metrics"]["heldout_accuracy"] for r in rms.values()],
        "rm_p_vs_chance": [r["metrics"]["heldout_p_binomial"] for r in rms.values()],
        "rm_acc_untrained_head": [r["metrics"]["effect"]["before"] for r in rms.values()],
        "rm_effect_p": [r["metrics"]["effect"]["p"] for r in rms.values()],
    }
    return body, numbers


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
    ap.add_argument("--real-vocab", type=int, default=2048)
    ap.add_argument("--real-heldout", type=int, default=700, help="held-out hh-rlhf pairs (of 2,303)")
    ap.add_argument("--real-sft-epochs", type=float, default=2.0)
    ap.add_argument("--real-dpo-loss", default="length_normalized")
    ap.add_argument("--real-dpo-beta", type=float, default=5.0)
    ap.add_argument("--real-dpo-lr", type=float, default=2e-4)
    ap.add_argument("--real-rm-lr", type=float, default=1e-4)
    ap.add_argument("--real-rm-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=3, help="reward-model seeds run side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (1: see experiments/README.md)")
    ap.add_argument("--reuse", action="store_true", help="skip stages whose ledger record is up to date")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cmd = "python -m bench.post_real " + " ".join(sys.argv[1:])
    if args.part in ("arith", "all"):
        body = arith_part(args)
        print(body)
        if not args.no_record:
            record("post-training acceptance (built-in arith task)", body, cmd)
    if args.part in ("real", "all"):
        body, numbers = real_part(args)
        print(body)
        if not args.no_record:
            record("post-training on real data: effects against each stage's start", body, cmd, numbers=numbers)


if __name__ == "__main__":
    main()
