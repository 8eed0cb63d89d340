"""RunConfig, the frozen description of a run, and the DEFAULT_* constants of its options.

Parsing of the values a user types lives in niah.parse, hashing in niah.identity, the default
model's location in niah.environment; the names other modules import from here stay here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .datasets import task_rows
from .environment import default_model_path, hub_offline  # noqa: F401 - imported from here
from .errors import NiahError
from .gguf.read import QUANT_MODES as GGUF_QUANTS  # the gguf package owns the weight modes
from .parse import (  # noqa: F401
    KV_BITS,
    KV_GROUP_SIZES,
    MAX_CONTEXT,
    MAX_RANGE_VALUES,
    MAX_ROPE_FACTOR,
    ROPE_KINDS,
    check_kv_cache,
    check_kv_group_size,
    check_needle_template,
    config_value,
    format_context,
    parse_context,
    parse_contexts,
    parse_depths,
    parse_int_list,
    parse_range,
    parse_rope_scaling,
    rope_scaling_config,
)
from .values import VALUE_KINDS  # noqa: F401 - the values module owns them

_TASK_ROWS = {name: row for name, (_, row) in task_rows().items()}  # niah/datasets/tasks.jsonl

DEFAULT_CONTEXTS = (1024, 2048)
DEFAULT_DEPTHS = (0.0, 0.5, 1.0)
DEFAULT_SAMPLES = 1
DEFAULT_SEED = 0
DEFAULT_NEEDLE = _TASK_ROWS["single"]["needle"]  # the single task's row owns them
DEFAULT_QUESTION = _TASK_ROWS["single"]["question"]
DEFAULT_ANSWER_PREFIX = _TASK_ROWS["single"]["answer_prefix"]
DEFAULT_INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it."
)
DEFAULT_VALUE_KIND = "number"
DEFAULT_HAYSTACK = "prose"
DEFAULT_PREFILL_STEP = 2048
DEFAULT_MAX_TOKENS = 32
DEFAULT_OUT = "results"
DEFAULT_SDPA_ROUTE = "auto"
SDPA_ROUTES = ("stock", "chunked", "auto")
DEFAULT_KV_GROUP_SIZE = 64
DEFAULT_TASK = "single"
DEFAULT_SHARD = "none"
DEFAULT_GGUF_QUANT = "auto"
DEFAULT_ROPE_SCALING = "model"
DEFAULT_WARM_UP = "auto"
DEFAULT_THINKING = "model"
THINKING_MODES = ("model", "on", "off")  # --thinking: the template's default, or enable_thinking
SHARDS = ("none", "tensor")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; its hash names the run folder and tags each trial."""

    model: str
    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    samples: int = DEFAULT_SAMPLES
    seed: int = DEFAULT_SEED
    needle: str = DEFAULT_NEEDLE
    question: str = DEFAULT_QUESTION
    answer_prefix: str = DEFAULT_ANSWER_PREFIX
    intro: str = DEFAULT_INTRO
    value_kind: str = DEFAULT_VALUE_KIND
    haystack: str = DEFAULT_HAYSTACK
    task: str = DEFAULT_TASK  # niah.tasks.TASKS; validated by niah.tasks.validate
    needles: int = 1
    keys: tuple[str, ...] = ()  # key vocabulary of keyed tasks (from datasets/keys.txt)
    # --task-param NAME=VALUE: (name, value) pairs merged over the task row's params, sorted
    task_params: tuple[tuple[str, int | float], ...] = ()
    prefill_steps: tuple[int, ...] = (DEFAULT_PREFILL_STEP,)
    max_tokens: int = DEFAULT_MAX_TOKENS
    sdpa: str = DEFAULT_SDPA_ROUTE
    chunk_threshold: int | None = None
    chunk_size: int | None = None
    kv_bits: tuple[int | None, ...] = (None,)
    kv_group_size: int = DEFAULT_KV_GROUP_SIZE
    max_kv_size: tuple[int | None, ...] = (None,)
    # refuse contexts whose prompt plus --max-tokens pass the model's trained length (CI gates
    # on the trained range); by default they run and each trial records beyond_trained.
    # Older folders' config.json may hold allow_beyond_trained: from_dict ignores it.
    refuse_beyond_trained: bool = False
    prefix_reuse: bool = True
    # --repeatable-memory: on CUDA, MLX_MAX_MB_PER_BUFFER=100 (niah.environment); what it
    # changes is in the run identity and every trial as mlx_env, so the field is not hashed
    repeatable_memory: bool = False
    shard: str = DEFAULT_SHARD  # "tensor": one model sharded across the mlx.launch group
    gguf_quant: str = DEFAULT_GGUF_QUANT  # GGUF weights: auto, q8, q4, f16 (niah.gguf.read)
    rope_scaling: str = DEFAULT_ROPE_SCALING  # "model" (as shipped), "none", "yarn:F", "linear:F"
    thinking: str = DEFAULT_THINKING  # enable_thinking for the chat template: model, on, off
    out: str = DEFAULT_OUT
    # the asked (context, depth, sample) cells when grids merged into one folder are not the
    # cross product of contexts x depths x samples (niah.run.grid); None: the cross product
    cells: tuple[tuple[int, float, int], ...] | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    # Fields that do not change what a trial measures (where it is written, how it is run).
    _UNHASHED = (
        "out",
        "extra",
        "contexts",
        "depths",
        "samples",
        "cells",
        "prefix_reuse",
        "refuse_beyond_trained",
        "repeatable_memory",
        "shard",
    )

    def __post_init__(self):
        if self.samples < 1:
            raise NiahError(f"--samples {self.samples} is not allowed: use 1 or more")
        check_needle_template(self.needle, keyed=self.task in KEYED_TASKS)
        if self.value_kind not in VALUE_KINDS:
            raise NiahError(
                f"unknown value kind {self.value_kind!r}: use one of {', '.join(VALUE_KINDS)}"
            )
        if self.sdpa not in SDPA_ROUTES:
            raise NiahError(f"unknown --sdpa {self.sdpa!r}: use one of {', '.join(SDPA_ROUTES)}")
        if self.shard not in SHARDS:
            raise NiahError(f"unknown --shard {self.shard!r}: use none or tensor")
        if self.max_tokens < 1:
            raise NiahError(f"--max-tokens {self.max_tokens} is not allowed: use 1 or more")
        for step in self.prefill_steps:
            if step < 1:
                raise NiahError(f"--prefill-step {step} is not allowed: use 1 or more")
        check_kv_group_size(self.kv_group_size)
        if self.gguf_quant not in GGUF_QUANTS:
            raise NiahError(
                f"unknown --gguf-quant {self.gguf_quant!r}: use one of {', '.join(GGUF_QUANTS)}"
            )
        object.__setattr__(self, "rope_scaling", parse_rope_scaling(self.rope_scaling))
        if self.thinking not in THINKING_MODES:
            raise NiahError(
                f"unknown --thinking {self.thinking!r}: use one of {', '.join(THINKING_MODES)}"
            )
        if self.thinking == "on" and self.answer_prefix:
            raise NiahError(
                "--answer-prefix cannot be combined with --thinking on (the model "
                "writes its reasoning first): drop --answer-prefix"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """A config read back from JSON (config.json): every known field type-checked, unknown
        keys ignored; a bad one raises NiahError naming the field."""
        if not isinstance(d, dict):
            raise NiahError(
                f"the config is {type(d).__name__ if d is not None else 'null'}, not a JSON object"
            )
        if "model" not in d:
            raise NiahError("the config has no 'model' field")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: config_value(k, v) for k, v in d.items() if k in names})

    # Fields added later: hashed only when set, so older run folders keep their hash.
    _HASHED_WHEN_SET = {
        "gguf_quant": DEFAULT_GGUF_QUANT,
        "rope_scaling": DEFAULT_ROPE_SCALING,
        "thinking": DEFAULT_THINKING,
        "task_params": (),
    }

    def hashed_fields(self) -> dict:
        """The fields that change what a trial measures (fields added later left out while
        they hold their default)."""
        defaults = {**self._HASHED_WHEN_SET, **_TASK_DEFAULTS}
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in self._UNHASHED and defaults.get(k, object()) != v
        }

    def hash(self, identity: dict | None = None) -> str:
        """A stable hash of the fields that change what a trial measures, together with the
        run's identity (model and haystack digests, backend, dtype, resolved SDPA settings,
        versions: see niah.identity). Without an identity it covers the options alone."""
        from .identity import config_hash

        return config_hash(self.hashed_fields(), identity)


def past_trained(context: int, *, max_tokens: int, trained: int | None) -> bool:
    """Whether a trial runs past the model's trained length: its prompt plus the tokens it
    may decode exceed it. An unknown trained length (None or 0) marks nothing. The one rule
    behind every trial's beyond_trained, the checks before the load and niah doctor."""
    return bool(trained) and context + max_tokens > trained


_TASK_DEFAULTS = {"task": DEFAULT_TASK, "needles": 1, "keys": ()}
KEYED_TASKS = tuple(
    name
    for name, row in _TASK_ROWS.items()  # rows whose needles name a key
    if row.get("keys", 0) or "{key}" in str(row.get("needle", ""))
)
