"""Tasks: which needles a trial hides, what it asks, and how its answer is scored.

- ``single``: one needle at the requested depth (the classic test).
- ``multi-needle``: N needles of one template, one question asking for all of them.
- ``multi-key``: one target needle among N-1 distractors of the same form with other keys; the
  question names the target's key; a distractor's value in the answer is a wrong answer.
- ``multi-value``: one key with N values; all must be returned.
- ``multi-query``: N keys with one value each, all asked at once.

Depths: a single or multi-key target sits at the requested depth (the N-1 multi-key distractors
at every 1/N of the context from it, wrapping past the end). Several needles to retrieve (multi-needle, -value, -query) are spread
evenly over a band of BAND of the context centred on the requested depth and shifted to stay in
[0, 1] (depth 0: 0..0.5, depth 0.5: 0.25..0.75, depth 1: 0.5..1).

Values are drawn from the seed and the trial's key, distinct within a trial and never a value
that occurs in the haystack (`niah.values.draw_value` with a rejection predicate); keys are drawn
from the key vocabulary by the same seed. Templates and keys come from ``niah/datasets/``
(tasks.jsonl, keys.txt) and are copied into the RunConfig, so they enter the config hash.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_MAX_TOKENS, KEYED_TASKS
from .datasets import DATASETS
from .errors import NiahError
from .haystack import Prompt, PromptBuilder, fill
from .scoring import judge
from .values import draw_value

TASKS = ("single", "multi-needle", "multi-key", "multi-value", "multi-query")
KEYED = KEYED_TASKS
DEFAULT_TASK = "single"
DEFAULT_NEEDLES = 4
MAX_NEEDLES = 64
ANSWER_TOKENS_PER_VALUE = {"number": 12, "uuid": 40, "words": 8}   # generous, per value asked
BAND = 0.5


@dataclass(frozen=True)
class TaskTemplate:
    task: str
    needle: str
    question: str
    answer_prefix: str


@dataclass(frozen=True)
class Needle:
    key: str | None
    value: str
    depth: float          # requested depth of this needle
    target: bool          # False for a multi-key distractor


@dataclass(frozen=True)
class TaskTrial:
    """Everything one trial hides and asks."""

    task: str
    needles: tuple[Needle, ...]
    needle_template: str
    question: str
    answer_prefix: str

    @property
    def expected(self) -> tuple[str, ...]:
        return tuple(n.value for n in self.needles if n.target)

    def needle_text(self, needle: Needle) -> str:
        return fill(self.needle_template, needle.value, key=needle.key)


def _fill_keys(text: str, keys: list[str]) -> str:
    if not keys:
        return text
    joined = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]
    return text.replace("{keys}", joined).replace("{key}", keys[0])


def load_templates(path: Path | None = None) -> dict[str, TaskTemplate]:
    """Task templates from tasks.jsonl (a later line replaces an earlier one of the same task)."""
    path = Path(path) if path else DATASETS / "tasks.jsonl"
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            t = TaskTemplate(task=d["task"], needle=d["needle"], question=d["question"],
                             answer_prefix=d["answer_prefix"])
        except (ValueError, KeyError, TypeError):
            raise NiahError(f"{path}: line {n} is not a task template: give JSON with task, "
                            "needle, question and answer_prefix") from None
        out[t.task] = t
    return out


def load_keys(path: Path | None = None) -> tuple[str, ...]:
    """The key vocabulary (keys.txt): distinct, none inside another."""
    path = Path(path) if path else DATASETS / "keys.txt"
    keys = [k.strip() for k in path.read_text(encoding="utf-8").splitlines()
            if k.strip() and not k.lstrip().startswith("#")]
    for a in keys:
        for b in keys:
            if a != b and a.lower() in b.lower():
                raise NiahError(f"{path}: key {a!r} is part of key {b!r}: keys must be distinct words")
    if len(set(keys)) != len(keys):
        raise NiahError(f"{path}: a key is listed twice: keep each key once")
    return tuple(keys)


def answer_tokens(*, task: str, needles: int, value_kind: str) -> int:
    """Default --max-tokens: DEFAULT_MAX_TOKENS, or more where the values a trial asks for need
    it (16 + ANSWER_TOKENS_PER_VALUE each: a UUID alone; a cut-off answer scores as wrong)."""
    asked = needles if task in ("multi-needle", "multi-value", "multi-query") else 1
    return max(DEFAULT_MAX_TOKENS, 16 + asked * ANSWER_TOKENS_PER_VALUE.get(value_kind, 16))


def resolve(*, task: str, needles: int | None, needle: str | None, question: str | None,
            answer_prefix: str | None, max_tokens: int | None = None,
            value_kind: str = "number") -> dict:
    """RunConfig fields for a task: templates (yours, else the dataset's), needle count, keys,
    and the answer length (yours, else `answer_tokens`)."""
    if task not in TASKS:
        raise NiahError(f"unknown --task {task!r}: use one of {', '.join(TASKS)}")
    n = needles if needles is not None else (1 if task == "single" else DEFAULT_NEEDLES)
    t = load_templates()[task]
    fields = dict(task=task, needles=n, needle=needle if needle is not None else t.needle,
                  question=question if question is not None else t.question,
                  answer_prefix=answer_prefix if answer_prefix is not None else t.answer_prefix,
                  keys=load_keys() if task in KEYED else ())
    validate(**fields)
    fields["max_tokens"] = max_tokens if max_tokens is not None else answer_tokens(
        task=task, needles=n, value_kind=value_kind)
    return fields


def validate(*, task: str, needles: int, needle: str, question: str, answer_prefix: str,
             keys: tuple[str, ...]) -> None:
    """One line for every task setting that cannot work."""
    if task not in TASKS:
        raise NiahError(f"unknown --task {task!r}: use one of {', '.join(TASKS)}")
    if needles < 1:
        raise NiahError(f"--needles {needles} is not allowed: use 1 or more")
    if task == "single" and needles != 1:
        raise NiahError(f"--needles {needles} needs a task with several needles: use --task "
                        "multi-needle, multi-key, multi-value or multi-query")
    if task != "single" and not 2 <= needles <= MAX_NEEDLES:
        raise NiahError(f"--needles {needles} is not allowed for --task {task}: use 2 to {MAX_NEEDLES}")
    if task in KEYED and "{key}" not in needle:
        raise NiahError(f"the needle template of --task {task} has no {{key}} placeholder: write it "
                        "like 'The access code for the {key} is {value}.'")
    wanted = "{keys}" if task == "multi-query" else "{key}"
    if task in KEYED and wanted not in question:
        raise NiahError(f"the question of --task {task} has no {wanted} placeholder: name the "
                        f"key(s) asked for, like 'What is the access code for the {wanted}?'")
    if task in KEYED and len(keys) < (needles if task != "multi-value" else 1):
        raise NiahError(f"--task {task} with --needles {needles} needs {needles} keys and "
                        f"keys.txt has {len(keys)}: add keys or use fewer needles")


def band_depths(depth: float, n: int) -> list[float]:
    """n depths evenly over a band of BAND centred on `depth`, kept inside [0, 1]."""
    if n == 1:
        return [depth]
    start = min(max(depth - BAND / 2, 0.0), 1.0 - BAND)
    return [round(start + BAND * i / (n - 1), 6) for i in range(n)]


def _depths(task: str, depth: float, n: int) -> list[float]:
    if task == "multi-key":  # the target at the depth, distractors every 1/n from it (mod 1)
        return [depth] + [round((depth + (j + 1) / n) % 1.0, 6) for j in range(n - 1)]
    return band_depths(depth, n)


def make_trial(*, task: str, needles: int, depth: float, seed: int, value_key: str, kind: str,
               needle: str, question: str, answer_prefix: str, keys: tuple[str, ...] = (),
               reject: Callable[[str], bool] | None = None) -> TaskTrial:
    """The needles, question and answer prefix of one trial (deterministic in seed and key).

    The first value is drawn with `value_key` itself, so a single-needle trial keeps the value
    it had before tasks existed unless the haystack holds it."""
    rng = random.Random(f"niah-keys-{seed}-{value_key}")
    n_keys = {"multi-key": needles, "multi-value": 1, "multi-query": needles}.get(task, 0)
    chosen_keys = rng.sample(list(keys), n_keys) if n_keys else []
    values: list[str] = []
    for i in range(needles):
        values.append(draw_value(
            kind=kind, seed=seed, key=value_key if i == 0 else f"{value_key}-n{i}",
            reject=lambda v: v in values or (reject is not None and reject(v))))
    depths = _depths(task, depth, needles)
    if task == "multi-value":
        key_of = [chosen_keys[0]] * needles
    elif task in KEYED:
        key_of = chosen_keys
    else:
        key_of = [None] * needles
    made = tuple(Needle(key=key_of[i], value=values[i], depth=depths[i],
                        target=task != "multi-key" or i == 0) for i in range(needles))
    asked = chosen_keys[:1] if task in ("multi-key", "multi-value") else chosen_keys
    return TaskTrial(task=task, needles=made, needle_template=needle,
                     question=_fill_keys(question, asked), answer_prefix=_fill_keys(answer_prefix, asked))


def build_prompt(builder: PromptBuilder, trial: TaskTrial, *, context: int) -> Prompt:
    """The token-exact prompt of a trial: every needle placed by the depth rule."""
    builder.check_phrases([trial.needle_template], n_tokens=context)
    tail = builder.tail_ids(question=trial.question, answer_prefix=trial.answer_prefix)
    needles = [(builder.needle_ids(n.value, template=trial.needle_template, key=n.key), n.depth)
               for n in trial.needles]
    return builder.assemble(context=context, needles=needles, tail=tail,
                            value=", ".join(trial.expected))


def score_trial(trial: TaskTrial, prompt: Prompt, response: str, *, kind: str) -> dict:
    """Record fields: verdict, score (0..1; 1/0 with one value to find), the needles list."""
    j = judge(response, trial.expected, kind=kind)
    found = iter(j.found)
    needles = []
    for needle, place in zip(trial.needles, prompt.placements):
        hit = next(found) if needle.target else needle.value in j.offered
        needles.append({"key": needle.key, "value": needle.value, "needle_index": place.index,
                        "needle_depth": round(place.depth, 6), "found": bool(hit),
                        "role": "target" if needle.target else "distractor",
                        "boundary": place.boundary})
    return {"task": trial.task, "verdict": j.verdict, "score": round(j.score, 6),
            "needles": needles}


def answer_minimum(builder: PromptBuilder, config) -> int:
    """Fewest tokens an answer holding every value a trial asks for can take (the values
    comma-separated, as the question asks for them): a smaller --max-tokens can never PASS."""
    trial = make_trial(task=config.task, needles=config.needles, depth=0.5, seed=config.seed,
                       value_key="minimum", kind=config.value_kind, needle=config.needle,
                       question=config.question, answer_prefix=config.answer_prefix,
                       keys=config.keys)
    return len(builder.tokenizer.encode(" " + ", ".join(trial.expected), add_special_tokens=False))


def minimum_context(builder: PromptBuilder, config) -> int:
    """Fewest tokens a prompt of this run's task can have (template, needles, question, one
    haystack token)."""
    if config.task == "single":
        return builder.minimum_context()
    trial = make_trial(task=config.task, needles=config.needles, depth=0.5, seed=config.seed,
                       value_key="minimum", kind=config.value_kind, needle=config.needle,
                       question=config.question, answer_prefix=config.answer_prefix,
                       keys=config.keys)
    tail = builder.tail_ids(question=trial.question, answer_prefix=trial.answer_prefix)
    needles = sum(len(builder.needle_ids(n.value, template=trial.needle_template, key=n.key))
                  for n in trial.needles)
    return len(builder.head) + len(tail) + needles + 1
