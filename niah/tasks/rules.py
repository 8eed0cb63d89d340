"""Named rules a task row picks: needle generators, depth placements, answer budgets and
haystack sources. Adding a task that needs a new behaviour is one function registered here by
name (scoring rules live in niah.scoring.SCORING_RULES) plus its data row.

- generator(spec, *, n, seed, value_key, kind, keys, reject) -> (needles, fields[, trial]):
  needles as (key, value, target) in placement order, the question's placeholders ({name} ->
  text) and optionally TaskTrial fields (``answers``, ``words``); a field ``needle`` is the
  trial's own needle template (a task that draws it per trial).
  GENERATOR_FIELDS says which placeholders a generator fills, so any other is refused.
- placement(depth, n) -> n requested depths, the first the trial's requested depth's needle.
- answer budget(spec, *, n, value_kind) -> default --max-tokens.
- haystack source(config, *, spec) -> the haystack a PromptBuilder reads (``run``: the run's
  --haystack as given, ``needles`` as a niah.haystack_needles.NeedleSource of the task's own
  needle form; a task that brings its own text, e.g. a word list, registers another).
- param checks (spec, *, n, shortest) -> None: one line for task knobs (``params``, merged with
  --task-param) that cannot work in the shortest context, found before the model loads.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..config import DEFAULT_MAX_TOKENS
from ..errors import NiahError
from ..haystack_needles import NEEDLES, NeedleSource
from ..values import draw_value
from .chains import chain_needles, check_chains, names_budget
from .nonliteral import nonliteral_needles
from .spec import TaskSpec
from .trial import join_keys
from .wordlists import check_words, word_needles, words_budget

BAND = 0.5
ANSWER_TOKENS_PER_VALUE = {"number": 12, "uuid": 40, "words": 8}  # generous, per value asked


def keyed_needles(
    spec: TaskSpec,
    *,
    n: int,
    seed: int,
    value_key: str,
    kind: str,
    keys: tuple[str, ...],
    reject: Callable[[str], bool] | None,
):
    """Generator ``keyed``: the spec's keys drawn from the key vocabulary, then its values
    (distinct, never rejected), needle i holding key i // values-per-key. The first value is
    drawn with `value_key` itself, so a single-needle trial keeps the value it had before
    tasks existed unless the haystack holds it."""
    n_keys, per_key, n_asked = spec.counts(n)
    rng = random.Random(f"niah-keys-{seed}-{value_key}")
    chosen = rng.sample(list(keys), n_keys) if n_keys else []
    values: list[str] = []
    for i in range(max(n_keys, 1) * per_key):
        values.append(
            draw_value(
                kind=kind,
                seed=seed,
                key=value_key if i == 0 else f"{value_key}-n{i}",
                reject=lambda v: v in values or (reject is not None and reject(v)),
            )
        )
    needles = [
        (chosen[i // per_key] if n_keys else None, v, not n_keys or i // per_key < n_asked)
        for i, v in enumerate(values)
    ]
    asked = chosen[:n_asked]
    return needles, ({"keys": join_keys(asked), "key": asked[0]} if asked else {})


def band_depths(depth: float, n: int) -> list[float]:
    """Placement ``band``: n depths evenly over a band of BAND centred on `depth`, shifted to
    stay inside [0, 1] (depth 0: 0..0.5, depth 0.5: 0.25..0.75, depth 1: 0.5..1)."""
    if n == 1:
        return [depth]
    start = min(max(depth - BAND / 2, 0.0), 1.0 - BAND)
    return [round(start + BAND * i / (n - 1), 6) for i in range(n)]


def spread_depths(depth: float, n: int) -> list[float]:
    """Placement ``spread``: the first needle at `depth`, the others every 1/n of the context
    from it, wrapping past the end."""
    return [depth] + [round((depth + (j + 1) / n) % 1.0, 6) for j in range(n - 1)]


def per_value_budget(spec: TaskSpec, *, n: int, value_kind: str) -> int:
    """Budget ``per-value``: DEFAULT_MAX_TOKENS, or more where the values a trial asks for need
    it (16 + ANSWER_TOKENS_PER_VALUE each: a UUID alone; a cut-off answer scores as wrong)."""
    asked = spec.targets(n)
    return max(DEFAULT_MAX_TOKENS, 16 + asked * ANSWER_TOKENS_PER_VALUE.get(value_kind, 16))


def list_depths(depth: float, n: int) -> list[float]:
    """Placement ``list`` (word-list tasks): no needle is placed, the list is the haystack; each
    answer word records where it first occurs, and the requested depth only picks the sample."""
    return [depth] * n


GENERATORS: dict[str, Callable] = {
    "keyed": keyed_needles,
    "chains": chain_needles,
    "common-words": word_needles,
    "frequent-words": word_needles,
}
GENERATOR_FIELDS: dict[str, Callable[[TaskSpec], tuple[str, ...]]] = {
    "keyed": lambda spec: ("key", "keys") if spec.keyed else (),
    "chains": lambda spec: ("value",),
    "common-words": lambda spec: ("top",),
    "frequent-words": lambda spec: ("top",),
}
PLACEMENTS: dict[str, Callable[[float, int], list[float]]] = {
    "band": band_depths,
    "spread": spread_depths,
    "list": list_depths,
}
ANSWER_BUDGETS: dict[str, Callable[..., int]] = {
    "per-value": per_value_budget,
    "per-name": names_budget,
    "per-word": words_budget,
}


def check_haystack(spec: TaskSpec, haystack: str) -> None:
    """--haystack needles is made of needles of a keyed task's form: refused for other tasks."""
    if haystack == NEEDLES and not spec.keyed:
        raise NiahError(
            f"--haystack needles fills the haystack with needles of a keyed task's "
            f"form, and --task {spec.task} has no keys: use --task multi-key, "
            "multi-value or multi-query, or another --haystack"
        )


def run_haystack(config, *, spec: TaskSpec) -> str | NeedleSource:
    """Source ``run``: the run's --haystack as given; ``needles``: distractor needles of the
    run's needle template, value kind and keys (niah.haystack_needles)."""
    if config.haystack != NEEDLES:
        return config.haystack
    check_haystack(spec, config.haystack)
    return NeedleSource(template=config.needle, value_kind=config.value_kind, avoid=config.keys)


HAYSTACK_SOURCES: dict[str, Callable[..., str | NeedleSource]] = {"run": run_haystack}
PARAM_CHECKS: dict[str, Callable[..., None]] = {
    "chains": check_chains,
    "common-words": check_words,
    "frequent-words": check_words,
}

# non-literal needles (niah.tasks.nonliteral): a drawn pair fills {question} and the needle
GENERATORS["nonliteral"] = nonliteral_needles
GENERATOR_FIELDS["nonliteral"] = lambda spec: ("question",)
