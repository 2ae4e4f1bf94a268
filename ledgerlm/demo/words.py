"""Word lists (ours) and the small helpers every demo text generator shares."""

from __future__ import annotations


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def an(word: str) -> str:
    """'an owl', 'a fox'."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _pairs(text: str, sep: str, between: str | None = None) -> list[tuple[str, ...]]:
    """"Ada:she Ben:he" -> [("Ada", "she"), ("Ben", "he")]."""
    return [tuple(x.split(sep)) for x in text.split(between)]


NAMES = _pairs(  # (name, pronoun)
    "Ada:she Ben:he Cora:she Dev:he Elsa:she Finn:he Gia:she Hugo:he Iris:she Jonah:he Kai:he Lena:she "
    "Milo:he Nora:she Omar:he Pia:she Quinn:he Rosa:she Sami:he Tara:she Umar:he Vera:she Wes:he Yara:she "
    "Zane:he Ivy:she Leo:he Maya:she Noah:he Ruby:she Theo:he Anya:she Eli:he Hana:she Ravi:he Sofia:she "
    "Tomas:he Uma:she Wren:she Felix:he Greta:she Jasper:he Kira:she Luca:he Mira:she Nico:he Olive:she "
    "Pablo:he Rhea:she Silas:he",
    ":",
)
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
PLACES = _pairs(  # (place, preposition)
    "the harbor@at, the market@at, the forest@in, the library@in, the garden@in, the orchard@in, "
    "the hill above the village@on, the old bridge@near, the bakery@in, the school yard@in, the meadow@in, "
    "the beach@on, the train station@at, the barn@in, the lighthouse@near, the pond@by, the museum@in, "
    "the kitchen@in, the attic@in, the riverbank@on",
    "@",
    ", ",
)
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
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
