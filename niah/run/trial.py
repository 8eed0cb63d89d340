"""One trial: its needles and prompt, the memory preflight, prefill (reusing the previous
trial's prefix when allowed), decode and score, ending in one TrialRecord.

Trials sharing KV settings run in order of needle position so each can trim the previous
trial's cache back to the prefix their prompts share (niah.run.reuse).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..config import RunConfig, past_trained
from ..errors import NiahError
from ..generation import free_memory
from ..haystack import PromptBuilder
from ..tasks import TaskTrial, build_prompt, score_trial, trial_for
from .events import Progress
from .grid import TrialSpec, value_key
from .phases import Phases
from .records import ABSENT, NeedleRecord, TrialRecord
from .reuse import match_fresh_layout, reuse_length, trim_to, trimmable


class Writer(Protocol):
    def write(self, record: dict) -> None: ...


@dataclass
class Sweep:
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
    state: object = None  # niah.sdpa.patched's state: resolved settings, routes taken
    writer: Writer | None = None
    ran: int = 0
    throughput: object = None  # preflight.Throughput when trials get time estimates
    phases: Phases = field(default_factory=Phases)  # where the sweep's time goes


def task_trial(config: RunConfig, builder: PromptBuilder, spec: TrialSpec) -> TaskTrial:
    """The needles of one trial (niah.tasks.trial_for, the one config-to-trial mapping):
    values drawn from the seed, never one the haystack holds."""
    return trial_for(
        config,
        depth=spec.depth,
        value_key=value_key(spec),
        reject=lambda v: builder.value_occurs(v, context=spec.context),
    )


def run_group(run: Sweep, group: list[TrialSpec], *, preflight: bool) -> None:
    """Trials sharing KV settings, in needle order, each reusing the last one's prefix."""
    trials = {s.key: task_trial(run.config, run.builder, s) for s in group}
    prompts = {s.key: build_prompt(run.builder, trials[s.key], context=s.context) for s in group}
    group.sort(key=lambda s: (prompts[s.key].needle_index, s.context, s.sample))
    cached = None  # (cache, ids) of the previous trial
    for spec in group:
        prompt, trial = prompts[spec.key], trials[spec.key]
        record = begin_record(run, spec, prompt, trial)
        if preflight:
            est = estimate(run, spec)
            record = dataclasses.replace(record, estimated_memory_bytes=est.total)
            if not est.fits:
                record, cached = record.skipped(est.reason()), None
        if record.verdict is None:
            run.progress.trial_start(spec, time_estimate(run, spec))
            record, cached = run_trial(run, spec, prompt, record, cached, trial=trial)
        data = record.to_json()
        run.writer.write(data)
        run.progress.trial_done(data)
        run.ran += 1


def _needle_records(trial: TaskTrial, prompt) -> list[NeedleRecord]:
    """The record's `needles`: each needle where the prompt placed it, not yet scored."""
    return [
        NeedleRecord(
            key=n.key,
            value=n.value,
            needle_index=p.index,
            needle_depth=round(p.depth, 6),
            found=None,
            role="target" if n.target else "distractor",
            boundary=p.boundary,
        )
        for n, p in zip(trial.needles, prompt.placements)
    ]


def begin_record(run: Sweep, spec: TrialSpec, prompt, trial: TaskTrial) -> TrialRecord:
    """The record of a trial before it runs (SKIP and ERROR keep every field of it)."""
    config, info, identity = run.config, run.session.info, run.identity
    trained = info.trained_context
    return TrialRecord.begin(
        key=spec.key,
        model=info.name,
        model_path=info.path,
        context=spec.context,
        context_tokens=int(len(prompt.ids)),
        depth=spec.depth,
        needle_index=prompt.needle_index,
        needle_depth=round(prompt.needle_depth, 6),
        value=", ".join(trial.expected),
        sdpa_option=config.sdpa,
        mlx_version=identity.get("mlx_version"),
        mlx_lm_version=identity.get("mlx_lm_version"),
        mlx_env=identity.get("mlx_env", ABSENT),
        niah_version=identity.get("niah_version"),
        model_digest=identity.get("model_digest"),
        haystack_digest=identity.get("haystack_digest"),
        compute_dtype=identity.get("compute_dtype"),
        device=run.device,
        config_hash=run.chash,
        seed=config.seed,
        sample=spec.sample,
        kv_bits=spec.kv_bits,
        kv_group_size=config.kv_group_size if spec.kv_bits else None,
        max_kv_size=spec.max_kv_size,
        prefill_step=spec.prefill_step,
        trained_context=trained,
        beyond_trained=past_trained(spec.context, max_tokens=config.max_tokens, trained=trained),
        n_layers=info.n_layers,
        n_heads=info.n_heads,
        n_kv_heads=info.n_kv_heads,
        head_dim=info.head_dim,
        hidden_size=getattr(info, "hidden_size", 0),
        intermediate_size=getattr(info, "intermediate_size", 0),
        vocab_size=getattr(info, "vocab_size", 0),
        weight_bytes=info.weight_bytes,
        rope_scaling=config.rope_scaling,
        rope_scaling_config=getattr(info, "rope_scaling", None),
        weights=getattr(info, "weights", None),
        rank=run.rank,
        task=trial.task,
        needle_boundary=prompt.boundary,
        needles=_needle_records(trial, prompt),
        thinking=config.thinking,
        max_tokens=config.max_tokens,
    )


def estimate(run: Sweep, spec: TrialSpec):
    """The memory estimate of one trial (preflight.estimate) on the route it will take. A
    prefill step longer than the prompt runs blocks of the prompt's length."""
    from ..backend import backend
    from ..preflight import estimate as memory_estimate
    from ..sdpa.dispatch import choose_route

    step = min(spec.prefill_step, spec.context)
    route = choose_route(qL=step, kL=spec.context, route=run.route, config=run.state.config)
    return memory_estimate(
        run.session.info,
        context=spec.context,
        route=route,
        prefill_step=step,
        kv_bits=spec.kv_bits,
        kv_group_size=run.config.kv_group_size,
        chunk_size=run.state.config.chunk_size,
        backend=backend(),
    )


def time_estimate(run: Sweep, spec: TrialSpec):
    """How long the trial should take here (preflight.TimeEstimate), when the sweep probed
    this device's speed; else None. Counted without prefix reuse: an upper bound."""
    if run.throughput is None:
        return None
    from ..preflight import estimate_seconds

    return estimate_seconds(
        context=spec.context, throughput=run.throughput, max_tokens=run.config.max_tokens
    )


def _cache_for(run: Sweep, spec: TrialSpec, prompt, cached):
    """(cache, tokens reused): the previous trial's cache trimmed to the shared prefix when
    reuse is on and it can be trimmed, else a fresh one; in a fresh cache's buffer layout."""
    config = run.config
    if config.prefix_reuse and cached is not None and trimmable(cached[0]):
        cache = cached[0]
        reuse = reuse_length(cached[1], prompt.ids, step=spec.prefill_step)
        trim_to(cache, reuse)
    else:
        cache, reuse = (
            run.session.make_cache(
                kv_bits=spec.kv_bits,
                kv_group_size=config.kv_group_size,
                max_kv_size=spec.max_kv_size,
            ),
            0,
        )
    match_fresh_layout(cache, step=spec.prefill_step)
    return cache, reuse


def _reuse_label(*, reuse: int, prefix_reuse: bool, cache) -> str:
    if reuse:
        return "reused"
    if not prefix_reuse:
        return "off"
    return "fresh" if trimmable(cache) else "untrimmable-cache"


def run_trial(
    run: Sweep, spec: TrialSpec, prompt, record: TrialRecord, cached, *, trial: TaskTrial
):
    """Prefill, decode, score; the record and the cache to hand to the next trial."""
    config, session = run.config, run.session
    run.state.routes.clear()
    t0 = time.perf_counter()
    try:
        cache, reuse = _cache_for(run, spec, prompt, cached)
        gen = session.generate(
            prompt.ids.tolist(),
            cache=cache,
            reuse=reuse,
            prefill_step=spec.prefill_step,
            max_tokens=config.max_tokens,
            on_prefill=run.progress.prefill,
        )
        scored = score_trial(trial, prompt, gen.response, kind=config.value_kind)
        record = record.scored(
            gen,
            verdict=scored["verdict"],
            score=scored["score"],
            found=[n["found"] for n in scored["needles"]],
            sdpa_route=run.state.summary(),
            prefix_reuse=_reuse_label(reuse=reuse, prefix_reuse=config.prefix_reuse, cache=cache),
            elapsed_s=round(time.perf_counter() - t0, 4),
        )
        # hand on only a cache the next trial will take: one it cannot take would stay alive
        # beside the next trial's own, doubling the KV memory
        next_cached = (cache, prompt.ids) if config.prefix_reuse and trimmable(cache) else None
    except NiahError:
        raise
    except Exception as exc:  # OOM and backend errors: record, go on
        next_cached = None
        free_memory()
        record = record.failed(
            exc, sdpa_route=run.state.summary(), elapsed_s=round(time.perf_counter() - t0, 4)
        )
    return record, next_cached
