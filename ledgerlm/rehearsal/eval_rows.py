"""The rehearsal's evaluation tasks in their Hub schemas (ARC, HellaSwag, PIQA, WinoGrande, LAMBADA, GSM8K), from
templates of their own: they share no wording with the pretraining text, so the only overlaps decontamination can
find are the leaks planted in FineWeb-Edu."""

from __future__ import annotations

from ledgerlm.demo import words
from ledgerlm.rehearsal.schemas import N, rehearsal_rng
from ledgerlm.tasks import arith

# ============================================================================ evaluation tasks (Hub schemas)


# The evaluation items have templates of their own, sharing no wording with the pretraining text's generators, so
# the only 13-gram overlaps decontamination can find are the leaks planted in FineWeb-Edu (`leak_texts`).
_TOOLS = {
    "length": "a ruler marked in centimeters",
    "mass": "a kitchen scale",
    "temperature": "a thermometer",
    "time": "a stopwatch",
}
_THINGS = ["leaves", "pebbles", "pine cones", "snail shells", "sunflower seeds", "chestnuts", "feathers", "acorns"]
_CHANGES = [  # (what was left where, what happened, what did not)
    (
        "a tray of ice cubes on a sunny windowsill",
        "the ice melted into liquid water",
        ["the ice turned into sand", "the ice grew into larger cubes", "the ice changed into a gas at once"],
    ),
    (
        "an open jar of water in a freezer",
        "the water froze into solid ice",
        ["the water boiled away", "the water turned into salt", "the water became warmer than before"],
    ),
    (
        "a wet towel hanging over a warm radiator",
        "the water in the towel evaporated",
        ["the towel absorbed more water from the air", "the towel froze stiff", "the water turned into oil"],
    ),
    (
        "a bar of chocolate on the seat of a hot car",
        "the chocolate softened and lost its shape",
        ["the chocolate became harder", "the chocolate turned into a liquid gas", "the chocolate grew mold at once"],
    ),
]


def arc_rows(challenge: bool) -> list[dict]:
    """Grade-school science questions with four choices (ARC-Easy: measuring tools; ARC-Challenge: changes of state)."""
    out = []
    for i in range(N["eval"]):
        r = rehearsal_rng("arc", challenge, i)
        who = r.choice(words.NAMES)[0]
        if challenge:
            where, right, wrong = r.choice(_CHANGES)
            q = (
                f"During science week, {who} left {where} for {r.randint(2, 9)} hours and then checked it again. "
                "Which statement best describes what most likely happened?"
            )
            wrong = list(wrong)
        else:
            quantity = r.choice(sorted(_TOOLS))
            right = _TOOLS[quantity]
            wrong = [t for q_, t in sorted(_TOOLS.items()) if q_ != quantity]
            q = (
                f"For a class project {who} wants to record the {quantity} of {r.randint(3, 30)} "
                f"{r.choice(_THINGS)} collected near the school on day {i + 1}. Which tool should {who} use?"
            )
        r.shuffle(wrong)
        gold = r.randrange(4)
        texts = wrong[:gold] + [right] + wrong[gold:]
        labels = ["1", "2", "3", "4"] if i % 7 == 3 else ["A", "B", "C", "D"]  # a few ARC items use digit labels
        split_id = "Challenge" if challenge else "Easy"
        out.append(
            {
                "id": f"Rehearsal{split_id}_{i:04d}",
                "question": q,
                "choices": {"text": texts, "label": labels},
                "answerKey": labels[gold],
            }
        )
    return out


_CHORES = [
    ("saw", "cut", "boards"),
    ("brush", "paint", "fence posts"),
    ("needle", "sew", "patches onto a jacket"),
    ("knife", "slice", "carrots"),
    ("rake", "gather", "dry leaves"),
    ("trowel", "spread", "mortar on bricks"),
]


def hellaswag_rows() -> list[dict]:
    """Activity descriptions: a context and four endings, one of which fits the tool in hand."""
    out = []
    for i in range(N["eval"]):
        r = rehearsal_rng("hellaswag", i)
        (who, g) = r.choice(words.NAMES)
        pron = words.PRONOUNS[g][0]
        tool, verb, stuff = r.choice(_CHORES)
        room = r.choice(["workshop", "back yard", "garage", "shed", "porch"])
        ctx_a = f"{who} stands in the {room} next to a {tool} and a neat pile of {stuff} for job number {i + 1}."
        ctx_b = f"{pron} picks up the"
        right = f"{tool} and starts to {verb} the {stuff} with slow, steady strokes."
        others = [c for c in _CHORES if c[0] != tool]
        wrong = [f"{tool} and tries to {v} the {o} while humming a song." for _t, v, o in r.sample(others, 3)]
        gold = r.randrange(4)
        endings = wrong[:gold] + [right] + wrong[gold:]
        out.append(
            {
                "ind": 24 + i * 7,
                "activity_label": f"Working with a {tool}",
                "ctx_a": ctx_a,
                "ctx_b": ctx_b,
                "ctx": f"{ctx_a} {ctx_b}",
                "endings": endings,
                "source_id": f"rehearsal~{tool}_{i:05d}",
                "split": "val",
                "split_type": "indomain" if i % 2 else "zeroshot",
                "label": str(gold),
            }
        )
    return out


_PIQA = [  # (goal, right, wrong) with {obj}/{place}
    (
        "How do you keep a {obj} dry on a rainy walk to {place}?",
        "Put the {obj} in a closed bag and carry it under your coat.",
        "Hold the {obj} up high so that the rain can wash it clean.",
    ),
    (
        "To find a lost {obj} in {place},",
        "walk slowly through {place} and look under every bench and bush.",
        "close your eyes and wait for the {obj} to come back by itself.",
    ),
    (
        "How can you carry a heavy {obj} up a hill to {place}?",
        "Put the {obj} in a basket with handles and take short rests.",
        "Throw the {obj} up the hill ahead of you and run after it.",
    ),
]


def piqa_rows() -> list[dict]:
    out = []
    for i in range(N["eval"]):
        r = rehearsal_rng("piqa", i)
        goal, right, wrong = r.choice(_PIQA)
        f = {"obj": f"{r.choice(words.ADJS)} {r.choice(words.OBJECTS)}", "place": r.choice(words.PLACES)[0]}
        label = r.randrange(2)
        sols = [wrong.format(**f), wrong.format(**f)]
        sols[label] = right.format(**f)
        out.append({"goal": goal.format(**f), "sol1": sols[0], "sol2": sols[1], "label": label})
    return out


def winogrande_rows() -> list[dict]:
    out = []
    for i in range(N["eval"]):
        r = rehearsal_rng("winogrande", i)
        (a, _), (b, _) = r.sample(words.NAMES, 2)
        obj, place = r.choice(words.OBJECTS), r.choice(words.PLACES)[0]
        if r.random() < 0.5:
            s, ans = f"{a} lent {b} the {obj} at {place} because _ did not need it that afternoon.", "1"
        else:
            s, ans = f"{a} borrowed the {obj} from {b} at {place} because _ had forgotten to bring one.", "1"
        if r.random() < 0.5:  # swap the options so both answers occur
            out.append({"sentence": s, "option1": b, "option2": a, "answer": "2" if ans == "1" else "1"})
        else:
            out.append({"sentence": s, "option1": a, "option2": b, "answer": ans})
    return out


def lambada_rows() -> list[dict]:
    """Short passages whose last word the passage makes predictable (a name or object mentioned before)."""
    out = []
    for i in range(N["eval"]):
        r = rehearsal_rng("lambada", i)
        (who, g), (friend, _) = r.sample(words.NAMES, 2)
        pron, _obj, pos = words.PRONOUNS[g]
        thing = r.choice(words.OBJECTS)
        out.append(
            {
                "text": (
                    f"On evening number {i + 1} of the fair, {who} searched every tent for {pos} old {thing}. {friend} had "
                    f"promised to keep it safe behind the lemonade stand, but the stand was gone. When {who} finally found "
                    f"{friend} near the gate, {pron} asked only one question: where is my {thing}"
                )
            }
        )
    return out


def gsm8k_rows(split: str, n: int) -> list[dict]:
    # GSM8K's split is the arithmetic task's: train problems and held-out ("test") problems never share a template
    # and operands (ledgerlm.tasks.arith.split_of), as GSM8K's train and test problems are distinct
    probs = arith.generate(n, "train" if split == "train" else "heldout", 11, calc_annotations=True)
    return [p.record() for p in probs]
