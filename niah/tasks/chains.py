"""Variable tracking (RULER's VT): chains of assignments ``VAR QKVZA = 52941``, ``VAR PLMOT =
QKVZA``, ... hidden in the haystack; the question gives the value and asks for every variable
that holds it. docs/method.md (Tasks) states the task, its knobs and its scoring.

--needles is the number of chains (the first is the target, the others distractor chains with
values of their own); the row's ``params.hops`` is how many assignments follow the first one in
each chain. Links are listed hop by hop (every chain's first link, then every chain's second...),
chains in a seeded order within a hop, so the ``band`` placement puts each chain's links in order.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from ..config import DEFAULT_MAX_TOKENS
from ..errors import NiahError
from ..values import draw_value
from .spec import TaskSpec

DEFAULT_HOPS = 4
NAME_LETTERS = 5
TOKENS_PER_NAME = 6  # generous: five capitals and a separator
MIN_LINK_TOKENS = 4  # fewest tokens an assignment can take: VAR, name, =, what it holds


def hops(spec: TaskSpec) -> int:
    return int(spec.param("hops", DEFAULT_HOPS))


def _names(rng: random.Random, count: int, reject: Callable[[str], bool] | None) -> list[str]:
    """`count` distinct names of NAME_LETTERS capitals, none that the haystack holds."""
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(NAME_LETTERS))
        if name not in names and name != "VAR" and not (reject and reject(name)):
            names.append(name)
    return names


def chain_needles(
    spec: TaskSpec,
    *,
    n: int,
    seed: int,
    value_key: str,
    kind: str,
    keys: tuple[str, ...],
    reject: Callable[[str], bool] | None,
):
    """Generator ``chains``: n chains of hops(spec) + 1 links each, as (name, holds, target)
    hop by hop; the question's {value} is the target chain's value; the answer is its names."""
    links = hops(spec) + 1
    rng = random.Random(f"niah-chains-{seed}-{value_key}")
    names = _names(rng, n * links, reject)
    values: list[str] = []
    for c in range(n):
        values.append(
            draw_value(
                kind=kind,
                seed=seed,
                key=value_key if c == 0 else f"{value_key}-c{c}",
                reject=lambda v: v in values or (reject is not None and reject(v)),
            )
        )
    chains = [names[c * links : (c + 1) * links] for c in range(n)]
    needles = []
    for h in range(links):
        order = list(range(n))
        rng.shuffle(order)
        for c in order:
            holds = values[c] if h == 0 else chains[c][h - 1]
            needles.append((chains[c][h], holds, c == 0))
    return needles, {"value": values[0]}, {"answers": tuple(chains[0])}


def names_budget(spec: TaskSpec, *, n: int, value_kind: str) -> int:
    """Budget ``per-name``: room for every name of the target chain (DEFAULT_MAX_TOKENS at least)."""
    return max(DEFAULT_MAX_TOKENS, 16 + (hops(spec) + 1) * TOKENS_PER_NAME)


def check_chains(spec: TaskSpec, *, n: int, shortest: int) -> None:
    """Param check ``chains``: n chains of hops + 1 assignments must fit the shortest context
    (MIN_LINK_TOKENS each, before the tokenizer says more)."""
    links = n * (hops(spec) + 1)
    if links * MIN_LINK_TOKENS > shortest:
        raise NiahError(
            f"--task {spec.task} with {n} chains of {hops(spec)} hops hides {links} "
            f"assignments, {links * MIN_LINK_TOKENS} tokens at least, more than the "
            f"shortest --context {shortest} holds: use fewer hops or --needles, or a "
            "longer --context"
        )
