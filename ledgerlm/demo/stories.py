"""Short stories for the demo corpus: a hero, a friend, a town and one of six plots, told with varied sentence
templates. A plot returns its paragraphs as lists of sentences."""

from __future__ import annotations

import random

from ledgerlm.demo.words import (
    ADJS,
    ANIMALS,
    BUILDS,
    DAYS,
    HELPERS,
    LESSONS,
    NAMES,
    OBJECTS,
    OBSTACLES,
    PLACES,
    PRONOUNS,
    SKILLS,
    TIMES,
    TOWNS,
    TRAITS,
    an,
    cap,
)


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


def _story_lost(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[list[str]]:
    obj = f"{rng.choice(ADJS)} {rng.choice(OBJECTS)}"
    places = rng.sample(PLACES, 4)
    (p1, pr1), (p2, pr2), (p3, pr3), (p4, pr4) = places
    h, f = hero, friend
    para1 = [
        _opening(rng, h, town),
        rng.choice(
            [
                f"{h.name} had a {obj} that {h.subj} carried everywhere.",
                f"{cap(h.poss)} favorite thing in the world was a {obj}.",
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
                f"{cap(h.subj)} started {pr1} {p1}, because that was where {h.subj} had played the day before.",
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
    return [para1, para2, *_lost_found(rng, h, f, obj, p4, pr4)]


def _lost_found(rng: random.Random, h: _Who, f: _Who, obj: str, p4: str, pr4: str) -> list[list[str]]:
    """The lost-object story's last two paragraphs: a friend helps, the object is found (rng draws in story order)."""
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
    return [para3, para4]


def _story_journey(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[list[str]]:
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
    return [para1, para2, para3, para4]


def _story_skill(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[list[str]]:
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
    return [para1, para2, para3]


def _story_share(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[list[str]]:
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
                f"{cap(an(rng.choice(ANIMALS)))} watched them argue and then ran off.",
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
    return [para1, para2, para3]


def _story_storm(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[list[str]]:
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
                f"{h.name} did not stop to think. {cap(h.subj)} wrapped {h.poss} coat around it and carried it home.",
                f"{cap(h.subj)} stayed to help, even though {h.subj} was getting wet.",
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
    return [para1, para2, para3]


def _story_build(rng: random.Random, hero: _Who, friend: _Who, town: str) -> list[list[str]]:
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
                f"By {rng.choice(DAYS)}, the new {noun} {result}.",
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
    return [para1, para2, para3]


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


def story_and_cast(rng: random.Random, title: bool = True) -> tuple[str, str, _Who, str]:
    plot = rng.choice(sorted(_PLOTS))
    hero = _Who(rng)
    friend = _Who(rng, avoid={hero.name})
    town = rng.choice(TOWNS)
    paras = [" ".join(sentences) for sentences in _PLOTS[plot](rng, hero, friend, town)]
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
    text, plot, _hero, _town = story_and_cast(rng)
    return text, plot
