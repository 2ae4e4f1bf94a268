"""The built-in demo corpus: a deterministic generator of small English pretraining text, with planted defects.

Everything here is produced by our own templates and word lists; no third-party text is copied. A corpus is a pure
function of (seed, n_docs, options): the same call writes byte-identical files.

Clean documents come in three genres:
  - stories: characters, places, objects and one of several simple plots (lost object, journey, learning a skill,
    sharing, storm, building something), told with varied sentence templates;
  - explanations: how things work and simple facts (topic notes, animal profiles, number facts), templated prose;
  - arithmetic worksheets: GSM8K-format word problems with worked solutions and a `#### N` line, taken from the
    *train* split of `ledgerlm.tasks.arith`.

Planted, in counts recorded in the manifest, are the things each curation gate must catch:
  - junk: symbol soup, lorem ipsum, javascript boilerplate, too-short documents, documents of one repeated line;
  - exact duplicates of clean documents;
  - near duplicates: a clean document with a few words changed, word-5-gram Jaccard in NEAR_DUP_BAND (0.82-0.9,
    measured and recorded per document);
  - boilerplate lines (cookie notices, footers) appended to many documents, for line-level/segment dedup;
  - leaks: held-out arithmetic problems (the demo's own "benchmark") copied verbatim into a few documents.

The held-out benchmark is `arith.generate(benchmark_n, "heldout", benchmark_seed)`, by default the eval stage's `arith`
task (500 problems, seed 0). Train problems that happen to
share a word n-gram (n = `leak_ngram`, default 13, the lm-eval/GPT-3 decontamination size) with a benchmark item are
not used, so n-gram decontamination must flag exactly the planted leak documents, no more.

Each JSONL record is {"id", "text", "planted"}; `planted` says what the record is, for tests only (curation must not
read it). `write_demo_corpus` returns the manifest (also written as manifest.json beside the shards).

The demo's post-training data (SFT conversations, preference pairs) is built from the same generators:
`demo_sft_conversations` and `demo_preference_pairs`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
from collections import Counter
from pathlib import Path

from ledgerlm.io import atomic_write_json, write_jsonl
from ledgerlm.tasks import arith

SCHEMA = "ledgerlm.demo_corpus/1"

# The curate settings this corpus needs (quality gates, near-dedup band, boilerplate threshold) have one home: the
# `curate` section of recipes/demo.yaml; docs/recipes.md says why each is what it is.


def _rng(*parts: object) -> random.Random:
    """An independent, reproducible stream per (purpose, index): documents do not depend on generation order."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _an(word: str) -> str:
    """'an owl', 'a fox'."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _words(text: str) -> list[str]:
    # The normalisation decontamination tools use: lowercase, punctuation dropped, split on whitespace.
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of the word n-gram sets (what MinHash estimates)."""
    x, y = ngrams(a, n), ngrams(b, n)
    return len(x & y) / len(x | y) if x or y else 1.0


# ============================================================================ word lists (ours)

NAMES = [  # (name, pronoun)
    tuple(x.split(":"))
    for x in (
        "Ada:she Ben:he Cora:she Dev:he Elsa:she Finn:he Gia:she Hugo:he Iris:she Jonah:he Kai:he Lena:she "
        "Milo:he Nora:she Omar:he Pia:she Quinn:he Rosa:she Sami:he Tara:she Umar:he Vera:she Wes:he Yara:she "
        "Zane:he Ivy:she Leo:he Maya:she Noah:he Ruby:she Theo:he Anya:she Eli:he Hana:she Ravi:he Sofia:she "
        "Tomas:he Uma:she Wren:she Felix:he Greta:she Jasper:he Kira:she Luca:he Mira:she Nico:he Olive:she "
        "Pablo:he Rhea:she Silas:he"
    ).split()
]
ANIMALS = ["fox", "rabbit", "badger", "owl", "mouse", "hedgehog", "otter", "squirrel", "duck", "goat", "bear", "crow"]
PRONOUNS = {"he": ("he", "him", "his"), "she": ("she", "her", "her")}
TRAITS = ["brave", "curious", "patient", "clever", "kind", "shy", "cheerful", "careful", "stubborn", "gentle"]
HELPERS = (  # always used after a possessive: "her grandmother", "his music teacher"
    "grandmother, grandfather, neighbor, teacher, older sister, older brother, uncle, aunt, best friend, cousin, "
    "music teacher, swimming coach"
).split(", ")
TOWNS = (
    "Brookfield, Millbrook, Ashford, Elm Hollow, Fernvale, Stonebridge, Willowmere, Oakridge, Maple Cove, "
    "Pinecrest, Harbor Point, Clearwater, Redhill, Larkspur, Thornbury, Bellwood"
).split(", ")
PLACES = [  # (place, preposition)
    tuple(x.split("@"))
    for x in (
        "the harbor@at, the market@at, the forest@in, the library@in, the garden@in, the orchard@in, "
        "the hill above the village@on, the old bridge@near, the bakery@in, the school yard@in, the meadow@in, "
        "the beach@on, the train station@at, the barn@in, the lighthouse@near, the pond@by, the museum@in, "
        "the kitchen@in, the attic@in, the riverbank@on"
    ).split(", ")
]
OBJECTS = (
    "kite, map, scarf, lantern, key, notebook, ball, hat, compass, whistle, shell, marble, storybook, glove, "
    "basket, drum, toy boat, paintbrush, umbrella, pocket watch"
).split(", ")
ADJS = ["red", "blue", "green", "yellow", "little", "shiny", "wooden", "striped", "tiny", "silver", "brown", "bright"]
TIMES = (
    "One morning, Early one Saturday, On a windy afternoon, Late one autumn evening, "
    "On the first warm day of spring, One rainy Tuesday, Just after breakfast one day, "
    "On a cold winter morning, One summer evening, At the start of the school holidays"
).split(", ")
SKILLS = [
    (
        "ride a bicycle",
        "wobbled and fell into the grass",
        "kept the handlebars straight and rode all the way down the lane",
    ),
    ("bake bread", "made a loaf as flat as a plate", "pulled a tall, golden loaf out of the oven"),
    ("play the flute", "could only make a thin squeak", "played a whole song without a single wrong note"),
    ("swim across the pond", "splashed and swallowed water", "swam from one side of the pond to the other"),
    ("juggle three balls", "dropped every ball on the floor", "kept all three balls in the air for a full minute"),
    ("draw a map of the town", "drew the streets in the wrong places", "drew a map so clear that a visitor used it"),
    ("grow tomatoes", "forgot to water the seeds", "picked a whole bowl of ripe tomatoes"),
    ("tie a sailor's knot", "tied a knot that slipped loose at once", "tied a knot that held the boat all night"),
    ("name the stars", "mixed up every bright star in the sky", "pointed out five stars by name"),
    ("carve a wooden spoon", "split the wood in two", "carved a smooth spoon with a round bowl"),
]
OBSTACLES = [
    ("a river with no bridge", "found a row of flat stones and stepped across them one by one"),
    ("a steep and muddy hill", "walked slowly in zigzags so that the mud did not pull them back down"),
    ("a thick fog", "followed the sound of the church bell until the fog grew thin"),
    ("a fallen tree across the path", "climbed over the trunk and helped each other down the other side"),
    ("a heavy rain shower", "waited under a wide oak tree until the clouds moved on"),
    ("a fork in the road with no sign", "looked at the moss on the trees and chose the path to the north"),
]
BUILDS = [  # (what, noun, materials, how the finished thing did)
    ("a raft", "raft", ["four long logs", "a coil of rope", "a flat board for a seat"], "floated on the pond"),
    (
        "a birdhouse",
        "birdhouse",
        ["thin planks", "a handful of nails", "a little round door"],
        "soon had a family of sparrows inside",
    ),
    (
        "a kite",
        "kite",
        ["two light sticks", "a sheet of paper", "a long piece of string"],
        "climbed high above the meadow",
    ),
    ("a wagon", "wagon", ["an old crate", "four wheels", "a strong handle"], "carried a load of apples to the market"),
    (
        "a bridge over the stream",
        "bridge",
        ["flat stones", "a wide plank", "two strong posts"],
        "held everyone who crossed it",
    ),
    (
        "a sandcastle",
        "sandcastle",
        ["wet sand", "a bucket", "small shells for windows"],
        "stood until the evening tide came in",
    ),
]
LESSONS = [
    "Sometimes the thing you need is closer than you think.",
    "A friend who helps you look makes any search shorter.",
    "Practice a little every day, and hard things become easy.",
    "Patience is a kind of strength.",
    "Sharing can turn one good thing into two.",
    "Kindness is never wasted.",
    "A careful plan is worth more than a fast start.",
    "Mistakes are how we learn what to try next.",
    "When we work together, the load is lighter.",
    "It is braver to ask for help than to give up.",
]


class _Who:
    """A story character: a child or an animal, with pronouns."""

    def __init__(self, rng: random.Random, avoid: set[str] = frozenset()):
        pool = [n for n in NAMES if n[0] not in avoid]
        self.name, g = rng.choice(pool)
        self.subj, self.obj, self.poss = PRONOUNS[g]
        self.trait = rng.choice(TRAITS)
        self.animal = rng.choice(ANIMALS) if rng.random() < 0.35 else None

    def intro(self, rng: random.Random) -> str:
        if self.animal:
            return rng.choice(
                [
                    f"a {self.trait} little {self.animal} named {self.name}",
                    f"a young {self.animal} called {self.name}, who was very {self.trait}",
                    f"{self.name}, a {self.trait} {self.animal}",
                ]
            )
        return rng.choice(
            [
                f"a {self.trait} child named {self.name}",
                f"a girl named {self.name}" if self.subj == "she" else f"a boy named {self.name}",
                f"{self.name}, who was {self.trait} and liked to ask questions",
            ]
        )


def _opening(rng: random.Random, hero: _Who, town: str) -> str:
    return rng.choice(
        [
            f"Once upon a time, in a small town called {town}, there lived {hero.intro(rng)}.",
            f"In the town of {town} lived {hero.intro(rng)}.",
            f"There was once {hero.intro(rng)} who lived near {town}.",
            f"Not far from {town}, in a house with a green door, lived {hero.intro(rng)}.",
        ]
    )


def _story_lost(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[str]:
    obj = f"{rng.choice(ADJS)} {rng.choice(OBJECTS)}"
    places = rng.sample(PLACES, 4)
    (p1, pr1), (p2, pr2), (p3, pr3), (p4, pr4) = places
    h, f = hero, friend
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"{h.name} had a {obj} that {h.subj} carried everywhere.",
                f"{_cap(h.poss)} favorite thing in the world was a {obj}.",
                f"{h.name} loved {h.poss} {obj} more than any other toy.",
            ]
        ),
        rng.choice(
            [
                f"{rng.choice(TIMES)}, {h.name} reached for the {obj} and found that it was gone.",
                f"{rng.choice(TIMES)}, {h.subj} looked in {h.poss} bag, but the {obj} was not there.",
                f"{rng.choice(TIMES)}, the {obj} went missing.",
            ]
        ),
    ]
    para2 = [
        rng.choice(
            [
                f"First {h.subj} searched {pr1} {p1}, looking under every bench and behind every door.",
                f"{h.name} ran to {p1} and looked everywhere, but found nothing.",
                f"{_cap(h.subj)} started {pr1} {p1}, because that was where {h.subj} had played the day before.",
            ]
        ),
        rng.choice(
            [
                f"Then {h.subj} tried {p2}, but the {obj} was not there either.",
                f"Next {h.subj} walked to {p2}. There was no sign of the {obj}.",
                f"After that {h.subj} checked {p2} twice, just to be sure.",
            ]
        ),
        rng.choice(
            [
                f"{h.name} sat down {pr3} {p3} and felt like crying.",
                f"By now {h.subj} was tired, and {h.subj} sat down {pr3} {p3} to rest.",
            ]
        ),
    ]
    para3 = [
        rng.choice(
            [
                f"Just then {h.poss} friend {f.name} came by and asked what was wrong.",
                f"That was when {f.name}, who lived next door, saw {h.obj} and stopped.",
                f"Soon {f.name} found {h.obj} there and sat down beside {h.obj}.",
            ]
        ),
        rng.choice(
            [
                f'"Let us think," said {f.name}. "Where did you last use it?"',
                f'"Two pairs of eyes are better than one," said {f.name}. "Where have you not looked yet?"',
                f'"Do not worry," said {f.name}. "We will find it together."',
            ]
        ),
        rng.choice(
            [
                f"{h.name} remembered that {h.subj} had visited {p4} that morning.",
                f"Suddenly {h.name} remembered a short walk to {p4}.",
            ]
        ),
        rng.choice(
            [
                f"They hurried {pr4} {p4}, and there, half hidden, was the {obj}.",
                f"The two friends went to {p4} together, and {f.name} spotted the {obj} at once.",
                f"When they reached {p4}, the {obj} was lying exactly where {h.name} had put it down.",
            ]
        ),
    ]
    para4 = [
        rng.choice(
            [
                f"{h.name} hugged the {obj} and thanked {f.name} again and again.",
                f"{h.name} laughed with relief and gave {f.name} a big hug.",
                f"From that day on, {h.name} kept the {obj} in a safe place.",
            ]
        ),
        rng.choice(LESSONS[:2] + [rng.choice(LESSONS)]),
    ]
    return [" ".join(p) for p in (para1, para2, para3, para4)]


def _story_journey(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[str]:
    dest = rng.choice([t for t in TOWNS if t != town])
    reason = rng.choice(
        [
            f"to visit {hero.poss} {rng.choice(HELPERS)}",
            "to see the great autumn fair",
            "to deliver a basket of plums",
            "to find the oldest tree in the valley",
            "to bring back a jar of honey",
            "to watch the boats come in",
        ]
    )
    (obst, fix), (obst2, fix2) = rng.sample(OBSTACLES, 2)
    h, f = hero, friend
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"{rng.choice(TIMES)}, {h.name} decided to walk to {dest} {reason}.",
                f"{rng.choice(TIMES)}, {h.name} packed some bread and water and set off for {dest} {reason}.",
                f"{h.name} had always wanted to travel to {dest}, and {rng.choice(TIMES).lower()} {h.subj} finally went {reason}.",
            ]
        ),
        rng.choice(
            [
                f"{h.poss.capitalize()} friend {f.name} came along, carrying a map.",
                f"{f.name} asked to come too, and {h.name} was glad of the company.",
                f"On the way {h.subj} met {f.name}, who was going the same way.",
            ]
        ),
    ]
    para2 = [
        rng.choice(
            [
                f"After a while the road ended at {obst}.",
                f"Before long they came to {obst}.",
                f"The first problem was {obst}.",
            ]
        ),
        rng.choice(
            [
                f"{f.name} wanted to turn back, but {h.name} had an idea.",
                f"{h.name} and {f.name} stopped and thought about what to do.",
                f"{h.name} looked around carefully.",
            ]
        ),
        f"In the end they {fix}.",
    ]
    para3 = [
        rng.choice(
            [
                f"Later in the day they met {obst2}.",
                f"The second problem was {obst2}.",
                f"Then, when they were nearly there, they met {obst2}.",
            ]
        ),
        f"This time it was {f.name} who knew what to do, and they {fix2}.",
        rng.choice(
            [
                f"At last they saw the roofs of {dest} in front of them.",
                f"By sunset they walked into {dest}, tired but happy.",
                f"Soon they could hear the bells of {dest}.",
            ]
        ),
    ]
    para4 = [
        rng.choice(
            [
                f"{h.name} was glad {h.subj} had not given up halfway.",
                f"That night {h.name} told everyone about the journey.",
                f"For {h.name}, the journey home the next day felt much shorter.",
            ]
        ),
        rng.choice([LESSONS[6], LESSONS[8], LESSONS[3]]),
    ]
    return [" ".join(p) for p in (para1, para2, para3, para4)]


def _story_skill(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[str]:
    skill, fail, success = rng.choice(SKILLS)
    teacher = rng.choice(HELPERS)
    days = rng.choice(["three days", "a whole week", "ten days", "two weeks", "a month"])
    h = hero
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"More than anything, {h.name} wanted to learn to {skill}.",
                f"{h.name} dreamed of learning to {skill}.",
                f"Everyone in {town} seemed to know how to {skill}, except {h.name}.",
            ]
        ),
        rng.choice(
            [
                f"The first time {h.subj} tried, {h.subj} {fail}.",
                f"On the first try {h.name} {fail}.",
                f"But when {h.subj} tried, {h.subj} {fail}.",
            ]
        ),
    ]
    para2 = [
        rng.choice(
            [
                f"{h.poss.capitalize()} {teacher} saw {h.obj} and smiled.",
                f"{h.name} went to {h.poss} {teacher} for advice.",
                f"{h.poss.capitalize()} {teacher} had learned the same thing long ago.",
            ]
        ),
        rng.choice(
            [
                '"Try a little every day," came the advice, "and do not rush."',
                '"Watch closely first, and then go slowly," came the answer.',
                '"Everyone starts badly. The trick is to start again," came the reply.',
            ]
        ),
        rng.choice(
            [
                f"So for {days}, {h.name} practiced every morning.",
                f"{h.name} practiced for {days}, a little after school each day.",
                f"For {days} {h.subj} tried again and again.",
            ]
        ),
        rng.choice(
            [
                "Some days went well and some days went badly.",
                f"Each day {h.subj} got a little better.",
                f"Slowly {h.subj} began to understand how it worked.",
            ]
        ),
    ]
    para3 = [
        rng.choice(
            [
                f"At the end of {days}, {h.name} {success}.",
                f"Then one day {h.name} {success}.",
                f"Finally, in front of the whole town, {h.name} {success}.",
            ]
        ),
        rng.choice(
            [
                f"{friend.name} clapped and cheered.",
                f"{h.poss.capitalize()} {teacher} was very proud.",
                f"{h.name} could hardly believe it.",
            ]
        ),
        rng.choice([LESSONS[2], LESSONS[7], LESSONS[3]]),
    ]
    return [" ".join(p) for p in (para1, para2, para3)]


def _story_share(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[str]:
    obj, solve = rng.choice(
        [
            ("the last peach on the tree", "cut the peach in half"),
            ("a new red bicycle", "took turns, one lap each"),
            ("the swing in the park", "took turns pushing each other"),
            ("a big box of crayons", "put the box between them and drew one picture together"),
            ("the best seat by the window", "moved the seat so that both of them could see out"),
            ("a single umbrella", "walked very close together under it"),
            ("the only kite in the shed", "flew it together, one holding the string and one running"),
            ("the last slice of cake", "split it and gave the crumbs to the birds"),
            ("a storybook from the library", "read it aloud to each other, one page each"),
        ]
    )
    h, f = hero, friend
    place, prep = rng.choice(PLACES)
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"{h.name} and {f.name} were best friends.",
                f"{h.name} played with {f.name} almost every day.",
                f"{h.name} and {f.name} had known each other since they were very small.",
                f"{f.name} lived next door, and {h.name} often played with {f.obj} {prep} {place}.",
            ]
        ),
        rng.choice(
            [
                f"{rng.choice(TIMES)}, they both wanted {obj}.",
                f"{rng.choice(TIMES)}, they began to argue about {obj}.",
                f"{rng.choice(TIMES)}, {prep} {place}, {h.name} and {f.name} both reached for {obj} at the same moment.",
            ]
        ),
    ]
    para2 = [
        rng.choice(
            [
                f'"It is mine!" said {h.name}. "No, it is mine!" said {f.name}.',
                f"{h.name} pulled one way and {f.name} pulled the other.",
                f"Neither {h.name} nor {f.name} wanted to give it up.",
                f'"I saw it first," said {f.name}, and {h.name} frowned.',
            ]
        ),
        rng.choice(
            [
                f"Soon both of them were cross, and the day {prep} {place} was spoiled.",
                f"They stopped talking to each other and sat apart {prep} {place}.",
                f"{h.name} stamped {h.poss} foot, and {f.name} turned away.",
                f"{_cap(_an(rng.choice(ANIMALS)))} watched them argue and then ran off.",
            ]
        ),
        rng.choice(
            [
                f'After a while {h.name} said, "This is no fun. What if we share?"',
                f'Then {f.name} had an idea. "Let us find a way that is fair to both of us."',
                f"{h.poss.capitalize()} {rng.choice(HELPERS)} came by and asked what a good friend would do.",
            ]
        ),
    ]
    para3 = [
        rng.choice([f"So they {solve}.", f"In the end, {h.name} and {f.name} {solve}.", f"Together they {solve}."]),
        rng.choice(
            [
                f"{h.name} found that it was much more fun than arguing.",
                f"Both {h.name} and {f.name} were happy, and they laughed about the argument afterwards.",
                f"By the evening {h.name} could not remember why they had been angry.",
                f"On the way home {f.name} said it had been the best day of the {rng.choice(['week', 'month', 'summer'])}.",
            ]
        ),
        rng.choice([LESSONS[4], LESSONS[5], LESSONS[8]]),
    ]
    return [" ".join(p) for p in (para1, para2, para3)]


def _story_storm(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[str]:
    creature = rng.choice(
        [
            "a wet kitten",
            "a lost lamb",
            "a small bird with a hurt wing",
            "a shivering puppy",
            "a frightened goose",
            "an old neighbor with heavy bags",
            "a tiny hedgehog",
            "a lost little boy",
        ]
    )
    where, prep = rng.choice(PLACES)
    h = hero
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"{rng.choice(TIMES)}, dark clouds rolled in over {town}.",
                f"{rng.choice(TIMES)}, the wind began to howl and the sky over {town} turned gray.",
                f"{rng.choice(TIMES)}, a great storm came over the hills toward {town}.",
                f"{rng.choice(TIMES)}, while {h.name} was {prep} {where}, the sky grew dark very quickly.",
            ]
        ),
        rng.choice(
            [
                "Rain hammered on the roofs and the streets filled with puddles.",
                "Thunder rumbled and everyone hurried indoors.",
                f"Hail the size of {rng.choice(['peas', 'marbles', 'beans'])} bounced on the ground.",
                "The trees bent in the wind and the rain came down in sheets.",
            ]
        ),
    ]
    para2 = [
        rng.choice(
            [
                f"As {h.name} ran home past {where}, {h.subj} saw {creature}.",
                f"{prep.capitalize()} {where}, {h.name} heard a small sound and found {creature}.",
                f"Just as {h.name} reached {where}, {h.subj} noticed {creature} all alone.",
            ]
        ),
        rng.choice(
            [
                f"{h.name} did not stop to think. {_cap(h.subj)} wrapped {h.poss} coat around it and carried it home.",
                f"{_cap(h.subj)} stayed to help, even though {h.subj} was getting wet.",
                f"{h.name} remembered how scary storms felt, and {h.subj} helped at once.",
                f"{h.name} called for {friend.name}, and together they led it to a dry place.",
            ]
        ),
    ]
    para3 = [
        rng.choice(
            [
                f"At home {h.name} dried off by the fire and drank warm milk.",
                f"{h.poss.capitalize()} family made space by the stove.",
                f"{h.poss.capitalize()} {rng.choice(HELPERS)} brought blankets and a bowl of soup.",
            ]
        ),
        rng.choice(
            [
                "By morning the storm had passed and the sun was shining.",
                "The next day the sky was clear and the air smelled fresh.",
                f"When the storm ended, {h.name} went outside to look at the broken branches.",
            ]
        ),
        rng.choice(
            [
                f"{friend.name} heard what had happened and said that {h.name} was a true friend.",
                f"Everyone in {town} heard about {h.poss} kindness.",
                f"A week later a thank-you note arrived for {h.name}.",
            ]
        ),
        rng.choice([LESSONS[5], LESSONS[9]]),
    ]
    return [" ".join(p) for p in (para1, para2, para3)]


def _story_build(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[str]:
    thing, noun, parts, result = rng.choice(BUILDS)
    h, f = hero, friend
    a, b, c = parts
    place, prep = rng.choice(PLACES)
    helper = rng.choice(HELPERS)
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"{rng.choice(TIMES)}, {h.name} and {f.name} decided to build {thing} {prep} {place}.",
                f"{h.name} wanted to build {thing}, and {f.name} offered to help.",
                f"{rng.choice(TIMES)}, {h.name} saw a picture of {thing} in a book and wanted to make one.",
                f"{h.poss.capitalize()} {helper} had once built {thing}, and now {h.name} wanted to try.",
            ]
        ),
        rng.choice(
            [
                f"They gathered {a}, {b} and {c}.",
                f"First they found everything they needed: {a}, {b} and {c}.",
                f"{f.name} brought {a}, and {h.name} found {b} and {c} {prep} {place}.",
                f"It took them {rng.choice(['an hour', 'all morning', 'two days'])} to collect {a}, {b} and {c}.",
            ]
        ),
    ]
    para2 = [
        rng.choice(
            [
                f"{h.name} and {f.name} worked all afternoon, measuring twice and cutting once.",
                f"{f.name} held the pieces steady while {h.name} joined them.",
                f"They followed a plan that {f.name} had drawn in the sand.",
                f"{h.name} did the measuring and {f.name} did the fixing, and they talked the whole time.",
            ]
        ),
        rng.choice(
            [
                f"But when they tested the {noun}, something went wrong: it wobbled and tipped over.",
                f"At the first test, one side of the {noun} fell off.",
                f"The first {noun} was crooked and did not work.",
                f"When {f.name} tried it out, the {noun} broke in the middle.",
            ]
        ),
        rng.choice(
            [
                f"{h.name} looked closely and found the weak spot.",
                "Instead of giving up, they tried to understand why it had failed.",
                f"{f.name} wanted to stop, but {h.name} asked {h.poss} {helper} for advice.",
                f"{h.name} sat down and drew the {noun} again, more carefully this time.",
            ]
        ),
        rng.choice(
            [
                "They made the base wider and tied everything tighter.",
                "They fixed the joint and tried again.",
                f"This time they used {b} to make the weak part stronger.",
                f"{f.name} suggested a new shape, and they rebuilt it.",
            ]
        ),
    ]
    para3 = [
        rng.choice(
            [
                f"The second time, their {noun} {result}.",
                f"In the end the {noun} {result}.",
                f"By {rng.choice(_DAYS)}, the new {noun} {result}.",
            ]
        ),
        rng.choice(
            [
                f"{h.name} was very proud of their work.",
                f"{f.name} said it was the best thing they had ever made.",
                f"Even {h.poss} {helper} came to see it.",
                f"People from all over {town} came to look at it.",
            ]
        ),
        rng.choice([LESSONS[6], LESSONS[7], LESSONS[8]]),
    ]
    return [" ".join(p) for p in (para1, para2, para3)]


_TITLES = {
    "lost": "The Day {name} Lost Something",
    "journey": "{name} and the Long Road",
    "skill": "{name} Learns a New Skill",
    "share": "{name}, {friend} and One Problem",
    "storm": "{name} and the Storm",
    "build": "What {name} and {friend} Built",
}
_PLOTS = {
    "lost": _story_lost,
    "journey": _story_journey,
    "skill": _story_skill,
    "share": _story_share,
    "storm": _story_storm,
    "build": _story_build,
}


def _story(rng: random.Random, title: bool = True) -> tuple[str, str, _Who, str]:
    plot = rng.choice(sorted(_PLOTS))
    hero = _Who(rng)
    friend = _Who(rng, avoid={hero.name})
    town = rng.choice(TOWNS)
    paras = _PLOTS[plot](rng, hero, friend, town)
    if title and rng.random() < 0.5:
        # titles carry the hero's name: a title line shared by many documents would look like boilerplate
        title_line = rng.choice(
            [
                f"{hero.name} and {friend.name}",
                f"{hero.name}'s Day",
                f"A Story about {hero.name}",
                _TITLES[plot].format(name=hero.name, friend=friend.name),
            ]
        )
        paras = [title_line] + paras
    return "\n\n".join(paras), plot, hero, town


def story(rng: random.Random) -> tuple[str, str]:
    """One short story -> (text, plot)."""
    text, plot, _hero, _town = _story(rng)
    return text, plot


# ============================================================================ explanations

# topic -> (title phrase, question form, facts). Each fact is one plain sentence; a note picks some of them in a
# random order and joins them with varied connectives, so two notes on one topic share sentences but not structure.
TOPICS: dict[str, tuple[str, str, list[str]]] = {
    "water cycle": (
        "how the water cycle works",
        "Where does rain come from?",
        [
            "The sun warms the water in seas, lakes and rivers.",
            "Warm water slowly turns into an invisible gas called water vapor.",
            "The vapor rises with warm air, and high up the air is much colder.",
            "In the cold air the vapor turns back into tiny drops of water, and the drops gather into clouds.",
            "When the drops in a cloud join together and grow heavy, they fall as rain or snow.",
            "Rain runs into streams and rivers, and the rivers carry it back to the sea.",
            "Some rain soaks into the ground, where plants drink it or it flows slowly underground.",
            "The same water has gone around this cycle again and again for millions of years.",
        ],
    ),
    "plants": (
        "how plants grow",
        "How does a plant grow?",
        [
            "A plant starts as a seed, which holds a tiny plant and a store of food.",
            "When the soil is warm and damp, the seed swells and a root pushes down.",
            "Soon a shoot grows up toward the light and opens its first leaves.",
            "Leaves are green because they contain a substance that catches sunlight.",
            "Using the energy of sunlight, a leaf turns water and air into sugar, which is the plant's food.",
            "Roots hold the plant in place and take in water from the soil.",
            "A plant that gets too little light grows tall and thin as it stretches to find the sun.",
            "Many plants make flowers, and flowers make new seeds.",
        ],
    ),
    "magnets": (
        "how magnets work",
        "How does a magnet work?",
        [
            "A magnet pulls on things made of iron, such as nails and paper clips.",
            "Every magnet has two ends, called the north pole and the south pole.",
            "Two north poles push each other away, and so do two south poles.",
            "A north pole and a south pole pull toward each other.",
            "The pull of a magnet is strongest near its poles.",
            "A magnet does not pull on wood, glass, paper or most coins.",
            "If you stroke an iron nail with a magnet many times in one direction, the nail becomes a weak magnet too.",
            "The Earth itself behaves like a giant magnet.",
        ],
    ),
    "seasons": (
        "why we have seasons",
        "Why are there seasons?",
        [
            "The Earth travels around the sun once every year.",
            "The Earth is tilted, so it leans a little to one side as it moves.",
            "For part of the year our half of the Earth leans toward the sun.",
            "When our half leans toward the sun, the days are long and the sunlight is strong, and that is summer.",
            "When our half leans away from the sun, the days are short and the light is weak, and that is winter.",
            "Spring and autumn come in between, when neither half leans much toward the sun.",
            "When it is summer in the north, it is winter in the south.",
            "The seasons are not caused by the Earth moving closer to the sun.",
        ],
    ),
    "bread": (
        "why bread rises",
        "Why does bread rise?",
        [
            "Bread dough is made from flour, water, salt and a little yeast.",
            "Yeast is a tiny living thing, far too small to see on its own.",
            "When yeast is warm and has sugar to eat, it gives off bubbles of gas.",
            "Kneading the dough makes it stretchy, so it can trap the bubbles.",
            "As the bubbles grow, the whole dough swells and rises.",
            "Dough rises faster in a warm kitchen than in a cold one.",
            "In the hot oven the bubbles grow once more, and then the bread sets firm around them.",
            "The holes you see in a slice of bread are the places where the bubbles were.",
        ],
    ),
    "bicycle": (
        "how a bicycle works",
        "How does a bicycle work?",
        [
            "When you push the pedals, they turn a large toothed wheel called a chainring.",
            "A chain carries the turning from the chainring to a small toothed wheel on the back wheel.",
            "Because the back gear is smaller, the back wheel turns several times for each turn of the pedals.",
            "Gears let a rider choose between easy pedaling and high speed.",
            "The handlebars turn the front wheel, which steers the bicycle.",
            "Brakes press rubber pads against the wheel, and the rubbing slows it down.",
            "A moving bicycle is easy to balance, because small turns of the front wheel keep it upright.",
            "Air in the tires makes the ride soft over small bumps.",
        ],
    ),
    "rainbows": (
        "how rainbows form",
        "Why do we see rainbows?",
        [
            "Sunlight looks white, but it is really a mix of many colors.",
            "When light passes into a raindrop, it bends a little.",
            "Each color bends by a slightly different amount, so the colors spread apart.",
            "The light bounces off the back of the drop and comes out again toward us.",
            "Millions of drops together make a curved band of color.",
            "The colors always come in the same order: red, orange, yellow, green, blue and violet.",
            "To see a rainbow, the sun must be behind you and the rain in front of you.",
            "You can make a small rainbow with a garden hose on a sunny day.",
        ],
    ),
    "moon": (
        "why the moon seems to change shape",
        "Why does the moon change shape?",
        [
            "The moon does not make its own light; it shines because sunlight falls on it.",
            "One half of the moon is always lit by the sun, and the other half is dark.",
            "The moon travels around the Earth about once a month.",
            "As it moves, we see different amounts of its sunlit half.",
            "When we see none of the lit half, we call it a new moon.",
            "When we see all of the lit half, the moon is full and round.",
            "Between new and full, the moon looks like a thin curve that grows a little each night.",
            "The moon does not really change shape; only our view of its bright side changes.",
        ],
    ),
    "sound": (
        "how sound travels",
        "How does sound travel?",
        [
            "Every sound starts with something that shakes back and forth very quickly.",
            "The shaking pushes on the air around it and makes the air shake too.",
            "These shakes spread out through the air like ripples on a pond.",
            "When the shaking air reaches your ear, it makes a thin skin inside the ear move.",
            "Fast shaking makes a high sound, and slow shaking makes a low sound.",
            "Sound travels through water and through solid walls as well as through air.",
            "Sound cannot travel through empty space, because there is nothing there to shake.",
            "Light travels much faster than sound, which is why we see lightning before we hear the thunder.",
        ],
    ),
    "bees": (
        "how bees make honey",
        "How do bees make honey?",
        [
            "Bees visit flowers to collect a sweet juice called nectar.",
            "A bee sucks up the nectar and carries it back to the hive in a special stomach.",
            "In the hive, the bees pass the nectar from one to another.",
            "The bees spread the nectar in small wax cells and fan it with their wings.",
            "The fanning dries the nectar until it becomes thick and sticky honey.",
            "When the honey is ready, the bees seal each cell with a cap of wax.",
            "The bees eat the honey in winter, when there are no flowers.",
            "While they collect nectar, bees carry pollen from flower to flower, which helps plants make seeds.",
        ],
    ),
    "volcanoes": (
        "how volcanoes work",
        "What is a volcano?",
        [
            "Deep under the ground it is hot enough to melt rock.",
            "Melted rock under the ground is called magma.",
            "Magma is lighter than the solid rock around it, so it slowly pushes upward.",
            "Where it finds a weak spot in the crust, it can break through to the surface.",
            "Melted rock that flows out onto the surface is called lava.",
            "Layers of cooled lava and ash build up over many years into a mountain.",
            "Some volcanoes erupt gently, while others explode and throw ash high into the sky.",
            "Soil made from old volcanic ash is often very good for farming.",
        ],
    ),
    "heart": (
        "how the heart works",
        "What does the heart do?",
        [
            "The heart is a strong muscle about the size of your fist.",
            "Its job is to pump blood all around the body.",
            "Blood carries air and food to every part of the body.",
            "Each beat squeezes blood out of the heart and into tubes called arteries.",
            "Other tubes, called veins, bring the blood back to the heart.",
            "When you run, your heart beats faster to send more blood to your muscles.",
            "You can feel your heartbeat by pressing gently on the inside of your wrist.",
            "A resting child's heart beats about eighty to a hundred times a minute.",
        ],
    ),
    "ice": (
        "why ice floats",
        "Why does ice float?",
        [
            "Water turns into ice when it gets colder than zero degrees Celsius.",
            "Most things shrink when they freeze, but water does something unusual.",
            "When water freezes, it spreads out and takes up more room.",
            "Because ice takes up more room for the same weight, it is lighter than the same amount of water.",
            "Things that are lighter than water float on it.",
            "That is why ice cubes float at the top of a glass.",
            "In winter, ice forms on top of a lake while the water below stays liquid.",
            "Fish can live through the winter in the water under the ice.",
        ],
    ),
    "shadows": (
        "how shadows form",
        "Why do we have shadows?",
        [
            "Light travels in straight lines.",
            "When something blocks the light, a dark shape forms behind it on the ground or on a wall.",
            "That dark shape is called a shadow.",
            "In the morning and evening the sun is low, so shadows are long.",
            "At midday the sun is high in the sky, so shadows are short.",
            "A shadow always points away from the light.",
            "If you move closer to a lamp, your shadow on the wall grows bigger.",
            "People once used the shadow of a stick to tell the time of day.",
        ],
    ),
    "compass": (
        "how a compass works",
        "How does a compass work?",
        [
            "A compass has a thin needle that is a small magnet.",
            "The needle sits on a pin, so it can turn freely.",
            "The Earth acts like a huge magnet with poles near the north and south ends.",
            "The needle turns until one end points north.",
            "Once you know where north is, you can find south, east and west.",
            "Sailors and walkers have used compasses to find their way for hundreds of years.",
            "A magnet held close to a compass will pull the needle the wrong way.",
            "A compass works in fog and at night, when the sun and stars cannot be seen.",
        ],
    ),
    "bridges": (
        "how bridges carry weight",
        "How does a bridge hold up heavy things?",
        [
            "A bridge has to carry its own weight and the weight of everything that crosses it.",
            "A simple beam bridge is a strong plank resting on a support at each end.",
            "The longer a beam is, the more it bends in the middle.",
            "An arch bridge pushes the weight outward and down into the ground at each end.",
            "Stone is very strong when it is squeezed, so stone is good for arches.",
            "A suspension bridge hangs from thick cables that run over tall towers.",
            "Triangles are often used in bridges, because a triangle does not change shape when pushed.",
            "Engineers test models of a bridge before they build the real one.",
        ],
    ),
    "fractions": (
        "what fractions mean",
        "What is a fraction?",
        [
            "A fraction is a way of talking about part of a whole.",
            "If you cut a pie into four equal pieces, each piece is one quarter of the pie.",
            "The bottom number of a fraction says how many equal parts the whole is cut into.",
            "The top number says how many of those parts you have.",
            "Two quarters are the same amount as one half.",
            "The more parts a whole is cut into, the smaller each part is.",
            "One third of twelve is four, because twelve split into three equal groups gives four in each group.",
            "Fractions are used in cooking, in telling time and in sharing things fairly.",
        ],
    ),
    "sailing": (
        "how sailboats move",
        "How does a sailboat move?",
        [
            "A sailboat uses the wind instead of an engine.",
            "When the wind blows from behind, it simply pushes the sail and the boat forward.",
            "A sail can also work like a wing when the wind comes from the side.",
            "A long fin under the boat, called a keel, stops it from sliding sideways.",
            "With the sail and the keel working together, a boat can even move partly against the wind.",
            "To go straight into the wind, a sailor zigzags from side to side.",
            "The rudder at the back of the boat is used to steer.",
            "Sailors watch the water and the clouds to guess how the wind will change.",
        ],
    ),
}
_INTRO = [
    "Have you ever wondered {title}? This note explains it.",
    "{q} It is a good question, and the answer is simpler than it looks.",
    "Here is a short explanation of {title}.",
    "Many people ask: {q_lower} Let us look at {title} step by step.",
    "{title_cap} is easy to understand once you know a few facts.",
    '{who} from {town} sent us a question: "{q}" Here is our answer.',
    "Last week {who} asked {poss} {helper} {title}, and this is what {subj} learned.",
    "In {who}'s class in {town}, the lesson today was about {title}.",
    "{who} wanted to know {title}, so {subj} went to the library in {town} to find out.",
]
_CONNECT = [
    "",
    "",
    "",
    "",
    "Also, ",
    "In addition, ",
    "It is also true that ",
    "An important point is that ",
    "Remember that ",
    "What is more, ",
    "Next, ",
    "After that, ",
    "As {who} found out, ",
    "Notice that ",
]
_OUTRO = [
    "That, in short, is {title}.",
    'So the next time someone asks "{q}", you will know the answer.',
    "Now you know the basics of {title}.",
    "Try to notice these things the next time you are outside.",
    "{who} wrote these facts in {poss} notebook so that {subj} would not forget them.",
    "{who} told the whole family about it at dinner that evening.",
    "",
]
_EXAMPLES = [
    "For example, {who} once tested this {prep} {place} and wrote down what happened.",
    "{who}'s class tried a simple experiment about this {prep} {place}, and the result matched the explanation.",
    "If you are not sure, ask a teacher, as {who} did in {town}, and check it for yourself.",
    "{who} and {friend} watched this happen {prep} {place} one {day}.",
    "On a trip to {place}, {who} saw this with {poss} own eyes.",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _lower_first(s: str) -> str:
    # keep acronyms and names ("I", "Earth") as they are; lower an ordinary sentence start
    first = s.split(" ", 1)[0]
    keep = first in ("I", "Earth") or (len(first) > 1 and first[1:2].isupper())
    return s if keep else s[:1].lower() + s[1:]


def explanation_note(rng: random.Random, topic: str | None = None) -> tuple[str, str]:
    """A how-it-works note on one topic -> (text, topic)."""
    topic = topic or rng.choice(sorted(TOPICS))
    title, q, facts = TOPICS[topic]
    (who, g), (friend, _) = rng.sample(NAMES, 2)
    place, prep = rng.choice(PLACES)
    fmt = {
        "title": title,
        "title_cap": _cap(title),
        "q": q,
        "q_lower": _lower_first(q),
        "who": who,
        "friend": friend,
        "subj": PRONOUNS[g][0],
        "poss": PRONOUNS[g][2],
        "helper": rng.choice(HELPERS),
        "town": rng.choice(TOWNS),
        "place": place,
        "prep": prep,
        "day": rng.choice(_DAYS),
    }
    # The facts are listed in the order an explanation needs them; a note keeps that order so it reads forward.
    # Names, towns and places vary per note, so two notes on one topic share facts but are not near duplicates.
    chosen = sorted(rng.sample(facts, rng.randint(4, 5)), key=facts.index)
    body = []
    for i, f in enumerate(chosen):
        c = rng.choice(_CONNECT).format(**fmt) if i else ""
        body.append(c + (_lower_first(f) if c else f))
    body.insert(rng.randint(2, len(body)), rng.choice(_EXAMPLES).format(**fmt))
    # intro and outro are joined to the body: a line that recurs in many documents is what segment dedup removes
    split = rng.randint(2, len(body) - 1)
    first = rng.choice(_INTRO).format(**fmt) + " " + " ".join(body[:split])
    last = " ".join(body[split:] + [rng.choice(_OUTRO).format(**fmt)]).strip()
    return f"{first}\n\n{last}", topic


_CHAT_OPEN = ["", "Good question.", "Here is a simple explanation.", "Let me explain {title}.", "Sure."]
_CHAT_CLOSE = ["", "I hope that helps.", "That is {title}, in short.", "Ask me if you want more detail."]


def explanation_answer(rng: random.Random, topic: str) -> str:
    """The same facts as a direct chat answer: no narrator, no invented people (for the demo's SFT data)."""
    title, _q, facts = TOPICS[topic]
    chosen = sorted(rng.sample(facts, rng.randint(4, 6)), key=facts.index)
    connect = [c for c in _CONNECT if "{" not in c]
    body = [f if i == 0 or not (c := rng.choice(connect)) else c + _lower_first(f) for i, f in enumerate(chosen)]
    opening, closing = (rng.choice(x).format(title=title) for x in (_CHAT_OPEN, _CHAT_CLOSE))
    return " ".join(x for x in [opening, *body, closing] if x)


# animal -> (kind, home, food, feature, young)
ANIMAL_FACTS = {
    "fox": ("mammal", "woods and fields", "mice, berries and insects", "a bushy tail", "cubs"),
    "rabbit": ("mammal", "burrows dug into grassy ground", "grass and leafy plants", "long ears", "kits"),
    "owl": ("bird", "hollow trees and old barns", "mice and other small animals", "very large eyes", "owlets"),
    "frog": ("amphibian", "ponds and wet meadows", "flies and other insects", "long, strong back legs", "tadpoles"),
    "otter": ("mammal", "rivers and coasts", "fish and shellfish", "thick, waterproof fur", "pups"),
    "hedgehog": ("mammal", "hedges and gardens", "beetles, worms and snails", "a coat of sharp spines", "hoglets"),
    "duck": ("bird", "ponds, lakes and rivers", "water plants, seeds and insects", "webbed feet", "ducklings"),
    "goat": ("mammal", "hills and farms", "grass, leaves and twigs", "hooves that grip rocky ground", "kids"),
    "salmon": ("fish", "rivers and the open sea", "small fish and shrimp", "a strong tail for leaping", "fry"),
    "bee": ("insect", "hives and hollow trees", "nectar and pollen", "six legs and four wings", "larvae"),
    "turtle": ("reptile", "ponds and warm seas", "plants, jellyfish and small animals", "a hard shell", "hatchlings"),
    "bat": ("mammal", "caves and attics", "moths and other night insects", "wings made of thin skin", "pups"),
    "crow": ("bird", "fields, towns and woods", "almost anything, from seeds to scraps", "a sharp mind", "chicks"),
    "deer": ("mammal", "forests and meadows", "leaves, grass and acorns", "long, thin legs", "fawns"),
    "spider": ("arachnid", "gardens, houses and hedges", "insects caught in silk webs", "eight legs", "spiderlings"),
    "whale": ("mammal", "the open ocean", "tiny shrimp or fish", "a blowhole on top of the head", "calves"),
}


_PLURAL = {"fox": "foxes", "salmon": "salmon", "deer": "deer", "mouse": "mice"}


def _animal_sentences(rng: random.Random, animal: str, v: int) -> list[str]:
    """Facts about one animal; `v` (0/1) picks the phrasing, so the two animals of a profile share no frame."""
    kind, home, food, feature, young = ANIMAL_FACTS[animal]
    art = "an" if kind[0] in "aeiou" else "a"
    many = _PLURAL.get(animal, animal + "s")
    rest = [
        [f"{_cap(many)} live in {home}.", f"Most {many} make their homes in {home}."][v],
        [f"They eat {food}.", f"Their food is mostly {food}."][v],
        [
            f"One thing that makes the {animal} easy to recognize is {feature}.",
            f"Look for {feature}, and you will know it is {_an(animal)}.",
        ][v],
        [f"Baby {many} are called {young}.", f"The young of {_an(animal)} are known as {young}."][v],
    ]
    rng.shuffle(rest)
    first = [f"The {animal} is {art} {kind}.", f"{_cap(many)} are {kind}s."][v]
    return [first] + rest[: rng.randint(3, 4)]


def animal_profile(rng: random.Random) -> tuple[str, str]:
    """Facts about two animals, tied together by someone who saw them somewhere -> (text, "animal|animal")."""
    a, b = rng.sample(sorted(ANIMAL_FACTS), 2)
    (who, g), place, town = rng.choice(NAMES), rng.choice(PLACES), rng.choice(TOWNS)
    poss = PRONOUNS[g][2]
    seen = rng.choice(
        [
            f"On a walk {place[1]} {place[0]} near {town}, {who} saw {_an(a)} and, a little later, {_an(b)}.",
            f"{who} is writing a school report about two animals: the {a} and the {b}.",
            f"In {town}, {who}'s favorite animals are the {a} and the {b}, and {who} knows a lot about both.",
            f"At the nature center in {town}, {who} and {poss} {rng.choice(HELPERS)} read about the {a} and the {b}.",
        ]
    )
    ka, kb = ANIMAL_FACTS[a][0], ANIMAL_FACTS[b][0]
    compare = (
        f"So the {a} and the {b} are both {ka}s, but they live very different lives."
        if ka == kb
        else f"So the {a} is {'an' if ka[0] in 'aeiou' else 'a'} {ka}, while the {b} is "
        f"{'an' if kb[0] in 'aeiou' else 'a'} {kb}."
    )
    v = rng.randrange(2)
    first, second = " ".join(_animal_sentences(rng, a, v)), " ".join(_animal_sentences(rng, b, 1 - v))
    return f"{seen} {first}\n\n{second} {compare}", f"{a}|{b}"


def _one_number(rng: random.Random, n: int, v: int) -> list[str]:
    """Facts about `n`; `v` (0/1) picks one of two phrasings per fact, so the two numbers of a document share no
    sentence frame (a repeated frame would trip the quality gates' duplicated-n-gram rule)."""
    divs = [d for d in range(2, n) if n % d == 0]
    half = n // 2
    s = [
        [f"Let us look at the number {n}.", f"Now think about {n}."][v],
        (
            [
                f"{n} is an even number, because it can be split into two equal groups of {half}.",
                f"You can share {n} things fairly between two people, {half} each, so {n} is even.",
            ][v]
            if n % 2 == 0
            else [
                f"{n} is an odd number, because it cannot be split into two equal whole groups.",
                f"Sharing {n} things between two people always leaves one over, so {n} is odd.",
            ][v]
        ),
    ]
    if not divs:
        s.append(
            [
                f"{n} is a prime number: it can only be divided evenly by 1 and by itself.",
                f"No number except 1 and {n} divides {n} evenly, which makes it a prime.",
            ][v]
        )
    else:
        d = rng.choice(divs)
        s.append(
            [
                f"{n} is not a prime number. For example, {d} times {n // d} is {n}.",
                f"{n} is not prime, because {n} = {d} x {n // d}.",
            ][v]
        )
        shown = divs if len(divs) <= 6 else [divs[0], divs[1], divs[-1]]
        s.append(
            [
                f"Some numbers that divide {n} evenly are {', '.join(map(str, shown))}.",
                f"It can be split into equal groups of {', '.join(map(str, shown))}.",
            ][v]
        )
    r = round(n**0.5)
    if r * r == n:
        s.append(
            [
                f"{n} is a square number, because {r} times {r} is {n}.",
                f"A square of {r} rows and {r} columns holds exactly {n} dots.",
            ][v]
        )
    k = rng.randint(2, 9)
    s.append(
        rng.choice(
            [
                [f"If you add {k} to {n}, you get {n + k}.", f"Ten more than {n} is {n + 10}."],
                [f"{n} take away {k} leaves {n - k}.", f"Ten less than {n} is {n - 10}."],
            ][v]
        )
    )
    s.append([f"Double {n} is {2 * n}.", f"Two groups of {n} make {2 * n}."][v])
    h, t, o = n // 100, n // 10 % 10, n % 10
    if h:
        s.append(
            [
                f"In {n} there are {h} hundred{'s' * (h > 1)}, {t} ten{'s' * (t != 1)} and {o} one{'s' * (o != 1)}.",
                f"Written out, {n} is {h * 100} plus {t * 10} plus {o}.",
            ][v]
        )
    else:
        s.append(
            [
                f"In {n}, the digit {t} stands for tens and the digit {o} for ones.",
                f"{n} is made of {t} tens and {o} ones.",
            ][v]
        )
    return s


def number_facts(rng: random.Random) -> tuple[str, str]:
    """Correct facts about two whole numbers, computed rather than written out, so the model sees true arithmetic."""
    a, b = rng.sample(range(10, 1000), 2)
    head = rng.choice(
        [
            f"Here are some facts about the numbers {a} and {b}.",
            f"Two numbers to study today: {a} and {b}.",
            f"Number practice with {a} and {b}.",
        ]
    )
    tail = rng.choice(
        [
            f"Together, {a} and {b} add up to {a + b}.",
            f"The difference between {max(a, b)} and {min(a, b)} is {abs(a - b)}.",
            f"{max(a, b)} is larger than {min(a, b)}.",
        ]
    )
    v = rng.randrange(2)
    first, second = " ".join(_one_number(rng, a, v)), " ".join(_one_number(rng, b, 1 - v))
    return f"{head} {first}\n\n{second} {tail}", "numbers"


def explanation(rng: random.Random) -> tuple[str, str]:
    u = rng.random()
    if u < 0.6:
        return explanation_note(rng)
    if u < 0.85:
        return animal_profile(rng)
    return number_facts(rng)


# ============================================================================ arithmetic worksheets

# The arithmetic options the demo uses everywhere (corpus, SFT, RL, eval): pass the same ones to `arith.generate`.
ARITH_OPTIONS = {"max_ops": 3, "max_value": 20, "heldout_fraction": 0.2, "calc_annotations": False}


def qa_text(p: arith.Problem) -> str:
    """How a problem appears in pretraining text: the lm-eval GSM8K layout, 'Question: ...' then 'Answer: ...'."""
    return f"Question: {p.question}\nAnswer: {p.solution}"


# The demo's benchmark is the eval stage's `arith` task: the first 500 held-out problems of seed 0
# (ledgerlm.tasks.arith: BUILTIN_ITEMS, seed 0; tests check they agree).
BENCHMARK_N, BENCHMARK_SEED = 500, 0


def benchmark(n: int = BENCHMARK_N, seed: int = BENCHMARK_SEED) -> list[arith.Problem]:
    """The demo's held-out "benchmark": the first `n` held-out problems for `seed` (a prefix of any larger n)."""
    return arith.generate(n, "heldout", seed, **ARITH_OPTIONS)


def _worksheet(rng: random.Random, problems: list[arith.Problem]) -> str:
    town = rng.choice(TOWNS)
    head = rng.choice(
        [
            f"Worksheet {rng.randint(1, 999)} for the {town} school: solve each problem and show your work.",
            f"Here are {len(problems)} word problems from {town}, with worked answers to check.",
            f"Practice set {rng.randint(1, 999)}. Read each question carefully and then check the worked solution.",
            f"Homework for {rng.choice(NAMES)[0]}'s class in {town}: {len(problems)} problems, each with an answer to check.",
        ]
    )
    return head + "\n\n" + "\n\n".join(qa_text(p) for p in problems)


# ============================================================================ planted junk

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo "
    "consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur"
).split()
_JS = [
    "var {a} = document.getElementById('{b}');",
    "function {a}() {{ return window.{b} || {{}}; }}",
    "if (typeof {a} === 'undefined') {{ {a} = []; }}",
    "{a}.push({{'event': '{b}', 'ts': new Date().getTime()}});",
    "document.addEventListener('DOMContentLoaded', function() {{ {a}('{b}'); }});",
    "window.{a} = window.{a} || function() {{ ({a}.q = {a}.q || []).push(arguments); }};",
    '<script type="text/javascript" src="/static/{a}.{b}.min.js"></script>',
    "Please enable JavaScript in your browser to view this page.",
]
_SHORT = [
    "Click here {k}.",
    "Page {k} of {m}",
    "Home | About | Contact {k}",
    "Loading item {k}...",
    "Read more ({k})",
    "Thanks! #{k}",
    "Top {k} picks",
    "Sold out: lot {k}",
]
_SPAM = [
    "Best deals on shoes today, order now and save more.",
    "Click the link below to claim your free prize.",
    "Cheap flights to every city, book your ticket online now.",
    "Join now and win big every single day.",
    "Limited offer for new members only, do not miss it.",
]
JUNK_KINDS = ("symbols", "lorem", "javascript", "too_short", "repeated_lines")


def _ident(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) + str(rng.randint(0, 99))


def junk(rng: random.Random, kind: str) -> str:
    if kind == "symbols":
        pool = string.punctuation + "0123456789" + "▒░█§¶©®±µ" + "xqz"
        lines = ["".join(rng.choice(pool + " ") for _ in range(rng.randint(40, 90))) for _ in range(rng.randint(4, 12))]
        return "\n".join(lines)
    if kind == "lorem":
        sents = []
        for _ in range(rng.randint(6, 16)):
            w = [rng.choice(_LOREM) for _ in range(rng.randint(6, 14))]
            sents.append(_cap(" ".join(w)) + ".")
        return "Lorem ipsum dolor sit amet. " + " ".join(sents)
    if kind == "javascript":
        lines = [_JS[1]] + [rng.choice(_JS) for _ in range(rng.randint(5, 19))]  # always at least one `{`
        return "\n".join(line.format(a=_ident(rng), b=_ident(rng)) for line in lines)
    if kind == "too_short":
        return rng.choice(_SHORT).format(k=rng.randint(1, 10**6), m=rng.randint(1, 10**6))
    if kind == "repeated_lines":
        line = rng.choice(_SPAM)
        tag = rng.randint(1, 10**6)  # distinct documents, so exact dedup does not remove them before the quality gate
        return f"Offer {tag}.\n" + "\n".join([line] * rng.randint(12, 30))
    raise ValueError(f"unknown junk kind {kind!r}")


# Site furniture appended to otherwise good documents: segment dedup should strip these lines and keep the rest.
BOILERPLATE = [
    "Subscribe to our newsletter to get new stories and notes every week.",
    "Copyright 2025 Little Lantern Press. All rights reserved.",
    "Share this page with your friends and family, and leave a comment below.",
    "This site uses cookies to improve your experience. By continuing to browse, you agree to our use of cookies.",
    "Sign up for a free account to save your favorite articles and get reading lists.",
    "Back to the top of the page. Browse more stories, explanations and worksheets in our archive.",
]

NEAR_DUP_BAND = (0.82, 0.9)  # word-5-gram Jaccard of each planted near duplicate to its source
# Replacement words for near duplicates: common enough to read naturally, rare enough to break a 5-gram.
_SWAPS = [
    "very",
    "quite",
    "little",
    "big",
    "happy",
    "quiet",
    "bright",
    "slowly",
    "soon",
    "again",
    "really",
    "small",
    "early",
    "later",
    "gladly",
    "often",
    "suddenly",
    "together",
    "nearly",
    "calmly",
]


def near_duplicate(rng: random.Random, text: str, lo: float = 0.8, hi: float = 0.9) -> tuple[str, float] | None:
    """`text` with a few words swapped so that word-5-gram Jaccard lands in [lo, hi]; None if it cannot."""
    words = text.split(" ")
    # aim inside the band, away from its low edge: MinHash LSH finds a pair at J=0.8 with ~92% probability (14
    # bands x 8 rows), at 0.85 with ~99%. Swaps far from the ends change 5 shingles, near the ends fewer: trying
    # every place, and undoing swaps that overshoot, lands close to the target.
    target = rng.uniform(lo + 0.02, hi - 0.01)
    floor = max(lo, target - 0.02)
    positions = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 2]
    rng.shuffle(positions)
    j = 1.0
    for i in positions:
        old = words[i]
        words[i] = rng.choice([s for s in _SWAPS if s != old.lower()])
        j_new = jaccard(text, " ".join(words))
        if j_new < floor:  # this swap overshot (it hit fresh 5-grams); undo it and try a different place
            words[i] = old
            continue
        j = j_new
        if j <= target:
            break
    return (" ".join(words), j) if lo <= j <= hi else None


# ============================================================================ the corpus


class _Dealer:
    """Deals problems into worksheets so that a sheet repeats no name, item, number or final answer and, while the
    pool allows, no template: shared frames trip the duplicated-n-gram quality rule, two equal `#### N` lines the
    duplicated-line rule. Deterministic: the earliest problems of the pool that fit."""

    def __init__(self, pool: list[arith.Problem]):
        self.by_template: dict[str, list] = {}
        for i, p in enumerate(pool):
            self.by_template.setdefault(p.key.split("|")[0], []).append((i, p, *self._tags(p)))

    @staticmethod
    def _tags(p: arith.Problem) -> tuple[set, set]:
        item = next((w for w in arith.ITEMS if f" {w}" in p.question), "")
        base = {("who", p.question.split(" ", 1)[0]), ("item", item), ("answer", p.answer)}
        return base, {("num", x) for st in p.steps for x in (st[0], st[2])}

    def _pick(self, window: list, size: int, first: arith.Problem | None) -> list | None:
        # strict first; the big templates dominate the end of the pool, so relax the template cap, then the numbers
        for cap, nums in ((1, True), (2, True), (size, True), (2, False), (size, False)):
            picked, per_template, used = [], Counter(), set()
            if first is not None:
                b, n = self._tags(first)
                used |= b | n if nums else b
                per_template[first.key.split("|")[0]] += 1
            for entry in window:
                _i, p, b, n = entry
                tags = b | n if nums else b
                template = p.key.split("|")[0]
                if tags & used or per_template[template] >= cap:
                    continue
                picked.append(entry)
                used |= tags
                per_template[template] += 1
                if len(picked) == size:
                    return picked
        return None

    def deal(self, size: int, first: arith.Problem | None = None) -> list[arith.Problem]:
        # look at the first few problems of each template only (fast); the whole pool if that is not enough
        for k in (64, None):
            window = sorted((e for lst in self.by_template.values() for e in lst[:k]), key=lambda e: e[0])
            picked = self._pick(window, size, first)
            if picked:
                break
        else:
            raise ValueError(f"could not deal a worksheet of {size} distinct problems")
        for e in picked:
            self.by_template[e[1].key.split("|")[0]].remove(e)
        return [e[1] for e in picked]


def _norm_line(line: str) -> str:
    return " ".join(line.lower().split())


def _plan_counts(n_docs: int, fractions: dict[str, float], minimum: int = 1) -> dict[str, int]:
    return {k: max(minimum, round(n_docs * f)) if f > 0 else 0 for k, f in fractions.items()}


DEFAULT_FRACTIONS = {"junk": 0.05, "exact_dup": 0.03, "near_dup": 0.03, "leak": 0.0025, "boilerplate": 0.10}
GENRE_WEIGHTS = {"story": 0.45, "explanation": 0.30, "arith": 0.25}


def generate_demo_corpus(
    seed: int = 0,
    n_docs: int = 6000,
    *,
    fractions: dict[str, float] | None = None,
    benchmark_n: int = BENCHMARK_N,
    benchmark_seed: int = BENCHMARK_SEED,
    leak_ngram: int = 13,
) -> tuple[list[dict], dict]:
    """The corpus in memory -> (records, manifest). See the module docstring; `write_demo_corpus` writes it."""
    frac = {**DEFAULT_FRACTIONS, **(fractions or {})}
    unknown = set(frac) - set(DEFAULT_FRACTIONS)
    if unknown:
        raise ValueError(f"unknown fraction keys {sorted(unknown)} (known: {sorted(DEFAULT_FRACTIONS)})")
    bad = {k: v for k, v in frac.items() if not isinstance(v, int | float) or not 0 <= v <= 0.5}
    if bad or not isinstance(n_docs, int):
        raise ValueError(f"fractions must be numbers in [0, 0.5] and n_docs an integer, got {bad or n_docs!r}")
    counts = _plan_counts(n_docs, frac)
    n_clean = n_docs - counts["junk"] - counts["exact_dup"] - counts["near_dup"] - counts["leak"]
    if n_clean < max(20, n_docs // 2):
        raise ValueError(f"n_docs={n_docs} is too small for the planted fractions {frac} (need >= 40 documents)")

    # --- the benchmark, and train problems that share no leak_ngram-gram with it (so decontamination is exact)
    bench = benchmark(benchmark_n, benchmark_seed)
    if counts["leak"] > len(bench):
        raise ValueError(f"{counts['leak']} leak documents need benchmark_n >= {counts['leak']}, got {benchmark_n}")
    bench_grams: set[tuple[str, ...]] = set()
    for p in bench:
        bench_grams |= ngrams(qa_text(p), leak_ngram)

    rng = _rng("demo", seed, "plan")
    genres = rng.choices(list(GENRE_WEIGHTS), weights=list(GENRE_WEIGHTS.values()), k=n_clean)
    sizes = [rng.randint(2, 4) for _ in range(genres.count("arith") + counts["leak"])]  # popped from the end
    need = sum(sizes)
    # twice what is needed: the spare keeps the end of the pool varied enough to deal good worksheets
    pool = arith.generate(2 * need + 100, "train", seed, **ARITH_OPTIONS)
    usable = [p for p in pool if not (ngrams(qa_text(p), leak_ngram) & bench_grams)]
    if len(usable) < need:  # rare: continue the same deterministic stream (generate(n) is a prefix of generate(m))
        more = arith.generate(4 * need + 200, "train", seed, **ARITH_OPTIONS)[len(pool) :]
        usable += [p for p in more if not (ngrams(qa_text(p), leak_ngram) & bench_grams)]
        pool += more
    if len(usable) < need:
        raise ValueError(f"not enough arithmetic problems free of benchmark overlap ({len(usable)} < {need})")
    arith_dropped = len(pool) - len(usable)
    dealer = _Dealer(usable)

    # --- clean documents; each has its own random stream, so one document never shifts another
    docs: list[dict] = []
    seen: set[str] = set()
    for i, genre in enumerate(genres):
        r = _rng("demo", seed, "doc", i)
        if genre == "arith":
            text, topic = _worksheet(r, dealer.deal(sizes.pop())), "worksheet"
        else:
            make = story if genre == "story" else explanation
            for _attempt in range(100):
                text, topic = make(r)
                if text not in seen:
                    break
            else:
                raise RuntimeError(f"could not make a distinct {genre} document (seed={seed}, index={i})")
        seen.add(text)
        docs.append({"text": text, "planted": {"kind": "clean", "genre": genre, "topic": topic}})
    clean_idx = list(range(len(docs)))

    # --- boilerplate lines appended to some clean documents
    # Lines are dealt round-robin (every third document gets a second one), so each line is about equally frequent
    # and far above any repeated content line even in a small corpus.
    nb = len(BOILERPLATE)
    for k, i in enumerate(sorted(rng.sample(clean_idx, min(counts["boilerplate"], len(clean_idx))))):
        picks = [k % nb] + ([(k + nb // 2) % nb] if k % 3 == 2 else [])
        docs[i]["text"] += "\n\n" + "\n".join(BOILERPLATE[b] for b in picks)
        docs[i]["planted"]["boilerplate"] = picks
    n_boiler_docs = sum("boilerplate" in d["planted"] for d in docs)

    # --- leaks: a benchmark item copied verbatim into an otherwise ordinary worksheet
    leaked = rng.sample(bench, counts["leak"])
    for k, item in enumerate(leaked):
        r = _rng("demo", seed, "leak", k)
        probs = dealer.deal(sizes.pop() - 1, first=item)
        probs.insert(r.randrange(len(probs) + 1), item)
        docs.append(
            {
                "text": _worksheet(r, probs),
                "planted": {"kind": "leak", "genre": "arith", "topic": "worksheet", "leaks": [item.key]},
            }
        )

    # --- exact duplicates: extra copies of some clean documents (some copied more than once)
    n_groups = max(1, round(counts["exact_dup"] / 1.5)) if counts["exact_dup"] else 0
    dup_src = rng.sample(clean_idx, n_groups)
    for k in range(counts["exact_dup"]):
        src = dup_src[k] if k < n_groups else rng.choice(dup_src)
        docs.append({"text": docs[src]["text"], "planted": {**docs[src]["planted"], "kind": "exact_dup", "of": src}})

    # --- near duplicates of long clean prose documents (never of an exact-dup source, to keep clusters apart)
    taken = set(dup_src)
    cands = [
        i
        for i in clean_idx
        if i not in taken and docs[i]["planted"]["genre"] != "arith" and len(docs[i]["text"].split()) >= 100
    ]
    rng.shuffle(cands)
    near_j: list[float] = []
    for i in cands:
        if len(near_j) == counts["near_dup"]:
            break
        made = near_duplicate(_rng("demo", seed, "near", i), docs[i]["text"], lo=NEAR_DUP_BAND[0], hi=NEAR_DUP_BAND[1])
        if made is None or made[0] in seen:
            continue
        text, j = made
        seen.add(text)
        near_j.append(j)
        docs.append(
            {"text": text, "planted": {**docs[i]["planted"], "kind": "near_dup", "of": i, "jaccard5": round(j, 4)}}
        )
    if len(near_j) < counts["near_dup"]:
        raise RuntimeError(f"only {len(near_j)} of {counts['near_dup']} near duplicates could be made")

    # --- junk, cycling through the kinds; every junk text is distinct so only the quality gates can remove it
    junk_counts: Counter[str] = Counter()
    for k in range(counts["junk"]):
        kind = JUNK_KINDS[k % len(JUNK_KINDS)]
        r = _rng("demo", seed, "junk", k)
        text = junk(r, kind)
        while text in seen:
            text = junk(r, kind)
        seen.add(text)
        junk_counts[kind] += 1
        docs.append({"text": text, "planted": {"kind": "junk", "genre": "junk", "topic": kind}})

    # --- shuffle, then give ids by final position and point the duplicates at their sources' ids
    order = list(range(len(docs)))
    rng.shuffle(order)
    ids = {old: f"demo-{new:06d}" for new, old in enumerate(order)}
    records = []
    for old in order:
        planted = dict(docs[old]["planted"])
        if "of" in planted:
            planted["of"] = ids[planted["of"]]
        records.append({"id": ids[old], "text": docs[old]["text"], "planted": planted})

    line_counts = Counter(line for r in records for line in r["text"].split("\n") if line in BOILERPLATE)
    # For segment dedup: how many documents share the most repeated line of real content (>= 20 characters, as
    # normalised by segment dedup) -- a `min_docs` above this and at most min(boilerplate counts) removes exactly the
    # planted boilerplate.
    content_lines: Counter[str] = Counter()
    for r in records:
        if r["planted"]["kind"] != "junk":
            for line in {_norm_line(x) for x in r["text"].split("\n") if x not in BOILERPLATE}:
                if len(line) >= 20:
                    content_lines[line] += 1
    genre_counts = Counter(d["planted"]["genre"] for d in docs if d["planted"]["kind"] == "clean")
    manifest = {
        "schema": SCHEMA,
        "seed": seed,
        "n_docs": len(records),
        "text_bytes": sum(len(r["text"].encode()) for r in records),
        "clean_docs": n_clean,
        "genres": dict(sorted(genre_counts.items())),
        "junk": {k: junk_counts[k] for k in JUNK_KINDS},
        "junk_total": counts["junk"],
        "exact_duplicates": counts["exact_dup"],
        "exact_duplicate_sources": n_groups,
        "near_duplicates": counts["near_dup"],
        "near_duplicate_jaccard5": {
            "min": round(min(near_j), 4),
            "max": round(max(near_j), 4),
            "mean": round(sum(near_j) / len(near_j), 4),
        }
        if near_j
        else None,
        "boilerplate_docs": n_boiler_docs,
        "boilerplate_lines": {line: line_counts[line] for line in BOILERPLATE},
        "max_docs_sharing_a_content_line": max(content_lines.values(), default=0),
        "leak_docs": counts["leak"],
        "leaked_items": sorted(p.key for p in leaked),
        "benchmark": {
            "source": "ledgerlm.tasks.arith",
            "split": "heldout",
            "n": benchmark_n,
            "seed": benchmark_seed,
            "options": ARITH_OPTIONS,
            "format": "Question: <question>\nAnswer: <solution>",
            "ngram": leak_ngram,
        },
        "arith_train_problems": need - counts["leak"],  # each leak sheet holds one benchmark item in place of one
        "arith_train_dropped_for_benchmark_overlap": arith_dropped,
        # what a perfect curation keeps: every clean document (boilerplate lines stripped), one of each duplicate set
        "expected_kept_docs": n_clean,
    }
    return records, manifest


def write_demo_corpus(
    out_dir: str | Path, seed: int = 0, n_docs: int = 6000, *, docs_per_file: int = 1000, **kw
) -> dict:
    """Write the corpus as `demo-NNN.jsonl` shards plus `manifest.json` into `out_dir`; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records, manifest = generate_demo_corpus(seed, n_docs, **kw)
    files = []
    for k in range(0, len(records), docs_per_file):
        path = out / f"demo-{k // docs_per_file:03d}.jsonl"
        n = write_jsonl(path, records[k : k + docs_per_file])
        files.append({"path": path.name, "docs": n, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest["files"] = files
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


# ============================================================================ post-training data for the demo

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
) -> list[dict]:
    """Chat data for the demo's SFT stage: {"messages": [user, assistant], "kind": ...}.

    Mixes arithmetic (the train split, minus anything sharing a `leak_ngram`-gram with the benchmark), how-it-works
    questions, short-story requests and animal/number questions, so the chat model keeps the base model's range.
    """
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
        r = _rng("demo-sft", seed, i)
        u = r.random()
        if u < 0.4 and k < len(pool):
            p, k = pool[k], k + 1
            user, reply, kind = p.question, p.solution, "arith"
        elif u < 0.65:
            topic = r.choice(sorted(TOPICS))
            q = TOPICS[topic][1]
            user = r.choice([q, f"Can you explain {TOPICS[topic][0]}?", f"{q} Please explain it simply."])
            reply, kind = explanation_answer(r, topic), "explanation"
        elif u < 0.85:
            text, plot, hero, town = _story(r, title=False)
            who = f"a {hero.animal} named {hero.name}" if hero.animal else f"a child named {hero.name}"
            user = r.choice(
                [
                    f"Tell me a short story {_STORY_ASKS[plot]}, with {who}.",
                    f"Write a story for children about {who} from {town}, {_STORY_ASKS[plot]}.",
                ]
            )
            reply, kind = text, "story"
        elif u < 0.95:
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
        r = _rng("demo-pref", seed, i)
        topic = r.choice(topics)
        chosen = explanation_answer(r, topic)
        if r.random() < 0.5:
            rejected, kind = explanation_answer(r, r.choice([t for t in topics if t != topic])), "off_topic"
        else:  # a reply that says almost nothing: its first sentence only
            rejected, kind = chosen.split(". ", 1)[0].rstrip(".") + ".", "unhelpful"
        out.append({"prompt": TOPICS[topic][1], "chosen": chosen, "rejected": rejected, "kind": kind})
    return out


def write_benchmark(path: str | Path, n: int = BENCHMARK_N, seed: int = BENCHMARK_SEED) -> int:
    """The held-out benchmark as GSM8K-format JSONL ({"question", "answer"}): usable as a decontamination file
    (`curate.decontam.files: ["arith=PATH"]`) and as a GSM8K-format eval/RL task file."""
    return write_jsonl(path, (p.record() for p in benchmark(n, seed)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ledgerlm.data.demo_corpus", description=__doc__.split("\n")[0])
    ap.add_argument(
        "out_dir",
        type=Path,
        help="writes corpus/ (JSONL shards + manifest.json), sft.jsonl, preference.jsonl and benchmark.jsonl here",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-docs", type=int, default=6000)
    ap.add_argument("--n-sft", type=int, default=2000)
    ap.add_argument("--n-pref", type=int, default=1000)
    ap.add_argument("--benchmark-n", type=int, default=BENCHMARK_N)
    args = ap.parse_args(argv)
    m = write_demo_corpus(args.out_dir / "corpus", args.seed, args.n_docs, benchmark_n=args.benchmark_n)
    write_jsonl(args.out_dir / "sft.jsonl", demo_sft_conversations(args.seed, args.n_sft, benchmark_n=args.benchmark_n))
    write_jsonl(args.out_dir / "preference.jsonl", demo_preference_pairs(args.seed, args.n_pref))
    write_benchmark(args.out_dir / "benchmark.jsonl", args.benchmark_n)
    keys = (
        "n_docs",
        "text_bytes",
        "clean_docs",
        "junk_total",
        "exact_duplicates",
        "near_duplicates",
        "boilerplate_docs",
        "leak_docs",
    )
    print(json.dumps({k: m[k] for k in keys}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
