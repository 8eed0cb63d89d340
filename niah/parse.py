"""Parsers of values a user gives: command-line strings and the fields of a config.json.

Contexts ("128k" = 131072, "1m" = 1048576, "8000"), depth lists ("0,0.25,0.5") and ranges
("0:1:0.1": the stop included only when the steps hit it, at most MAX_RANGE_VALUES values),
integer axes ("4,8"), KV-cache quantization, RoPE scaling, needle templates ({value}, literal
braces as {{ }}), repeated NAME=VALUE options (--task-param) and config fields read back from
JSON. Every error raises NiahError with one
line naming the bad value and the fix.
"""

from __future__ import annotations

import json
import math
import re
import string

from .errors import NiahError

MAX_CONTEXT = 16 * 1024 * 1024
MAX_RANGE_VALUES = 1001  # most values a start:stop:step range may give
ROPE_KINDS = ("yarn", "linear")
MAX_ROPE_FACTOR = 64  # a RoPE factor is in (1, MAX_ROPE_FACTOR]
KV_BITS = (2, 3, 4, 5, 6, 8)  # bits mlx-lm's QuantizedKVCache (mx.quantize) accepts
KV_GROUP_SIZES = (32, 64, 128)  # group sizes mx.quantize accepts

_CONTEXT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_context(text: str) -> int:
    """Parse one context length: "128k" -> 131072, "1m" -> 1048576, "8000" -> 8000."""
    m = _CONTEXT_RE.match(str(text))
    if not m:
        raise NiahError(f"bad context {text!r}: use a positive token count like 8000, 4k or 1m")
    number, unit = float(m.group(1)), m.group(2).lower()
    value = number * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]
    if value != int(value) or int(value) <= 0:
        raise NiahError(
            f"bad context {text!r}: use a positive whole token count like 8000, 4k or 1m"
        )
    if int(value) > MAX_CONTEXT:
        raise NiahError(f"context {text!r} is over the {MAX_CONTEXT} token limit: use 16m or less")
    return int(value)


def parse_contexts(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of contexts, keeping order and dropping repeats."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise NiahError("empty --context: give one or more lengths like 4k,32k,128k")
    return tuple(dict.fromkeys(parse_context(t) for t in items))


def _parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise NiahError(f"bad {what} {text!r}: use a number between 0 and 1 like 0.5")
    return value


def parse_range(
    text: str, *, what: str, example: str = "0:1:0.1", limit: int = MAX_RANGE_VALUES
) -> list[float]:
    """Parse "start:stop:step" into start, start + step, ... up to stop. The stop is included
    only when the steps hit it (within a relative tolerance of 1e-9 steps); never beyond it.
    More than `limit` values is an error, computed before any list is built."""
    parts = text.split(":")
    if len(parts) != 3:
        raise NiahError(f"bad {what} range {text!r}: use start:stop:step like {example}")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        start = stop = step = math.nan
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise NiahError(
            f"bad {what} range {text!r}: start, stop and step must be finite "
            f"numbers, like {example}"
        )
    if step <= 0 or stop < start:
        raise NiahError(
            f"bad {what} range {text!r}: step must be > 0 and stop >= start, like {example}"
        )
    steps = (stop - start) / step
    n = math.floor(steps + 1e-9 * max(1.0, steps)) if steps < limit else limit
    if n + 1 > limit:
        raise NiahError(
            f"{what} range {text!r} gives more than the {limit} values allowed: use a larger step"
        )
    values = [round(start + i * step, 12) for i in range(n + 1)]
    values[-1] = min(values[-1], stop)  # a hit within the tolerance is the stop itself
    return values


def parse_depths(text: str) -> tuple[float, ...]:
    """Parse depths: a list "0,0.5,1" or a range "start:stop:step" (see parse_range)."""
    text = str(text).strip()
    if not text:
        raise NiahError("empty --depth: give depths like 0,0.5,1 or a range like 0:1:0.1")
    if ":" in text:
        values = parse_range(text, what="depth")
    else:
        values = [_parse_float(p.strip(), "depth") for p in text.split(",") if p.strip()]
    if not values:
        raise NiahError("empty --depth: give depths like 0,0.5,1 or a range like 0:1:0.1")
    # to the 6 significant digits of a trial key (two depths never share one key), -0 as 0
    values = [float(f"{v:.6g}") + 0.0 for v in values]
    for v in values:
        if not 0.0 <= v <= 1.0:
            raise NiahError(f"depth {v:g} is outside [0, 1]: use fractions like 0.1 or 0:1:0.1")
    return tuple(dict.fromkeys(float(v) for v in values))


def parse_int_list(
    text: str,
    *,
    what: str,
    allowed: tuple[int, ...] | None = None,
    allow_none: bool = False,
    example: str = "4,8",
) -> tuple[int | None, ...]:
    """Parse "4,8" (and "none" where allowed) into a tuple of ints. An empty value is refused,
    never taken as the default."""
    out: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if allow_none and part in ("none", "off"):
            out.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise NiahError(
                f"bad {what} value {part!r}: use whole numbers like {example}"
            ) from None
        if value <= 0 or (allowed is not None and value not in allowed):
            choices = ", ".join(str(a) for a in allowed) if allowed else "a positive number"
            raise NiahError(
                f"bad {what} value {part!r}: use {choices}" + (" or none" if allow_none else "")
            )
        out.append(value)
    if not out:
        raise NiahError(f"empty {what}: give one or more values like {example}")
    return tuple(dict.fromkeys(out))


def check_kv_cache(kv_bits: int | None, max_kv_size: int | None) -> None:
    """A quantized KV cache (--kv-bits) and a rotating one (--max-kv-size) do not combine:
    mlx-lm has no quantized rotating cache."""
    if kv_bits is not None and max_kv_size is not None:
        raise NiahError(
            "--kv-bits and --max-kv-size cannot be combined (mlx-lm has no "
            "quantized rotating cache): sweep them separately"
        )


def check_kv_group_size(size: int, *, head_dim: int | None = None) -> None:
    """The quantized KV cache's group size: one mx.quantize accepts and, once the model is
    known, one that divides its head size (keys and values are quantized along it)."""
    if size not in KV_GROUP_SIZES:
        raise NiahError(
            f"--kv-group-size {size} is not supported: use "
            f"{', '.join(str(g) for g in KV_GROUP_SIZES)}"
        )
    if head_dim and head_dim % size:
        fits = [str(g) for g in KV_GROUP_SIZES if head_dim % g == 0] or ["none"]
        raise NiahError(
            f"--kv-group-size {size} does not divide the model's head size "
            f"{head_dim}: use {' or '.join(fits)}"
        )


def parse_rope_scaling(text: str) -> str:
    """ "yarn:4" / "linear:2" / "none" / "model" -> its canonical form ("yarn:4"); the factor is
    a finite number in (1, MAX_ROPE_FACTOR]."""
    value = str(text).strip().lower()
    if value in ("model", "none"):
        return value
    kind, _, factor = value.partition(":")
    try:
        f = float(factor)
    except ValueError:
        f = 0.0
    if kind not in ROPE_KINDS or not f > 1.0 or f != f:
        raise NiahError(
            f"bad --rope-scaling {text!r}: use yarn:FACTOR or linear:FACTOR with "
            "FACTOR > 1 (e.g. yarn:4), none, or model"
        )
    if not f <= MAX_ROPE_FACTOR:
        raise NiahError(
            f"bad --rope-scaling {text!r}: FACTOR must be at most {MAX_ROPE_FACTOR} "
            "(a finite number above 1, e.g. yarn:4)"
        )
    return f"{kind}:{f:g}"


def rope_scaling_config(spec: str, *, trained_context: int | None) -> dict | None | str:
    """mlx-lm's rope_scaling for a canonical --rope-scaling value ("model": leave it)."""
    if spec in ("model", "none"):
        return spec if spec == "model" else None
    kind, factor = spec.split(":")
    out = {"type": kind, "factor": float(factor)}
    if kind == "yarn":
        if not trained_context:
            raise NiahError(
                "--rope-scaling yarn needs the model's trained context length, which "
                "this model does not state: use linear:FACTOR"
            )
        out["original_max_position_embeddings"] = int(trained_context)
    return out


def format_context(tokens: int) -> str:
    """131072 -> "128K", 1048576 -> "1M", 8000 -> "8000"."""
    if tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}M"
    if tokens % 1024 == 0:
        return f"{tokens // 1024}K"
    return str(tokens)


def check_needle_template(template: str, *, keyed: bool = False) -> None:
    """The needle is filled in with str.format(value=..., key=...): it must hold {value} (once
    or more), may hold {key} in keyed tasks, literal braces written {{ and }}, and nothing else
    in braces."""
    allowed = ("value", "key") if keyed else ("value",)
    shown_allowed = " and ".join("{" + a + "}" for a in allowed)
    fix = "write literal braces as {{ and }} and the value as {value}"
    try:
        fields = [
            (name, spec, conv)
            for _, name, spec, conv in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError:
        raise NiahError(f"the needle template {template!r} has an unpaired brace: {fix}") from None
    for name, spec, conv in fields:
        if name not in allowed or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise NiahError(
                f"the needle template {template!r} has the placeholder {shown}: "
                f"only {shown_allowed} {'is' if len(allowed) == 1 else 'are'} "
                f"filled in; {fix}"
            )
    if not any(name == "value" for name, _, _ in fields):
        raise NiahError(
            "the needle template has no {value} placeholder: write it like "
            "'The secret passkey is {value}.'"
        )


# The JSON type of each RunConfig field, as config.json holds it (tests check every field is here).
CONFIG_KINDS = {
    "text": (
        (
            "model",
            "needle",
            "question",
            "answer_prefix",
            "intro",
            "value_kind",
            "haystack",
            "sdpa",
            "shard",
            "out",
            "task",
            "gguf_quant",
            "rope_scaling",
            "thinking",
        ),
        "a string",
    ),
    "int": (("samples", "seed", "max_tokens", "kv_group_size", "needles"), "a whole number"),
    "texts": (("keys",), "a list of strings"),
    "params": (("task_params",), "a list of [name, positive number] pairs"),
    "int?": (("chunk_threshold", "chunk_size"), "a whole number or null"),
    "bool": (("refuse_beyond_trained", "prefix_reuse", "repeatable_memory"), "true or false"),
    "ints": (("contexts", "prefill_steps"), "a non-empty list of positive whole numbers"),
    "ints?": (("kv_bits", "max_kv_size"), "a non-empty list of whole numbers or nulls"),
    "depths": (("depths",), "a non-empty list of numbers in [0, 1]"),
    "dict": (("extra",), "an object"),
    "cells": (("cells",), "null or a list of [context, depth, sample] cells"),
}


def config_value(name: str, value):
    """One field of a config read back from JSON, type-checked; lists become tuples."""

    def whole(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def depth(v):
        return (whole(v) or isinstance(v, float)) and 0 <= v <= 1

    kind = next(k for k, (names, _) in CONFIG_KINDS.items() if name in names)
    is_list = isinstance(value, (list, tuple)) and len(value) > 0
    ok = {
        "text": lambda: isinstance(value, str),
        "int": lambda: whole(value),
        "int?": lambda: value is None or whole(value),
        "bool": lambda: isinstance(value, bool),
        "ints": lambda: is_list and all(whole(v) and v > 0 for v in value),
        "ints?": lambda: is_list and all(v is None or whole(v) for v in value),
        "depths": lambda: is_list and all(depth(v) for v in value),
        "dict": lambda: isinstance(value, dict),
        "texts": lambda: (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        ),
        "params": lambda: (
            isinstance(value, (list, tuple))
            and all(
                isinstance(p, (list, tuple))
                and len(p) == 2
                and isinstance(p[0], str)
                and isinstance(p[1], (int, float))
                and not isinstance(p[1], bool)
                and p[1] > 0
                for p in value
            )
        ),
        "cells": lambda: (
            value is None
            or is_list
            and all(
                isinstance(c, (list, tuple))
                and len(c) == 3
                and whole(c[0])
                and c[0] > 0
                and depth(c[1])
                and whole(c[2])
                and c[2] >= 0
                for c in value
            )
        ),
    }[kind]()
    if not ok:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise NiahError(f"config field {name!r} is {shown}: expected {CONFIG_KINDS[kind][1]}")
    if kind == "params":
        return tuple((str(n), v) for n, v in value)
    if kind == "cells" and value is not None:
        return tuple((c[0], float(c[1]), c[2]) for c in value)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def parse_assignments(texts, *, option: str) -> tuple[tuple[str, str], ...]:
    """Repeated NAME=VALUE options as (name, value text) pairs; a text without NAME= and a
    name given twice are refused (a silent last-one-wins would hide a typo)."""
    pairs: dict[str, str] = {}
    for text in texts or ():
        name, eq, value = str(text).partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value:
            raise NiahError(f"bad {option} {text!r}: write NAME=VALUE, like {option} hops=2")
        if name in pairs:
            raise NiahError(
                f"{option} {name} is given twice ({name}={pairs[name]}, {name}={value}): "
                "give each knob once"
            )
        pairs[name] = value
    return tuple(pairs.items())
