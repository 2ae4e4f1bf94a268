"""Parity and speed of ledgerlm's eval harness against lm-evaluation-harness (HFLM) on the same model and items.

A small model of ours (random weights, saved as an HF Llama folder) or --model DIR is scored by both harnesses on
the same local items: PIQA, WinoGrande and LAMBADA from ../shared/data, and one fixture per remaining format
(ARC, HellaSwag) plus GSM8K 0-shot generation from tests/fixtures/eval. lm-eval runs its own task YAMLs with only the
dataset swapped for local JSON files (written to a temp dir), so prompts, preprocessing and metrics are its own.

Checks: per-item continuation log-likelihoods within 1e-3, identical acc / acc_norm per item, identical GSM8K
completions; speed: items/s of the same scoring in the same process, ours vs lm-eval.

A second GSM8K row runs real GSM8K questions (../shared/data/gsm8k, 0-shot) on a model that emits `<|im_end|>`
mid-answer (the random model with that token's embedding scaled up), with ledgerlm's own backend: completion
agreement and exact-match agreement with lm-eval, in ledgerlm's lm-eval-compatible generation mode (must be
identical) and in its default chat mode (which stops at `<|im_end|>`, so it differs by design; docs/eval.md).

    python -m bench.parity_lmeval [--limit 300] [--model DIR] [--device cpu|cuda] [--no-record]
Needs lm-eval (pip install 'ledgerlm[bench]'); works offline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench._record import record

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIX = ROOT / "tests" / "fixtures" / "eval"
# tests/fixtures/eval is not a package: its tiny_model module (see main) is imported from this folder
sys.path.insert(0, str(FIX))

# task -> (data dir, lm-eval YAML to include, split)
TASKS = {
    "piqa": (SHARED, "piqa/piqa.yaml", "validation"),
    "winogrande": (SHARED, "winogrande/default.yaml", "validation"),
    "lambada_openai": (SHARED, "lambada/lambada_openai.yaml", "test"),
    "arc_easy": (FIX, "arc/arc_easy.yaml", "test"),
    "hellaswag": (FIX, "hellaswag/hellaswag.yaml", "validation"),
}


def raw_docs(task) -> list[dict]:
    """The Hub-schema records behind our loaded items (same items, same order), for lm-eval's json loader."""
    cache: dict[str, list[str]] = {}
    docs = []
    labels = None
    if task.task.name == "piqa" and task.source.endswith("valid.jsonl"):
        labels = (Path(task.source).parent / "valid-labels.lst").read_text().split()
    for it in task.items:
        path, line = it.source.rsplit(":", 1)
        lines = cache.setdefault(path, Path(path).read_text(encoding="utf-8").splitlines())
        d = json.loads(lines[int(line) - 1])
        if labels is not None:
            d["label"] = int(labels[int(line) - 1])
        docs.append(d)
    return docs


def write_lmeval_tasks(tmp: Path, tasks: dict, lm_eval_dir: Path) -> dict[str, str]:
    names = {}
    for name, task in tasks.items():
        data = tmp / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in raw_docs(task)))
        split = TASKS[name][2] if name in TASKS else "test"
        yaml_rel = TASKS[name][1] if name in TASKS else "gsm8k/gsm8k.yaml"
        lname = f"parity_{name}"
        # Only the data source and splits change; prompts, preprocessing and metrics stay lm-eval's own.
        (tmp / f"{lname}.yaml").write_text(
            f"include: {lm_eval_dir / 'tasks' / yaml_rel}\n"
            f"task: {lname}\ntag: []\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    {split}: {data}\n"
            "training_split: null\nfewshot_split: null\n"
            f"validation_split: {split if split == 'validation' else 'null'}\n"
            f"test_split: {split if split == 'test' else 'null'}\n"
        )
        names[name] = lname
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=300, help="items per real-data task")
    ap.add_argument("--model", default=None, help="HF model folder (default: a small random model of ours)")
    ap.add_argument("--size", default=None, help="architecture of the random model, e.g. smollm-135m (default 4x256)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1: stable CPU-time measurements on a shared machine)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--gsm8k-tokens", type=int, default=32)
    ap.add_argument("--gsm8k-special-limit", type=int, default=40, help="GSM8K items for the special-token row")
    ap.add_argument("--boost", type=float, default=3.0, help="scale of <|im_end|>'s embedding in that row's model")
    ap.add_argument("--special-model", default=None, help="HF model folder for that row (e.g. the demo's rl/model)")
    ap.add_argument(
        "--gsm8k-special-only", action="store_true", help="run only that row (its own BENCHMARKS.md section)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per harness and task (best kept)")
    ap.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    ap.add_argument("--body-out", type=Path, default=None, help="also write the Markdown section body here")
    args = ap.parse_args()

    import lm_eval
    import torch
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ledgerlm.eval.backends import load_lm
    from ledgerlm.eval.evaluate import score_generative, score_loglikelihood_task
    from ledgerlm.tasks import load_task

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="parity_lmeval_"))
    model_dir = args.model
    if model_dir is None:
        from tiny_model import make_tiny_model

        kw = {"size": args.size} if args.size else {"n_layer": 4, "d_model": 256, "max_seq_len": 1024}
        model_dir = str(make_tiny_model(tmp / "model", seed=0, vocab_size=2048, **kw))
    tasks = {name: load_task(name, d, limit=args.limit) for name, (d, _, _) in TASKS.items()}
    tasks["gsm8k"] = load_task("gsm8k", FIX)
    lnames = write_lmeval_tasks(tmp, tasks, Path(lm_eval.__file__).parent)
    special = load_task("gsm8k", SHARED, split="train", limit=args.gsm8k_special_limit)
    lnames.update(write_lmeval_tasks(tmp, {"gsm8k_special": special}, Path(lm_eval.__file__).parent))
    if args.gsm8k_special_only:
        lines, problems = gsm8k_special_row(
            args, tmp, special, lnames["gsm8k_special"], TaskManager(include_path=str(tmp))
        )
        body = "\n".join(lines + ["", "Parity: " + ("all checks passed." if not problems else "; ".join(problems))])
        print(body)
        if not args.no_record:
            suffix = "-model" if args.special_model else f"-{args.size}" if args.size else ""
            record("parity_lmeval-gsm8k-special" + suffix, body)
        return 1 if problems else 0

    ours = load_lm(model_dir, device=args.device, backend="hf")
    theirs = HFLM(pretrained=model_dir, device=args.device, batch_size=args.batch_size, dtype="float32")
    tm = TaskManager(include_path=str(tmp))

    # Warm both up (first-call allocations, thread pools) so neither pays it inside the timing.
    from lm_eval.api.instance import Instance

    warm = [("Question: warm up\nAnswer:", " yes"), ("Question: warm up\nAnswer:", " no")]
    theirs.loglikelihood([Instance("loglikelihood", {}, a, i) for i, a in enumerate(warm)], disable_tqdm=True)
    ours.loglikelihood([warm])

    # Count the tokens our harness feeds the model (padding included) ...
    counted = {"tokens": 0, "scored": 0}
    inner = ours.logits_at

    def counting_logits_at(ids, pos, mask, bidx, tidx):
        counted["tokens"] += ids.numel()
        counted["scored"] += bidx.numel()  # positions where the output head runs
        return inner(ids, pos, mask, bidx, tidx)

    ours.logits_at = counting_logits_at

    # Matmul FLOPs per token of the decoder body and of the output head (attention scores left out: short rows).
    mc = ours.model.config
    head_flops = 2 * mc.hidden_size * mc.vocab_size
    body_flops = 2 * sum(p.numel() for n, p in ours.model.model.named_parameters() if "embed" not in n)

    def lmeval_tokens(task) -> int:
        """... and what lm-eval's HFLM feeds it: one row per request, sorted longest first, batches of
        batch_size padded to their longest row (its Collator without logits-cache hits)."""
        from ledgerlm.eval.harness import encode_pairs

        reqs = encode_pairs(ours.tok, [p for it in task.items for p in it.requests], ours.max_length)
        lens = sorted((len(r.seq) - 1 for r in reqs), reverse=True)
        return sum(lens[i] * len(lens[i : i + args.batch_size]) for i in range(0, len(lens), args.batch_size))

    # On a CPU shared with other jobs, wall time mostly measures the neighbours: count this process's CPU time
    # (all threads) instead. On a GPU, wall time with a synchronize.
    if args.device == "cpu":
        clock, clock_name = time.process_time, "process CPU time"
    else:

        def clock():
            torch.cuda.synchronize()
            return time.perf_counter()

        clock_name = "wall time"
    rows, problems = [], []
    for name, task in tasks.items():
        gen = {"max_gen_toks": args.gsm8k_tokens} if name == "gsm8k" else None

        def run_ours(name=name, task=task):
            # end to end like simple_evaluate: read the task's file, then score
            task = load_task(name, TASKS[name][0], limit=args.limit) if name in TASKS else load_task(name, FIX)
            if name == "gsm8k":
                return score_generative(
                    ours, task, 0, None, max_new_tokens=args.gsm8k_tokens, batch_size=args.batch_size
                )
            return score_loglikelihood_task(ours, task, batch_size=args.batch_size)

        pairs = [p for it in task.items for p in it.requests]
        instances = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]

        def run_theirs(name=name, gen=gen):
            return simple_evaluate(
                model=theirs,
                tasks=[lnames[name]],
                num_fewshot=0,
                task_manager=tm,
                log_samples=True,
                bootstrap_iters=0,
                gen_kwargs=gen,
            )

        # Alternate the two harnesses and keep each one's best time: on a shared machine the least-disturbed
        # run is the closest to the real cost.
        t_ours = t_theirs = float("inf")
        counted.update(tokens=0, scored=0)
        for rep in range(args.repeats):
            if rep == 1:
                tokens_ours, scored_ours = counted["tokens"], counted["scored"]
            t0 = clock()
            r = run_ours()
            t_ours = min(t_ours, clock() - t0)
            t0 = clock()
            out = run_theirs()
            t_theirs = min(t_theirs, clock() - t0)
        if args.repeats == 1:
            tokens_ours, scored_ours = counted["tokens"], counted["scored"]
        # the scoring call alone, on identical requests: our LM.loglikelihood() vs HFLM.loglikelihood()
        s_ours = s_theirs = float("inf")
        for _ in range(args.repeats if name != "gsm8k" else 0):
            t0 = clock()
            ours.loglikelihood([it.requests for it in task.items], batch_size=args.batch_size)
            s_ours = min(s_ours, clock() - t0)
            t0 = clock()
            theirs.loglikelihood(instances, disable_tqdm=True)
            s_theirs = min(s_theirs, clock() - t0)
        # one sample per (doc, filter); GSM8K has two filters over the same generation
        by_doc = {}
        for s in out["samples"][lnames[name]]:
            by_doc.setdefault(s["doc_id"], s)
        samples = [by_doc[k] for k in sorted(by_doc)]
        assert len(samples) == len(r["items"]), (name, len(samples), len(r["items"]))
        max_diff, acc_same, n_req, n_same = 0.0, True, 0, 0
        for s, mine in zip(samples, r["items"]):
            if name == "gsm8k":
                n_same += s["resps"][0][0] == mine["completion"]
                if s["resps"][0][0] != mine["completion"]:
                    acc_same = False
                    problems.append(f"gsm8k item {mine['i']}: completions differ")
                continue
            lls = [resp[0][0] for resp in s["resps"]]
            n_req += len(lls)
            max_diff = max(max_diff, max(abs(a - b) for a, b in zip(lls, mine["ll"])))
            for m in ("acc", "acc_norm"):
                if m in s and int(s[m]) != mine[m]:
                    acc_same = False
                    problems.append(f"{name} item {mine['i']}: {m} differs")
        metric = "exact_match_flexible" if name == "gsm8k" else ("acc_norm" if "acc_norm" in r["metrics"] else "acc")
        their_key = "exact_match,flexible-extract" if name == "gsm8k" else f"{metric},none"
        n = len(r["items"])
        rows.append(
            {
                "task": name,
                "n": n,
                "requests": n_req,
                "max_abs_ll_diff": max_diff,
                "per_item_metrics_identical": acc_same,
                "metric": metric,
                "ours": r["metrics"][metric]["value"],
                "lm_eval": out["results"][lnames[name]][their_key],
                "model_tokens_ours": tokens_ours if name != "gsm8k" else None,
                "model_tokens_lm_eval": lmeval_tokens(task) if name != "gsm8k" else None,
                # lm-eval runs the head on every token it feeds; ours only where a continuation token is scored
                "flop_ratio": lmeval_tokens(task)
                * (body_flops + head_flops)
                / (tokens_ours * body_flops + scored_ours * head_flops)
                if name != "gsm8k"
                else None,
                "scoring_speedup": s_theirs / s_ours if name != "gsm8k" else None,
                "ours_items_s": n / t_ours,
                "lm_eval_items_s": n / t_theirs,
                "completions_identical": n_same if name == "gsm8k" else None,
            }
        )
        if max_diff > 1e-3:
            problems.append(f"{name}: max |ll diff| {max_diff:.2e} > 1e-3")
        print(json.dumps(rows[-1]), flush=True)

    special_lines, special_problems = gsm8k_special_row(args, tmp, special, lnames["gsm8k_special"], tm)
    problems += special_problems
    tot_ours = sum(r["n"] / r["ours_items_s"] for r in rows if r["task"] != "gsm8k")
    tot_theirs = sum(r["n"] / r["lm_eval_items_s"] for r in rows if r["task"] != "gsm8k")
    n_ll = sum(r["n"] for r in rows if r["task"] != "gsm8k")
    lines = [
        f"Model: `{args.model or 'random ledgerlm Llama ' + (args.size or '4x256, vocab 2048')}` (HF folder), "
        f"device {args.device}"
        + (f" ({args.threads} thread)" if args.device == "cpu" else "")
        + f", batch size {args.batch_size}, float32; lm-eval {lm_eval.__version__} HFLM; "
        f"first {args.limit} items of PIQA/WinoGrande/LAMBADA (../shared/data), fixtures for ARC/HellaSwag/GSM8K.",
        "",
        "| task | items | requests | max abs ll diff | per-item acc/acc_norm identical | metric | ours | lm-eval "
        "| model tokens ours / lm-eval | lm-eval / ours matmul FLOPs | ours items/s | lm-eval items/s | speed-up "
        "| scoring-call speed-up |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['n']} | {r['requests'] or '—'} | {r['max_abs_ll_diff']:.2e} | "
            f"{'yes' if r['per_item_metrics_identical'] else 'NO'} | {r['metric']} | {r['ours']:.4f} | {r['lm_eval']:.4f} | "
            + (
                f"{r['model_tokens_ours']} / {r['model_tokens_lm_eval']} "
                f"({r['model_tokens_ours'] / r['model_tokens_lm_eval']:.2f}) | {r['flop_ratio']:.2f}x | "
                if r["model_tokens_ours"]
                else "— | — | "
            )
            + f"{r['ours_items_s']:.1f} | {r['lm_eval_items_s']:.1f} | {r['ours_items_s'] / r['lm_eval_items_s']:.2f}x | "
            + (f"{r['scoring_speedup']:.2f}x |" if r["scoring_speedup"] else "— |")
        )
    lines += [
        "",
        f"Log-likelihood tasks together: ours {n_ll / tot_ours:.1f} items/s, lm-eval {n_ll / tot_theirs:.1f} items/s "
        f"(**{tot_theirs / tot_ours:.2f}x**); model tokens (padding included) ours / lm-eval = "
        f"{sum(r['model_tokens_ours'] for r in rows if r['model_tokens_ours']) / sum(r['model_tokens_lm_eval'] for r in rows if r['model_tokens_lm_eval']):.2f}. "
        f"Items/s from {clock_name}, end to end per task in one process after model load (both harnesses read the "
        f"task's file; lm-eval also builds its task); best of {args.repeats} alternating runs. The scoring-call "
        "column times only `loglikelihood()` vs `HFLM.loglikelihood()` on the same requests. The FLOPs column "
        "counts the decoder's and the output head's matmuls on the tokens each harness feeds (lm-eval: head on "
        "every token; ours: head only where a continuation token is scored): on a CPU, where these matmuls run "
        "near the core's peak, it bounds the scoring speed-up. GSM8K generates at most "
        f"{args.gsm8k_tokens} tokens per item; identical completions: "
        + ", ".join(f"{r['completions_identical']}/{r['n']}" for r in rows if r["task"] == "gsm8k")
        + ".",
        "",
        *special_lines,
        "",
        "Parity: " + ("all checks passed." if not problems else "FAILED: " + "; ".join(problems)),
    ]
    body = "\n".join(lines)
    print(body)
    if args.body_out:
        args.body_out.write_text(body + "\n")
    if not args.no_record:
        # one section per architecture, so the default small model's row and a --size row sit side by side
        record("parity_lmeval" + (f"-{args.size}" if args.size else ""), body)
    return 1 if problems else 0


def gsm8k_special_row(args, tmp: Path, task, lname: str, tm) -> tuple[list[str], list[str]]:
    """GSM8K 0-shot on a model that emits <|im_end|>: ledgerlm (own backend, both generation modes) vs lm-eval."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from tiny_model import make_tiny_model

    from ledgerlm.eval.backends import load_lm
    from ledgerlm.eval.evaluate import score_generative

    kw = {"size": args.size} if args.size else {"n_layer": 4, "d_model": 256, "max_seq_len": 1024}
    if args.special_model:
        model_dir, what = args.special_model, f"`{args.special_model}`"
    else:
        model_dir = str(make_tiny_model(tmp / "model_im_end", seed=0, vocab_size=2048, boost_im_end=args.boost, **kw))
        what = f"random {args.size or '4x256'} model, `<|im_end|>` embedding x{args.boost:g}"
    ours = load_lm(model_dir, device=args.device, backend="ledgerlm")
    theirs = HFLM(pretrained=model_dir, device=args.device, batch_size=args.batch_size, dtype="float32")
    gen = {"max_gen_toks": args.gsm8k_tokens}
    out = simple_evaluate(
        model=theirs, tasks=[lname], num_fewshot=0, task_manager=tm, log_samples=True, bootstrap_iters=0, gen_kwargs=gen
    )
    samples = out["samples"][lname]
    completion = {s["doc_id"]: s["resps"][0][0] for s in samples}
    ok = {(s["doc_id"], s["filter"]): int(s["exact_match"]) for s in samples}
    # lm-eval's extracted answer ("[invalid]" when nothing matched; ours says None)
    answer = {s["doc_id"]: s["filtered_resps"][0] for s in samples if s["filter"] == "flexible-extract"}
    n = len(task.items)
    lines = [
        f"GSM8K 0-shot on a model that emits `<|im_end|>` ({what}; first {n} questions of "
        f"../shared/data/gsm8k/train.jsonl; ledgerlm's own Llama backend; batch size {args.batch_size}; "
        f"{args.gsm8k_tokens} new tokens):",
        "",
        "| ledgerlm generation mode | completions identical to lm-eval | items where lm-eval's completion is longer "
        "| flexible-extract answers identical | strict and flexible exact match identical | flexible EM ours / lm-eval |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    problems = []
    for mode in ("lm-eval", "chat"):
        r = score_generative(ours, task, 0, None, args.gsm8k_tokens, batch_size=args.batch_size, mode=mode)
        same = sum(completion[k] == it["completion"] for k, it in enumerate(r["items"]))
        em_same = sum(
            ok[(k, "strict-match")] == it["ok_strict"] and ok[(k, "flexible-extract")] == it["ok_flexible"]
            for k, it in enumerate(r["items"])
        )
        longer = sum(len(completion[k]) > len(it["completion"]) for k, it in enumerate(r["items"]))
        ans_same = sum(answer[k] == (it["flexible"] or "[invalid]") for k, it in enumerate(r["items"]))
        flex_theirs = sum(ok[(k, "flexible-extract")] for k in range(n)) / n
        lines.append(
            f"| {mode} | {same}/{n} | {longer} | {ans_same}/{n} | {em_same}/{n} | "
            f"{r['metrics']['exact_match_flexible']['value']:.3f} / {flex_theirs:.3f} |"
        )
        print(json.dumps({"task": "gsm8k_special", "mode": mode, "identical": same, "answers": ans_same, "n": n}))
        if mode == "lm-eval" and same < n:
            problems.append(f"gsm8k_special: {n - same}/{n} completions differ in lm-eval mode")
    return lines, problems


if __name__ == "__main__":
    sys.exit(main())
