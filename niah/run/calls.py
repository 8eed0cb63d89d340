"""The attention calls a trial makes, and the route the dispatcher gives each: what the warm-up
plans from, so it builds only what will run.

mlx-lm's generation loop (generate_step) prefills the uncomputed prompt tokens in blocks of the
prefill step while more than one token is left (so the last block is (C - 1) % step long when
that is not zero), computes the final prompt token alone, then one token per decode step (it
computes the next token before yielding the current one: max_tokens single-token calls after
the final prompt token). Each call's key length is the cache's length after it. A reused trial
starts at a multiple of the step (niah.run.reuse.reuse_length), so its calls are the fresh
trial's calls from there on: the fresh trials of a group cover every call of the group.
"""

from __future__ import annotations

from collections.abc import Iterable

Call = tuple[int, int]  # (query rows, key length)
RoutedCall = tuple[str, int, int]  # (route, query rows, key length)


def trial_calls(*, context: int, step: int, max_tokens: int, start: int = 0) -> list[Call]:
    """(query rows, key length) of every attention call of a trial of `context` prompt tokens,
    in order: prefill blocks from `start` (tokens already cached), the final prompt token,
    then `max_tokens` decode steps (fewer when the answer ends early)."""
    if not 0 <= start < context:
        raise ValueError("start must leave at least one prompt token to compute")
    calls, pos = [], start
    while context - pos > 1:
        rows = min(step, context - 1 - pos)
        pos += rows
        calls.append((rows, pos))
    calls.append((1, context))
    calls += [(1, context + i) for i in range(1, max_tokens + 1)]
    return calls


def prefill_blocks(*, context: int, step: int, start: int = 0) -> list[Call]:
    """The prefill blocks of trial_calls (the calls before the final prompt token)."""
    return trial_calls(context=context, step=step, max_tokens=0, start=start)[:-1]


def prefill_block_lengths(context: int, step: int) -> set[int]:
    """Query lengths of the attention calls one trial makes (full prefill blocks, the last
    partial block, single-token calls), read off trial_calls."""
    return {rows for rows, _ in trial_calls(context=context, step=step, max_tokens=1)}


def routed_calls(
    specs: Iterable, *, route: str, config, backend_name: str, max_tokens: int
) -> set[RoutedCall]:
    """(route, rows, keys) of every attention call the trials `specs` (context, prefill_step)
    make, routed as niah.sdpa.dispatch.choose_route routes them on `backend_name`, with niah's
    fused kernel taken to pass its self-tests (the warm-up builds what it would serve)."""
    from ..sdpa.dispatch import choose_route

    out = set()
    for spec in specs:
        for qL, kL in trial_calls(
            context=spec.context, step=spec.prefill_step, max_tokens=max_tokens
        ):
            name = choose_route(
                qL=qL,
                kL=kL,
                route=route,
                config=config,
                backend_name=backend_name,
                fused_ok=lambda: True,
            )
            out.add((name, qL, kL))
    return out


def planned_kernel_calls(
    specs: Iterable,
    *,
    n_heads: int,
    head_dim: int,
    route: str,
    config,
    backend_name: str,
    max_tokens: int,
) -> set[tuple]:
    """The fused-kernel calls (rows, keys, causal, float32 out) of every kv-chunks call of
    routed_calls: the kernel variants these trials will use. Trials with a quantized KV cache
    are left out (their key chunks run on the reference, never on the kernel)."""
    from ..sdpa.dispatch import planned_fused_calls

    plain = [s for s in specs if not getattr(s, "kv_bits", None)]
    calls = set()
    for name, qL, kL in routed_calls(
        plain, route=route, config=config, backend_name=backend_name, max_tokens=max_tokens
    ):
        if name == "kv-chunks":
            calls.update(
                planned_fused_calls(
                    B=1,
                    Hq=n_heads,
                    qL=qL,
                    kL=kL,
                    D=head_dim,
                    causal=qL > 1,
                    config=config,
                    backend_name=backend_name,
                )
            )
    return calls
