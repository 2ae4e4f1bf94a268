"""Built-in verifiable task: GSM8K-format arithmetic word problems with worked solutions.

Every problem is a function of its *key* (template name + operands): the wording (names, items) is derived from a hash
of the key, and so is the split. Train and held-out sets are therefore disjoint by construction -- the same operands
under the same template can never appear in both -- and generation is deterministic from (seed, split, n).

Records follow GSM8K: {"question": ..., "answer": "<worked solution>\n#### N"}, so the same extractor that scores
GSM8K scores these (`ledgerlm.tasks.gsm8k`). As an evaluation task (`ARITH`, the demo's benchmark) it needs no data
at all: its items are the first problems of the "heldout" split, its few-shot pool the "train" split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace

from ledgerlm.tasks.base import Task
from ledgerlm.tasks.gsm8k import FORMAT, METRICS, parse, question_and_solution

NAMES = ["Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Raj", "Zoe", "Ivan", "Nora", "Omar", "Kim"]
ITEMS = ["apples", "pens", "books", "cards", "stamps", "shells", "coins", "marbles", "eggs", "stickers"]
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Problem:
    key: str  # template|operands: identity of the problem (decides split and wording)
    question: str
    solution: str  # worked solution, last line "#### N"
    answer: int
    steps: tuple[tuple[int, str, int, int], ...]  # (a, op, b, result) per operation, for corruption / analysis

    def record(self) -> dict:
        return {"question": self.question, "answer": self.solution}


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(key: str, heldout_fraction: float = 0.2) -> str:
    """Deterministic split from the key alone (salted so it is independent of the wording choice)."""
    return "heldout" if (_h("split|" + key) % 10_000) < heldout_fraction * 10_000 else "train"


def _calc(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a // b
    raise ValueError(f"unknown op {op!r}")


def _eq(a: int, op: str, b: int, r: int, calc: bool) -> str:
    # GSM8K writes "3 + 5 = <<3+5=8>>8"; the calculator annotation is optional to keep demo sequences short.
    return f"{a} {op} {b} = <<{a}{op}{b}={r}>>{r}" if calc else f"{a} {op} {b} = {r}"


# Operands per template, keeping every intermediate result a non-negative integer.
def _operands(name: str, rng: random.Random, hi: int) -> tuple[int, ...]:
    r = rng.randint
    if name == "add":
        return (r(1, hi), r(1, hi))
    if name == "sub":
        a = r(2, hi)
        return (a, r(1, a - 1))
    if name == "mul":
        return (r(2, max(2, hi // 2)), r(2, 9))
    if name == "div":
        return (r(2, 9) * (b := r(2, 6)), b)
    if name == "add_sub":
        a, b = r(1, hi), r(1, hi)
        return (a, b, r(1, a + b - 1))
    if name == "mul_add":
        return (r(2, 6), r(2, 9), r(1, hi))
    if name == "mul_sub_add":
        a, b = r(2, 6), r(2, 9)
        return (a, b, r(1, a * b - 1), r(1, hi))
    raise ValueError(name)


@dataclass(frozen=True)
class Template:
    question: str  # format with the operands a, b, c, d and {who}, {item}
    steps: tuple[tuple[str, str, str, str], ...]  # (left, op, right, solution line): left/right name an operand or
    # an earlier step's result (r0, r1); the line is formatted with {eq} = the worked equation, {who}, {item}


TEMPLATES: dict[str, Template] = {
    "add": Template(
        "{who} has {a} {item}. {who} gets {b} more. How many {item} does {who} have now?",
        (("a", "+", "b", "{who} has {eq} {item}."),),
    ),
    "sub": Template(
        "{who} has {a} {item}. {who} gives away {b}. How many {item} does {who} have left?",
        (("a", "-", "b", "{who} has {eq} {item} left."),),
    ),
    "mul": Template(
        "{who} buys {a} bags of {item}. Each bag has {b} {item}. How many {item} does {who} buy?",
        (("a", "*", "b", "{who} buys {eq} {item}."),),
    ),
    "div": Template(
        "{who} shares {a} {item} equally among {b} friends. How many {item} does each friend get?",
        (("a", "/", "b", "Each friend gets {eq} {item}."),),
    ),
    "add_sub": Template(
        "{who} has {a} {item} and gets {b} more. Then {who} gives away {c}. How many {item} are left?",
        (("a", "+", "b", "{who} has {eq} {item}."), ("r0", "-", "c", "{who} has {eq} {item} left.")),
    ),
    "mul_add": Template(
        "{who} has {a} boxes of {b} {item} and {c} loose {item}. How many {item} does {who} have?",
        (("a", "*", "b", "The boxes hold {eq} {item}."), ("r0", "+", "c", "{who} has {eq} {item}.")),
    ),
    "mul_sub_add": Template(
        "{who} has {a} boxes of {b} {item}. {who} gives away {c} {item} and then finds {d} more. "
        "How many {item} does {who} have?",
        (
            ("a", "*", "b", "The boxes hold {eq} {item}."),
            ("r0", "-", "c", "After giving some away {who} has {eq} {item}."),
            ("r1", "+", "d", "{who} has {eq} {item}."),
        ),
    ),
}


def _build(name: str, ops: tuple[int, ...], calc: bool) -> Problem:
    key = f"{name}|{','.join(map(str, ops))}"
    hv = _h("words|" + key)
    words = {"who": NAMES[hv % len(NAMES)], "item": ITEMS[(hv // 97) % len(ITEMS)]}
    tpl = TEMPLATES[name]
    values = dict(zip("abcd", ops))
    steps, lines = [], []
    for i, (left, op, right, line) in enumerate(tpl.steps):
        a, b = values[left], values[right]
        r = values[f"r{i}"] = _calc(a, op, b)
        steps.append((a, op, b, r))
        lines.append(line.format(eq=_eq(a, op, b, r, calc), **words))
    t = steps[-1][3]
    question = tpl.question.format(**words, **values)
    return Problem(key, question, "\n".join(lines) + f"\n#### {t}", t, tuple(steps))


def generate(
    n: int,
    split: str = "train",
    seed: int = 0,
    *,
    max_ops: int = 3,
    max_value: int = 20,
    templates: tuple[str, ...] | None = None,
    heldout_fraction: float = 0.2,
    calc_annotations: bool = False,
) -> list[Problem]:
    """`n` distinct problems of `split`, deterministic from the arguments. Raises if the space is too small."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unknown = set(templates or ()) - set(TEMPLATES)
    names = [t for t in (templates or tuple(TEMPLATES)) if t in TEMPLATES and len(TEMPLATES[t].steps) <= max_ops]
    if unknown or not names:
        raise ValueError(f"no usable templates (unknown: {sorted(unknown)}, max_ops={max_ops})")
    rng = random.Random(f"arith|{seed}|{split}")
    out: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(
                f"only {len(out)} distinct {split} problems found (asked {n}); ask for fewer, or raise max_value"
            )
        name = names[rng.randrange(len(names))]
        ops = _operands(name, rng, max_value)
        key = f"{name}|{','.join(map(str, ops))}"
        if key in seen or split_of(key, heldout_fraction) != split:
            continue
        seen.add(key)
        out.append(_build(name, ops, calc_annotations))
    return out


def task_options(spec: str) -> dict:
    """Generator options from a task spec: "arith" -> {}; "arith:max_ops=1,max_value=10" -> {"max_ops": 1,
    "max_value": 10} (the problems' difficulty, e.g. sized to what a small model can sometimes solve)."""
    name, _, opts = spec.partition(":")
    if name != "arith":
        raise ValueError(f"not an arith task spec: {spec!r}")
    out: dict = {}
    for part in filter(None, opts.split(",")):
        key, eq, value = part.partition("=")
        if key not in ("max_ops", "max_value") or not eq or not value.isdigit() or int(value) < 1:
            raise ValueError(f"{spec!r}: options are max_ops=N and max_value=N (N >= 1), got {part!r}")
        out[key] = int(value)
    return out


CORRUPTIONS = ("arith", "final")  # the default kinds
KINDS = (*CORRUPTIONS, "unfinished")


def corrupt(
    p: Problem, rng: random.Random, calc_annotations: bool = False, kinds: tuple[str, ...] = CORRUPTIONS
) -> tuple[str, str]:
    """A plausible wrong worked solution for `p` -> (text, kind). Used as the rejected side of preference pairs.

    "arith": an arithmetic slip in one step, carried consistently through the later steps (only checking the
    arithmetic reveals it); "final": correct steps but a different number on the `####` line (an inconsistency
    visible at the end); "unfinished": the solution stops before its `####` line (as a small model's answer cut off
    by its token budget does), so it gives no answer. With exactly "arith" and "final", "arith" is drawn twice as
    often; otherwise the allowed kinds are drawn equally."""
    bad = set(kinds) - set(KINDS)
    if bad or not kinds:
        raise ValueError(f"corruption kinds must be among {KINDS}, got {kinds}")
    kind = rng.choice(["arith", "final", "arith"] if set(kinds) == set(CORRUPTIONS) else sorted(set(kinds)))
    if kind == "unfinished":
        lines = p.solution.split("\n")[:-1]  # the steps, without "#### N"
        return "\n".join(lines[: rng.randint(1, len(lines))]), "unfinished"
    steps = list(p.steps)
    i = rng.randrange(len(steps))
    a, op, b, r = steps[i]
    delta = rng.choice([-3, -2, -1, 1, 2, 3])
    if kind == "final" or r + delta < 0:
        # correct reasoning, wrong final answer line
        wrong = p.answer + (delta if p.answer + delta >= 0 else abs(delta))
        body = p.solution.rsplit("\n#### ", 1)[0]
        return f"{body}\n#### {wrong}", "final"
    # arithmetic slip in step i, propagated consistently through the later steps
    old = _eq(a, op, b, r, calc_annotations)
    steps[i] = (a, op, b, r + delta)
    lines = p.solution.split("\n")[:-1]
    lines[i] = lines[i].replace(old, _eq(a, op, b, r + delta, calc_annotations))
    prev = r + delta
    for j in range(i + 1, len(steps)):
        _, opj, bj, rj = steps[j]
        newr = _calc(prev, opj, bj)
        lines[j] = lines[j].replace(
            _eq(steps[j][0], opj, bj, rj, calc_annotations), _eq(prev, opj, bj, newr, calc_annotations)
        )
        steps[j] = (prev, opj, bj, newr)
        prev = newr
    return "\n".join(lines) + f"\n#### {prev}", "arith"


def preference_pairs(
    n: int, split: str = "train", seed: int = 0, kinds: tuple[str, ...] = CORRUPTIONS, **kw
) -> list[dict]:
    """{"prompt", "chosen", "rejected", "kind"} with prompt = question, chosen = correct worked solution."""
    calc = kw.get("calc_annotations", False)
    rng = random.Random(f"pairs|{seed}|{split}")
    out = []
    for p in generate(n, split, seed, **kw):
        rej, kind = corrupt(p, rng, calc, kinds)
        if rej == p.solution:  # cannot happen with delta != 0, but never emit a tie as a preference
            continue
        out.append({"prompt": p.question, "chosen": p.solution, "rejected": rej, "kind": kind, "key": p.key})
    return out


BUILTIN_ITEMS = 500  # the task's size when no limit is given


def _records(split: str, limit: int | None) -> list[dict]:
    return [p.record() for p in generate(limit or BUILTIN_ITEMS, split, 0)]


# Scored exactly like GSM8K. Its longest worked solution (three steps and the #### line) is under 60 tokens even
# with a 2k-token vocabulary, and a shot costs about as many tokens as a solved example.
ARITH = Task(
    name="arith",
    kind="generate",
    split="heldout",
    metrics=METRICS,
    headline="exact_match_strict",
    build=parse,
    text=question_and_solution,
    required=("question", "answer"),
    generate=_records,
    generation=replace(FORMAT, max_new_tokens=96, shot_tokens=60),
)
