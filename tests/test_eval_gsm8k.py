"""GSM8K extractors and matching, as lm-eval's strict-match / flexible-extract filters + exact_match."""

from __future__ import annotations

import random

import pytest

from ledgerlm.eval.harness import truncate_at_stop
from ledgerlm.tasks import FewshotSampler
from ledgerlm.tasks.gsm8k import (
    build_prompt,
    extract_flexible,
    extract_strict,
    is_correct,
    normalize_number,
)

GOLD = "She pays 1200 + 34 = <<1200+34=1234>>1234 dollars.\n#### 1234"


def test_strict_takes_the_first_hash_answer():
    assert extract_strict("so #### 1,234.\n#### 99") == "1,234."
    assert extract_strict("#### -7") == "-7"
    assert extract_strict("The answer is 1234.") is None
    assert extract_strict("####1234") is None  # lm-eval's pattern needs the space


def test_flexible_takes_the_last_number():
    assert extract_flexible("3 + 4 = 7, so she has $1,234.") == "$1,234."
    assert extract_flexible("first 12 then 5") == "5"
    assert extract_flexible("no digits here") is None
    assert extract_flexible("It is -3 degrees") == "-3"


@pytest.mark.parametrize(
    "completion,mode,ok",
    [
        ("The total is 1234.\n#### 1,234", "strict", True),  # comma
        ("#### $1234", "strict", False),  # strict regex does not allow '$' after '#### '
        ("She pays $1,234.", "flexible", True),  # '$', comma and trailing period
        ("She pays 1234 dollars.", "flexible", True),
        ("She pays 1234 dollars.", "strict", False),  # no '####'
        ("She pays 1234.5", "flexible", False),
        ("#### 1234.", "strict", True),  # trailing period
        ("#### 1233", "strict", False),
        ("", "flexible", False),
    ],
)
def test_is_correct(completion, mode, ok):
    assert is_correct(completion, GOLD, mode) is ok


def test_normalize_number_and_bare_gold():
    assert normalize_number(GOLD) == "1234"
    assert normalize_number("$1,000.") == "1000"
    assert is_correct("#### 72", "72", "strict")  # gold given as a bare number (RL rewards)
    with pytest.raises(ValueError, match="unknown GSM8K extraction mode"):
        is_correct("1", "1", "loose")


def test_prompt_and_fewshot_sampling_follow_lm_eval():
    shots = [{"question": "q1", "answer": "a1\n#### 1"}, {"question": "q2", "answer": "a2\n#### 2"}]
    assert (
        build_prompt("Q?", shots)
        == "Question: q1\nAnswer: a1\n#### 1\n\nQuestion: q2\nAnswer: a2\n#### 2\n\nQuestion: Q?\nAnswer:"
    )
    assert build_prompt("Q?") == "Question: Q?\nAnswer:"
    pool = [{"question": str(i), "answer": str(i)} for i in range(20)]
    s = FewshotSampler(pool, seed=1234)
    rnd = random.Random(1234)
    # one generator used in item order, k samples per item without replacement (lm-eval's ContextSampler)
    assert [s.sample(5) for _ in range(3)] == [rnd.sample(pool, 5) for _ in range(3)]
    assert s.sample(0) == []


def test_truncate_at_stop():
    assert truncate_at_stop(" 12\n#### 12\n\nQuestion: next", ["Question:", "</s>"]) == " 12\n#### 12\n\n"
