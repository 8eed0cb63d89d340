"""A seeded generator of varied, natural English sentences for haystacks.

Written for this project (no texts copied from elsewhere): small hand-made vocabularies and
sentence patterns combined by a seeded `random.Random`, so the same seed always gives the same
text, of any length. The output has no digits, so a numeric needle is the only number in the
prompt.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

_PEOPLE = [
    "the old fisherman",
    "a young painter",
    "the baker on the corner",
    "my grandmother",
    "the village teacher",
    "a tired traveller",
    "the night guard",
    "our neighbour",
    "the ship's cook",
    "a curious child",
    "the librarian",
    "the gardener",
    "a retired sailor",
    "the mayor",
    "a quiet student",
    "the blacksmith",
    "the shepherd",
    "a visiting poet",
    "the carpenter's daughter",
    "the innkeeper",
    "a wandering musician",
    "the potter",
]
_PLACES = [
    "the harbour",
    "the market square",
    "the hill above the town",
    "the old mill",
    "the river bank",
    "the railway station",
    "the edge of the forest",
    "the narrow lane",
    "the lighthouse",
    "the orchard",
    "the school yard",
    "the bridge",
    "the chapel",
    "the valley",
    "the bakery",
    "the garden wall",
    "the frozen lake",
    "the stone quarry",
]
_TIMES = [
    "every morning",
    "late in the evening",
    "at the first light of dawn",
    "before the rain came",
    "during the long winter",
    "in early spring",
    "after the harvest",
    "on quiet Sundays",
    "when the bells rang",
    "long before the war",
    "at the end of summer",
    "most afternoons",
]
_VERBS_T = [
    "carried",
    "mended",
    "painted",
    "found",
    "sold",
    "counted",
    "watched",
    "collected",
    "polished",
    "described",
    "remembered",
    "borrowed",
    "repaired",
    "admired",
    "wrapped",
    "hid",
    "studied",
    "planted",
    "followed",
    "cleaned",
]
_OBJECTS = [
    "a basket of apples",
    "the broken lantern",
    "an old map",
    "a bundle of letters",
    "the copper kettle",
    "a wooden chair",
    "a pair of boots",
    "the heavy nets",
    "a jar of honey",
    "the faded curtains",
    "a small brass bell",
    "the garden gate",
    "a stack of books",
    "the blue umbrella",
    "a loaf of rye bread",
    "the clock tower",
    "a woollen scarf",
    "the rusty bicycle",
    "a box of candles",
    "the kitchen table",
]
_VERBS_I = [
    "walked slowly",
    "waited patiently",
    "sang quietly",
    "laughed",
    "rested",
    "wandered for hours",
    "worked without a break",
    "listened carefully",
    "stood still",
    "spoke softly",
    "hurried along",
    "sat in silence",
]
_ADJ = [
    "calm",
    "grey",
    "bright",
    "crowded",
    "peaceful",
    "cold",
    "warm",
    "noisy",
    "empty",
    "golden",
    "misty",
    "windy",
    "gentle",
    "dusty",
    "green",
    "quiet",
]
_NOUNS = [
    "sky",
    "water",
    "road",
    "field",
    "street",
    "sea",
    "garden",
    "room",
    "forest",
    "town",
    "meadow",
    "shore",
    "kitchen",
    "square",
]
_REASONS = [
    "because nobody else would",
    "since the weather had turned",
    "as the light was fading",
    "while the kettle boiled",
    "although it was late",
    "so that the children could see",
    "because it reminded them of home",
    "before anyone noticed",
    "as was the custom",
]
_THOUGHTS = [
    "Nobody could remember when it had last happened.",
    "It was the kind of day people talk about for years.",
    "Some said it would rain, but the clouds drifted away.",
    "The smell of fresh bread filled the air.",
    "A dog barked somewhere far away.",
    "Everyone agreed that it had been worth the trouble.",
    "The wind carried the sound of distant voices.",
    "Little by little, the town grew quiet again.",
    "There was no hurry, and nobody pretended otherwise.",
    "Old habits, it seemed, were hard to break.",
]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _sentence(rng: random.Random) -> str:
    p = rng.randrange(8)
    who, where, when = rng.choice(_PEOPLE), rng.choice(_PLACES), rng.choice(_TIMES)
    if p == 0:
        return f"{_cap(who)} {rng.choice(_VERBS_T)} {rng.choice(_OBJECTS)} near {where} {when}."
    if p == 1:
        return f"{_cap(when)}, {who} {rng.choice(_VERBS_I)} by {where}."
    if p == 2:
        return (
            f"The {rng.choice(_NOUNS)} was {rng.choice(_ADJ)} and the {rng.choice(_NOUNS)} "
            f"looked {rng.choice(_ADJ)} {when}."
        )
    if p == 3:
        return f"{_cap(who)} {rng.choice(_VERBS_T)} {rng.choice(_OBJECTS)} {rng.choice(_REASONS)}."
    if p == 4:
        return rng.choice(_THOUGHTS)
    if p == 5:
        return (
            f"At {where}, {who} and {rng.choice(_PEOPLE)} {rng.choice(_VERBS_I)} "
            f"until the {rng.choice(_NOUNS)} turned {rng.choice(_ADJ)}."
        )
    if p == 6:
        return (
            f"It was said that {who} once {rng.choice(_VERBS_T)} {rng.choice(_OBJECTS)} at {where}."
        )
    return (
        f"Whenever the {rng.choice(_NOUNS)} grew {rng.choice(_ADJ)}, {who} "
        f"{rng.choice(_VERBS_I)} {when}."
    )


def prose_sentences(*, seed: int = 0) -> Iterator[str]:
    """An endless, seeded stream of sentences."""
    rng = random.Random(f"niah-prose-{seed}")
    while True:
        yield _sentence(rng)


NOISE_PARAGRAPH = (
    "The river runs past the town. The road goes over the hill. The lamps are lit at night. "
    "Here the story starts again. The town sleeps until morning."
)
