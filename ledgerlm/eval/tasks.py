"""Evaluation tasks with lm-evaluation-harness's conventions (prompts, choices, splits, preprocessing).

Every task turns a raw record (in its Hugging Face Hub schema) into an `Item`: a list of (context, continuation)
requests plus the gold answer. Conventions copied from lm-eval 0.4 task configs so scores are comparable:

- arc_easy / arc_challenge: "Question: {question}\\nAnswer:" + " " + choice; gold = labels.index(answerKey); test split.
- hellaswag: lm-eval's `preprocess` on "{activity_label}: {ctx_a} {ctx_b.capitalize()}" and on each ending; validation.
- piqa: "Question: {goal}\\nAnswer:" + " " + sol1/sol2; validation.
- winogrande: partial scoring: contexts = sentence up to "_" with each option filled in, one shared continuation
  " " + (the rest of the sentence after "_"), stripped; only `acc`; validation (1267 items).
- lambada_openai: context = all words but the last (split on " "), continuation = " " + last word; acc = greedy
  match, perplexity = exp(-mean loglikelihood); test.
- gsm8k: generative, see gsm8k.py; test (few-shot examples from train).

Data come from the Hub (`datasets`), or from local files with `data_dir`: `D/<task>/<split>.jsonl` in the Hub
schema, or the original releases as in ../shared/data (piqa/valid.jsonl + valid-labels.lst, winogrande/dev.jsonl,
lambada/lambada_test.jsonl, gsm8k/<split>.jsonl). Malformed records are quarantined with file, line and reason.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SIX_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "lambada_openai")
ALL_TASKS = SIX_TASKS + ("gsm8k",)


class TaskDataError(ValueError):
    """Unusable evaluation data; the message names the file (or Hub dataset), line and field."""


@dataclass
class Item:
    index: int  # 0-based position among the split's valid records
    requests: list[tuple[str, str]]  # (context, continuation) pairs scored by log-likelihood; [] for gsm8k
    choices: list[str] = field(default_factory=list)  # lm-eval's doc_to_choice: acc_norm divides by len(choice)
    gold: int | None = None  # index of the correct request (multiple choice)
    target: str | None = None  # lambada's last word / gsm8k's reference answer text
    question: str | None = None  # gsm8k question
    source: str = ""  # "file:line" or "hub:name[row]", for audit


@dataclass
class Task:
    name: str
    kind: str  # "multiple_choice" | "loglikelihood" | "generate"
    split: str
    source: str  # where the items came from
    items: list[Item]
    quarantined: list[dict] = field(default_factory=list)  # {"source", "line", "reason"}
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    kind: str
    hub_path: str
    hub_name: str | None
    split: str
    metrics: tuple[str, ...]
    required: tuple[str, ...]  # fields every record must have


SPECS: dict[str, Spec] = {
    "arc_easy": Spec(
        "multiple_choice",
        "allenai/ai2_arc",
        "ARC-Easy",
        "test",
        ("acc", "acc_norm"),
        ("question", "choices", "answerKey"),
    ),
    "arc_challenge": Spec(
        "multiple_choice",
        "allenai/ai2_arc",
        "ARC-Challenge",
        "test",
        ("acc", "acc_norm"),
        ("question", "choices", "answerKey"),
    ),
    "hellaswag": Spec(
        "multiple_choice",
        "Rowan/hellaswag",
        None,
        "validation",
        ("acc", "acc_norm"),
        ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
    ),
    # lm-eval 0.4.x reads PIQA from baber/piqa (a parquet copy of ybisk/piqa, whose loading script no longer runs).
    "piqa": Spec(
        "multiple_choice", "baber/piqa", None, "validation", ("acc", "acc_norm"), ("goal", "sol1", "sol2", "label")
    ),
    "winogrande": Spec(
        "multiple_choice",
        "allenai/winogrande",
        "winogrande_xl",
        "validation",
        ("acc",),
        ("sentence", "option1", "option2", "answer"),
    ),
    "lambada_openai": Spec(
        "loglikelihood", "EleutherAI/lambada_openai", "default", "test", ("acc", "perplexity"), ("text",)
    ),
    "gsm8k": Spec(
        "generate",
        "openai/gsm8k",
        "main",
        "test",
        ("exact_match_strict", "exact_match_flexible"),
        ("question", "answer"),
    ),
}


# ----------------------------------------------------------------------------------------------- record -> Item
class _Bad(Exception):
    """A malformed record; becomes a quarantine entry."""


def _str(doc: dict, key: str) -> str:
    v = doc.get(key)
    if not isinstance(v, str):
        raise _Bad(f"field '{key}' must be a string, got {type(v).__name__}")
    return v


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: strip, WikiHow ' [title]' -> '. ', drop [bracketed] artifacts, squash '  '."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _arc(doc: dict) -> Item:
    q = doc["question"]
    ch = doc["choices"]
    if isinstance(q, dict):  # the original AI2 release nests the choices in the question
        ch = {"text": [c["text"] for c in q.get("choices", [])], "label": [c["label"] for c in q.get("choices", [])]}
        q = q.get("stem")
    if not isinstance(q, str):
        raise _Bad("field 'question' must be a string")
    if not isinstance(ch, dict) or not isinstance(ch.get("text"), list) or not isinstance(ch.get("label"), list):
        raise _Bad("field 'choices' must be {text: [...], label: [...]}")
    texts, labels = ch["text"], [str(x) for x in ch["label"]]
    key = str(doc["answerKey"])
    if len(texts) != len(labels) or len(texts) < 2 or not all(isinstance(t, str) for t in texts):
        raise _Bad("field 'choices' needs >= 2 texts with one label each")
    if key not in labels:
        raise _Bad(f"field 'answerKey' {key!r} is not one of the labels {labels}")
    ctx = f"Question: {q}\nAnswer:"
    return Item(0, [(ctx, " " + t) for t in texts], choices=list(texts), gold=labels.index(key))


def _hellaswag(doc: dict) -> Item:
    ctx = _str(doc, "ctx_a") + " " + _str(doc, "ctx_b").capitalize()
    query = hellaswag_preprocess(_str(doc, "activity_label") + ": " + ctx)
    endings = doc["endings"]
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
        raise _Bad("field 'endings' must be a list of >= 2 strings")
    choices = [hellaswag_preprocess(e) for e in endings]
    gold = _int_label(doc["label"], "label", len(choices))
    return Item(0, [(query, " " + c) for c in choices], choices=choices, gold=gold)


def _piqa(doc: dict) -> Item:
    ctx = f"Question: {_str(doc, 'goal')}\nAnswer:"
    choices = [_str(doc, "sol1"), _str(doc, "sol2")]
    return Item(0, [(ctx, " " + c) for c in choices], choices=choices, gold=_int_label(doc["label"], "label", 2))


def _winogrande(doc: dict) -> Item:
    sentence = _str(doc, "sentence")
    if "_" not in sentence:
        raise _Bad("field 'sentence' has no '_' blank")
    idx = sentence.index("_")
    options = [_str(doc, "option1"), _str(doc, "option2")]
    answer = str(doc["answer"]).strip()
    if answer not in ("1", "2"):
        raise _Bad(f"field 'answer' must be '1' or '2', got {answer!r}")
    contexts = [sentence[:idx] + opt for opt in options]
    cont = " " + sentence[idx + 1 :].strip()
    return Item(0, [(c, cont) for c in contexts], choices=contexts, gold=int(answer) - 1)


def _lambada(doc: dict) -> Item:
    words = _str(doc, "text").split(" ")
    if len(words) < 2 or not words[-1]:
        raise _Bad("field 'text' needs at least two space-separated words")
    return Item(0, [(" ".join(words[:-1]), " " + words[-1])], target=words[-1])


def _gsm8k(doc: dict) -> Item:
    q, a = _str(doc, "question"), _str(doc, "answer")
    if "####" not in a:
        raise _Bad("field 'answer' has no '#### N' final line")
    return Item(0, [], target=a, question=q)


def _int_label(v, name: str, n: int) -> int:
    try:
        i = int(str(v).strip())
    except ValueError:
        raise _Bad(f"field '{name}' must be an integer, got {v!r}") from None
    if not 0 <= i < n:
        raise _Bad(f"field '{name}' = {i} is out of range for {n} choices")
    return i


BUILDERS: dict[str, Callable[[dict], Item]] = {
    "arc_easy": _arc,
    "arc_challenge": _arc,
    "hellaswag": _hellaswag,
    "piqa": _piqa,
    "winogrande": _winogrande,
    "lambada_openai": _lambada,
    "gsm8k": _gsm8k,
}


# ----------------------------------------------------------------------------------------------- raw records
def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line_no, record or None, error) for every non-blank line."""
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, None, f"invalid JSON: {e.msg}"
                continue
            yield (n, rec, None) if isinstance(rec, dict) else (n, None, "record is not a JSON object")


def _read_labels(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip()]


def _with_labels(records, labels_path: Path, key: str):
    """Attach one label per record from a `*-labels.lst` file (the original PIQA/WinoGrande releases)."""
    recs = list(records)
    labels = _read_labels(labels_path)
    if len(labels) != len(recs):
        raise TaskDataError(
            f"{labels_path}: {len(labels)} labels for {len(recs)} records in the data file; they must align"
        )
    for (n, rec, err), lab in zip(recs, labels):
        if rec is not None and key not in rec:
            rec = {**rec, key: lab}
        yield n, rec, err


# split name -> original file names tried after D/<task>/<split>.jsonl (the ../shared/data layout)
_ORIGINAL: dict[str, dict[str, list[tuple[str, str | None]]]] = {
    # task: {split: [(data file relative to D, labels file or None)]}
    "piqa": {
        "validation": [("piqa/valid.jsonl", "piqa/valid-labels.lst")],
        "train": [("piqa/train.jsonl", "piqa/train-labels.lst")],
    },
    "winogrande": {"validation": [("winogrande/dev.jsonl", "winogrande/dev-labels.lst")]},
    "lambada_openai": {"test": [("lambada/lambada_test.jsonl", None), ("lambada_openai/lambada_test.jsonl", None)]},
    "hellaswag": {"validation": [("hellaswag/hellaswag_val.jsonl", None)]},
    "arc_easy": {"test": [("ARC-Easy/ARC-Easy-Test.jsonl", None)]},
    "arc_challenge": {"test": [("ARC-Challenge/ARC-Challenge-Test.jsonl", None)]},
}
_LABEL_KEY = {"piqa": "label", "winogrande": "answer"}


def local_source(name: str, split: str, data_dir: str | Path) -> tuple[Path, Path | None]:
    """The (data file, labels file or None) for `name`/`split` under `data_dir`, or a TaskDataError listing what was tried."""
    d = Path(data_dir)
    tried = []
    for ext in (".jsonl", ".jsonl.gz"):
        p = d / name / f"{split}{ext}"
        tried.append(p)
        if p.is_file():
            return p, None
    for rel, labels in _ORIGINAL.get(name, {}).get(split, []):
        p = d / rel
        tried.append(p)
        if p.is_file():
            lp = d / labels if labels else None
            return p, (lp if lp is not None and lp.is_file() else None)
    raise TaskDataError(f"no local data for task {name!r} split {split!r}; tried: " + ", ".join(str(t) for t in tried))


def _local_records(name: str, split: str, data_dir) -> tuple[str, Iterator]:
    path, labels = local_source(name, split, data_dir)
    recs = _read_jsonl(path)
    if labels is not None and name in _LABEL_KEY:
        recs = _with_labels(recs, labels, _LABEL_KEY[name])
    return str(path), recs


def _hub_records(name: str, split: str) -> tuple[str, Iterator]:
    spec = SPECS[name]
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TaskDataError(
            f"task {name!r}: loading from the Hub needs `datasets` (pip install ledgerlm[hf]) or pass data_dir"
        ) from e
    ds = datasets.load_dataset(spec.hub_path, spec.hub_name, split=split)
    src = f"hub:{spec.hub_path}" + (f"/{spec.hub_name}" if spec.hub_name else "") + f"[{split}]"
    return src, ((i + 1, dict(r), None) for i, r in enumerate(ds))


# ----------------------------------------------------------------------------------------------- public API
def load_task(
    name: str, data_dir: str | Path | None = None, limit: int | None = None, split: str | None = None
) -> Task:
    """Load task `name` (one of ALL_TASKS) from `data_dir` or the Hub; the first `limit` valid items."""
    if name not in SPECS:
        raise TaskDataError(f"unknown task {name!r}; known: {', '.join(ALL_TASKS)}")
    if limit is not None and limit < 1:
        raise TaskDataError(f"limit must be >= 1, got {limit}")
    spec = SPECS[name]
    split = split or spec.split
    source, records = _local_records(name, split, data_dir) if data_dir is not None else _hub_records(name, split)
    items: list[Item] = []
    quarantined: list[dict] = []
    for line, rec, err in records:
        if limit is not None and len(items) >= limit:
            break
        if err is None:
            missing = [k for k in spec.required if k not in rec]
            err = f"missing field '{missing[0]}'" if missing else None
        if err is None:
            try:
                item = BUILDERS[name](rec)
            except _Bad as e:
                err = str(e)
        if err is not None:
            quarantined.append({"source": source, "line": line, "reason": err})
            continue
        item.index = len(items)
        item.source = f"{source}:{line}"
        items.append(item)
    if not items:
        detail = f"; first problem: line {quarantined[0]['line']}: {quarantined[0]['reason']}" if quarantined else ""
        raise TaskDataError(f"{source}: no valid {name} records ({len(quarantined)} quarantined){detail}")
    return Task(name, spec.kind, split, source, items, quarantined, spec.metrics)


def item_text(name: str, item: Item) -> str:
    """The question/context plus its gold answer, as one string (what decontamination looks for)."""
    if name == "gsm8k":
        return f"{item.question}\n{item.target}"
    if name == "lambada_openai":
        ctx, cont = item.requests[0]
        return ctx + cont
    ctx, cont = item.requests[item.gold]
    if name == "winogrande":  # the sentence with the right option filled in
        return ctx + cont
    if name == "hellaswag":
        return ctx + cont
    return ctx.removeprefix("Question: ").removesuffix("\nAnswer:") + cont


def benchmark_texts(name: str, data_dir: str | Path | None = None, split: str | None = None) -> list[str]:
    """One text per item of `name` (question/context + answer), for decontaminating training data."""
    task = load_task(name, data_dir=data_dir, split=split)
    return [item_text(name, it) for it in task.items]
