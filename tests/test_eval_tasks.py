"""Task loading and lm-eval prompt conventions, on fixtures in each task's Hub schema and on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledgerlm.tasks import TASKS, TaskDataError, benchmark_texts, load_task
from ledgerlm.tasks.multiple_choice import hellaswag_preprocess

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"


def test_arc_prompt_choices_and_numeric_labels():
    t = load_task("arc_easy", FIX)
    assert t.split == "test" and t.task.kind == "multiple_choice"
    it = t.items[0]
    assert it.requests[0] == ("Question: Which form of energy does a plant use to make its food?\nAnswer:", " light")
    assert it.choices == ["light", "sound", "magnetic", "nuclear"] and it.gold == 0
    assert t.items[2].gold == 2  # answerKey "3" with labels "1".."4"
    # the record whose answerKey is not a label is quarantined with file, line and reason, not lost
    assert len(t.items) == 4 and len(t.quarantined) == 1
    q = t.quarantined[0]
    assert q["line"] == 4 and "answerKey" in q["reason"] and q["source"].endswith("arc_easy/test.jsonl")
    assert (
        load_task("arc_challenge", FIX).items[2].gold == 0
        and len(load_task("arc_challenge", FIX).items[2].choices) == 5
    )


def test_hellaswag_preprocessing_matches_lm_eval_rules():
    assert hellaswag_preprocess(" How to x [title] Do y. ") == "How to x. Do y."
    assert hellaswag_preprocess("a [step] b  c") == "a b c"
    t = load_task("hellaswag", FIX)
    wiki = t.items[1]
    ctx, cont = wiki.requests[0]
    # activity_label + ": " + ctx_a + " " + ctx_b.capitalize(), then bracket artifacts removed
    assert ctx == "Home and Garden: How to water a cactus. Check the soil first. Push a finger into the soil"
    assert wiki.choices[0] == "to see whether it is dry. Water only when the top inch is dry."
    assert cont == " " + wiki.choices[0]
    assert wiki.choices[2] == "then paint the pot blue."
    assert t.items[2].gold == 1  # label is a string in the Hub schema


def test_piqa_winogrande_lambada_formats_on_fixtures():
    p = load_task("piqa", FIX).items[2]
    assert p.requests[0] == ("Question: dry wet shoes\nAnswer:", " stuff them with newspaper ")  # kept verbatim
    w = load_task("winogrande", FIX).items[0]
    # partial scoring: the option fills the blank in the context; the rest of the sentence is the continuation
    assert w.requests == [
        ("The trophy did not fit in the suitcase because the trophy", " was too big."),
        ("The trophy did not fit in the suitcase because the suitcase", " was too big."),
    ]
    assert w.gold == 0 and load_task("winogrande", FIX).items[1].gold == 1
    lam = load_task("lambada_openai", FIX)
    assert lam.task.kind == "loglikelihood" and lam.items[0].target == 'snowman"'
    ctx, cont = lam.items[1].requests[0]
    assert cont == " applause" and ctx.endswith("a long round of")


def test_real_piqa_winogrande_lambada_gsm8k(shared_data):
    piqa = load_task("piqa", shared_data)
    assert len(piqa.items) == 1838 and not piqa.quarantined
    labels = (shared_data / "piqa" / "valid-labels.lst").read_text().split()
    assert [it.gold for it in piqa.items[:50]] == [int(x) for x in labels[:50]]
    wg = load_task("winogrande", shared_data)
    assert len(wg.items) == 1267 and not wg.quarantined
    assert all(len(it.requests) == 2 and it.requests[0][1] == it.requests[1][1] for it in wg.items)
    lam = load_task("lambada_openai", shared_data)
    assert len(lam.items) == 5153 and not lam.quarantined
    first = json.loads((shared_data / "lambada" / "lambada_test.jsonl").open().readline())["text"]
    assert "".join(lam.items[0].requests[0]) == first
    g = load_task("gsm8k", shared_data, split="train")
    assert len(g.items) == 7473 and all("####" in it.target for it in g.items)
    assert load_task("piqa", shared_data, limit=7).items[-1].index == 6


def test_benchmark_texts_give_question_plus_answer(shared_data):
    texts = benchmark_texts("winogrande", shared_data)
    assert len(texts) == 1267
    assert texts[0] == "Sarah was a much better surgeon than Maria so Maria always got the easier cases."
    arc = benchmark_texts("arc_easy", FIX)
    assert arc[0] == "Which form of energy does a plant use to make its food? light"
    g = benchmark_texts("gsm8k", FIX)
    assert g[0].startswith("Tom has 3 boxes") and g[0].endswith("#### 12")


def test_bad_input_is_quarantined_or_named(tmp_path):
    d = tmp_path / "piqa"
    d.mkdir()
    (d / "validation.jsonl").write_text(
        '{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}\n'
        "{not json\n"
        '{"goal": "g", "sol1": "a", "label": 0}\n'
        '{"goal": "g", "sol1": "a", "sol2": "b", "label": 5}\n'
    )
    t = load_task("piqa", tmp_path)
    assert len(t.items) == 1
    reasons = {q["line"]: q["reason"] for q in t.quarantined}
    assert "invalid JSON" in reasons[2] and "sol2" in reasons[3] and "out of range" in reasons[4]
    with pytest.raises(TaskDataError, match="no local data for task 'hellaswag'"):
        load_task("hellaswag", tmp_path)
    (d / "validation.jsonl").write_text("[1, 2]\n")
    with pytest.raises(TaskDataError, match="line 1: record is not a JSON object"):
        load_task("piqa", tmp_path)
    with pytest.raises(TaskDataError, match="unknown task"):
        load_task("mmlu", tmp_path)


def test_label_file_must_align(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n' * 3)
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(TaskDataError, match="2 labels for 3 records"):
        load_task("piqa", tmp_path)
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n1\n")
    assert [it.gold for it in load_task("piqa", tmp_path).items] == [0, 1, 1]


def test_every_task_has_a_fixture():
    for name in TASKS:
        assert load_task(name, FIX).items, name


def test_hub_loading_uses_lm_eval_dataset_names(monkeypatch):
    import datasets

    calls = []
    rows = [json.loads(line) for line in (FIX / "hellaswag" / "validation.jsonl").read_text().split("\n") if line]

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    t = load_task("hellaswag", limit=2)
    assert calls == [("Rowan/hellaswag", None, "validation")]
    assert len(t.items) == 2 and t.source == "hub:Rowan/hellaswag[validation]" and t.items[1].source.endswith(":2")
    calls.clear()
    with pytest.raises(TaskDataError):  # the hellaswag rows are not ARC records: all quarantined
        load_task("arc_challenge")
    assert calls == [("allenai/ai2_arc", "ARC-Challenge", "test")]
