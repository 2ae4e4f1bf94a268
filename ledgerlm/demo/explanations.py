"""Explanations for the demo corpus: how-it-works notes on a topic, animal profiles and number facts (templated
prose), and the same facts as a direct chat answer for the demo's post-training data."""

from __future__ import annotations

import random

from ledgerlm.demo.words import DAYS, HELPERS, NAMES, PLACES, PRONOUNS, TOWNS, an, cap

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
        "title_cap": cap(title),
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
        "day": rng.choice(DAYS),
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
        [f"{cap(many)} live in {home}.", f"Most {many} make their homes in {home}."][v],
        [f"They eat {food}.", f"Their food is mostly {food}."][v],
        [
            f"One thing that makes the {animal} easy to recognize is {feature}.",
            f"Look for {feature}, and you will know it is {an(animal)}.",
        ][v],
        [f"Baby {many} are called {young}.", f"The young of {an(animal)} are known as {young}."][v],
    ]
    rng.shuffle(rest)
    first = [f"The {animal} is {art} {kind}.", f"{cap(many)} are {kind}s."][v]
    return [first] + rest[: rng.randint(3, 4)]


def animal_profile(rng: random.Random) -> tuple[str, str]:
    """Facts about two animals, tied together by someone who saw them somewhere -> (text, "animal|animal")."""
    a, b = rng.sample(sorted(ANIMAL_FACTS), 2)
    (who, g), place, town = rng.choice(NAMES), rng.choice(PLACES), rng.choice(TOWNS)
    poss = PRONOUNS[g][2]
    seen = rng.choice(
        [
            f"On a walk {place[1]} {place[0]} near {town}, {who} saw {an(a)} and, a little later, {an(b)}.",
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
