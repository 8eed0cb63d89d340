"""A task specification: one row of niah/datasets/tasks.jsonl as a typed, checked value.

Counts follow RULER's ``num_needle_k/v/q``: ``keys`` (distinct keys; 0 for a task without keys),
``values`` (values per key, or per trial without keys) and ``asked`` (keys the question names;
default all). Each is a whole number or ``"n"``, the run's --needles; at most one of keys and
values is ``"n"``, so --needles is always the number of needles a trial hides. The needles of
keys the question does not name are distractors. The rule fields (``placement``, ``generator``,
``scoring``, ``answer_budget``, ``haystack``) name functions registered in niah.tasks.rules and
niah.scoring.SCORING_RULES. ``params`` holds a rule's own knobs (e.g. ``{"hops": 4}`` for the
``chains`` generator), as a JSON object of whole numbers or numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..values import VALUE_KINDS

N = "n"  # a count that is the run's --needles
DEFAULT_NEEDLES = 4  # --needles when a task's count is "n" and none is given
MAX_NEEDLES = 64
REQUIRED = ("needle", "question", "answer_prefix")
DEFAULTS = {
    "help": "",
    "keys": 0,
    "values": 1,
    "asked": None,
    "placement": "band",
    "generator": "keyed",
    "scoring": "values",
    "answer_budget": "per-value",
    "value_kinds": VALUE_KINDS,
    "haystack": "run",
    "params": {},
}


@dataclass(frozen=True)
class TaskSpec:
    """What a task hides, asks and how it scores (module doc); one data row."""

    task: str
    needle: str
    question: str
    answer_prefix: str
    help: str = ""
    keys: int | str = 0
    values: int | str = 1
    asked: int | str | None = None
    placement: str = "band"
    generator: str = "keyed"
    scoring: str = "values"
    answer_budget: str = "per-value"
    value_kinds: tuple[str, ...] = VALUE_KINDS
    haystack: str = "run"
    params: tuple[tuple[str, int | float], ...] = ()  # a rule's own knobs, sorted by name

    def with_params(self, overrides) -> TaskSpec:
        """This spec with `overrides` ((name, value) pairs, e.g. a run's --task-param) merged
        over its params (names checked by niah.tasks.options.task_params)."""
        if not overrides:
            return self
        return replace(self, params=tuple(sorted({**dict(self.params), **dict(overrides)}.items())))

    def param(self, name: str, default: int | float) -> int | float:
        """One of the rule knobs of ``params`` (the default when the row leaves it out)."""
        return dict(self.params).get(name, default)

    @property
    def keyed(self) -> bool:
        return self.keys != 0

    @property
    def variable(self) -> bool:
        """Whether --needles sets how many needles a trial hides."""
        return N in (self.keys, self.values)

    @property
    def default_needles(self) -> int:
        return int(self.param("needles", DEFAULT_NEEDLES)) if self.variable else self.needles(0)

    def counts(self, n: int) -> tuple[int, int, int]:
        """(keys, values per key, keys asked) for --needles n."""
        keys, per_key = (n if c == N else c for c in (self.keys, self.values))
        asked = self.keys if self.asked is None else self.asked
        return keys, per_key, n if asked == N else asked

    def needles(self, n: int) -> int:
        keys, per_key, _ = self.counts(n)
        return max(keys, 1) * per_key

    def targets(self, n: int) -> int:
        """How many needles' values the question asks for (the rest are distractors)."""
        keys, per_key, asked = self.counts(n)
        return per_key * (asked if keys else 1)


def _count(row: dict, name: str, *, least: int) -> int | str | None:
    value = row[name]
    if value is None and name == "asked" or value == N:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f'"{name}" is {value!r}: use a whole number >= {least} or "n"')
    return value


def spec_from_row(row: dict) -> TaskSpec:
    """A TaskSpec from a parsed row (missing optional fields take DEFAULTS); ValueError names
    the first field that cannot work."""
    missing = [f for f in REQUIRED if not isinstance(row.get(f), str)]
    if missing:
        raise ValueError(f'"{missing[0]}" is missing or not a string')
    row = {**DEFAULTS, **row}
    counts = {
        "keys": _count(row, "keys", least=0),
        "values": _count(row, "values", least=1),
        "asked": _count(row, "asked", least=1),
    }
    if counts["keys"] == N and counts["values"] == N:
        raise ValueError('"keys" and "values" are both "n": let --needles set one of them')
    asked = counts["asked"]
    if asked is not None and (
        counts["keys"] == 0
        or asked == N
        and counts["keys"] != N
        or asked != N
        and counts["keys"] != N
        and asked > counts["keys"]
    ):
        raise ValueError(f'"asked" is {asked!r}: ask at most as many keys as "keys" has')
    kinds = row["value_kinds"]
    if not isinstance(kinds, (list, tuple)) or not kinds or not set(kinds) <= set(VALUE_KINDS):
        raise ValueError(f'"value_kinds" is {kinds!r}: list some of {", ".join(VALUE_KINDS)}')
    texts = ("task", "help", "placement", "generator", "scoring", "answer_budget", "haystack")
    bad = next((f for f in texts if not isinstance(row[f], str)), None)
    if bad:
        raise ValueError(f'"{bad}" is not a string')
    params = row["params"]
    if not isinstance(params, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in params.values()
    ):
        raise ValueError(f'"params" is {params!r}: give an object of positive numbers')
    return TaskSpec(
        **{f: row[f] for f in texts},
        **{f: row[f] for f in REQUIRED},
        **counts,
        value_kinds=tuple(kinds),
        params=tuple(sorted(params.items())),
    )
