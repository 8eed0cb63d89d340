"""The one generic trial builder: a task spec + seed + depth -> needles, question and expected
answer (`build_trial`); a RunConfig + grid cell -> that trial (`trial_for`); the trial's
token-exact prompt (`build_prompt`, through PromptBuilder.build_many) and its scoring
(`score_trial`, by the spec's scoring rule)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..haystack import THINK_OPEN, Placement, Prompt, PromptBuilder
from ..scoring import SCORING_RULES
from .catalog import get_spec, run_spec
from .rules import GENERATORS, PLACEMENTS
from .spec import TaskSpec
from .trial import Needle, TaskTrial, fill_fields

Reject = Callable[[str], bool] | None


def build_trial(
    spec: TaskSpec,
    *,
    needles: int,
    depth: float,
    seed: int,
    value_key: str,
    kind: str,
    keys: tuple[str, ...] = (),
    needle: str | None = None,
    question: str | None = None,
    answer_prefix: str | None = None,
    reject: Reject = None,
) -> TaskTrial:
    """The needles, question and answer prefix of one trial (deterministic in seed and key):
    the spec's generator draws keys and values, its placement rule gives each needle's depth.
    `needle` / `question` / `answer_prefix` replace the spec's templates (a generator's own
    ``needle`` field, drawn per trial, replaces both)."""
    drawn, fields, *extra = GENERATORS[spec.generator](
        spec, n=needles, seed=seed, value_key=value_key, kind=kind, keys=keys, reject=reject
    )
    depths = PLACEMENTS[spec.placement](depth, len(drawn))
    made = tuple(Needle(key=k, value=v, depth=d, target=t) for (k, v, t), d in zip(drawn, depths))
    template = fields.get("needle") or (spec.needle if needle is None else needle)
    fields = {name: text for name, text in fields.items() if name != "needle"}
    return TaskTrial(
        task=spec.task,
        needles=made,
        needle_template=template,
        question=fill_fields(spec.question if question is None else question, fields),
        answer_prefix=fill_fields(
            spec.answer_prefix if answer_prefix is None else answer_prefix, fields
        ),
        scoring=spec.scoring,
        **(extra[0] if extra else {}),
    )


def trial_for(config, *, depth: float, value_key: str, reject: Reject = None) -> TaskTrial:
    """The trial a RunConfig asks for at one grid cell (its depth and value key, see
    niah.run.grid.value_key); `reject` refuses values (e.g. those the haystack holds). The
    spec's params are the row's with the run's --task-param merged over them (`run_spec`)."""
    return build_trial(
        run_spec(config),
        needles=config.needles,
        depth=depth,
        seed=config.seed,
        value_key=value_key,
        kind=config.value_kind,
        keys=config.keys,
        needle=config.needle,
        question=config.question,
        answer_prefix=config.answer_prefix,
        reject=reject,
    )


def make_trial(
    *,
    task: str,
    needles: int,
    depth: float,
    seed: int,
    value_key: str,
    kind: str,
    needle: str,
    question: str,
    answer_prefix: str,
    keys: tuple[str, ...] = (),
    reject: Reject = None,
) -> TaskTrial:
    """`build_trial` for a shipped task by name, with the row's own params (the sweep calls
    `trial_for`, which takes a run's --task-param too)."""
    return build_trial(
        get_spec(task),
        needles=needles,
        depth=depth,
        seed=seed,
        value_key=value_key,
        kind=kind,
        keys=keys,
        needle=needle,
        question=question,
        answer_prefix=answer_prefix,
        reject=reject,
    )


def build_prompt(builder: PromptBuilder, trial: TaskTrial, *, context: int) -> Prompt:
    """The token-exact prompt of a trial: every needle placed at its depth by the rule (a
    word-list trial: the list made for the body's exact length, `list_prompt`)."""
    if trial.words is not None:
        return list_prompt(builder, trial, context=context)
    return builder.build_many(
        context=context,
        needles=[(trial.needle_text(n), n.depth) for n in trial.needles],
        templates=[trial.needle_template],
        question=trial.question,
        answer_prefix=trial.answer_prefix,
        value=", ".join(trial.expected),
    )


def list_prompt(builder: PromptBuilder, trial: TaskTrial, *, context: int) -> Prompt:
    """A word-list trial's prompt of exactly `context` tokens: template head, the list as the
    whole body, question and answer prefix; each answer word's placement is its first entry."""
    tail = builder.tail_ids(question=trial.question, answer_prefix=trial.answer_prefix)
    budget = context - len(builder.head) - len(tail)
    body, firsts = trial.words.body(builder.tokenizer, budget=max(budget, 0))
    ids = np.concatenate([builder.head, body, tail]).astype(np.int32)
    head = len(builder.head)
    places = tuple(
        Placement(
            index=head + firsts[n.value],
            tokens=0,
            depth=firsts[n.value] / budget,
            requested=n.depth,
            boundary="list",
        )
        for n in trial.needles
    )
    first = places[0]
    return Prompt(
        ids=ids,
        needle_index=first.index,
        needle_tokens=0,
        needle_depth=first.depth,
        body_tokens=budget,
        head_tokens=head,
        value=", ".join(trial.expected),
        placements=places,
        boundary="list",
    )


def score_trial(trial: TaskTrial, prompt: Prompt, response: str, *, kind: str) -> dict:
    """Record fields: verdict, score (0..1; 1/0 with one value to find), the needles list.
    A prompt whose template opened a reasoning block (`Prompt.opens_reasoning`) has its
    response scored as the continuation of that block."""
    if getattr(prompt, "opens_reasoning", False):
        response = THINK_OPEN + (response or "")
    vocabulary = trial.words.vocabulary() if trial.words is not None else frozenset()
    s = SCORING_RULES[trial.scoring](
        response,
        values=[n.value for n in trial.needles],
        targets=[n.target for n in trial.needles],
        kind=kind,
        keys=[n.key for n in trial.needles],
        vocabulary=vocabulary,
    )
    needles = [
        {
            "key": needle.key,
            "value": needle.value,
            "needle_index": place.index,
            "needle_depth": round(place.depth, 6),
            "found": found,
            "role": "target" if needle.target else "distractor",
            "boundary": place.boundary,
        }
        for needle, place, found in zip(trial.needles, prompt.placements, s.found)
    ]
    return {
        "task": trial.task,
        "verdict": s.verdict,
        "score": round(s.score, 6),
        "needles": needles,
    }


def answer_minimum(builder: PromptBuilder, config) -> int:
    """Fewest tokens an answer holding every value a trial asks for can take (the values
    comma-separated, as the question asks for them): a smaller --max-tokens can never PASS."""
    trial = trial_for(config, depth=0.5, value_key="minimum")
    return len(builder.tokenizer.encode(" " + ", ".join(trial.expected), add_special_tokens=False))


def minimum_context(builder: PromptBuilder, config) -> int:
    """Fewest tokens a prompt of this run's task can have (template, needles, question, one
    haystack token)."""
    trial = trial_for(config, depth=0.5, value_key="minimum")
    if trial.words is not None:
        tail = builder.tail_ids(question=trial.question, answer_prefix=trial.answer_prefix)
        return len(builder.head) + len(tail) + trial.words.minimum_body(builder.tokenizer)
    return builder.minimum_context(
        needles=[trial.needle_text(n) for n in trial.needles],
        question=trial.question,
        answer_prefix=trial.answer_prefix,
    )
