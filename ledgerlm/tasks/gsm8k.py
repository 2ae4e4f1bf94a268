"""GSM8K: answer extraction, prompts and the task record, following lm-evaluation-harness's `gsm8k` task (v3.0).

`FORMAT` is how any GSM8K-format task ({"question", "answer": "<worked solution>\n#### N"}) is prompted and
checked: GSM8K itself and the built-in arithmetic task (`ledgerlm.tasks.arith`). RL rewards use the same
extractors, so everything here is pure string work with no model or torch import.

lm-eval scores a completion in two ways ("filters"), then compares with `exact_match` after deleting
`,`, `$`, everything up to `#### ` and one trailing `.` from both prediction and reference (case-insensitive):
- strict-match: the first `#### N` in the completion;
- flexible-extract: the last number-like run in the completion (`(-?[$0-9.,]{2,})|(-?[0-9]+)`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ledgerlm.tasks.base import BadRecord, Generation, Item, Task, str_field

STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# Applied in this order to prediction and reference, as lm-eval's `regexes_to_ignore`.
IGNORE_RES = [re.compile(","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]
# lm-eval's `until` for gsm8k; the model's EOS text is appended at generation time.
STOP_STRINGS = ("Question:", "</s>", "<|im_end|>")
MAX_NEW_TOKENS = 256  # lm-eval's default max_gen_toks
MODES = ("strict", "flexible")


def extract_strict(text: str) -> str | None:
    """The number after the first `#### ` (lm-eval strict-match), or None."""
    m = STRICT_RE.search(text or "")
    return m.group(1).strip() if m else None


def extract_flexible(text: str) -> str | None:
    """The last number-like run in `text` (lm-eval flexible-extract), or None."""
    matches = FLEXIBLE_RE.findall(text or "")
    if not matches:
        return None
    # findall returns (group1, group2) tuples; lm-eval takes the first non-empty group of the selected match.
    groups = [g for g in matches[-1] if g]
    return groups[0].strip() if groups else None


def normalize_number(s: str) -> str:
    """lm-eval's exact_match normalisation: drop `,`, `$`, anything up to `#### `, one trailing `.`; lowercase.

    Works on both a bare prediction ("$1,234.") and a full GSM8K reference answer ("...\\n#### 1234").
    """
    for rx in IGNORE_RES:
        s = rx.sub("", s)
    return s.lower()


def extract(text: str, mode: str) -> str | None:
    if mode == "strict":
        return extract_strict(text)
    if mode == "flexible":
        return extract_flexible(text)
    raise ValueError(f"unknown GSM8K extraction mode {mode!r}; expected one of {MODES}")


def is_correct(completion: str, gold_answer_text: str, mode: str = "strict") -> bool:
    """True when the `mode` extraction of `completion` equals the gold answer after lm-eval normalisation.

    `gold_answer_text` may be a full GSM8K answer (with `#### N`) or a bare number.
    """
    pred = extract(completion, mode)
    if pred is None:  # lm-eval's "[invalid]" fallback never equals a reference
        return False
    return normalize_number(pred) == normalize_number(gold_answer_text)


def gold_number(answer_text: str) -> str:
    """The normalised reference number of a GSM8K answer."""
    return normalize_number(answer_text)


def question_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def build_prompt(question: str, shots: Sequence[dict] = ()) -> str:
    """lm-eval's gsm8k prompt: k solved examples joined by blank lines, then the question."""
    parts = [f"{question_text(s['question'])} {s['answer']}\n\n" for s in shots]
    return "".join(parts) + question_text(question)


def parse(doc: dict) -> Item:
    """A GSM8K-format record -> Item (no requests: the model generates the answer)."""
    q, a = str_field(doc, "question"), str_field(doc, "answer")
    if "####" not in a:
        raise BadRecord("field 'answer' has no '#### N' final line")
    return Item(0, [], target=a, question=q)


def question_and_solution(item: Item) -> str:
    return f"{item.question}\n{item.target}"


FORMAT = Generation(
    prompt=build_prompt,
    stop_strings=STOP_STRINGS,
    modes=MODES,
    extract=extract,
    check=is_correct,
    gold=gold_number,
    max_new_tokens=MAX_NEW_TOKENS,
    shot_tokens=160,  # a solved GSM8K example in the prompt
    few_shot=5,  # lm-eval's GSM8K setting
    fewshot_seed=1234,  # lm-eval's default fewshot_random_seed
)
METRICS = tuple(f"exact_match_{m}" for m in MODES)  # exact_match_strict, exact_match_flexible

# lm-eval reports GSM8K by its strict match; the few-shot examples come from the train split.
GSM8K = Task(
    name="gsm8k",
    kind="generate",
    split="test",
    metrics=METRICS,
    headline="exact_match_strict",
    build=parse,
    text=question_and_solution,
    required=("question", "answer"),
    hub=("openai/gsm8k", "main"),
    generation=FORMAT,
)
