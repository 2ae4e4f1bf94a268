"""The rehearsal's training data in its Hub schemas: FineWeb-Edu (with the planted defects and benchmark leaks),
FineMath, code, reasoning traces (OpenR1-Math) and smol-smoltalk conversations."""

from __future__ import annotations

import json
import random

from ledgerlm.demo import defects, explanations, posttrain, stories, words
from ledgerlm.rehearsal.eval_rows import arc_rows, gsm8k_rows, hellaswag_rows, lambada_rows, piqa_rows, winogrande_rows
from ledgerlm.rehearsal.schemas import N, rehearsal_rng
from ledgerlm.tasks import TASKS, arith

# ============================================================================ pretraining sources


def _hexid(r: random.Random, n: int = 32) -> str:
    return "".join(r.choice("0123456789abcdef") for _ in range(n))


def leak_texts() -> list[tuple[str, str]]:
    """(task, text) for two items of each evaluation task, as decontamination sees them (the task record's text)."""
    rows = {
        "arc_easy": arc_rows(False),
        "arc_challenge": arc_rows(True),
        "hellaswag": hellaswag_rows(),
        "piqa": piqa_rows(),
        "winogrande": winogrande_rows(),
        "lambada_openai": lambada_rows(),
        "gsm8k": gsm8k_rows("test", N["gsm8k_test"]),
    }
    return [(t, TASKS[t].text(TASKS[t].build(rs[j]))) for t, rs in rows.items() for j in (1, 2)]


def fineweb_edu_rows() -> list[dict]:
    """Educational prose (stories, explanations) with the demo's planted defects and the seven tasks' leaks."""
    texts = []
    for i in range(N["fineweb_edu"]):
        r = rehearsal_rng("fineweb", i)
        texts.append(stories.story(r)[0] if r.random() < 0.5 else explanations.explanation(r)[0])
    r = rehearsal_rng("fineweb-plants")
    kinds = ["symbols", "lorem", "javascript", "too_short", "repeated_lines"]
    plants = {}
    for j in range(25):  # junk every gate must catch
        plants[3 + 17 * j] = defects.junk(r, kinds[j % len(kinds)])
    for j in range(12):  # exact and near duplicates of earlier documents
        plants[11 + 29 * j] = texts[j * 7]
        near = defects.near_duplicate(r, texts[j * 7 + 1])
        if near:
            plants[13 + 31 * j] = near[0]
    for j, (_task, leak) in enumerate(leak_texts()):  # benchmark items inside otherwise clean stories
        plants[7 + 41 * j] = f"{stories.story(rehearsal_rng('fineweb-leak', j))[0]}\n\n{leak}\n"
    foot = "Share this page with a friend, and sign up for our newsletter to get a new lesson every week."
    for j in range(0, len(texts), 5):  # site furniture: one line in a fifth of the pages
        texts[j] = f"{texts[j]}\n{foot}"
    texts = [plants.get(i, t) for i, t in enumerate(texts)]
    texts[19] = ""  # an empty row: quarantined as malformed:empty
    rows = []
    for i, text in enumerate(texts):
        r = rehearsal_rng("fineweb-meta", i)
        score = round(2.5 + 2 * r.random(), 6)
        rows.append(
            {
                "text": text,
                "id": f"<urn:uuid:{_hexid(r, 8)}-{_hexid(r, 4)}-{_hexid(r, 4)}-{_hexid(r, 4)}-{_hexid(r, 12)}>",
                "dump": "CC-MAIN-2024-10",
                "url": f"https://www.example-school-{i % 37}.org/lessons/{i}.html",
                "file_path": f"s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/1707947474{i % 1000:03d}.40/warc/"
                f"CC-MAIN-20240221-{i:06d}.warc.gz",
                "language": "en",
                "language_score": round(0.9 + 0.1 * r.random(), 6),
                "token_count": len(text.split()),
                "score": score,
                "int_score": int(round(score)),
            }
        )
    return rows


def finemath_rows() -> list[dict]:
    """Worked arithmetic pages (GSM8K format), some sharing the FineWeb-Edu boilerplate footer."""
    probs = arith.generate(N["finemath"] * 3, "train", 23)
    rows = []
    for i in range(N["finemath"]):
        r = rehearsal_rng("finemath", i)
        ps = probs[3 * i : 3 * i + 3]
        text = f"Practice page {i + 1}\n\n" + "\n\n".join(f"Problem: {p.question}\nSolution: {p.solution}" for p in ps)
        score = round(4 + r.random(), 6)
        rows.append(
            {
                "url": f"https://math-practice-{i % 11}.net/page/{i}",
                "fetch_time": 1_700_000_000_000 + i * 97_001,
                "content_mime_type": "text/html",
                "warc_filename": f"crawl-data/CC-MAIN-2023-50/segments/{i:05d}.warc.gz",
                "warc_record_offset": 1000 + i * 4096,
                "warc_record_length": 2000 + len(text),
                "text": text,
                "token_count": len(text.split()),
                "char_count": len(text),
                "metadata": json.dumps({"domain": "math"}),
                "score": score,
                "int_score": int(score),
                "crawl": "CC-MAIN-2023-50",
                "snapshot_type": "latest",
                "language": "en",
                "language_score": round(0.85 + 0.1 * r.random(), 6),
            }
        )
    return rows


def _python_file(r: random.Random) -> str:
    """A small Python module: helpers over a list of numbers or words, with docstrings and a main block."""
    noun = r.choice(words.OBJECTS).replace(" ", "_")
    op = r.choice([("total", "sum", "+"), ("largest", "max", ">"), ("count", "len", "+=1")])
    lines = [
        f'"""Helpers for keeping track of {noun}s in {r.choice(words.TOWNS)}."""',
        "",
        "import json" if r.random() < 0.5 else "import os",
        "from collections import Counter",
        "",
        "",
        f"class {noun.title().replace('_', '')}Store:",
        f'    """A list of {noun}s with their owners."""',
        "",
        "    def __init__(self):",
        "        self.items = []",
        "",
        "    def add(self, owner, amount):",
        "        if amount < 0:",
        '            raise ValueError("amount must be >= 0")',
        "        self.items.append((owner, amount))",
        "",
        f"    def {op[0]}(self):",
        f"        return {op[1]}(amount for _, amount in self.items)"
        if op[1] != "len"
        else "        return len(self.items)",
        "",
        "    def by_owner(self):",
        "        counts = Counter()",
        "        for owner, amount in self.items:",
        "            counts[owner] += amount",
        "        return dict(counts)",
        "",
        "",
        'if __name__ == "__main__":',
        f"    store = {noun.title().replace('_', '')}Store()",
    ]
    for _ in range(r.randint(2, 5)):
        lines.append(f'    store.add("{r.choice(words.NAMES)[0]}", {r.randint(1, 20)})')
    lines.append(f"    print(store.{op[0]}(), store.by_owner())")
    return "\n".join(lines) + "\n"


def code_rows() -> list[dict]:
    rows = []
    for i in range(N["code"]):
        r = rehearsal_rng("code", i)
        content = _python_file(r)
        lens = [len(ln) for ln in content.split("\n")]
        rows.append(
            {
                "repo_name": f"{r.choice(words.NAMES)[0].lower()}/{r.choice(words.OBJECTS).replace(' ', '-')}-tools",
                "path": f"src/module_{i}.py",
                "copies": str(r.randint(1, 4)),
                "size": str(len(content)),
                "content": content,
                "license": r.choice(["mit", "apache-2.0", "bsd-3-clause"]),
                "hash": r.randint(-(2**62), 2**62),
                "line_mean": round(sum(lens) / len(lens), 6),
                "line_max": max(lens),
                "alpha_frac": round(sum(c.isalpha() for c in content) / len(content), 6),
                "autogenerated": False,
            }
        )
    return rows


_OPS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}


def _trace(p: arith.Problem, style: int) -> str:
    """An R1-style generation for `p`: a <think> block working through the steps, then the boxed answer."""
    if style == 0:
        steps = [f"First I need {a} {_OPS.get(op, op)} {b}, which gives {c}." for a, op, b, c in p.steps]
        head = "Okay, let me work through this problem step by step."
    else:
        steps = [
            f"Step {k + 1}: {a} {op} {b} = {c}. Let me double-check that: yes, {c}."
            for k, (a, op, b, c) in enumerate(p.steps)
        ]
        head = "Hmm, let me restate what is being asked before computing anything."
    body = " ".join(steps)
    return (
        f"<think>\n{head} {body}\nSo the final answer should be {p.answer}.\n</think>\n\n"
        f"The answer is $\\boxed{{{p.answer}}}$."
    )


def reasoning_rows() -> list[dict]:
    """OpenR1-Math-style rows: a problem, its reference solution, two R1-style generations (different wording),
    and `messages` = the problem and the first generation, verbatim (as in the real dataset)."""
    probs = arith.generate(N["reasoning"], "train", 31)
    rows = []
    for i, p in enumerate(probs):
        r = rehearsal_rng("reasoning", i)
        solution = p.solution.split("\n#### ")[0]
        gens = [_trace(p, 0), _trace(p, 1)]
        rows.append(
            {
                "problem": p.question,
                "solution": solution,
                "answer": str(p.answer),
                "problem_type": "Algebra",
                "question_type": "math-word-problem",
                "source": "olympiads" if i % 3 else "cn_contest",
                "uuid": f"{_hexid(r, 8)}-{_hexid(r, 4)}-{_hexid(r, 4)}-{_hexid(r, 4)}-{_hexid(r, 12)}",
                "is_reasoning_complete": [True, True],
                "generations": gens,
                "correctness_math_verify": [True, True],
                "correctness_llama": None if i % 2 else [True, True],
                "finish_reasons": None,
                "correctness_count": 2,
                "messages": [{"content": p.question, "role": "user"}, {"content": gens[0], "role": "assistant"}],
            }
        )
    return rows


def smoltalk_rows(n: int, seed: int) -> list[dict]:
    """Chats in smol-smoltalk's shape: user/assistant turns, some with a system prompt or a second exchange."""
    convs = posttrain.demo_sft_conversations(seed, n)
    rows = []
    for i, c in enumerate(convs):
        msgs = [{"content": m["content"], "role": m["role"]} for m in c["messages"]]
        if i % 5 == 0:
            msgs.insert(
                0, {"content": "You are a helpful assistant who answers briefly and clearly.", "role": "system"}
            )
        if i % 4 == 1 and i + 1 < len(convs):  # a follow-up turn
            nxt = convs[i + 1]["messages"]
            msgs += [
                {"content": nxt[0]["content"], "role": "user"},
                {"content": nxt[1]["content"], "role": "assistant"},
            ]
        rows.append(
            {"messages": msgs, "source": ["smol-magpie-ultra", "everyday-conversations", "smol-rewrite"][i % 3]}
        )
    return rows
