"""Needle values: 7-digit numbers, UUIDs and adjective-animal word pairs, drawn from a seed.

A value depends only on (kind, seed, key). `draw_value` redraws deterministically (the key with
``#1``, ``#2``... appended) while a predicate says the value is unusable, e.g. because it already
occurs in the haystack, so the same seed always gives the same trial.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from .errors import NiahError

VALUE_KINDS = ("number", "uuid", "words")
MAX_REDRAWS = 1000

VALUE_ADJECTIVES = (
    "amber",
    "brisk",
    "crimson",
    "dusky",
    "eager",
    "frosty",
    "gentle",
    "hollow",
    "ivory",
    "jolly",
    "keen",
    "lunar",
    "mellow",
    "nimble",
    "olive",
    "plucky",
    "quiet",
    "rustic",
    "silver",
    "tawny",
    "umber",
    "vivid",
    "wistful",
    "zesty",
)
VALUE_ANIMALS = (
    "albatross",
    "badger",
    "cheetah",
    "dolphin",
    "ermine",
    "falcon",
    "gazelle",
    "heron",
    "ibex",
    "jackal",
    "koala",
    "lemur",
    "marmot",
    "narwhal",
    "ocelot",
    "pelican",
    "quokka",
    "raven",
    "salamander",
    "tapir",
    "urchin",
    "vulture",
    "walrus",
    "yak",
)


def needle_value(*, kind: str, seed: int, key: str) -> str:
    """The needle value for one trial: the same seed and key give the same value."""
    rng = random.Random(f"niah-value-{seed}-{key}")
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if kind == "words":
        return f"{rng.choice(VALUE_ADJECTIVES)} {rng.choice(VALUE_ANIMALS)}"
    raise NiahError(f"unknown value kind {kind!r}: use number, uuid or words")


def draw_value(
    *, kind: str, seed: int, key: str, reject: Callable[[str], bool] | None = None
) -> str:
    """`needle_value`, redrawn deterministically while `reject(value)` is true."""
    for attempt in range(MAX_REDRAWS):
        value = needle_value(kind=kind, seed=seed, key=key if attempt == 0 else f"{key}#{attempt}")
        if reject is None or not reject(value):
            return value
    raise NiahError(
        f"no {kind} value avoids the haystack after {MAX_REDRAWS} draws: "
        "use another --value-kind or a haystack with fewer such values"
    )


def is_word_pair(text: str) -> bool:
    """True for an "adjective animal" pair of the value vocabulary (lower case, one space)."""
    parts = text.split()
    return len(parts) == 2 and parts[0] in VALUE_ADJECTIVES and parts[1] in VALUE_ANIMALS
