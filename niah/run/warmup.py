"""The warm-up: one-time costs paid before the first timed trial, noted once per run.

Kernel compilation and per-shape set-up (MLX's own kernels and niah's fused ones) would
otherwise land in the first trials' prefill times. Modes: "shapes" runs every prefill block
shape the trials will use, "once" one short generation, "off" nothing; "auto" picks per
backend (warm_up_mode).
"""

from __future__ import annotations

import time

from .. import store
from ..errors import NiahError
from ..values import needle_value
from .grid import TrialSpec, prefix_groups, value_key
from .reuse import placeholder_cache
from .trial import Sweep, estimate, free_memory

WARM_UP_MODES = ("auto", "off", "once", "shapes")


def warm_up_mode(requested: str | None, backend_name: str) -> str:
    """What `auto` means on this backend. CUDA pays for every new block shape (its attention
    builds per key length, fused kernels compile per shape), so it warms every shape the
    trials will prefill; Metal compiles per kernel variant, so one short generation covers it;
    the CPU backend compiles nothing."""
    requested = "auto" if requested is None else requested
    if requested not in WARM_UP_MODES:
        raise NiahError(f"unknown warm-up {requested!r}: use one of {', '.join(WARM_UP_MODES)}")
    if requested != "auto":
        return requested
    return {"cuda": "shapes", "metal": "once"}.get(backend_name, "off")


def prefill_block_lengths(context: int, step: int) -> set[int]:
    """Query lengths of the attention calls one trial makes: full prefill blocks, the last
    partial block (the prompt's final token is computed alone, so it is (C - 1) % step long)
    and single-token calls (final prompt token, decode)."""
    lengths = {1}
    if context > 1:
        lengths.add(min(step, context - 1))
        if (context - 1) % step:
            lengths.add((context - 1) % step)
    return lengths


def _planned_calls(todo, info, *, route: str, config, name: str) -> set:
    """The fused-kernel calls (shapes) these trials will make on the chunked route."""
    from ..sdpa.dispatch import choose_route, planned_fused_calls

    calls = set()
    for spec in todo:
        C = spec.context
        for qL in prefill_block_lengths(C, spec.prefill_step):
            if choose_route(qL=qL, kL=C, route=route, config=config, backend_name=name,
                            fused_ok=lambda: True) != "kv-chunks":
                continue
            calls.update(planned_fused_calls(B=1, Hq=info.n_heads, qL=qL, kL=C, D=info.head_dim,
                                             causal=qL > 1, config=config, backend_name=name))
    return calls


def _warm_kernels(todo, session, *, route: str, config, progress) -> None:
    """Compile and self-test niah's fused kernels for the calls these trials will make, so
    that NVRTC/Metal compile time is not counted in the first trial's prefill time."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ..sdpa.fused import warm_up
    from ..backend import backend

    name = backend()
    if name not in ("cuda", "metal"):
        return
    info = session.info
    dtype = next((a.dtype for _, a in tree_flatten(session.model.parameters())
                  if a.dtype in (mx.float16, mx.bfloat16)), mx.float16)
    calls = _planned_calls(todo, info, route=route, config=config, name=name)
    if not calls:
        return
    t0 = time.perf_counter()
    results = warm_up(dtype=dtype, n_heads=info.n_heads, n_kv_heads=info.n_kv_heads,
                      head_dim=info.head_dim, calls=sorted(calls))
    if results:
        bad = [r.kernel for r in results if not r.ok]
        scalar = [r for r in results if r.ok and getattr(r, "loads", "") == "scalar"]
        progress.note(f"fused kernels: {len(results)} variants built and self-tested in "
                      f"{time.perf_counter() - t0:.1f} s" +
                      (f"; {len(scalar)} use element-wise loads (their vector-load build "
                       "failed: niah sdpa verify shows why)" if scalar else "") +
                      (f"; {len(bad)} failed their self-test: their calls run as stock query blocks where stock computes them exactly, else the reference (the route says which)" if bad else ""))


def warm_up(run: Sweep, todo: list[TrialSpec], *, mode: str, preflight: bool) -> None:
    """Pay one-time costs before the first timed trial, for the prefill blocks and decode the
    trials will use. The time is noted once per run (runs.jsonl), never inside a trial."""
    t0 = time.perf_counter()
    try:
        _warm_kernels(todo, run.session, route=run.route, config=run.state.config,
                      progress=run.progress)
    except Exception as exc:  # noqa: BLE001 - timing honesty only; the run goes on
        run.progress.note(f"fused kernel warm-up skipped: {type(exc).__name__}: {exc}")
    for (kv_bits, max_kv, step), group in prefix_groups(todo).items():
        cache_kw = {"kv_bits": kv_bits, "max_kv_size": max_kv,
                    "kv_group_size": run.config.kv_group_size}
        try:
            if mode == "shapes":
                fits = [s for s in group if not preflight or estimate(run, s).fits]
                _warm_shapes(run, fits, step=step, cache_kw=cache_kw)
            else:
                _warm_once(run, group, step=step, cache_kw=cache_kw)
        except NiahError:
            raise
        except Exception as exc:  # noqa: BLE001 - the trial itself will record the error
            run.progress.note(f"warm-up failed ({type(exc).__name__}); trials go on")
            free_memory()
    run.state.routes.clear()
    seconds = time.perf_counter() - t0
    store.append_run_log(run.folder, {"event": "warm-up", "mode": mode,
                                      "seconds": round(seconds, 3), "device": run.device,
                                      "rank": run.rank, "config_hash": run.chash})
    run.progress.note(f"warm-up ({mode}): {seconds:.1f} s (kept out of trial times)")


def _warm_generate(run: Sweep, ids: list[int], *, cache, reuse: int = 0, step: int) -> None:
    run.session.generate(ids, cache=cache, reuse=reuse, prefill_step=step,
                         max_tokens=min(run.config.max_tokens, 3))


def _value(run: Sweep, spec: TrialSpec) -> str:
    """A needle value for a warm-up prompt (its shapes matter, not its value)."""
    return needle_value(kind=run.config.value_kind, seed=run.config.seed, key=value_key(spec))


def _warm_once(run: Sweep, group: list[TrialSpec], *, step: int, cache_kw: dict) -> None:
    """One short generation: a full prefill block, a partial one and a few decode steps."""
    length = min(min(s.context for s in group), step + max(2, step // 4))
    prompt = run.builder.build(context=max(length, run.builder.minimum_context()),
                               depth=0.5, value=_value(run, group[0]))
    cache = run.session.make_cache(**cache_kw)
    _warm_generate(run, prompt.ids.tolist(), cache=cache, step=step)


def _warm_shapes(run: Sweep, group: list[TrialSpec], *, step: int, cache_kw: dict) -> None:
    """Every prefill block shape the trials will run. A trial's blocks are full steps at key
    lengths step, 2*step, ... (the same in every context, and in reused trials, whose caches
    match_fresh_layout gives a fresh cache's buffer) and one last partial block per context;
    so the largest context is prefilled once, then each other context's last block runs on
    placeholder caches holding the tokens before it. Caches that cannot hold placeholders
    (rotating, quantized) prefill each context's whole prompt."""
    contexts = sorted({s.context for s in group}, reverse=True)
    if not contexts:
        return
    ids = run.builder.build(context=contexts[0], depth=0.5, value=_value(run, group[0])).ids
    template = run.session.make_cache(**cache_kw)
    _warm_generate(run, ids.tolist(), cache=template, step=step)
    for context in contexts[1:]:
        start = ((context - 1) // step) * step
        if start == context - 1:  # no partial block: its full blocks have run
            continue
        cache = placeholder_cache(template, tokens=start, step=step) if start else None
        if cache is None:
            cache, start = run.session.make_cache(**cache_kw), 0
        _warm_generate(run, ids[:context].tolist(), cache=cache, reuse=start, step=step)
