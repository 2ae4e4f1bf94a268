"""The five multiple-choice tasks of the six-task mean, with lm-evaluation-harness 0.4's prompts and splits.

- arc_easy / arc_challenge: "Question: {question}\\nAnswer:" + " " + choice; gold = labels.index(answerKey); test.
- hellaswag: lm-eval's `preprocess` on "{activity_label}: {ctx_a} {ctx_b.capitalize()}" and on each ending;
  validation.
- piqa: "Question: {goal}\\nAnswer:" + " " + sol1/sol2; validation.
- winogrande: partial scoring: contexts = sentence up to "_" with each option filled in, one shared continuation
  " " + (the rest of the sentence after "_"), stripped; only `acc`; validation (1267 items).

acc picks the choice with the highest log-likelihood; acc_norm divides by the choice's length in characters
(the headline where the choices differ in length).
"""

from __future__ import annotations

import re

from ledgerlm.tasks.base import BadRecord, Item, Task, int_label, str_field


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
        raise BadRecord("field 'question' must be a string")
    if not isinstance(ch, dict) or not isinstance(ch.get("text"), list) or not isinstance(ch.get("label"), list):
        raise BadRecord("field 'choices' must be {text: [...], label: [...]}")
    texts, labels = ch["text"], [str(x) for x in ch["label"]]
    key = str(doc["answerKey"])
    if len(texts) != len(labels) or len(texts) < 2 or not all(isinstance(t, str) for t in texts):
        raise BadRecord("field 'choices' needs >= 2 texts with one label each")
    if key not in labels:
        raise BadRecord(f"field 'answerKey' {key!r} is not one of the labels {labels}")
    ctx = f"Question: {q}\nAnswer:"
    return Item(0, [(ctx, " " + t) for t in texts], choices=list(texts), gold=labels.index(key))


def _hellaswag(doc: dict) -> Item:
    ctx = str_field(doc, "ctx_a") + " " + str_field(doc, "ctx_b").capitalize()
    query = hellaswag_preprocess(str_field(doc, "activity_label") + ": " + ctx)
    endings = doc["endings"]
    if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
        raise BadRecord("field 'endings' must be a list of >= 2 strings")
    choices = [hellaswag_preprocess(e) for e in endings]
    gold = int_label(doc["label"], "label", len(choices))
    return Item(0, [(query, " " + c) for c in choices], choices=choices, gold=gold)


def _piqa(doc: dict) -> Item:
    ctx = f"Question: {str_field(doc, 'goal')}\nAnswer:"
    choices = [str_field(doc, "sol1"), str_field(doc, "sol2")]
    return Item(0, [(ctx, " " + c) for c in choices], choices=choices, gold=int_label(doc["label"], "label", 2))


def _winogrande(doc: dict) -> Item:
    sentence = str_field(doc, "sentence")
    if "_" not in sentence:
        raise BadRecord("field 'sentence' has no '_' blank")
    idx = sentence.index("_")
    options = [str_field(doc, "option1"), str_field(doc, "option2")]
    answer = str(doc["answer"]).strip()
    if answer not in ("1", "2"):
        raise BadRecord(f"field 'answer' must be '1' or '2', got {answer!r}")
    contexts = [sentence[:idx] + opt for opt in options]
    cont = " " + sentence[idx + 1 :].strip()
    return Item(0, [(c, cont) for c in contexts], choices=contexts, gold=int(answer) - 1)


def gold_request(item: Item) -> str:
    """Context + gold continuation: the HellaSwag text with its right ending, the WinoGrande sentence with the
    right option filled in."""
    ctx, cont = item.requests[item.gold]
    return ctx + cont


def question_answer(item: Item) -> str:
    """The question (without lm-eval's "Question: ... Answer:" frame) and its gold answer."""
    ctx, cont = item.requests[item.gold]
    return ctx.removeprefix("Question: ").removesuffix("\nAnswer:") + cont


def _arc_task(name: str, config: str) -> Task:
    """ARC-Easy and ARC-Challenge: the same prompt and metrics, one Hub config (and release file) each."""
    return Task(
        name=name,
        kind="multiple_choice",
        split="test",
        metrics=("acc", "acc_norm"),
        headline="acc_norm",
        build=_arc,
        text=question_answer,
        required=("question", "choices", "answerKey"),
        hub=("allenai/ai2_arc", config),
        original={"test": ((f"{config}/{config}-Test.jsonl", None),)},
        in_mean=True,
    )


ARC_EASY = _arc_task("arc_easy", "ARC-Easy")
ARC_CHALLENGE = _arc_task("arc_challenge", "ARC-Challenge")
HELLASWAG = Task(
    name="hellaswag",
    kind="multiple_choice",
    split="validation",
    metrics=("acc", "acc_norm"),
    headline="acc_norm",
    build=_hellaswag,
    text=gold_request,
    required=("activity_label", "ctx_a", "ctx_b", "endings", "label"),
    hub=("Rowan/hellaswag", None),
    original={"validation": (("hellaswag/hellaswag_val.jsonl", None),)},
    in_mean=True,
)
# lm-eval 0.4.x reads PIQA from baber/piqa (a parquet copy of ybisk/piqa, whose loading script no longer runs).
PIQA = Task(
    name="piqa",
    kind="multiple_choice",
    split="validation",
    metrics=("acc", "acc_norm"),
    headline="acc_norm",
    build=_piqa,
    text=question_answer,
    required=("goal", "sol1", "sol2", "label"),
    hub=("baber/piqa", None),
    original={
        "validation": (("piqa/valid.jsonl", "piqa/valid-labels.lst"),),
        "train": (("piqa/train.jsonl", "piqa/train-labels.lst"),),
    },
    label_field="label",
    in_mean=True,
)
# One shared continuation: the choices do not differ in length, so plain accuracy is the headline.
WINOGRANDE = Task(
    name="winogrande",
    kind="multiple_choice",
    split="validation",
    metrics=("acc",),
    headline="acc",
    build=_winogrande,
    text=gold_request,
    required=("sentence", "option1", "option2", "answer"),
    hub=("allenai/winogrande", "winogrande_xl"),
    original={"validation": (("winogrande/dev.jsonl", "winogrande/dev-labels.lst"),)},
    label_field="answer",
    in_mean=True,
)
