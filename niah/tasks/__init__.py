"""Tasks as data: which needles a trial hides, what it asks, and how its answer is scored.

Each task is one row of niah/datasets/tasks.jsonl (niah.tasks.spec says what its fields mean)
and every task runs through one builder (niah.tasks.build). The shipped tasks:

- ``single``: one needle at the requested depth (the classic test).
- ``multi-needle``: N needles of one template, one question asking for all of them.
- ``multi-key``: one target needle among N-1 distractors of the same form with other keys; the
  question names the target's key; a distractor's value in the answer is a wrong answer.
- ``multi-value``: one key with N values; all must be returned.
- ``multi-query``: N keys with one value each, all asked at once.
- ``non-literal``: a fact about a character answers a question sharing none of its words
  (NoLiMa's idea; niah.tasks.nonliteral), scored by name and normalised by the short context.

Depths (placement rules, niah.tasks.rules): ``spread`` puts the target at the requested depth
and the N-1 distractors at every 1/N of the context from it, wrapping past the end; ``band``
spreads several needles evenly over a band of BAND of the context centred on the requested
depth and shifted to stay in [0, 1] (depth 0: 0..0.5, depth 0.5: 0.25..0.75, depth 1: 0.5..1).

Values are drawn from the seed and the trial's key, distinct within a trial and never a value
that occurs in the haystack (`niah.values.draw_value` with a rejection predicate); keys are drawn
from the key vocabulary by the same seed. Templates and keys come from ``niah/datasets/``
(tasks.jsonl, keys.txt) and are copied into the RunConfig, so they enter the config hash.

Adding a task: one row in tasks.jsonl; if it needs a behaviour no rule has, one function
registered by name in niah.tasks.rules (generator, placement, answer budget, haystack source)
or niah.scoring.SCORING_RULES.
"""

from __future__ import annotations

from .build import (
    answer_minimum,
    build_prompt,
    build_trial,
    make_trial,
    minimum_context,
    score_trial,
    trial_for,
)
from .catalog import (
    SPECS,
    TASKS,
    get_spec,
    load_keys,
    load_specs,
    load_templates,
    run_spec,
    task_help,
)
from .nonliteral import BASE_CONTEXT, LinkPair, content_words, load_pairs
from .options import answer_tokens, check_contexts, resolve, task_params, validate
from .rules import (
    ANSWER_TOKENS_PER_VALUE,
    BAND,
    HAYSTACK_SOURCES,
    PLACEMENTS,
    band_depths,
    spread_depths,
)
from .spec import DEFAULT_NEEDLES, MAX_NEEDLES, TaskSpec
from .trial import Needle, TaskTrial

KEYED = tuple(name for name, spec in SPECS.items() if spec.keyed)


def haystack_source(config):
    """The haystack a run's PromptBuilder reads: the task's haystack rule applied to
    --haystack (``run``: as given, ``needles`` as a niah.haystack_needles.NeedleSource)."""
    spec = run_spec(config)
    return HAYSTACK_SOURCES[spec.haystack](config, spec=spec)


__all__ = [
    "ANSWER_TOKENS_PER_VALUE",
    "BAND",
    "DEFAULT_NEEDLES",
    "KEYED",
    "MAX_NEEDLES",
    "PLACEMENTS",
    "SPECS",
    "TASKS",
    "Needle",
    "TaskSpec",
    "TaskTrial",
    "answer_minimum",
    "answer_tokens",
    "band_depths",
    "build_prompt",
    "build_trial",
    "get_spec",
    "haystack_source",
    "load_keys",
    "load_specs",
    "load_templates",
    "make_trial",
    "minimum_context",
    "resolve",
    "score_trial",
    "spread_depths",
    "task_help",
    "trial_for",
    "validate",
    "run_spec",
    "task_params",
    "BASE_CONTEXT",
    "LinkPair",
    "check_contexts",
    "content_words",
    "load_pairs",
]
