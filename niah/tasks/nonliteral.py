"""Non-literal needles (``--task non-literal``, NoLiMa's idea on data written for niah): a needle
ties a character to a place or thing by a fact, and the question names only what the fact
implies, so the model must make one hop of world knowledge ("Kiyomizu-dera is in Kyoto") to
find the needle: needle and question share no content word.

Pairs are rows of niah/datasets/nonliteral.jsonl (needle template with a ``{name}`` slot,
question, the link stated, and its key words: the needle's cue and the question's target);
characters come from names.txt. A trial's pair and name are drawn from the seed and the cell's
depth and sample, not its context, so every context of a run asks the same pairs and the
short-context cells give each pair's base score (niah.report.stats normalises by them). A pair
whose key words occur in the haystack, or a name that occurs there, is redrawn: no other
sentence can answer the question.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import format_context
from ..datasets import DATASETS, character_names
from ..errors import NiahError
from .spec import TaskSpec

PAIRS_FILE = DATASETS / "nonliteral.jsonl"
BASE_CONTEXT = 2048  # a run of this task asks at least one context this short (base score)
STOP_WORDS = frozenset(
    "a an the and or but of in on at to for from by with into onto over under up down out "
    "is are was were be been being has have had do does did can could will would "
    "which who whom whose what where when this that these those it its s "
    "he she his her him they them their i you we our my your one some every all no not".split()
)
_CONTEXT_PREFIX = re.compile(r"^c\d+-")


@dataclass(frozen=True)
class LinkPair:
    """One non-literal needle: the fact about {name}, the question, and the one-hop link."""

    needle: str  # template with a {name} slot
    question: str
    link: str  # the world-knowledge hop, stated ("Kiyomizu-dera is in Kyoto")
    keywords: tuple[str, ...]  # the link's key words: none may occur in the haystack


def content_words(text: str) -> set[str]:
    """Lower-case words of a text, {name} slots and STOP_WORDS dropped."""
    return set(re.findall(r"[a-z]+", text.replace("{name}", " ").lower())) - STOP_WORDS


def load_pairs(path: Path | None = None) -> tuple[LinkPair, ...]:
    """The pairs of nonliteral.jsonl; a row that cannot work is one line naming it."""
    path = Path(path) if path else PAIRS_FILE
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = LinkPair(
                needle=row["needle"],
                question=row["question"],
                link=row["link"],
                keywords=tuple(row["keywords"]),
            )
        except (ValueError, KeyError, TypeError):
            pair = None
        if pair is None or "{name}" not in pair.needle or not pair.keywords:
            raise NiahError(
                f"{path}: line {n} is not a non-literal pair: give JSON with needle "
                "(with {name}), question, link and keywords"
            )
        pairs.append(pair)
    return tuple(pairs)


def _pick(options: list, rejected, what: str):
    for option in options:
        if not rejected(option):
            return option
    raise NiahError(
        f"the haystack holds {what}, so its question could be answered by another "
        "sentence: use --haystack prose or a text without them"
    )


def nonliteral_needles(
    spec: TaskSpec, *, n: int, seed: int, value_key: str, kind: str, keys: tuple[str, ...], reject
):
    """Generator ``nonliteral``: one needle, a pair and a character name drawn from the seed
    and the cell (its context left out, see module doc), redrawn while the haystack holds the
    pair's key words or the name. Fills {question} and hands the trial its own needle
    template (field ``needle``, the pair's with {value} for the name)."""
    rng = random.Random(f"niah-nonliteral-{seed}-{_CONTEXT_PREFIX.sub('', value_key)}")
    pairs, names = load_pairs(), character_names()
    ok = (lambda text: not reject(text)) if reject is not None else (lambda text: True)
    pair = _pick(
        rng.sample(pairs, len(pairs)),
        lambda p: not all(ok(k) for k in p.keywords),
        "the key words of every link",
    )
    name = _pick(rng.sample(names, len(names)), lambda v: not ok(v), "every character name")
    return [(None, name, True)], {
        "question": pair.question,
        "needle": pair.needle.replace("{name}", "{value}"),
    }


def check_contexts(*, task: str, contexts, spec: TaskSpec) -> None:
    """A task scored against its short-context base score needs a context <= BASE_CONTEXT."""
    if spec.generator == "nonliteral" and min(contexts) > BASE_CONTEXT:
        raise NiahError(
            f"--task {task} needs a context of 2K or less in --context for its "
            f"base score (scores are normalised by it): add one, e.g. --context "
            f"1k,{','.join(format_context(c) for c in contexts)}"
        )
