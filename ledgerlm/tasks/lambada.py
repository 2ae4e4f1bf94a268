"""LAMBADA (OpenAI's version), as lm-evaluation-harness's `lambada_openai`: context = all words but the last
(split on " "), continuation = " " + last word; acc = greedy decoding reproduces the last word, perplexity =
exp(-mean log-likelihood) over items; test split."""

from __future__ import annotations

from ledgerlm.tasks.base import BadRecord, Item, Task, str_field


def _lambada(doc: dict) -> Item:
    words = str_field(doc, "text").split(" ")
    if len(words) < 2 or not words[-1]:
        raise BadRecord("field 'text' needs at least two space-separated words")
    return Item(0, [(" ".join(words[:-1]), " " + words[-1])], target=words[-1])


def _passage(item: Item) -> str:
    ctx, cont = item.requests[0]
    return ctx + cont


LAMBADA_OPENAI = Task(
    name="lambada_openai",
    kind="loglikelihood",
    split="test",
    metrics=("acc", "perplexity"),
    headline="acc",
    build=_lambada,
    text=_passage,
    required=("text",),
    hub=("EleutherAI/lambada_openai", "default"),
    original={"test": (("lambada/lambada_test.jsonl", None), ("lambada_openai/lambada_test.jsonl", None))},
    in_mean=True,
)
