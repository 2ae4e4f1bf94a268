"""The eval stage's GSM8K follows lm-eval's generation rule by default; chat mode is an explicit, labelled choice."""

from __future__ import annotations

from ledgerlm.eval.eval_stage import Config, results_table
from ledgerlm.eval.evaluate import to_markdown


def _results(mode: str) -> dict:
    v = {"value": 0.25, "stderr": 0.1, "ci95": [0.1, 0.5], "n": 4}
    task = {"split": "test", "n": 4, "n_quarantined": 0, "metrics": {"exact_match_strict": v}, "generation_mode": mode}
    return {"model": "m", "limit": None, "tasks": {"gsm8k_0shot": task}}


def test_gsm8k_defaults_to_lm_eval_generation():
    assert Config().gsm8k_generation == "lm-eval"
    assert Config(gsm8k_generation="chat").gsm8k_generation == "chat"


def test_chat_mode_is_labelled_in_results_and_table():
    chat, lmeval = _results("chat"), _results("lm-eval")
    assert "exact_match_strict (chat mode)" in "\n".join(results_table(chat))
    assert "chat mode" not in "\n".join(results_table(lmeval))
    assert "(chat mode: stops at the chat end token" in to_markdown(chat)
    assert "chat mode" not in to_markdown(lmeval)
