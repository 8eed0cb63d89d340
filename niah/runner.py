"""Run a sweep: grid -> prompts -> model -> score -> store, one trial at a time.

Finished trials are appended to the run folder as they complete, so a killed run loses only
the trial in flight and a rerun of the same config (or --resume) does only what is missing.
Within each group of trials sharing KV settings, trials run in order of needle position and,
with prefix reuse on, each one trims the previous trial's KV cache back to the prefix the two
prompts share and prefills only the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .config import RunConfig
from .errors import NiahError
from .haystack import PromptBuilder
from .scoring import ERROR, SKIP, score
from .trials import TrialSpec, assign_to_ranks, build_grid, prefix_groups


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


def _versions() -> tuple[str, str]:
    import importlib.metadata as md

    import mlx.core as mx

    try:
        lm = md.version("mlx-lm")
    except md.PackageNotFoundError:
        lm = "unknown"
    return mx.__version__, lm


def _warm_kernels(todo, session, *, route: str, config, progress: Progress) -> None:
    """Compile and self-test niah's fused kernels for the calls these trials will make, so
    that NVRTC/Metal compile time (about a minute on the H100 for SmolLM2's variants) is not
    counted in the first trial's prefill time."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from .kernels import warm_up
    from .sdpa.dispatch import backend, choose_route, fused_calls

    name = backend()
    if name not in ("cuda", "metal"):
        return
    info = session.info
    dtype = next((a.dtype for _, a in tree_flatten(session.model.parameters())
                  if a.dtype in (mx.float16, mx.bfloat16)), mx.float16)
    calls = set()
    for spec in todo:
        C = spec.context
        steps = {min(spec.prefill_step, C), C % spec.prefill_step or spec.prefill_step, 1}
        for qL in steps:
            if choose_route(qL=qL, kL=C, route=route, config=config, backend_name=name,
                            fused_ok=lambda: True) != "kv-chunks":
                continue
            calls.update(fused_calls(qL=qL, kL=C, causal=qL > 1, chunk_size=config.chunk_size,
                                     splits_keys=name == "cuda"))
    if not calls:
        return
    t0 = time.perf_counter()
    results = warm_up(dtype=dtype, n_heads=info.n_heads, n_kv_heads=info.n_kv_heads,
                      head_dim=info.head_dim, calls=sorted(calls))
    if results:
        bad = [r.kernel for r in results if not r.ok]
        progress.note(f"fused kernels: {len(results)} variants built and self-tested in "
                      f"{time.perf_counter() - t0:.1f} s" +
                      (f"; {len(bad)} failed, using the reference for them" if bad else ""))


def check_contexts(config: RunConfig, trained: int | None) -> list[str]:
    """Refuse contexts whose prompt plus decoded tokens (--max-tokens) pass the trained length,
    unless allowed; return warnings."""
    if trained is None:
        return []
    beyond = [c for c in config.contexts if c + config.max_tokens > trained]
    if beyond and not config.allow_beyond_trained:
        raise NiahError(
            f"context {max(beyond)} plus --max-tokens {config.max_tokens} is beyond the model's "
            f"trained length of {trained} tokens: use a shorter --context or pass "
            "--allow-beyond-trained"
        )
    return [f"context {c} plus --max-tokens {config.max_tokens} is beyond the trained length "
            f"{trained} (allowed, recorded)" for c in beyond]


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if len(diff) else n


def run_sweep(config: RunConfig, *, session=None, folder: Path | None = None,
              progress: Progress | None = None, rank: int | None = None, world: int = 1,
              preflight: bool = True) -> RunResult:
    """Run every unfinished trial of `config`; returns all records of the run."""
    from .model import ModelSession, device_description
    from .preflight import estimate
    from .sdpa import patched
    from .sdpa.dispatch import backend, choose_route

    progress = progress or Progress()
    sharded = config.shard == "tensor" and world > 1
    if session is None:
        group = None
        if sharded:
            import mlx.core as mx

            group = mx.distributed.init()
        session = ModelSession(config.model, shard_group=group)
    info = session.info
    warnings = check_contexts(config, info.trained_context)
    folder = Path(folder) if folder else store.run_folder(config, info.name)
    store.prepare_folder(folder, config)  # every rank: identical content, atomic replace
    builder = PromptBuilder(session.tokenizer, source=config.haystack, seed=config.seed,
                            needle=config.needle, question=config.question,
                            answer_prefix=config.answer_prefix, intro=config.intro)
    minimum = builder.minimum_context()
    if min(config.contexts) < minimum:
        raise NiahError(f"context {min(config.contexts)} is too short for the template, needle "
                        f"and question ({minimum} tokens at least): use a longer --context")

    grid = build_grid(config)
    # Sharded: every rank runs every trial together (one model across the group); rank 0
    # writes. Otherwise each rank takes its share of the grid.
    mine = assign_to_ranks(grid, world)[rank or 0] if world > 1 and not sharded else grid
    done = store.finished_keys(folder)
    todo = [s for s in mine if s.key not in done]
    progress.start(len(todo))
    mlx_version, lm_version = _versions()
    device = device_description()
    chash = config.hash()
    ran = 0

    writer_rank = rank if world > 1 and not sharded else None
    if sharded and rank:
        writer_cm = _NullWriter()
    else:
        writer_cm = store.TrialWriter(folder, rank=writer_rank)
    with writer_cm as writer, \
            patched(_patch_route(config.sdpa), threshold=config.chunk_threshold,
                    chunk_size=config.chunk_size) as state:
        if todo:
            try:
                _warm_kernels(todo, session, route=_patch_route(config.sdpa),
                              config=state.config, progress=progress)
            except Exception as exc:  # noqa: BLE001 - timing honesty only; the run goes on
                progress.note(f"fused kernel warm-up skipped: {type(exc).__name__}: {exc}")
        for group in prefix_groups(todo).values():
            prompts = {s.key: builder.build(context=s.context, depth=s.depth, value=s.value)
                       for s in group}
            group.sort(key=lambda s: (prompts[s.key].needle_index, s.context, s.sample))
            cache, cached_ids = None, None
            for spec in group:
                prompt = prompts[spec.key]
                base = _base_record(config, spec, prompt, info, device=device, chash=chash,
                                    mlx_version=mlx_version, lm_version=lm_version, rank=rank)
                route = choose_route(qL=min(spec.prefill_step, spec.context), kL=spec.context,
                                     route=_patch_route(config.sdpa), config=state.config)
                est = estimate(info, context=spec.context, route=route,
                               prefill_step=spec.prefill_step, kv_bits=spec.kv_bits,
                               kv_group_size=config.kv_group_size,
                               chunk_size=state.config.chunk_size, backend=backend())
                base["estimated_memory_bytes"] = est.total
                if preflight and not est.fits:
                    record = {**base, "verdict": SKIP, "error": f"skipped: {est.reason()}"}
                    writer.write(record)
                    progress.trial_done(record)
                    ran += 1
                    cache = None
                    continue
                state.routes.clear()
                t0 = time.perf_counter()
                try:
                    reuse = 0
                    if (config.prefix_reuse and cache is not None and cached_ids is not None
                            and _trimmable(cache)):
                        reuse = min(_common_prefix(cached_ids, prompt.ids), len(prompt.ids) - 1)
                        _trim(cache, cache[0].offset - reuse)
                    else:
                        cache = session.make_cache(kv_bits=spec.kv_bits,
                                                   kv_group_size=config.kv_group_size,
                                                   max_kv_size=spec.max_kv_size)
                    gen = session.generate(prompt.ids.tolist(), cache=cache, reuse=reuse,
                                           prefill_step=spec.prefill_step,
                                           max_tokens=config.max_tokens)
                    cached_ids = prompt.ids
                    record = {**base, **_gen_fields(gen), "verdict": score(gen.response, spec.value),
                              "sdpa_route": state.summary(),
                              "prefix_reuse": "reused" if reuse else (
                                  "off" if not config.prefix_reuse else
                                  ("fresh" if _trimmable(cache) else "untrimmable-cache"))}
                except NiahError:
                    raise
                except Exception as exc:  # OOM and backend errors: record, go on
                    cache, cached_ids = None, None
                    _free_memory()
                    record = {**base, "verdict": ERROR, "sdpa_route": state.summary(),
                              "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                record["elapsed_s"] = round(time.perf_counter() - t0, 4)
                writer.write(record)
                progress.trial_done(record)
                ran += 1

    latest = store.latest_by_key(store.read_trials(folder))
    records = [latest[s.key] for s in grid if s.key in latest]
    return RunResult(folder=folder, config=config, records=records, ran=ran,
                     skipped_done=len(mine) - len(todo), warnings=warnings)


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
                 mlx_version: str, lm_version: str, rank) -> dict:
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
        "mlx_version": mlx_version,
        "mlx_lm_version": lm_version,
        "device": device,
        "config_hash": chash,
        "seed": config.seed,
        "sample": spec.sample,
        "kv_bits": spec.kv_bits,
        "kv_group_size": config.kv_group_size if spec.kv_bits else None,
        "max_kv_size": spec.max_kv_size,
        "prefill_step": spec.prefill_step,
        "trained_context": trained,
        "beyond_trained": bool(trained and spec.context > trained),
        "n_layers": info.n_layers, "n_heads": info.n_heads, "n_kv_heads": info.n_kv_heads,
        "head_dim": info.head_dim,
        "rank": rank,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
