"""The trial record: one TrialRecord type owns every field of a line of trials.jsonl.

Each field is named, typed and documented here once; the stage methods (`skipped`, `failed`,
`scored`) are the only places a record is filled; `to_json` gives the JSON object stored (the
same keys and values niah has always written), `problem` says why a line read back is not a
usable record. docs/records.md is generated from this module by `fields_markdown()`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field

from ..scoring import ERROR, FAIL, NULL, PASS, SKIP, VERDICTS

__all__ = [
    "ERROR",
    "FAIL",
    "NULL",
    "PASS",
    "SKIP",
    "VERDICTS",
    "RETRIED",
    "NeedleRecord",
    "TrialRecord",
    "problem",
    "fields_markdown",
    "dumps",
]

# SKIP depends on the machine (memory preflight) and ERROR on the moment: both are retried.
RETRIED = (ERROR, SKIP)


class _Absent:
    """A field this record does not carry (it is left out of the JSON object, not null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()

ALWAYS = "every record"
RAN = "records of trials that generated (PASS, FAIL, NULL)"
TIMED = "records of trials that started (not SKIP)"
PREFLIGHT = "records made with the memory preflight on"
TASKED = "every record (folders made before tasks existed lack it)"
NEWER = "records made since 2026-12 (older folders lack it)"
SIZED = "records made since 2026-12-04 (older folders lack it)"
STORED = "written by the store as the line is appended"


def _field(doc: str, *, when: str = ALWAYS, checked: str | None = None, default=ABSENT):
    """A record field: `doc` its meaning, `when` which records carry it, `checked` the type
    the reader insists on ("number" or "text"; None: not checked)."""
    return field(default=default, metadata={"doc": doc, "when": when, "checked": checked})


def dumps(data) -> str:
    """One JSON line as niah writes it: sorted keys, and never NaN or Infinity (refused)."""
    return json.dumps(data, sort_keys=True, default=str, allow_nan=False)


@dataclass(frozen=True)
class NeedleRecord:
    """One needle of a trial, as listed in the record's `needles`."""

    key: str | None = _field("the key the needle belongs to (keyed tasks), else null")
    value: str = _field("the value the needle states")
    needle_index: int = _field("token index of the needle's first token in the prompt")
    needle_depth: float = _field("real depth of the needle in the haystack, 0..1 (6 digits)")
    found: bool | None = _field(
        "whether the answer holds the value (targets) or offers it "
        "(distractors); null before scoring"
    )
    role: str = _field('"target" (asked for) or "distractor" (must not be answered)')
    boundary: str = _field('what the needle was placed at: "sentence", "word", "char" or "token"')

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrialRecord:
    """One trial's result, one JSON object per line of trials.jsonl."""

    # the cell and how the prompt came out
    key: str = _field(
        "stable trial key (context, depth, sample, KV settings, prefill step): "
        "what resume and pooling match on"
    )
    model: str = _field("model name (file or folder name, or hub id)", checked="text")
    model_path: str = _field("where the model was loaded from")
    context: int = _field("requested context in tokens")
    context_tokens: int = _field("exact tokens of the final prompt", checked="number")
    depth: float = _field("requested needle depth, 0..1")
    needle_index: int = _field("token index of the (first) needle in the prompt")
    needle_depth: float = _field("real depth of the (first) needle, 0..1 (6 digits)")
    value: str = _field("the value(s) asked for, comma-separated")
    response: str | None = _field(
        "the model's decoded answer; null when it did not generate", checked="text"
    )
    verdict: str = _field(
        "PASS, FAIL, NULL (no value offered), SKIP (memory preflight) or ERROR (the trial raised)"
    )
    # timings and memory
    prefill_s: float | None = _field(
        "mlx-lm's prompt time: seconds from the start of generation to the first token",
        checked="number",
    )
    prefill_tps: float | None = _field(
        "prefilled tokens per second (prefilled_tokens / prefill_s, mlx-lm's prompt tokens/s)"
    )
    ttft_s: float | None = _field(
        "wall seconds from the trial's generate call to the first token (prefill_s plus set-up)",
        checked="number",
    )
    decode_tps: float | None = _field(
        "decode tokens per second as mlx-lm reports it "
        "(generated tokens over the time since the first); "
        "null for a one-token answer"
    )
    peak_memory_bytes: int | None = _field(
        "MLX peak active memory during the trial, in "
        "bytes, counted from a reset after freeing what "
        "earlier trials left"
    )
    # attention route and versions
    sdpa_route: str | None = _field(
        'what attention ran: "stock", "q-split", '
        '"kv-chunks/fused", "kv-chunks/reference", joined with "+"; with a quantized KV '
        'cache prefixed "quantized-" (mlx-lm\'s quantized attention) or "dequantized-" (CUDA: '
        "attention over the dequantized K/V)"
    )
    sdpa_option: str = _field("the --sdpa option asked (auto, stock, chunked)")
    mlx_version: str | None = _field("MLX version")
    mlx_lm_version: str | None = _field("mlx-lm version")
    mlx_env: str | None = _field(
        "MLX settings from the environment that change how GPU work is batched, and with it "
        "time and peak memory (MLX_MAX_OPS_PER_BUFFER, MLX_MAX_MB_PER_BUFFER, "
        'MLX_USE_CUDA_GRAPHS), as "NAME=VALUE" joined by spaces; absent when none is set',
        when="records made with one of those variables set",
    )
    niah_version: str | None = _field("niah version")
    model_digest: str | None = _field("sha256 of a GGUF file; null for folders and hub ids")
    haystack_digest: str | None = _field("digest of the haystack text")
    compute_dtype: str | None = _field("dtype activations ran in")
    device: str = _field(
        "backend and device name, e.g. 'cuda (NVIDIA H100 80GB HBM3)'", checked="text"
    )
    config_hash: str = _field(
        "the run configuration's hash: records of other hashes are never pooled"
    )
    seed: int = _field("run seed (needle values and haystack order)")
    sample: int = _field("sample index within the cell")
    # KV cache and prefill settings
    kv_bits: int | None = _field(
        "KV cache quantization bits; null for full precision", checked="number"
    )
    kv_group_size: int | None = _field("KV quantization group size; null without kv_bits")
    max_kv_size: int | None = _field(
        "rotating KV cache size; null for the whole prompt", checked="number"
    )
    prefill_step: int = _field("tokens per prefill block", checked="number")
    # the model
    trained_context: int | None = _field("the model's trained context length, if known")
    beyond_trained: bool = _field("whether context plus --max-tokens exceeds trained_context")
    n_layers: int = _field("transformer layers", checked="number")
    n_heads: int = _field("attention (query) heads", checked="number")
    n_kv_heads: int = _field("KV heads", checked="number")
    head_dim: int = _field("head dimension", checked="number")
    hidden_size: int = _field("model width (0: unknown)", when=SIZED)
    intermediate_size: int = _field("MLP width (0: unknown)", when=SIZED)
    vocab_size: int = _field("vocabulary size (0: unknown)", when=SIZED)
    weight_bytes: int = _field("bytes of the weights as loaded", when=SIZED)
    rope_scaling: str = _field("the --rope-scaling option (model, none, yarn:F, linear:F)")
    rope_scaling_config: dict | None = _field("the RoPE scaling the model ran with")
    weights: str | None = _field(
        'GGUF weights as loaded ("native", "q8/g64", ...); "as stored" for MLX folders'
    )
    rank: int | None = _field("mlx.launch rank that ran the trial; null in a plain run")
    time: str = _field("local time the trial record was made (%Y-%m-%dT%H:%M:%S%z)")
    # the task
    task: str = _field("task name (single, multi-needle, multi-key, ...)", when=TASKED)
    score: float | None = _field(
        "fraction of asked values found, 0..1 (6 digits); null before scoring",
        when=TASKED,
        checked="number",
    )
    needle_boundary: str = _field("what the first needle was placed at (see needles)", when=TASKED)
    needles: list[NeedleRecord] = _field("every needle of the trial (fields below)", when=TASKED)
    estimated_memory_bytes: int = _field("the memory preflight's estimate", when=PREFLIGHT)
    thinking: str = _field("the --thinking option: model, on or off", when=NEWER)
    max_tokens: int = _field("the answer budget (--max-tokens, or the task's default)", when=NEWER)
    kv_cache_bytes: int = _field("bytes the KV cache held after the trial", when=NEWER)
    # generation
    generated_tokens: int = _field("tokens generated (EOS included)", when=RAN, checked="number")
    prefilled_tokens: int = _field(
        "prompt tokens computed in this trial", when=RAN, checked="number"
    )
    reused_tokens: int = _field("prompt tokens taken from the previous trial's cache", when=RAN)
    decode_s: float = _field("seconds decoding after the first token", when=RAN, checked="number")
    finish: str = _field('"eos" or "length"', when=RAN)
    error: str | None = _field("why a SKIP or ERROR happened; null otherwise", checked="text")
    prefix_reuse: str = _field('"reused", "fresh", "off" or "untrimmable-cache"', when=RAN)
    elapsed_s: float = _field("wall seconds of the whole trial", when=TIMED, checked="number")
    written_at: float = _field("unix time the line was appended", when=STORED)

    # -- the stages that fill a record ------------------------------------------------------

    @classmethod
    def begin(cls, **fields) -> TrialRecord:
        """A record before it runs: its cell, prompt, model and settings (no verdict)."""
        base = dict(
            response=None,
            verdict=None,
            prefill_s=None,
            prefill_tps=None,
            ttft_s=None,
            decode_tps=None,
            peak_memory_bytes=None,
            sdpa_route=None,
            time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            score=None,
        )
        return cls(**{**base, **fields})

    def skipped(self, reason: str) -> TrialRecord:
        return dataclasses.replace(self, verdict=SKIP, error=f"skipped: {reason}")

    def failed(self, exc: BaseException, *, sdpa_route: str, elapsed_s: float) -> TrialRecord:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return dataclasses.replace(
            self,
            verdict=ERROR,
            score=0.0,
            sdpa_route=sdpa_route,
            error=f"{type(exc).__name__}: {text}",
            elapsed_s=elapsed_s,
        )

    def scored(
        self,
        gen,
        *,
        verdict: str,
        score: float,
        found,
        sdpa_route: str,
        prefix_reuse: str,
        elapsed_s: float,
    ) -> TrialRecord:
        """The record of a trial that generated: `gen` a model.Generation, `found` one flag
        per needle."""
        needles = [dataclasses.replace(n, found=bool(f)) for n, f in zip(self.needles, found)]
        return dataclasses.replace(
            self,
            response=gen.response,
            verdict=verdict,
            score=round(score, 6),
            needles=needles,
            generated_tokens=gen.tokens,
            prefilled_tokens=gen.prefilled,
            reused_tokens=gen.reused,
            prefill_s=round(gen.prefill_s, 4),
            prefill_tps=round(gen.prefilled / gen.prefill_s, 2) if gen.prefill_s > 0 else None,
            ttft_s=round(gen.ttft_s, 4),
            decode_s=round(gen.decode_s, 4),
            decode_tps=round(gen.decode_tps, 2) if gen.decode_tps else None,
            peak_memory_bytes=gen.peak_memory_bytes,
            kv_cache_bytes=gen.kv_cache_bytes,
            finish=gen.finish,
            error=None,
            sdpa_route=sdpa_route,
            prefix_reuse=prefix_reuse,
            elapsed_s=elapsed_s,
        )

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict:
        """The JSON object of this record: absent fields left out, needles as objects."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is ABSENT:
                continue
            if f.name == "needles":
                value = [n.to_json() for n in value]
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict) -> TrialRecord:
        """A record read back (checked by `problem`); unknown keys are refused by name."""
        why = problem(data)
        if why:
            raise ValueError(f"not a trial record: {why}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"not a trial record: unknown field {unknown[0]!r}")
        data = dict(data)
        if isinstance(data.get("needles"), list):
            data["needles"] = [NeedleRecord(**n) for n in data["needles"]]
        return cls(**data)


def checked_fields(kind: str) -> tuple[str, ...]:
    """Fields whose type the reader checks: "number" (finite int or float) or "text"."""
    return tuple(f.name for f in dataclasses.fields(TrialRecord) if f.metadata["checked"] == kind)


def problem(rec) -> str | None:
    """Why a parsed line is not a usable trial record (None when it is one). Fields reports
    compute with must hold their type: a record holding another is malformed, not a
    traceback."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("key"), str) or not rec["key"]:
        return "no trial key"
    for name in ("context", "sample"):
        if not isinstance(rec.get(name), int) or isinstance(rec.get(name), bool):
            return f"{name} is not a whole number"
    depth = rec.get("depth")
    if not isinstance(depth, (int, float)) or isinstance(depth, bool) or not 0 <= depth <= 1:
        return "depth is not a number in [0, 1]"
    if rec.get("verdict") not in VERDICTS:
        return "no valid verdict"
    for name in checked_fields("number"):
        value = rec.get(name)
        if value is not None and (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            return f"{name} is not a finite number"
        if value is not None and value < 0:  # times, counts, sizes and scores
            return f"{name} is negative"
    for name in checked_fields("text"):
        if rec.get(name) is not None and not isinstance(rec[name], str):
            return f"{name} is not text"
    return None


def _table(cls) -> list[str]:
    rows = ["| field | type | in | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        kind = str(f.type).replace("|", "or")
        rows.append(f"| `{f.name}` | {kind} | {f.metadata['when']} | {f.metadata['doc']} |")
    return rows


def fields_markdown() -> str:
    """docs/records.md: every record field with its type and meaning, from TrialRecord."""
    lines = [
        "# Trial records",
        "",
        "<!-- generated by niah.run.records.fields_markdown(); edit niah/run/records.py -->",
        "",
        "Each finished trial is one JSON object per line of `<run>/trials.jsonl` "
        "(`trials.rank<N>.jsonl` per rank under mlx.launch). Keys are sorted; a field a "
        'record does not carry is left out (see the "in" column), `null` means known to be '
        "empty. Verdicts: "
        + ", ".join(f"`{v}`" for v in VERDICTS)
        + "; "
        + " and ".join(f"`{v}`" for v in RETRIED)
        + " trials are run again on resume.",
        "",
        *_table(TrialRecord),
        "",
        "## Needles",
        "",
        "Each entry of `needles`:",
        "",
        *_table(NeedleRecord),
        "",
    ]
    return "\n".join(lines)
