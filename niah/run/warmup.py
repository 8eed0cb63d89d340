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
from .calls import planned_kernel_calls, prefill_blocks
from .grid import TrialSpec, prefix_groups, value_key
from .reuse import fresh_capacity, placeholder_cache
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


def _planned_calls(todo, info, *, route: str, config, name: str, max_tokens: int = 1) -> set:
    """The fused-kernel calls (shapes) these trials' kv-chunks calls will make, from the route
    the dispatcher gives each call (niah.run.calls)."""
    return planned_kernel_calls(
        todo,
        n_heads=info.n_heads,
        head_dim=info.head_dim,
        route=route,
        config=config,
        backend_name=name,
        max_tokens=max_tokens,
    )


def _warm_kernels(todo, session, *, route: str, config, progress, max_tokens: int = 1) -> None:
    """Compile and self-test niah's fused kernels for the calls these trials will make, so
    that NVRTC/Metal compile time is not counted in the first trial's prefill time. Variants
    already self-tested in this process are not built again."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ..backend import backend
    from ..sdpa.fused import self_test_results, warm_up

    name = backend()
    if name not in ("cuda", "metal"):
        return
    info = session.info
    dtype = next(
        (
            a.dtype
            for _, a in tree_flatten(session.model.parameters())
            if a.dtype in (mx.float16, mx.bfloat16)
        ),
        mx.float16,
    )
    calls = _planned_calls(todo, info, route=route, config=config, name=name, max_tokens=max_tokens)
    if not calls:
        return
    known = {id(r) for r in self_test_results()}
    t0 = time.perf_counter()
    results = warm_up(
        dtype=dtype,
        n_heads=info.n_heads,
        n_kv_heads=info.n_kv_heads,
        head_dim=info.head_dim,
        calls=sorted(calls),
    )
    fresh = [r for r in results if id(r) not in known]
    if results:
        bad = [r.kernel for r in fresh if not r.ok]
        scalar = [r for r in fresh if r.ok and getattr(r, "loads", "") == "scalar"]
        already = len(results) - len(fresh)
        progress.note(
            f"fused kernels: {len(fresh)} variants built and self-tested in "
            f"{time.perf_counter() - t0:.1f} s"
            + (f" ({already} already built in this process)" if already else "")
            + (
                f"; {len(scalar)} use element-wise loads (their vector-load build "
                "failed: niah sdpa verify shows why)"
                if scalar
                else ""
            )
            + (
                f"; {len(bad)} failed their self-test: their calls run as stock query blocks where stock computes them exactly, else the reference (the route says which)"
                if bad
                else ""
            )
        )


def warmed_shapes(session) -> set:
    """This process's record of the attention shapes the warm-up has run, kept on the model
    session (a session lives in one process and is what successive sweeps share; MLX keeps its
    attention plans per process), never in a global."""
    record = getattr(session, "warmed_shapes", None)
    if record is None:
        record = set()
        session.warmed_shapes = record
    return record


def warm_up(run: Sweep, todo: list[TrialSpec], *, mode: str, preflight: bool) -> None:
    """Pay one-time costs before the first timed trial, for the prefill blocks and decode the
    trials will use. The time is noted once per run (runs.jsonl), never inside a trial."""
    t0 = time.perf_counter()
    try:
        _warm_kernels(
            todo,
            run.session,
            route=run.route,
            config=run.state.config,
            progress=run.progress,
            max_tokens=run.config.max_tokens,
        )
    except Exception as exc:  # noqa: BLE001 - timing honesty only; the run goes on
        run.progress.note(f"fused kernel warm-up skipped: {type(exc).__name__}: {exc}")
    counts = [0, 0]  # shapes new, shapes already warm
    for (kv_bits, max_kv, step), group in prefix_groups(todo).items():
        cache_kw = {
            "kv_bits": kv_bits,
            "max_kv_size": max_kv,
            "kv_group_size": run.config.kv_group_size,
        }
        try:
            if mode == "shapes":
                fits = [s for s in group if not preflight or estimate(run, s).fits]
                _warm_shapes(run, fits, step=step, cache_kw=cache_kw, counts=counts)
            else:
                _warm_once(run, group, step=step, cache_kw=cache_kw)
        except NiahError:
            raise
        except Exception as exc:  # noqa: BLE001 - the trial itself will record the error
            run.progress.note(f"warm-up failed ({type(exc).__name__}); trials go on")
            free_memory()
    run.state.routes.clear()
    seconds = time.perf_counter() - t0
    event = {"event": "warm-up", "mode": mode, "seconds": round(seconds, 3)}
    if mode == "shapes":
        event.update(shapes_new=counts[0], shapes_warm=counts[1])
    store.append_run_log(
        run.folder, {**event, "device": run.device, "rank": run.rank, "config_hash": run.chash}
    )
    did = f"{counts[0]} shapes new, {counts[1]} already warm; " if mode == "shapes" else ""
    run.progress.note(f"warm-up ({mode}): {did}{seconds:.1f} s (kept out of trial times)")


def _warm_generate(run: Sweep, ids: list[int], *, cache, reuse: int = 0, step: int) -> None:
    run.session.generate(
        ids, cache=cache, reuse=reuse, prefill_step=step, max_tokens=min(run.config.max_tokens, 3)
    )


def _value(run: Sweep, spec: TrialSpec) -> str:
    """A needle value for a warm-up prompt (its shapes matter, not its value)."""
    return needle_value(kind=run.config.value_kind, seed=run.config.seed, key=value_key(spec))


def _warm_once(run: Sweep, group: list[TrialSpec], *, step: int, cache_kw: dict) -> None:
    """One short generation: a full prefill block, a partial one and a few decode steps."""
    length = min(min(s.context for s in group), step + max(2, step // 4))
    prompt = run.builder.build(
        context=max(length, run.builder.minimum_context()), depth=0.5, value=_value(run, group[0])
    )
    cache = run.session.make_cache(**cache_kw)
    _warm_generate(run, prompt.ids.tolist(), cache=cache, step=step)


def _block_shapes(context: int, *, step: int, settings: tuple, start: int = 0) -> set:
    """(settings, rows, keys, buffer) of the prefill blocks a trial of `context` runs from
    `start`: what MLX's CUDA attention plans per (its graphs are keyed by shapes and strides;
    buffer: the length of the plain KVCache buffer the keys are a slice of)."""
    return {
        (settings, rows, keys, fresh_capacity(keys, step=step))
        for rows, keys in prefill_blocks(context=context, step=step, start=start)
    }


def _warm_shapes(
    run: Sweep, group: list[TrialSpec], *, step: int, cache_kw: dict, counts: list
) -> None:
    """Every prefill block shape the trials will run that this process has not run yet
    (warmed_shapes); counts[0] += shapes new, counts[1] += shapes already warm.

    A trial's blocks are full steps at key lengths step, 2*step, ... (the same in every
    context, and in reused trials, whose caches match_fresh_layout gives a fresh cache's
    buffer) and one last partial block per context; so the largest context is prefilled once
    when a full block is new, then each context's last block whose shape is new runs on
    placeholder caches holding the tokens before it. Caches that cannot hold placeholders
    (rotating, quantized) prefill each such context's whole prompt."""
    contexts = sorted({s.context for s in group}, reverse=True)
    if not contexts:
        return
    warmed = warmed_shapes(run.session)
    settings = (run.route, run.state.config, tuple(sorted(cache_kw.items())))
    needed = {c: _block_shapes(c, step=step, settings=settings) for c in contexts}
    wanted = set().union(*needed.values())
    counts[0] += len(wanted - warmed)
    counts[1] += len(wanted & warmed)
    if wanted <= warmed:
        return
    ids = run.builder.build(context=contexts[0], depth=0.5, value=_value(run, group[0])).ids
    full = {s for s in needed[contexts[0]] if s[1] == step}
    template = None
    if full - warmed:
        template = run.session.make_cache(**cache_kw)
        _warm_generate(run, ids.tolist(), cache=template, step=step)
        warmed.update(needed[contexts[0]])
    for context in contexts:
        start = ((context - 1) // step) * step
        last = _block_shapes(context, step=step, settings=settings, start=start)
        if start == context - 1 or last <= warmed:  # no partial block, or it has run
            continue
        template = template or _template(run, ids, cache_kw=cache_kw)
        cache = placeholder_cache(template, tokens=start, step=step) if start else None
        if cache is None:
            cache, start, last = run.session.make_cache(**cache_kw), 0, needed[context]
        _warm_generate(run, ids[:context].tolist(), cache=cache, reuse=start, step=step)
        warmed.update(last)


def _template(run: Sweep, ids, *, cache_kw: dict):
    """Caches of this run's kinds holding one token: what placeholder_cache copies kinds,
    heads and dtypes from when no prefill made one."""
    import mlx.core as mx

    cache = run.session.make_cache(**cache_kw)
    mx.eval(run.session.model(mx.array([ids[:1].tolist()]), cache=cache))
    return cache
