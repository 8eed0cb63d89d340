"""A task's run options: the RunConfig fields for --task and friends (`resolve`), and one line
for every setting that cannot work (`validate`), from the task's spec."""

from __future__ import annotations

import math
import re

from ..errors import NiahError
from ..parse import parse_assignments
from ..values import VALUE_KINDS
from .catalog import SPECS, get_spec, load_keys
from .nonliteral import check_contexts as _check_base_context
from .rules import ANSWER_BUDGETS, GENERATOR_FIELDS, PARAM_CHECKS, check_haystack
from .spec import MAX_NEEDLES

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
REASONING_TOKENS = 1024  # answer tokens added by default for the reasoning of --thinking on


def answer_tokens(*, task: str, needles: int, value_kind: str, params=()) -> int:
    """Default --max-tokens: the task's answer budget rule for the values it asks (`params`:
    the run's --task-param, merged over the row's)."""
    spec = get_spec(task).with_params(params)
    return ANSWER_BUDGETS[spec.answer_budget](spec, n=needles, value_kind=value_kind)


def resolve(
    *,
    task: str,
    needles: int | None,
    needle: str | None,
    question: str | None,
    answer_prefix: str | None,
    max_tokens: int | None = None,
    value_kind: str = "number",
    thinking: str = "model",
    task_param=(),
    haystack: str | None = None,
    contexts=(),
) -> dict:
    """RunConfig fields for a task: templates (yours, else the task row's), needle count, keys,
    knobs (`task_param`: --task-param NAME=VALUE texts, checked by `task_params` and, against
    the shortest of `contexts`, by the generator's PARAM_CHECKS) and the answer length (yours,
    else `answer_tokens`). With `thinking` "on" the model reasons before it answers: no answer
    prefix by default (one would cut the reasoning off) and REASONING_TOKENS more answer tokens
    by default. `haystack` (--haystack as typed): ``needles`` only for keyed tasks."""
    reasoning = thinking == "on"
    if reasoning and answer_prefix is None:
        answer_prefix = ""
    spec = get_spec(task)
    if haystack is not None:
        check_haystack(spec, haystack)
    n = needles if needles is not None else spec.default_needles
    fields = {
        "task": task,
        "needles": n,
        "needle": needle if needle is not None else spec.needle,
        "question": question if question is not None else spec.question,
        "answer_prefix": answer_prefix if answer_prefix is not None else spec.answer_prefix,
        "keys": load_keys() if spec.keyed else (),
    }
    validate(**fields, value_kind=value_kind)
    params = task_params(task, parse_assignments(task_param, option="--task-param"))
    if contexts:
        check_params(task, params=params, needles=n, shortest=min(contexts))
    fields["task_params"] = params
    fields["max_tokens"] = (
        max_tokens
        if max_tokens is not None
        else answer_tokens(task=task, needles=n, value_kind=value_kind, params=params)
        + (REASONING_TOKENS if reasoning else 0)
    )
    return fields


def _param_value(task: str, name: str, text: str, default: int | float) -> int | float:
    """A --task-param value of the row default's type: a whole number >= 1, or (a number
    default) a finite number > 0."""
    whole = isinstance(default, int)
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        kind = "a whole number of 1 or more" if whole else "a number above 0"
        raise NiahError(
            f"--task-param {name}={text} is not allowed for --task {task}: use "
            f"{kind}, like {name}={default}"
        )
    return value


def task_params(task: str, pairs) -> tuple[tuple[str, int | float], ...]:
    """(name, value text) pairs of --task-param checked against the knobs the task's row
    declares (``params``; ``needles`` is --needles): typed values, sorted by name."""
    declared = {k: v for k, v in get_spec(task).params if k != "needles"}
    out = {}
    for name, text in pairs:
        if name == "needles":
            raise NiahError(f"--task-param needles sets what --needles sets: use --needles {text}")
        if name not in declared:
            fix = (
                "use " + _or_list(sorted(declared))
                if declared
                else "this task has no knobs: drop --task-param"
            )
            raise NiahError(f"--task {task} has no knob {name!r}: {fix}")
        out[name] = _param_value(task, name, text, declared[name])
    return tuple(sorted(out.items()))


def check_params(task: str, *, params, needles: int, shortest: int) -> None:
    """One line when the task's knobs (the row's, `params` merged over them) cannot work in
    the shortest context (the generator's PARAM_CHECKS rule, computed without a tokenizer)."""
    spec = get_spec(task).with_params(params)
    check = PARAM_CHECKS.get(spec.generator)
    if check is not None:
        check(spec, n=needles, shortest=shortest)


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _check_count(task: str, n: int) -> None:
    spec = get_spec(task)
    if n < 1:
        raise NiahError(f"--needles {n} is not allowed: use 1 or more")
    if not spec.variable and n != spec.default_needles:
        several = _or_list([t for t, s in SPECS.items() if s.variable])
        raise NiahError(f"--needles {n} needs a task with several needles: use --task {several}")
    if spec.variable and not 2 <= n <= MAX_NEEDLES:
        raise NiahError(f"--needles {n} is not allowed for --task {task}: use 2 to {MAX_NEEDLES}")


def _check_placeholders(task: str, *, question: str, answer_prefix: str) -> None:
    """Refuse a {name} in the question or answer prefix that the task does not fill (it would
    reach the model as written)."""
    spec = get_spec(task)
    filled = GENERATOR_FIELDS[spec.generator](spec)
    for option, text in (("--question", question), ("--answer-prefix", answer_prefix)):
        unknown = next((m for m in _PLACEHOLDER.findall(text) if m not in filled), None)
        if unknown is None:
            continue
        fix = (
            "only " + " and ".join("{" + f + "}" for f in filled) + " are filled in"
            if filled
            else "it fills none"
        )
        raise NiahError(
            f"the {option} of --task {task} has the placeholder {{{unknown}}}, "
            f"which this task does not fill ({fix}): remove it or write the text"
        )


def validate(
    *,
    task: str,
    needles: int,
    needle: str,
    question: str,
    answer_prefix: str,
    keys: tuple[str, ...],
    value_kind: str | None = None,
) -> None:
    """One line for every task setting that cannot work."""
    spec = get_spec(task)
    _check_count(task, needles)
    if spec.keyed and "{key}" not in needle:
        raise NiahError(
            f"the needle template of --task {task} has no {{key}} placeholder: write it "
            "like 'The access code for the {key} is {value}.'"
        )
    n_keys, _, n_asked = spec.counts(needles)
    wanted = "{keys}" if spec.asked == "n" or n_asked > 1 else "{key}"
    if spec.keyed and wanted not in question:
        raise NiahError(
            f"the question of --task {task} has no {wanted} placeholder: name the "
            f"key(s) asked for, like 'What is the access code for the {wanted}?'"
        )
    _check_placeholders(task, question=question, answer_prefix=answer_prefix)
    _check_drawn_templates(task, needle=needle, question=question)
    if spec.keyed and len(keys) < n_keys:
        raise NiahError(
            f"--task {task} with --needles {needles} needs {n_keys} keys and "
            f"keys.txt has {len(keys)}: add keys or use fewer needles"
        )
    if value_kind in VALUE_KINDS and value_kind not in spec.value_kinds:  # others: RunConfig
        raise NiahError(
            f"--task {task} does not take --value-kind {value_kind}: use "
            f"{_or_list(list(spec.value_kinds))}"
        )


def _check_drawn_templates(task: str, *, needle: str, question: str) -> None:
    """A task that draws its needle per trial (non-literal) takes no --needle, and its question
    must keep the drawn {question}."""
    spec = get_spec(task)
    if spec.generator != "nonliteral":
        return
    if needle != spec.needle:
        raise NiahError(
            f"--task {task} draws its needle from niah/datasets/nonliteral.jsonl "
            "for each trial: drop --needle"
        )
    if "{question}" not in question:
        raise NiahError(
            f"the --question of --task {task} has no {{question}} placeholder (the "
            "drawn question): write it like '{question} Answer with the name only.'"
        )


def check_contexts(*, task: str, contexts) -> None:
    """One line when the contexts asked cannot work for the task (non-literal needs one of 2K
    or less for its base score)."""
    _check_base_context(task=task, contexts=contexts, spec=get_spec(task))
