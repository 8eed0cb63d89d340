"""The task registry: task specs loaded from data rows (niah/datasets/tasks.jsonl), the key
vocabulary (keys.txt), and lookup by name. SPECS holds the shipped tasks; a spec loaded from
another file (`load_specs(path)`) works with the same builder."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from ..datasets import DATASETS, ROW_FIELDS, task_rows
from ..errors import NiahError
from ..scoring import SCORING_RULES
from .rules import ANSWER_BUDGETS, GENERATORS, HAYSTACK_SOURCES, PLACEMENTS
from .spec import TaskSpec, spec_from_row

_RULES = {
    "placement": PLACEMENTS,
    "generator": GENERATORS,
    "scoring": SCORING_RULES,
    "answer_budget": ANSWER_BUDGETS,
    "haystack": HAYSTACK_SOURCES,
}


def _check_rules(spec: TaskSpec) -> None:
    for field, registry in _RULES.items():
        if getattr(spec, field) not in registry:
            raise ValueError(
                f'"{field}" is {getattr(spec, field)!r}: use one of '
                f"{', '.join(registry)} (or register a rule of that name)"
            )


def load_specs(path: Path | None = None) -> dict[str, TaskSpec]:
    """Task specs by name from a tasks.jsonl (a later line replaces an earlier one of the same
    task); a row that cannot work is one line naming it."""
    path = Path(path) if path else DATASETS / "tasks.jsonl"
    specs = {}
    for name, (n, row) in task_rows(path).items():
        try:
            spec = spec_from_row(row)
            _check_rules(spec)
        except ValueError as exc:
            raise NiahError(
                f"{path}: line {n} is not a task template ({exc}): give JSON with {ROW_FIELDS}"
            ) from None
        specs[name] = spec
    return specs


def load_templates(path: Path | None = None) -> dict[str, TaskSpec]:
    """`load_specs` under its earlier name (a spec carries needle, question, answer_prefix)."""
    return load_specs(path)


SPECS = MappingProxyType(load_specs())
TASKS = tuple(SPECS)


def get_spec(task: str) -> TaskSpec:
    """The shipped spec of a task name; an unknown name is one line listing the tasks."""
    if task not in SPECS:
        raise NiahError(f"unknown --task {task!r}: use one of {', '.join(TASKS)}")
    return SPECS[task]


def run_spec(config) -> TaskSpec:
    """The spec a run uses: its task's row with the run's --task-param (``task_params``)
    merged over the row's params."""
    return get_spec(config.task).with_params(getattr(config, "task_params", ()))


def task_help() -> dict[str, str]:
    """Each task's name and one-line help, for the CLI's --task help."""
    return {name: spec.help for name, spec in SPECS.items()}


def load_keys(path: Path | None = None) -> tuple[str, ...]:
    """The key vocabulary (keys.txt): distinct, none inside another."""
    path = Path(path) if path else DATASETS / "keys.txt"
    keys = [
        k.strip()
        for k in path.read_text(encoding="utf-8").splitlines()
        if k.strip() and not k.lstrip().startswith("#")
    ]
    for a in keys:
        for b in keys:
            if a != b and a.lower() in b.lower():
                raise NiahError(
                    f"{path}: key {a!r} is part of key {b!r}: keys must be distinct words"
                )
    if len(set(keys)) != len(keys):
        raise NiahError(f"{path}: a key is listed twice: keep each key once")
    return tuple(keys)
