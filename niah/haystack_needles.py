"""``--haystack needles``: a haystack made entirely of distractor needles (RULER's MK-NIAH with
a needle haystack), for the keyed tasks; docs/method.md (Prompts, Tasks) states the rule.

Every haystack sentence is the run's own needle template filled with a haystack key and a value
of the run's value kind, drawn from the seed. Haystack keys are a modifier and a thing
(``oak locker``) and never equal, hold or sit inside a key the trials draw from (the run's key
vocabulary), so no haystack sentence answers a question. Word-pair values use only the first
half of the adjectives, so a trial (whose values are redrawn while they occur in the haystack,
`niah.haystack.PromptBuilder.value_occurs`) always finds free ones; 7-digit numbers and UUIDs
are drawn from their whole range.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import NiahError
from .values import VALUE_ADJECTIVES, VALUE_ANIMALS

NEEDLES = "needles"  # the --haystack name
MODIFIERS = (
    "oak",
    "iron",
    "marble",
    "cedar",
    "glass",
    "stone",
    "brick",
    "steel",
    "pine",
    "walnut",
    "granite",
    "slate",
    "maple",
    "birch",
    "tin",
    "clay",
    "velvet",
    "canvas",
    "chrome",
    "wicker",
    "bamboo",
    "cobalt",
    "teak",
    "linen",
)
THINGS = (
    "door",
    "gate",
    "locker",
    "cabinet",
    "vault",
    "shed",
    "cellar",
    "chest",
    "hatch",
    "drawer",
    "wardrobe",
    "safe",
    "cage",
    "box",
    "trunk",
    "attic",
    "garage",
    "barn",
    "closet",
    "pantry",
    "crate",
    "kiosk",
    "tower",
    "mailbox",
)
HAYSTACK_ADJECTIVES = VALUE_ADJECTIVES[: len(VALUE_ADJECTIVES) // 2]  # word pairs' first words


def _overlaps(a: str, b: str) -> bool:
    """Whether two keys are equal or one holds the other as whole words (case-insensitive)."""
    a, b = f" {' '.join(a.lower().split())} ", f" {' '.join(b.lower().split())} "
    return a in b or b in a


def haystack_keys(avoid: tuple[str, ...]) -> tuple[str, ...]:
    """Every modifier-thing key that overlaps no key of `avoid` (the trials' vocabulary)."""
    keys = tuple(
        f"{m} {t}"
        for m in MODIFIERS
        for t in THINGS
        if not any(_overlaps(f"{m} {t}", a) for a in avoid)
    )
    if not keys:
        raise NiahError(
            "every haystack key of --haystack needles overlaps a key of keys.txt: "
            "use other keys or another --haystack"
        )
    return keys


def haystack_value(rng: random.Random, kind: str) -> str:
    """One haystack value of `kind` (word pairs from HAYSTACK_ADJECTIVES only: module doc)."""
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if kind == "words":
        return f"{rng.choice(HAYSTACK_ADJECTIVES)} {rng.choice(VALUE_ANIMALS)}"
    raise NiahError(f"unknown value kind {kind!r}: use number, uuid or words")


@dataclass(frozen=True)
class NeedleSource:
    """What a needle haystack is made of: the run's needle template (with {key} and {value}),
    its value kind and the keys its trials draw from (which the haystack never uses)."""

    template: str
    value_kind: str
    avoid: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return NEEDLES

    def sentences(self, *, seed: int = 0) -> Iterator[str]:
        """An endless, seeded stream of needle sentences with haystack keys and values."""
        keys = haystack_keys(self.avoid)
        rng = random.Random(f"niah-needle-haystack-{seed}")
        while True:
            value = haystack_value(rng, self.value_kind)
            yield self.template.format(key=rng.choice(keys), value=value)
