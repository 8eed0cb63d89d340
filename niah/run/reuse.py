"""Prefix reuse and KV-buffer layout, asking mlx-lm's cache objects for their rules.

A trial with prefix reuse trims the previous trial's cache back to the prefix the two prompts
share (cut to a multiple of the prefill step) and prefills only the rest. A trimmed cache keeps
the buffer of the longest trial before it; MLX's CUDA attention plans per key length and
buffer layout, so match_fresh_layout gives it the buffer a fresh cache holding the same tokens
would have. That buffer length is found by running the cache kind's own update_and_fetch on a
one-element-wide stand-in, never by copying mlx-lm's growth rule. reuse_mismatch says when
trials kept in a folder were timed with the other prefix-reuse setting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import ERROR, SKIP


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if len(diff) else n


def reuse_length(cached_ids, ids, *, step: int) -> int:
    """Tokens of a cached prefix a trial can keep: the shared prefix, cut to a multiple of the
    prefill step so the trial prefills the same block shapes a fresh one would."""
    shared = min(common_prefix(cached_ids, ids), len(ids) - 1)
    return (shared // step) * step


def trimmable(cache) -> bool:
    """Every layer's cache can be trimmed (mlx-lm asks each cache's is_trimmable)."""
    from mlx_lm.models.cache import can_trim_prompt_cache

    return bool(cache) and can_trim_prompt_cache(cache)


def trim_to(cache, tokens: int) -> None:
    """Trim every layer's cache back to its first `tokens` tokens."""
    from mlx_lm.models.cache import trim_prompt_cache

    n = cache[0].offset - tokens
    if n > 0:
        trim_prompt_cache(cache, n)


def _probe(kind):
    """An empty cache of `kind` when it can stand in for a fresh one (made without arguments,
    keys kept in one array buffer); None for kinds that cannot (rotating, quantized)."""
    try:
        probe = kind()
    except TypeError:
        return None
    return probe if hasattr(probe, "update_and_fetch") and hasattr(probe, "keys") else None


def _buffered(cache) -> bool:
    """A cache holding tokens in one plain array buffer (not quantized tuples)."""
    import mlx.core as mx

    return isinstance(getattr(cache, "keys", None), mx.array)


def fresh_capacity(tokens: int, *, step: int, kind=None) -> int | None:
    """Buffer length of a fresh cache of `kind` (mlx-lm's KVCache by default) that prefilled
    `tokens` in blocks of `step`, asked of the cache itself; None when `kind` has no such
    buffer."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    probe = _probe(kind or KVCache)
    if probe is None:
        return None
    pos = 0
    while pos < tokens:  # shapes only: nothing is evaluated
        block = mx.zeros((1, 1, min(step, tokens - pos), 1), dtype=mx.float16)
        probe.update_and_fetch(block, block)
        pos += block.shape[2]
    if pos and not _buffered(probe):
        return None
    return probe.keys.shape[2] if pos else 0


def _capacity_of(cache, *, tokens: int, step: int, seen: dict) -> int | None:
    kind = type(cache)
    if (kind, tokens) not in seen:
        seen[kind, tokens] = fresh_capacity(tokens, step=step, kind=kind)
    return seen[kind, tokens]


def match_fresh_layout(cache, *, step: int) -> None:
    """Give every buffered cache the buffer a fresh cache of its kind holding the same tokens
    would have (fresh_capacity), keeping the tokens."""
    seen: dict = {}
    for c in cache:
        if not _buffered(c):  # trimmed to 0 tokens too: a fresh cache holds no buffer
            continue
        cap = _capacity_of(c, tokens=c.offset, step=step, seen=seen)
        if cap is not None and c.keys.shape[2] != cap:
            c.keys, c.values = (_resized(x, cap, c.offset) for x in (c.keys, c.values))


def placeholder_cache(template, *, tokens: int, step: int):
    """Warm-up only: caches of `template`'s kinds and shapes that hold `tokens` placeholder
    tokens in a fresh cache's layout, so a generate with reuse=tokens runs the block shapes a
    trial runs from there. None when a cache of `template` cannot be made so (rotating,
    quantized, empty)."""
    import mlx.core as mx

    if not template or not all(_buffered(c) for c in template):
        return None
    seen: dict = {}
    out = []
    for c in template:
        cap = _capacity_of(c, tokens=tokens, step=step, seen=seen)
        if cap is None:
            return None
        new = type(c)()
        new.keys, new.values = (
            mx.zeros((*x.shape[:2], cap, x.shape[3]), dtype=x.dtype) for x in (c.keys, c.values)
        )
        new.offset = tokens
        out.append(new)
    return out


def _resized(x, capacity: int, keep: int):
    import mlx.core as mx

    out = mx.zeros((*x.shape[:2], capacity, x.shape[3]), dtype=x.dtype)
    out[..., :keep, :] = x[..., :keep, :]
    return out


def reuse_mismatch(records: list[dict], *, prefix_reuse: bool, folder: Path) -> list[str]:
    """Prefix reuse is not in the config hash (answers are equal with and without it), but
    timings differ: say when trials kept from the folder ran with the other setting."""
    # with reuse off, only a reused trial was timed differently (a fresh one prefilled it all)
    other = [
        r
        for r in records
        if r.get("verdict") not in (ERROR, SKIP)
        and r.get("prefix_reuse") == ("reused" if not prefix_reuse else "off")
    ]
    if not other:
        return []
    was = "off" if prefix_reuse else "on"
    return [
        f"{len(other)} trial{'s' if len(other) > 1 else ''} kept from {folder} ran with "
        f"prefix reuse {was}: verdicts hold, but their times are not this setting's; "
        "use another --out to time every trial with this setting"
    ]
