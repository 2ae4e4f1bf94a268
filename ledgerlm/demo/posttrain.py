"""The demo's post-training data, from the corpus's own generators: SFT conversations (arithmetic, explanations,
stories, animal and number questions) and preference pairs with a checkable preference."""

from __future__ import annotations

import re

from ledgerlm.demo.corpus import ARITH_OPTIONS, BENCHMARK_N, BENCHMARK_SEED, benchmark, qa_text, rng_for
from ledgerlm.demo.defects import ngrams
from ledgerlm.demo.explanations import TOPICS, animal_profile, explanation_answer, number_facts
from ledgerlm.demo.stories import story_and_cast
from ledgerlm.tasks import arith

_STORY_ASKS = {
    "lost": "about losing something and finding it again",
    "journey": "about a journey to another town",
    "skill": "about learning a new skill",
    "share": "about two friends who learn to share",
    "storm": "about helping someone during a storm",
    "build": "about building something together",
}


def demo_sft_conversations(
    seed: int = 0,
    n: int = 2000,
    *,
    benchmark_n: int = BENCHMARK_N,
    benchmark_seed: int = BENCHMARK_SEED,
    leak_ngram: int = 13,
    arith_share: float = 0.4,
) -> list[dict]:
    """Chat data for the demo's SFT stage: {"messages": [user, assistant], "kind": ...}.

    Mixes arithmetic (the train split, minus anything sharing a `leak_ngram`-gram with the benchmark; `arith_share`
    of the conversations), how-it-works questions, short-story requests and animal/number questions (the rest, in
    the proportions 25 : 20 : 10 : 5), so the chat model keeps the base model's range.
    """
    if not 0 <= arith_share <= 1:
        raise ValueError(f"arith_share must be in [0, 1], got {arith_share}")
    rest = (1 - arith_share) / 0.6  # the other kinds keep their relative shares (0.25, 0.2, 0.1, 0.05 of 0.6)
    bench = benchmark(benchmark_n, benchmark_seed)
    grams = set().union(*(ngrams(qa_text(p), leak_ngram) for p in bench)) if bench else set()
    # a stream of its own (salted seed), so SFT problems are not the pretraining worksheets' problems in order
    pool = [
        p
        for p in arith.generate(n, "train", seed + 7919, **ARITH_OPTIONS)
        if not (ngrams(qa_text(p), leak_ngram) & grams)
    ]
    out, k = [], 0
    for i in range(n):
        r = rng_for("demo-sft", seed, i)
        u = r.random()
        if u < arith_share and k < len(pool):
            p, k = pool[k], k + 1
            user, reply, kind = p.question, p.solution, "arith"
        elif u < arith_share + 0.25 * rest:
            topic = r.choice(sorted(TOPICS))
            q = TOPICS[topic][1]
            user = r.choice([q, f"Can you explain {TOPICS[topic][0]}?", f"{q} Please explain it simply."])
            reply, kind = explanation_answer(r, topic), "explanation"
        elif u < arith_share + 0.45 * rest:
            text, plot, hero, town = story_and_cast(r, title=False)
            who = f"a {hero.animal} named {hero.name}" if hero.animal else f"a child named {hero.name}"
            user = r.choice(
                [
                    f"Tell me a short story {_STORY_ASKS[plot]}, with {who}.",
                    f"Write a story for children about {who} from {town}, {_STORY_ASKS[plot]}.",
                ]
            )
            reply, kind = text, "story"
        elif u < arith_share + 0.55 * rest:
            text, pair = animal_profile(r)
            a, b = pair.split("|")
            user, reply, kind = f"Tell me some facts about the {a} and the {b}.", text, "animals"
        else:
            text, _ = number_facts(r)
            a, b = re.findall(r"\d+", text)[:2]
            user, reply, kind = f"What can you tell me about the numbers {a} and {b}?", text, "numbers"
        out.append(
            {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}], "kind": kind}
        )
    return out


def demo_preference_pairs(seed: int = 0, n: int = 1000) -> list[dict]:
    """{"prompt", "chosen", "rejected", "kind"} pairs with a checkable preference.

    Half arithmetic (`arith.preference_pairs`: the correct worked solution against one with a slip or a wrong final
    line), half explanations: the note on the asked topic against a note on a different topic, or against the same
    note cut off after its first sentence (an unhelpful answer).
    """
    n_arith = n // 2
    out = [
        {k: d[k] for k in ("prompt", "chosen", "rejected", "kind")}
        for d in arith.preference_pairs(n_arith, "train", seed, **ARITH_OPTIONS)
    ]
    topics = sorted(TOPICS)
    for i in range(n - len(out)):
        r = rng_for("demo-pref", seed, i)
        topic = r.choice(topics)
        chosen = explanation_answer(r, topic)
        if r.random() < 0.5:
            rejected, kind = explanation_answer(r, r.choice([t for t in topics if t != topic])), "off_topic"
        else:  # a reply that says almost nothing: its first sentence only
            rejected, kind = chosen.split(". ", 1)[0].rstrip(".") + ".", "unhelpful"
        out.append({"prompt": TOPICS[topic][1], "chosen": chosen, "rejected": rejected, "kind": kind})
    return out
