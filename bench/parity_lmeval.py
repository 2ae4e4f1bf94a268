"""Parity and speed of ledgerlm's eval harness against lm-evaluation-harness (HFLM) on the same model and items.

A small model of ours (random weights, saved as an HF Llama folder) or --model DIR is scored by both harnesses on
the same local items: PIQA, WinoGrande and LAMBADA from ../shared/data, and one fixture per remaining format
(ARC, HellaSwag) plus GSM8K 0-shot generation from tests/fixtures/eval. lm-eval runs its own task YAMLs with only the
dataset swapped for local JSON files (written to a temp dir), so prompts, preprocessing and metrics are its own.

Checks: per-item continuation log-likelihoods within 1e-3, identical acc / acc_norm per item, identical GSM8K
completions; speed: items/s of the same scoring in the same process, ours vs lm-eval.

    python bench/parity_lmeval.py [--limit 300] [--model DIR] [--device cpu|cuda] [--no-record]
Needs lm-eval (pip install 'ledgerlm[bench]'); works offline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bench/ holds scripts named like stdlib modules (tokenize.py); keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
SHARED = ROOT.parent / "shared" / "data"
FIX = ROOT / "tests" / "fixtures" / "eval"
sys.path.insert(0, str(ROOT))
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
    if task.name == "piqa" and task.source.endswith("valid.jsonl"):
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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--gsm8k-tokens", type=int, default=32)
    ap.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()

    import lm_eval
    import torch
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ledgerlm.eval.evaluate import score_gsm8k, score_loglikelihood_task
    from ledgerlm.eval.harness import load_lm
    from ledgerlm.eval.tasks import load_task

    torch.set_num_threads(torch.get_num_threads())
    tmp = Path(tempfile.mkdtemp(prefix="parity_lmeval_"))
    model_dir = args.model
    if model_dir is None:
        from tiny_model import make_tiny_model

        model_dir = str(
            make_tiny_model(tmp / "model", seed=0, vocab_size=2048, n_layer=4, d_model=256, max_seq_len=1024)
        )
    tasks = {name: load_task(name, d, limit=args.limit) for name, (d, _, _) in TASKS.items()}
    tasks["gsm8k"] = load_task("gsm8k", FIX)
    lnames = write_lmeval_tasks(tmp, tasks, Path(lm_eval.__file__).parent)

    ours = load_lm(model_dir, device=args.device, backend="hf")
    theirs = HFLM(pretrained=model_dir, device=args.device, batch_size=args.batch_size, dtype="float32")
    tm = TaskManager(include_path=str(tmp))

    # Warm both up (first-call allocations, thread pools) so neither pays it inside the timing.
    from lm_eval.api.instance import Instance

    warm = [("Question: warm up\nAnswer:", " yes"), ("Question: warm up\nAnswer:", " no")]
    theirs.loglikelihood([Instance("loglikelihood", {}, a, i) for i, a in enumerate(warm)], disable_tqdm=True)
    from ledgerlm.eval.harness import loglikelihood

    loglikelihood(ours, [warm])

    rows, problems = [], []
    for name, task in tasks.items():
        t0 = time.perf_counter()
        if name == "gsm8k":
            r = score_gsm8k(ours, task, 0, None, max_new_tokens=args.gsm8k_tokens, batch_size=args.batch_size)
        else:
            r = score_loglikelihood_task(ours, task, batch_size=args.batch_size)
        t_ours = time.perf_counter() - t0
        gen = {"max_gen_toks": args.gsm8k_tokens} if name == "gsm8k" else None
        t0 = time.perf_counter()
        out = simple_evaluate(
            model=theirs,
            tasks=[lnames[name]],
            num_fewshot=0,
            task_manager=tm,
            log_samples=True,
            bootstrap_iters=0,
            gen_kwargs=gen,
        )
        t_theirs = time.perf_counter() - t0
        # one sample per (doc, filter); GSM8K has two filters over the same generation
        by_doc = {}
        for s in out["samples"][lnames[name]]:
            by_doc.setdefault(s["doc_id"], s)
        samples = [by_doc[k] for k in sorted(by_doc)]
        assert len(samples) == len(r["items"]), (name, len(samples), len(r["items"]))
        max_diff, acc_same, n_req = 0.0, True, 0
        for s, mine in zip(samples, r["items"]):
            if name == "gsm8k":
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
                "ours_items_s": n / t_ours,
                "lm_eval_items_s": n / t_theirs,
            }
        )
        if max_diff > 1e-3:
            problems.append(f"{name}: max |ll diff| {max_diff:.2e} > 1e-3")
        print(json.dumps(rows[-1]), flush=True)

    tot_ours = sum(r["n"] / r["ours_items_s"] for r in rows if r["task"] != "gsm8k")
    tot_theirs = sum(r["n"] / r["lm_eval_items_s"] for r in rows if r["task"] != "gsm8k")
    n_ll = sum(r["n"] for r in rows if r["task"] != "gsm8k")
    lines = [
        f"Model: `{'random ledgerlm Llama 4x256, vocab 2048' if args.model is None else args.model}` (HF folder), "
        f"device {args.device}, batch size {args.batch_size}, float32; lm-eval {lm_eval.__version__} HFLM; "
        f"first {args.limit} items of PIQA/WinoGrande/LAMBADA (../shared/data), fixtures for ARC/HellaSwag/GSM8K.",
        "",
        "| task | items | requests | max abs ll diff | per-item acc/acc_norm identical | metric | ours | lm-eval | ours items/s | lm-eval items/s | speed-up |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['n']} | {r['requests'] or '—'} | {r['max_abs_ll_diff']:.2e} | "
            f"{'yes' if r['per_item_metrics_identical'] else 'NO'} | {r['metric']} | {r['ours']:.4f} | {r['lm_eval']:.4f} | "
            f"{r['ours_items_s']:.1f} | {r['lm_eval_items_s']:.1f} | {r['ours_items_s'] / r['lm_eval_items_s']:.2f}x |"
        )
    lines += [
        "",
        f"Log-likelihood tasks together: ours {n_ll / tot_ours:.1f} items/s, lm-eval {n_ll / tot_theirs:.1f} items/s "
        f"(**{tot_theirs / tot_ours:.2f}x**). Times are end to end per task in one process after model load "
        "(lm-eval's include building its task and loading the local JSON).",
        "",
        "Parity: " + ("all checks passed." if not problems else "FAILED: " + "; ".join(problems)),
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_record", ROOT / "bench" / "_record.py")
        rec = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rec)
        record = rec.record

        record("parity_lmeval", body)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
