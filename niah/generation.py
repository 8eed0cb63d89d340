"""One trial's generation, through mlx-lm's own loop.

A trial prefills the prompt's uncached tokens and decodes greedily with
`mlx_lm.generate.stream_generate` (which drives `generate_step`): the generation stream, the
wired-memory limit, the cache clearing between prefill blocks and the pipelined decode are
mlx-lm's, so the times recorded are those of the code users run with `mlx_lm.generate`.
Prefill and decode figures come from the events mlx-lm reports: the time to the first token
(its prompt time) and the arrival of each later token. The text is decoded from the generated
token ids with end-of-sequence ids (the tokenizer wrapper's `eos_token_ids`) left out.

Memory is per trial: before the prefill, what earlier trials and the warm-up left to the
garbage collector and MLX's buffer cache is freed and the peak counter is reset, so the peak
read after the trial is the trial's own (weights, its KV cache, its temporaries).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Generation:
    """What one generation produced and what it cost."""

    response: str  # decoded text, end-of-sequence tokens left out
    tokens: int  # generated tokens, an end-of-sequence token included
    prefilled: int  # prompt tokens computed in this trial (reused ones excluded)
    reused: int  # prompt tokens taken from a reused cache
    prefill_s: float  # mlx-lm's prompt time: start of generation to the first token
    ttft_s: float  # wall time from this call to the first token (set-up included)
    decode_s: float  # first token to last token
    decode_tps: float | None  # mlx-lm's generation tokens/s (None for a single token)
    peak_memory_bytes: int  # MLX peak active memory during this trial
    kv_cache_bytes: int  # bytes held by the KV cache after the trial
    finish: str  # "eos" | "length"
    token_ids: tuple[int, ...] = ()  # the generated ids, end-of-sequence included


def free_memory() -> None:
    """Wait for queued work (a GPU returns a finished command's buffers when it completes, so
    work still in flight would count in the next peak), then drop what nothing references any
    more and MLX's cached buffers. mlx-lm prefills and decodes on a stream of its own and stops
    with a step still queued there; mx.synchronize() alone waits for the default stream only."""
    import mlx.core as mx
    from mlx_lm.generate import generation_stream

    mx.synchronize(generation_stream)
    mx.synchronize()
    gc.collect()
    mx.clear_cache()


def generate(
    model,
    tokenizer,
    ids,
    *,
    cache,
    reuse: int = 0,
    prefill_step: int = 2048,
    max_tokens: int = 32,
    on_prefill: Callable[[int, int], None] | None = None,
) -> Generation:
    """Prefill ids[reuse:] onto `cache` (already holding ids[:reuse]), then decode greedily.

    tokenizer: an mlx-lm TokenizerWrapper (its eos_token_ids end the generation).
    on_prefill(done, total): mlx-lm's prompt progress callback, in prompt tokens of this call.
    """
    import mlx.core as mx
    from mlx_lm.generate import stream_generate

    n = len(ids)
    if not 0 <= reuse < n:
        raise ValueError("reuse must leave at least one prompt token to compute")
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    prompt = mx.array(list(ids[reuse:]), dtype=mx.int32)
    free_memory()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    out, first, last, last_resp = [], None, None, None
    for resp in stream_generate(
        model,
        tokenizer,
        prompt,
        max_tokens=max_tokens,
        prompt_cache=cache,
        prefill_step_size=prefill_step,
        prompt_progress_callback=on_prefill,
    ):
        last = time.perf_counter()
        first = first if first is not None else last
        out.append(int(resp.token))
        last_resp = resp
    eos = set(tokenizer.eos_token_ids)
    finish = "eos" if last_resp.finish_reason == "stop" else "length"
    text = tokenizer.decode([t for t in out if t not in eos], skip_special_tokens=True)
    return Generation(
        response=text,
        tokens=len(out),
        prefilled=n - reuse,
        reused=reuse,
        prefill_s=last_resp.prompt_tokens / last_resp.prompt_tps,
        ttft_s=first - t0,
        decode_s=last - first,
        decode_tps=last_resp.generation_tps if len(out) > 1 else None,
        peak_memory_bytes=int(mx.get_peak_memory()),
        kv_cache_bytes=int(sum(getattr(c, "nbytes", 0) for c in cache)),
        finish=finish,
        token_ids=tuple(out),
    )
