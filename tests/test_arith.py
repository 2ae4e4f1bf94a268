"""Built-in GSM8K-format task: determinism, disjoint splits, correct worked solutions, scored by the eval extractor."""

import random
import re

import pytest

from ledgerlm.tasks import arith
from ledgerlm.tasks.gsm8k import extract_strict, is_correct


def _check_solution(p: arith.Problem) -> None:
    # every "a op b = r" line must be true arithmetic, and the final line must carry the answer
    for a, op, b, r in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", p.solution):
        assert arith._calc(int(a), op, int(b)) == int(r), p.solution
    assert p.solution.endswith(f"\n#### {p.answer}")
    assert extract_strict(p.solution) == str(p.answer)
    assert p.answer >= 0


def test_deterministic_and_distinct():
    a = arith.generate(300, "train", seed=3)
    b = arith.generate(300, "train", seed=3)
    assert [p.record() for p in a] == [p.record() for p in b]
    assert len({p.key for p in a}) == 300
    assert [p.key for p in arith.generate(300, "train", seed=4)] != [p.key for p in a]


def test_splits_disjoint_by_construction():
    tr = arith.generate(3000, "train", seed=0)
    # a different seed for held-out must still never produce a training problem: the split is a function of the key
    ho = arith.generate(700, "heldout", seed=123)
    assert not {p.key for p in tr} & {p.key for p in ho}
    assert not {p.question for p in tr} & {p.question for p in ho}
    assert all(arith.split_of(p.key) == "heldout" for p in ho)


def test_solutions_are_correct_and_gsm8k_format():
    probs = arith.generate(500, "train", seed=1, calc_annotations=False)
    ops = {len(arith.TEMPLATES[p.key.split("|")[0]].steps) for p in probs}
    assert ops == {1, 2, 3}  # every operation count is represented
    for p in probs:
        _check_solution(p)
        assert is_correct(p.solution, p.record()["answer"])
    calc = arith.generate(50, "train", seed=1, calc_annotations=True)
    assert all("<<" in p.solution for p in calc)
    assert all(is_correct(p.solution, str(p.answer)) for p in calc)


def test_max_ops_and_bad_args():
    assert all(len(arith.TEMPLATES[p.key.split("|")[0]].steps) == 1 for p in arith.generate(100, "train", 0, max_ops=1))
    with pytest.raises(ValueError, match="split"):
        arith.generate(1, "test")
    with pytest.raises(ValueError, match="templates"):
        arith.generate(1, "train", templates=("nope",))
    with pytest.raises(ValueError, match="distinct"):
        arith.generate(200, "heldout", 0, templates=("add",), max_value=5)


def test_corrupted_solutions_are_wrong():
    rng = random.Random(0)
    kinds = set()
    for p in arith.generate(300, "train", seed=2):
        bad, kind = arith.corrupt(p, rng)
        kinds.add(kind)
        assert bad != p.solution
        assert not is_correct(bad, str(p.answer))  # the rejected side is always scored wrong by the eval extractor
    assert kinds == {"arith", "final"}
    pairs = arith.preference_pairs(50, "heldout", seed=0)
    assert len(pairs) == 50 and all(arith.split_of(x["key"]) == "heldout" for x in pairs)
    assert {x["kind"] for x in arith.preference_pairs(30, "train", seed=0, kinds=("final",))} == {"final"}
    with pytest.raises(ValueError, match="kinds"):
        arith.corrupt(arith.generate(1, "train")[0], rng, kinds=("typo",))
