"""The checks a sweep makes before it runs, each one line naming the problem and the fix:
contexts against the model's trained length, the grid against memory (both before any weight
loads), the task's options against the tokenizer (before the load too, where the tokenizer can
be built alone), and a loaded session against the config.
"""

from __future__ import annotations

from ..config import RunConfig, check_kv_cache, check_kv_group_size, past_trained
from ..errors import NiahError
from ..haystack import PromptBuilder
from ..tasks import answer_minimum, haystack_source, minimum_context, validate
from .grid import build_grid


def check_contexts(config: RunConfig, trained: int | None, *, max_tokens: int = 0) -> list[str]:
    """Contexts beyond the trained length run and are marked (each trial records
    beyond_trained); with --refuse-beyond-trained they are refused. A context counts as beyond
    when the prompt plus the tokens it may decode exceed the trained length. Returns notes."""
    beyond = sorted(
        c for c in config.contexts if past_trained(c, max_tokens=max_tokens, trained=trained)
    )
    if beyond and config.refuse_beyond_trained:
        raise NiahError(
            f"context {max(beyond)} plus up to {max_tokens} answer tokens is beyond the model's "
            f"trained length of {trained} tokens (--refuse-beyond-trained): use a shorter "
            "--context, or drop --refuse-beyond-trained to run it marked"
        )
    return [
        f"context {c} plus up to {max_tokens} answer tokens is beyond the trained length "
        f"{trained} (run, marked in the reports)"
        for c in beyond
    ]


def check_kv_settings(config: RunConfig) -> None:
    """A quantized KV cache (--kv-bits) and a rotating one (--max-kv-size) cannot meet in one
    trial (mlx-lm has no quantized rotating cache), and the grid crosses the two lists: refuse
    any pair of them before the model loads, not at the first such trial after it."""
    bits = next((b for b in config.kv_bits if b is not None), None)
    check_kv_cache(bits, next((m for m in config.max_kv_size if m is not None), None))


def check_grid_fits(config: RunConfig, meta, *, working_set: int | None = None) -> None:
    """Refuse a grid none of whose trials fits in memory, before any weight loads: each trial
    through niah.preflight.estimate, the per-trial check, with the weights as stored (a load
    with --gguf-quant auto keeps or widens them; another --gguf-quant may shrink them, so
    they count as nothing then). A grid where some trials fit runs; the others are recorded
    SKIP as they come."""
    import dataclasses

    from ..backend import backend
    from ..preflight import estimate, working_set_bytes
    from ..sdpa.dispatch import choose_route, resolve_config

    if config.gguf_quant != "auto" or not meta.weight_bytes:
        meta = dataclasses.replace(meta, weight_bytes=0)
    chunking = resolve_config(threshold=config.chunk_threshold, chunk_size=config.chunk_size)
    working_set = working_set or working_set_bytes()
    smallest = None
    for spec in build_grid(config):
        step = min(spec.prefill_step, spec.context)
        route = choose_route(qL=step, kL=spec.context, route=config.sdpa, config=chunking)
        est = estimate(
            meta,
            context=spec.context,
            route=route,
            prefill_step=step,
            kv_bits=spec.kv_bits,
            kv_group_size=config.kv_group_size,
            chunk_size=chunking.chunk_size,
            backend=backend(),
            working_set=working_set,
        )
        if est.fits:
            return
        smallest = min(smallest or est, est, key=lambda e: e.total)
    if smallest is not None:
        raise NiahError(
            f"no trial of this grid fits in memory: the smallest {smallest.reason()}"
            ": use shorter contexts, --kv-bits 4, or a smaller model"
        )


def check_session(config: RunConfig, session, progress) -> None:
    """The session was loaded with this config's options; say how long the load took."""
    info = session.info
    opts = getattr(session, "load_options", None)
    if opts and opts != {"gguf_quant": config.gguf_quant, "rope_scaling": config.rope_scaling}:
        raise NiahError(
            f"the session was loaded with {opts}, not this config's --gguf-quant "
            f"{config.gguf_quant} --rope-scaling {config.rope_scaling}: load it again"
        )
    if any(config.kv_bits):  # the quantized cache groups along the head: a group must divide it
        check_kv_group_size(config.kv_group_size, head_dim=info.head_dim)
    if getattr(info, "load_s", 0):
        cached = f", weight cache {info.weight_cache}" if getattr(info, "weight_cache", "") else ""
        progress.note(
            f"loaded {info.name} in {info.load_s:.1f} s (weights {info.weights}"
            f"{cached}, peak {info.load_peak_bytes / 2**30:.2f} GiB)"
        )


def check_task(config: RunConfig, builder: PromptBuilder) -> None:
    """The task's options hold together and fit the shortest context and --max-tokens."""
    validate(
        task=config.task,
        needles=config.needles,
        needle=config.needle,
        question=config.question,
        answer_prefix=config.answer_prefix,
        keys=config.keys,
    )
    minimum = minimum_context(builder, config)
    shortest = min(config.contexts)
    if shortest < minimum:
        raise NiahError(
            f"context {shortest} is too short for the template, needle "
            f"and question ({minimum} tokens at least): use a longer --context"
        )
    need = answer_minimum(builder, config)
    if config.max_tokens < need:
        plural = "s" if config.needles > 1 and config.task != "multi-key" else ""
        raise NiahError(
            f"--max-tokens {config.max_tokens} cannot hold the answer ({need} tokens "
            f"for the {config.value_kind} value{plural} asked): use --max-tokens "
            f"{need} or more, with room to spare"
        )


def prompt_builder(config: RunConfig, tokenizer) -> PromptBuilder:
    """The prompt builder of this config's haystack, needle, question and template."""
    return PromptBuilder(
        tokenizer,
        source=haystack_source(config),
        seed=config.seed,
        needle=config.needle,
        question=config.question,
        answer_prefix=config.answer_prefix,
        intro=config.intro,
        thinking=config.thinking,
    )
