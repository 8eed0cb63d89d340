"""Run a sweep: grid -> prompts -> model -> score -> store, one trial at a time.

Finished trials are appended to the run folder as they complete, so a killed run loses only
the trial in flight and a rerun of the same config (or --resume) does only what is missing.
Within each group of trials sharing KV settings, trials run in order of needle position and,
with prefix reuse on, each one trims the previous trial's KV cache back to the prefix the two
prompts share and prefills only the rest.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .config import RunConfig
from .errors import NiahError
from .haystack import PromptBuilder
from .model import match_fresh_layout, placeholder_cache
from .scoring import ERROR, SKIP
from .tasks import (TaskTrial, answer_minimum, build_prompt, make_trial, minimum_context,
                    score_trial, validate)
from .trials import TrialSpec, assign_to_ranks, build_grid, prefix_groups, value_key


@dataclass
class RunResult:
    folder: Path
    config: RunConfig
    records: list[dict]            # latest record per trial of this config, grid order
    ran: int = 0                   # trials run by this call
    skipped_done: int = 0          # trials already on disk
    warnings: list[str] = field(default_factory=list)


class Progress:
    """Callbacks a front end can implement (all optional)."""

    def start(self, total: int) -> None: ...
    def note(self, text: str) -> None: ...
    def trial_done(self, record: dict) -> None: ...
    def stop(self) -> None: ...


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


def _warm_kernels(todo, session, *, route: str, config, progress: Progress) -> None:
    """Compile and self-test niah's fused kernels for the calls these trials will make, so
    that NVRTC/Metal compile time (about a minute on the H100 for SmolLM2's variants) is not
    counted in the first trial's prefill time."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from .kernels import warm_up
    from .sdpa.dispatch import backend, choose_route, planned_fused_calls

    name = backend()
    if name not in ("cuda", "metal"):
        return
    info = session.info
    dtype = next((a.dtype for _, a in tree_flatten(session.model.parameters())
                  if a.dtype in (mx.float16, mx.bfloat16)), mx.float16)
    calls = set()
    for spec in todo:
        C = spec.context
        steps = prefill_block_lengths(C, spec.prefill_step)
        for qL in steps:
            if choose_route(qL=qL, kL=C, route=route, config=config, backend_name=name,
                            fused_ok=lambda: True) != "kv-chunks":
                continue
            calls.update(planned_fused_calls(B=1, Hq=info.n_heads, qL=qL, kL=C, D=info.head_dim,
                                             causal=qL > 1, config=config, backend_name=name))
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
                      (f"; {len(bad)} failed, using the reference for them" if bad else ""))


def check_contexts(config: RunConfig, trained: int | None, *, max_tokens: int = 0) -> list[str]:
    """Refuse contexts beyond the trained length unless allowed; return warnings. A context
    counts as beyond when the prompt plus the tokens it may decode exceed the trained length."""
    if trained is None:
        return []
    beyond = [c for c in config.contexts if c + max_tokens > trained]
    if beyond and not config.allow_beyond_trained:
        raise NiahError(
            f"context {max(beyond)} plus up to {max_tokens} answer tokens is beyond the model's "
            f"trained length of {trained} tokens: use a shorter --context or pass "
            "--allow-beyond-trained"
        )
    return [f"context {c} plus up to {max_tokens} answer tokens is beyond the trained length "
            f"{trained} (allowed, recorded)" for c in beyond]


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if len(diff) else n


@dataclass
class _Run:
    """What every step of one sweep needs: the session, where records go, how they are tagged."""

    config: RunConfig
    session: object
    folder: Path
    builder: PromptBuilder
    chash: str
    identity: dict
    device: str
    rank: int | None
    progress: Progress
    route: str = "auto"
    state: object = None
    writer: object = None
    ran: int = 0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; carries the run folder so the front end can say what to resume."""

    def __init__(self, folder: Path):
        super().__init__(str(folder))
        self.folder = folder


def run_sweep(config: RunConfig, *, session=None, folder: Path | None = None,
              progress: Progress | None = None, rank: int | None = None, world: int = 1,
              preflight: bool = True, warm_up: str | None = None) -> RunResult:
    """Run every unfinished trial of `config`; returns all records of the run.

    warm_up: what to run before the first timed trial (WARM_UP_MODES; None or "auto":
    warm_up_mode's choice for the backend): "once" one short generation, "shapes" every
    prefill block shape the trials will use, "off" nothing."""
    from .sdpa import patched

    mode = warm_up_mode(warm_up, _backend_name())
    progress = progress or Progress()
    sharded = config.shard == "tensor" and world > 1
    session = session or _open_session(config, sharded=sharded, progress=progress)
    warnings = check_contexts(config, session.info.trained_context, max_tokens=config.max_tokens)
    route = _patch_route(config.sdpa)
    with patched(route, threshold=config.chunk_threshold, chunk_size=config.chunk_size) as state:
        run = _prepare(config, session, folder=folder, progress=progress, rank=rank,
                       route=route, state=state)
        writes = not (sharded and rank)
        own_rank = rank if world > 1 and not sharded else None  # writes a file of its own
        lock = store.FolderLock(run.folder, rank=own_rank)
        with (lock if writes else _NullWriter()):
            _claim(run)  # only under the lock: a refused second run leaves the folder as it was
            grid = build_grid(run.config)
            # Sharded: every rank runs every trial together (one model across the group); rank
            # 0 writes. Otherwise each rank takes its share of the grid.
            mine = assign_to_ranks(grid, world)[rank or 0] if world > 1 and not sharded else grid
            todo, requested = _todo(config, mine, run.folder)
            progress.start(len(todo))
            with (store.TrialWriter(run.folder, rank=own_rank) if writes else _NullWriter()) as w:
                run.writer = w
                try:
                    if todo and mode != "off":
                        _warm_up(run, todo, mode=mode, preflight=preflight)
                    for group in prefix_groups(todo).values():
                        _run_group(run, group, preflight=preflight)
                except KeyboardInterrupt:
                    raise Interrupted(run.folder) from None
    latest = store.latest_by_key(store.folder_records(run.folder))
    records = [latest[s.key] for s in build_grid(config) if s.key in latest]
    warnings += _reuse_mismatch(records, prefix_reuse=config.prefix_reuse, folder=run.folder)
    return RunResult(folder=run.folder, config=config, records=records, ran=run.ran,
                     skipped_done=requested - len(todo), warnings=warnings)


def _reuse_mismatch(records: list[dict], *, prefix_reuse: bool, folder: Path) -> list[str]:
    """Prefix reuse is not in the config hash (answers are equal with and without it), but
    timings differ: say when trials kept from the folder ran with the other setting."""
    # with reuse off, only a reused trial was timed differently (a fresh one prefilled it all)
    other = [r for r in records if r.get("verdict") not in (ERROR, SKIP)
             and r.get("prefix_reuse") == ("reused" if not prefix_reuse else "off")]
    if not other:
        return []
    was = "off" if prefix_reuse else "on"
    return [f"{len(other)} trial{'s' if len(other) > 1 else ''} kept from {folder} ran with "
            f"prefix reuse {was}: verdicts hold, but their times are not this setting's; "
            "use another --out to time every trial with this setting"]


def _backend_name() -> str:
    from .sdpa.dispatch import backend

    return backend()


def _open_session(config: RunConfig, *, sharded: bool, progress: Progress):
    from .model import ModelSession, progress_notes

    group = None
    if sharded:
        import mlx.core as mx

        group = mx.distributed.init()
    return ModelSession(config.model, shard_group=group, gguf_quant=config.gguf_quant,
                        rope_scaling=config.rope_scaling, on_progress=progress_notes(progress.note))


def _prepare(config: RunConfig, session, *, folder, progress, rank, route, state) -> _Run:
    """Prompt builder, input checks, identity, config hash and run folder (named only: the
    folder is written by _claim, under its lock)."""
    from .identity import run_identity
    from .model import device_description
    from .sdpa.dispatch import backend

    info = session.info
    opts = getattr(session, "load_options", None)
    if opts and opts != {"gguf_quant": config.gguf_quant, "rope_scaling": config.rope_scaling}:
        raise NiahError(f"the session was loaded with {opts}, not this config's --gguf-quant "
                        f"{config.gguf_quant} --rope-scaling {config.rope_scaling}: load it again")
    if getattr(info, "load_s", 0):
        cached = f", weight cache {info.weight_cache}" if getattr(info, "weight_cache", "") else ""
        progress.note(f"loaded {info.name} in {info.load_s:.1f} s (weights {info.weights}"
                      f"{cached}, peak {info.load_peak_bytes / 2**30:.2f} GiB)")
    builder = PromptBuilder(session.tokenizer, source=config.haystack, seed=config.seed,
                            needle=config.needle, question=config.question,
                            answer_prefix=config.answer_prefix, intro=config.intro)
    validate(task=config.task, needles=config.needles, needle=config.needle,
             question=config.question, answer_prefix=config.answer_prefix, keys=config.keys)
    minimum = minimum_context(builder, config)
    if min(config.contexts) < minimum:
        raise NiahError(f"context {min(config.contexts)} is too short for the template, needle "
                        f"and question ({minimum} tokens at least): use a longer --context")
    need = answer_minimum(builder, config)
    if config.max_tokens < need:
        raise NiahError(f"--max-tokens {config.max_tokens} cannot hold the answer ({need} tokens "
                        f"for the {config.value_kind} value{'s' if config.needles > 1 and config.task != 'multi-key' else ''} "
                        f"asked): use --max-tokens {need} or more, with room to spare")
    sdpa = {"route": route, "threshold": state.config.threshold,
            "chunk_size": state.config.chunk_size,  # and the work per Metal command buffer:
            "flop_budget": state.config.flop_budget}  # it sets Metal's chunks and query blocks
    identity = run_identity(model_path=info.path, model_digest=getattr(info, "digest", None),
                            haystack=config.haystack, backend=backend(),
                            compute_dtype=str(getattr(session, "compute_dtype", "unknown")),
                            sdpa=sdpa)
    chash = config.hash(identity)
    folder = Path(folder) if folder else store.run_folder(config, info.name, config_hash=chash)
    return _Run(config=config, session=session, folder=folder, builder=builder, chash=chash,
                identity=identity, device=device_description(), rank=rank, progress=progress,
                route=route, state=state)


def _claim(run: _Run) -> None:
    """Write config.json (checked against the folder's configuration, grids merged) and the
    run's start line."""
    run.config = store.prepare_folder(run.folder, run.config, config_hash=run.chash,
                                      identity=run.identity)
    store.append_run_log(run.folder, {"event": "start", "argv": list(sys.argv),
                                      "device": run.device, "rank": run.rank,
                                      "config_hash": run.chash,
                                      "niah_version": run.identity["niah_version"]})


def _todo(config: RunConfig, mine: list[TrialSpec], folder: Path) -> tuple[list[TrialSpec], int]:
    """This call's trials that the folder does not hold yet (ERROR and SKIP are retried),
    and how many trials this call asked for on this rank."""
    wanted = {s.key for s in build_grid(config)}
    done = store.finished_keys(folder)
    requested = [s for s in mine if s.key in wanted]
    return [s for s in requested if s.key not in done], len(requested)


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


def _warm_up(run: _Run, todo: list[TrialSpec], *, mode: str, preflight: bool) -> None:
    """Pay one-time costs before the first timed trial: kernel compilation and per-shape set-up
    for the prefill blocks and decode the trials will use (MLX's own kernels and niah's fused
    ones). The time is noted once per run (runs.jsonl), never inside a trial."""
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
                fits = [s for s in group if not preflight or _estimate(run, s).fits]
                _warm_shapes(run, fits, step=step, cache_kw=cache_kw)
            else:
                _warm_once(run, group, step=step, cache_kw=cache_kw)
        except NiahError:
            raise
        except Exception as exc:  # noqa: BLE001 - the trial itself will record the error
            run.progress.note(f"warm-up failed ({type(exc).__name__}); trials go on")
            _free_memory()
    run.state.routes.clear()
    seconds = time.perf_counter() - t0
    store.append_run_log(run.folder, {"event": "warm-up", "mode": mode,
                                      "seconds": round(seconds, 3), "device": run.device,
                                      "rank": run.rank, "config_hash": run.chash})
    run.progress.note(f"warm-up ({mode}): {seconds:.1f} s (kept out of trial times)")


def _warm_generate(run: _Run, ids: list[int], *, cache, reuse: int = 0, step: int) -> None:
    run.session.generate(ids, cache=cache, reuse=reuse, prefill_step=step,
                         max_tokens=min(run.config.max_tokens, 3))


def _warm_once(run: _Run, group: list[TrialSpec], *, step: int, cache_kw: dict) -> None:
    """One short generation: a full prefill block, a partial one and a few decode steps."""
    length = min(min(s.context for s in group), step + max(2, step // 4))
    prompt = run.builder.build(context=max(length, run.builder.minimum_context()),
                               depth=0.5, value=group[0].value)
    cache = run.session.make_cache(**cache_kw)
    _warm_generate(run, prompt.ids.tolist(), cache=cache, step=step)


def _warm_shapes(run: _Run, group: list[TrialSpec], *, step: int, cache_kw: dict) -> None:
    """Every prefill block shape the trials will run. A trial's blocks are full steps at key
    lengths step, 2*step, ... (the same in every context, and in reused trials, whose caches
    match_fresh_layout gives a fresh cache's buffer) and one last partial block per context;
    so the largest context is prefilled once, then each other context's last block runs on
    placeholder caches holding the tokens before it. Caches that cannot hold placeholders
    (rotating, quantized) prefill each context's whole prompt."""
    contexts = sorted({s.context for s in group}, reverse=True)
    if not contexts:
        return
    ids = run.builder.build(context=contexts[0], depth=0.5, value=group[0].value).ids
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


def reuse_length(cached_ids, ids, *, step: int) -> int:
    """Tokens of a cached prefix a trial can keep: the shared prefix, cut to a multiple of the
    prefill step so the trial prefills the same block shapes a fresh one would."""
    shared = min(_common_prefix(cached_ids, ids), len(ids) - 1)
    return (shared // step) * step


def _run_group(run: _Run, group: list[TrialSpec], *, preflight: bool) -> None:
    """Trials sharing KV settings, in needle order, each reusing the last one's prefix."""
    trials = {s.key: task_trial(run.config, run.builder, s) for s in group}
    prompts = {s.key: build_prompt(run.builder, trials[s.key], context=s.context) for s in group}
    group.sort(key=lambda s: (prompts[s.key].needle_index, s.context, s.sample))
    cached = None  # (cache, ids) of the previous trial
    for spec in group:
        prompt, trial = prompts[spec.key], trials[spec.key]
        base = _base_record(run.config, spec, prompt, run.session.info, device=run.device,
                            chash=run.chash, identity=run.identity, rank=run.rank)
        base.update(_task_fields(trial, prompt))
        skip = _preflight_skip(run, spec, base) if preflight else None
        if skip:
            record, cached = skip, None
        else:
            record, cached = _run_trial(run, spec, prompt, base, cached, trial=trial)
        run.writer.write(record)
        run.progress.trial_done(record)
        run.ran += 1


def task_trial(config: RunConfig, builder: PromptBuilder, spec: TrialSpec) -> TaskTrial:
    """The needles of one trial: values drawn from the seed, never one the haystack holds."""
    return make_trial(task=config.task, needles=config.needles, depth=spec.depth,
                      seed=config.seed, value_key=value_key(spec), kind=config.value_kind,
                      needle=config.needle, question=config.question,
                      answer_prefix=config.answer_prefix, keys=config.keys,
                      reject=lambda v: builder.value_occurs(v, context=spec.context))


def _task_fields(trial: TaskTrial, prompt) -> dict:
    """Record fields every trial carries before it is scored (SKIP and ERROR keep them)."""
    return {"task": trial.task, "value": ", ".join(trial.expected), "score": None,
            "needle_boundary": prompt.boundary,
            "needles": [{"key": n.key, "value": n.value, "needle_index": p.index,
                         "needle_depth": round(p.depth, 6), "found": None,
                         "role": "target" if n.target else "distractor", "boundary": p.boundary}
                        for n, p in zip(trial.needles, prompt.placements)]}


def _estimate(run: _Run, spec: TrialSpec):
    """The memory estimate of one trial (preflight.estimate) on the route it will take."""
    from .preflight import estimate
    from .sdpa.dispatch import backend, choose_route

    route = choose_route(qL=min(spec.prefill_step, spec.context), kL=spec.context,
                         route=run.route, config=run.state.config)
    return estimate(run.session.info, context=spec.context, route=route,
                    prefill_step=spec.prefill_step, kv_bits=spec.kv_bits,
                    kv_group_size=run.config.kv_group_size,
                    chunk_size=run.state.config.chunk_size, backend=backend())


def _preflight_skip(run: _Run, spec: TrialSpec, base: dict) -> dict | None:
    """A SKIP record when the memory estimate says the trial cannot fit, else None."""
    est = _estimate(run, spec)
    base["estimated_memory_bytes"] = est.total
    if est.fits:
        return None
    return {**base, "verdict": SKIP, "error": f"skipped: {est.reason()}"}


def _run_trial(run: _Run, spec: TrialSpec, prompt, base: dict, cached, *, trial: TaskTrial):
    """Prefill (reusing the cached prefix when allowed), decode, score; the record and the
    cache to hand to the next trial."""
    config, session = run.config, run.session
    run.state.routes.clear()
    t0 = time.perf_counter()
    try:
        cache, reuse = None, 0
        if config.prefix_reuse and cached is not None and _trimmable(cached[0]):
            cache = cached[0]
            reuse = reuse_length(cached[1], prompt.ids, step=spec.prefill_step)
            _trim(cache, cache[0].offset - reuse)
        else:
            cache = session.make_cache(kv_bits=spec.kv_bits, kv_group_size=config.kv_group_size,
                                       max_kv_size=spec.max_kv_size)
        match_fresh_layout(cache, step=spec.prefill_step)
        gen = session.generate(prompt.ids.tolist(), cache=cache, reuse=reuse,
                               prefill_step=spec.prefill_step, max_tokens=config.max_tokens)
        record = {**base, **_gen_fields(gen),
                  **score_trial(trial, prompt, gen.response, kind=config.value_kind),
                  "sdpa_route": run.state.summary(),
                  "prefix_reuse": "reused" if reuse else (
                      "off" if not config.prefix_reuse else
                      ("fresh" if _trimmable(cache) else "untrimmable-cache"))}
        # hand on only a cache the next trial will take: one it cannot take would stay alive
        # beside the next trial's own, doubling the KV memory
        next_cached = (cache, prompt.ids) if config.prefix_reuse and _trimmable(cache) else None
    except NiahError:
        raise
    except Exception as exc:  # OOM and backend errors: record, go on
        next_cached = None
        _free_memory()
        record = {**base, "verdict": ERROR, "score": 0.0, "sdpa_route": run.state.summary(),
                  "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    record["elapsed_s"] = round(time.perf_counter() - t0, 4)
    return record, next_cached


class _NullWriter:
    """Ranks other than 0 of a sharded run compute the same trials and write nothing."""

    def write(self, record: dict) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _patch_route(route: str) -> str:
    return {"chunked": "chunked", "stock": "stock"}.get(route, "auto")


def _trimmable(cache) -> bool:
    from mlx_lm.models.cache import can_trim_prompt_cache

    return bool(cache) and can_trim_prompt_cache(cache)


def _trim(cache, n: int) -> None:
    from mlx_lm.models.cache import trim_prompt_cache

    if n > 0:
        trim_prompt_cache(cache, n)


def _free_memory() -> None:
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


def _gen_fields(gen) -> dict:
    decode_tokens = max(gen.tokens - 1, 0)
    return {
        "response": gen.response,
        "generated_tokens": gen.tokens,
        "prefilled_tokens": gen.prefilled,
        "reused_tokens": gen.reused,
        "prefill_s": round(gen.prefill_s, 4),
        "prefill_tps": round(gen.prefilled / gen.prefill_s, 2) if gen.prefill_s > 0 else None,
        "ttft_s": round(gen.ttft_s, 4),
        "decode_s": round(gen.decode_s, 4),
        "decode_tps": round(decode_tokens / gen.decode_s, 2) if gen.decode_s > 0 and decode_tokens else None,
        "peak_memory_bytes": gen.peak_memory_bytes,
        "finish": gen.finish,
        "error": None,
    }


def _base_record(config: RunConfig, spec: TrialSpec, prompt, info, *, device: str, chash: str,
                 identity: dict, rank) -> dict:
    trained = info.trained_context
    return {
        "key": spec.key,
        "model": info.name,
        "model_path": info.path,
        "context": spec.context,
        "context_tokens": int(len(prompt.ids)),
        "depth": spec.depth,
        "needle_index": prompt.needle_index,
        "needle_depth": round(prompt.needle_depth, 6),
        "value": spec.value,
        "response": None,
        "verdict": None,
        "prefill_s": None, "prefill_tps": None, "ttft_s": None, "decode_tps": None,
        "peak_memory_bytes": None,
        "sdpa_route": None,
        "sdpa_option": config.sdpa,
        "mlx_version": identity.get("mlx_version"),
        "mlx_lm_version": identity.get("mlx_lm_version"),
        "niah_version": identity.get("niah_version"),
        "model_digest": identity.get("model_digest"),
        "haystack_digest": identity.get("haystack_digest"),
        "compute_dtype": identity.get("compute_dtype"),
        "device": device,
        "config_hash": chash,
        "seed": config.seed,
        "sample": spec.sample,
        "kv_bits": spec.kv_bits,
        "kv_group_size": config.kv_group_size if spec.kv_bits else None,
        "max_kv_size": spec.max_kv_size,
        "prefill_step": spec.prefill_step,
        "trained_context": trained,
        "beyond_trained": bool(trained and spec.context + config.max_tokens > trained),
        "n_layers": info.n_layers, "n_heads": info.n_heads, "n_kv_heads": info.n_kv_heads,
        "head_dim": info.head_dim,
        "rope_scaling": config.rope_scaling,
        "rope_scaling_config": getattr(info, "rope_scaling", None),
        "weights": getattr(info, "weights", None),
        "rank": rank,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
