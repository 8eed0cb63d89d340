"""The options of `niah run`, each declared once (flags, help, help panel) as an Annotated
type; cli.run lists them with their defaults, the DEFAULT_* constants of niah.config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import config as C
from .datasets import task_rows

P_PROMPT, P_RUN, P_SDPA, P_KV, P_OUT = (
    "Prompt",
    "Running",
    "Attention",
    "KV cache",
    "Output and gating",
)

DEFAULT_CONTEXT_TEXT = ",".join(C.format_context(c).lower() for c in C.DEFAULT_CONTEXTS)
DEFAULT_DEPTH_TEXT = ",".join(f"{d:g}" for d in C.DEFAULT_DEPTHS)
DEFAULT_PREFILL_TEXT = str(C.DEFAULT_PREFILL_STEP)
# Exit code of a run none of whose trials could run (every one SKIP or ERROR).
EXIT_NOTHING_RAN = 1


def _opt(*flags: str, help: str, panel: str, **kw):
    return typer.Option(*flags, help=help, rich_help_panel=panel, **kw)


Context = Annotated[
    str,
    _opt(
        "--context", "-c", panel=P_PROMPT, help="Context lengths: 8000, 4k, 128k, 1m; comma list."
    ),
]
Depth = Annotated[
    str,
    _opt(
        "--depth", "-d", panel=P_PROMPT, help="Needle depths 0..1: list 0,0.5,1 or range 0:1:0.1."
    ),
]
Samples = Annotated[
    int, _opt("--samples", "-n", panel=P_PROMPT, help="Trials per cell (different needle values).")
]
Seed = Annotated[int, _opt("--seed", panel=P_PROMPT, help="Seed for haystack and needle values.")]
Needle = Annotated[
    Optional[str], _opt("--needle", panel=P_PROMPT, help="Needle template with {value}.")
]
Question = Annotated[
    Optional[str], _opt("--question", panel=P_PROMPT, help="Question asked after the haystack.")
]
AnswerPrefix = Annotated[
    Optional[str], _opt("--answer-prefix", panel=P_PROMPT, help="Text the answer starts with.")
]
ValueKind = Annotated[
    str, _opt("--value-kind", panel=P_PROMPT, help="Needle value: number (7 digits), uuid, words.")
]
Haystack = Annotated[
    str,
    _opt(
        "--haystack",
        panel=P_PROMPT,
        help="prose, noise, zh, ja, log, pg-essays, needles (distractor "
        "needles: keyed tasks), or a .txt file / folder.",
    ),
]
Task = Annotated[
    str,
    _opt("--task", panel=P_PROMPT, help=", ".join(task_rows()) + " (niah/datasets/tasks.jsonl)."),
]
Needles = Annotated[
    Optional[int],
    _opt("--needles", panel=P_PROMPT, help="Needles per trial for multi-* tasks (default 4)."),
]
TaskParam = Annotated[
    Optional[list[str]],
    _opt(
        "--task-param",
        panel=P_PROMPT,
        metavar="NAME=VALUE",
        help="A task knob NAME=VALUE over the task's row (repeat): "
        "hops (variable-tracking), common_repeats, rare_repeats (common-words), alpha "
        "(frequent-words).",
    ),
]
Thinking = Annotated[
    str,
    _opt(
        "--thinking",
        panel=P_PROMPT,
        help="Reasoning models: on or off "
        "sets the chat template's enable_thinking (on: no answer prefix, "
        "1024 more answer tokens); model: the template's default.",
    ),
]
Model = Annotated[
    Optional[str],
    _opt(
        "--model",
        "-m",
        panel=P_RUN,
        help="mlx-lm hub id, MLX model folder, or .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct).",
    ),
]
PrefillStep = Annotated[
    str, _opt("--prefill-step", panel=P_RUN, help="Prefill step in tokens (comma list sweeps).")
]
MaxTokens = Annotated[
    Optional[int],
    _opt(
        "--max-tokens",
        panel=P_RUN,
        help=f"Most tokens to decode (default {C.DEFAULT_MAX_TOKENS}; "
        "more for UUIDs and tasks asking for several values).",
    ),
]
RefuseBeyond = Annotated[
    bool,
    _opt(
        "--refuse-beyond-trained",
        panel=P_RUN,
        help="Refuse contexts past the model's trained length (by default they run, marked).",
    ),
]
# Before contexts past the trained length ran by default, they needed this flag: old scripts
# still pass it, so it is accepted, does nothing, and is hidden from --help.
AllowBeyond = Annotated[
    bool,
    typer.Option(
        "--allow-beyond-trained", hidden=True, help="Accepted for old scripts; does nothing."
    ),
]
Shard = Annotated[
    str,
    _opt(
        "--shard",
        panel=P_RUN,
        help="Under mlx.launch: none (split the "
        "trials across ranks) or tensor (one model sharded across ranks).",
    ),
]
GgufQuant = Annotated[
    str,
    _opt(
        "--gguf-quant",
        panel=P_RUN,
        help="GGUF weights: auto (as stored where MLX reads the type, else q8), q8, q4 or f16.",
    ),
]
RopeScaling = Annotated[
    str,
    _opt(
        "--rope-scaling",
        panel=P_RUN,
        help="RoPE override: yarn:4, "
        f"linear:2 (factor above 1, at most {C.MAX_ROPE_FACTOR}), "
        "none, or model (as shipped).",
    ),
]
WarmUp = Annotated[
    str,
    _opt(
        "--warm-up",
        panel=P_RUN,
        help="Before the first timed trial: "
        "auto (shapes on CUDA, once on Metal, off on CPU), shapes (every "
        "prefill block shape), once (one short generation) or off.",
    ),
]
Sdpa = Annotated[str, _opt("--sdpa", panel=P_SDPA, help="Attention route: auto, stock, chunked.")]
ChunkThreshold = Annotated[
    Optional[int],
    _opt(
        "--chunk-threshold",
        panel=P_SDPA,
        help="Key length from which chunking applies (default 65536).",
    ),
]
ChunkSize = Annotated[
    Optional[int], _opt("--chunk-size", panel=P_SDPA, help="Keys per chunk (default 32768).")
]
# --prefix-reuse sits with the KV cache (it trims the cache between trials), so that no panel
# holds two long flag columns: at 80 columns rich would cut them.
RepeatableMemory = Annotated[
    bool,
    _opt(
        "--repeatable-memory",
        panel=P_RUN,
        help="On CUDA, close MLX's CUDA graphs at 100 MB of inputs "
        "(MLX_MAX_MB_PER_BUFFER=100, recorded in every trial) so a repeated cell reads "
        "the same peak memory; MLX's own batching holds more, and a varying amount. "
        "Nothing changes on Metal or the CPU.",
    ),
]
PrefixReuse = Annotated[
    bool,
    _opt(
        "--prefix-reuse/--no-prefix-reuse",
        panel=P_KV,
        help="Reuse the prefilled shared prefix between trials.",
    ),
]
KvBits = Annotated[
    Optional[str],
    _opt(
        "--kv-bits",
        panel=P_KV,
        help="Quantized KV cache bits: "
        f"{', '.join(map(str, C.KV_BITS))} or a list 4,8 "
        "(none = float).",
    ),
]
KvGroupSize = Annotated[
    int,
    _opt(
        "--kv-group-size",
        panel=P_KV,
        help=f"Group size of the quantized KV cache: {', '.join(map(str, C.KV_GROUP_SIZES))}.",
    ),
]
MaxKvSize = Annotated[
    Optional[str], _opt("--max-kv-size", panel=P_KV, help="Rotating KV cache size(s), comma list.")
]
Out = Annotated[str, _opt("--out", "-o", panel=P_OUT, help="Folder for run folders.")]
Resume = Annotated[
    Optional[Path],
    _opt("--resume", panel=P_OUT, help="Resume this run folder (its config is reused)."),
]
FailUnder = Annotated[
    Optional[float],
    _opt("--fail-under", panel=P_OUT, help="Exit 1 when accuracy is below this (0..1)."),
]
Quiet = Annotated[bool, _opt("--quiet", "-q", panel=P_OUT, help="No progress bar.")]
