"""The key-chunked route: kv_chunks (key chunks + streaming logsumexp merge), query blocks,
the plan of blocks and chunks per backend (Metal: a FLOP budget per command buffer), and the
fused calls that plan makes (for warming up exactly the kernel variants a run uses).

niah.sdpa.dispatch re-exports these names; it decides when this route runs.
"""

from __future__ import annotations

import mlx.core as mx

from .. import backend as _backend_mod
from .budget import ChunkConfig, WorkPlan, plan_work
from .merge import Accumulator
from .reference import attention_with_lse


def _slice_mask_keys(mask, start: int, stop: int, kL: int):
    if mask is None or isinstance(mask, str):
        return mask
    if mask.shape[-1] == 1 and kL != 1:
        return mask
    return mask[..., start:stop]


def _slice_mask_rows(mask, start: int, stop: int):
    if mask is None or isinstance(mask, str) or mask.ndim < 2 or mask.shape[-2] == 1:
        return mask
    return mask[..., start:stop, :]


def _one_chunk(fn, q, kc, vc, *, scale, mask, sinks, span, causal_shift, extra):
    """One key chunk's (out, lse): `span` is (start, stop, kL) of the chunk's keys;
    `causal_shift` is None without a causal mask, else the chunk's own shift (row i sees
    chunk key j when j <= i + shift)."""
    start, stop, kL = span
    if causal_shift is None:
        masked = _slice_mask_keys(mask, start, stop, kL)
        return fn(q, kc, vc, scale=scale, mask=masked, sinks=sinks, **extra)
    if causal_shift >= stop - start - 1:  # every row sees the whole chunk
        return fn(q, kc, vc, scale=scale, mask=None, sinks=sinks, **extra)
    return fn(q, kc, vc, scale=scale, mask=None, sinks=sinks, causal_shift=causal_shift, **extra)


def kv_chunks(
    q,
    k,
    v,
    *,
    scale: float,
    mask=None,
    sinks=None,
    chunk_size: int,
    chunk_fn=None,
    evaluate: bool = True,
) -> tuple[mx.array, mx.array]:
    """Key-chunked attention with a streaming lse merge; returns (out, lse)."""
    qL, kL = q.shape[2], k.shape[2]
    shift_total = kL - qL  # causal: row i sees key j when j <= i + shift_total
    causal = isinstance(mask, str)
    if causal and mask != "causal":
        raise ValueError(f"unknown mask {mask!r}: use 'causal', an array or None")
    fn = chunk_fn or attention_with_lse
    fused = hasattr(fn, "splits_keys")
    if fused and fn.splits_keys:
        # The fused CUDA kernel splits the keys on the device (split-K + combine) in one launch;
        # host-side chunks exist for the Metal watchdog and would only add launches here.
        chunk_size = max(chunk_size, kL)
    if chunk_size >= kL:  # one chunk: no merge, no intermediate evaluation
        return fn(q, k, v, scale=scale, mask=mask, sinks=sinks)
    # Several chunks: fused partials stay float32 until the merge (one rounding, at the end).
    extra = {"out_dtype": mx.float32} if fused else {}
    acc = Accumulator()
    for start in range(0, kL, chunk_size):
        stop = min(start + chunk_size, kL)
        if causal and start > (qL - 1) + shift_total:
            break  # no row sees these keys
        out, lse = _one_chunk(
            fn,
            q,
            k[:, :, start:stop],
            v[:, :, start:stop],
            scale=scale,
            mask=mask,
            sinks=sinks if start == 0 else None,
            span=(start, stop, kL),
            causal_shift=shift_total - start if causal else None,
            extra=extra,
        )
        acc.add(out, lse)
        if evaluate:
            mx.eval(acc.out, acc.lse)
    out, lse = acc.result()
    return out.astype(q.dtype), lse


def work_plan(
    q, k, *, config: ChunkConfig, fused: bool, backend_name: str | None = None
) -> WorkPlan:
    """Query block and keys per call for the kv-chunks route. Metal: bounded by the FLOP budget
    per command buffer (budget.plan_work; the fused kernel may take all keys in one launch, the
    reference at most config.chunk_size). Elsewhere: all queries, config.chunk_size keys."""
    B, Hq, qL, D = q.shape
    if (backend_name or _backend_mod.backend()) != "metal":
        return WorkPlan(q_block=qL, chunk=config.chunk_size)
    return plan_work(
        B=B,
        Hq=Hq,
        qL=qL,
        kL=k.shape[2],
        D=D,
        budget=config.flop_budget,
        max_chunk=None if fused else config.chunk_size,
    )


def kv_route(
    q,
    k,
    v,
    *,
    scale: float,
    mask=None,
    sinks=None,
    config: ChunkConfig,
    chunk_fn=None,
    backend_name: str | None = None,
) -> tuple[mx.array, mx.array]:
    """kv_chunks in the blocks and chunks of work_plan; (out, lse)."""
    plan = work_plan(
        q,
        k,
        config=config,
        backend_name=backend_name,
        fused=chunk_fn is not None and hasattr(chunk_fn, "splits_keys"),
    )
    return q_blocks(
        q,
        k,
        v,
        scale=scale,
        mask=mask,
        sinks=sinks,
        q_block=plan.q_block,
        chunk_size=plan.chunk,
        chunk_fn=chunk_fn,
    )


def q_blocks(
    q, k, v, *, scale: float, mask=None, sinks=None, q_block: int, chunk_size: int, chunk_fn=None
) -> tuple[mx.array, mx.array]:
    """kv_chunks over blocks of query rows, each evaluated before the next; (out, lse)."""
    B, Hq, qL, D = q.shape
    kL = k.shape[2]
    if q_block >= qL:
        return kv_chunks(
            q, k, v, scale=scale, mask=mask, sinks=sinks, chunk_size=chunk_size, chunk_fn=chunk_fn
        )
    causal = isinstance(mask, str)
    outs, lses = [], []
    for a in range(0, qL, q_block):
        b = min(a + q_block, qL)
        qb = q[:, :, a:b]
        if causal:
            visible = kL - qL + b  # the block's last row sees keys [0, visible)
            if visible <= 0:  # lower-right aligned with qL > kL: these rows see no key
                o = mx.zeros((B, Hq, b - a, v.shape[-1]), dtype=q.dtype)
                lse = mx.full((B, Hq, b - a), -mx.inf, dtype=mx.float32)
                if sinks is not None:  # the sink alone: lse is its logit, the output zero
                    lse = mx.broadcast_to(sinks.astype(mx.float32)[None, :, None], lse.shape)
            else:
                o, lse = kv_chunks(
                    qb,
                    k[:, :, :visible],
                    v[:, :, :visible],
                    scale=scale,
                    mask="causal",
                    sinks=sinks,
                    chunk_size=chunk_size,
                    chunk_fn=chunk_fn,
                )
        else:
            o, lse = kv_chunks(
                qb,
                k,
                v,
                scale=scale,
                mask=_slice_mask_rows(mask, a, b),
                sinks=sinks,
                chunk_size=chunk_size,
                chunk_fn=chunk_fn,
            )
        mx.eval(o, lse)
        outs.append(o)
        lses.append(lse)
    return mx.concatenate(outs, axis=2), mx.concatenate(lses, axis=2)


def fused_calls(
    *, qL: int, kL: int, causal: bool, chunk_size: int, splits_keys: bool
) -> list[tuple[int, int, bool, bool]]:
    """The (qL, keys, causal, float32 out) of each fused call kv_chunks makes for these sizes."""
    if splits_keys or chunk_size >= kL:
        return [(qL, kL, causal, False)]
    calls = []
    for start in range(0, kL, chunk_size):
        stop = min(start + chunk_size, kL)
        shift = kL - qL - start
        if causal and start > (qL - 1) + (kL - qL):
            break
        calls.append((qL, stop - start, causal and shift < stop - start - 1, True))
    return calls


def planned_fused_calls(
    *,
    B: int,
    Hq: int,
    qL: int,
    kL: int,
    D: int,
    causal: bool,
    config: ChunkConfig,
    backend_name: str,
) -> list[tuple[int, int, bool, bool]]:
    """The (qL, keys, causal, float32 out) of each fused call the kv-chunks route (kv_route)
    makes on this backend: on Metal the FLOP budget's query blocks and key chunks, elsewhere
    fused_calls with the configured chunk size. For warming up exactly the variants a run uses."""
    if backend_name != "metal":
        return list(
            dict.fromkeys(
                fused_calls(
                    qL=qL,
                    kL=kL,
                    causal=causal,
                    chunk_size=config.chunk_size,
                    splits_keys=backend_name == "cuda",
                )
            )
        )
    plan = plan_work(B=B, Hq=Hq, qL=qL, kL=kL, D=D, budget=config.flop_budget)
    calls = []
    for a in range(0, qL, plan.q_block):
        b = min(a + plan.q_block, qL)
        keys = kL - qL + b if causal else kL
        if keys > 0:
            calls += fused_calls(
                qL=b - a, kL=keys, causal=causal, chunk_size=plan.chunk, splits_keys=False
            )
    return list(dict.fromkeys(calls))
