"""A trial's generation through mlx-lm's loop: same tokens as mlx-lm, its own memory peak."""

import pytest

from niah.haystack import PromptBuilder


@pytest.fixture(scope="module")
def prompts(session):
    builder = PromptBuilder(session.tokenizer)
    return {
        c: builder.build(context=c, depth=0.5, value="4817263").ids.tolist() for c in (512, 1024)
    }


def test_tokens_equal_mlx_lm_stream_generate(session, prompts):
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.models.cache import make_prompt_cache

    ids = prompts[512]
    gen = session.generate(ids, cache=session.make_cache(), max_tokens=12, prefill_step=128)
    theirs = [
        int(r.token)
        for r in stream_generate(
            session.model,
            session.wrapper,
            mx.array(ids),
            max_tokens=12,
            prefill_step_size=128,
            prompt_cache=make_prompt_cache(session.model),
        )
    ]
    assert list(gen.token_ids) == theirs
    assert gen.tokens == len(theirs) and gen.prefilled == len(ids) and gen.reused == 0
    assert gen.prefill_s > 0 and gen.ttft_s >= gen.prefill_s
    assert (gen.finish == "eos") == (theirs[-1] in session.eos_ids)


def test_repeated_cell_reads_the_same_peak(session, prompts):
    """What an earlier trial left for the garbage collector (here a reference cycle holding its
    cache) must not count in a later trial's peak: the same shape reads the same peak."""
    peaks = {512: [], 1024: []}
    for context in (1024, 512, 1024, 1024):
        cache = session.make_cache()
        gen = session.generate(prompts[context], cache=cache, max_tokens=4)
        holder = [cache]
        holder.append(holder)
        peaks[context].append(gen.peak_memory_bytes)
        del cache, holder
    big = peaks[1024]
    assert max(big) <= 1.05 * min(big), big
    assert gen.kv_cache_bytes > 0


def test_reuse_prefills_only_the_rest(session, prompts):
    ids = prompts[512]
    cache = session.make_cache()
    first = session.generate(ids, cache=cache, max_tokens=4)
    from mlx_lm.models.cache import trim_prompt_cache

    trim_prompt_cache(cache, cache[0].offset - 256)
    again = session.generate(ids, cache=cache, reuse=256, max_tokens=4)
    assert again.reused == 256 and again.prefilled == len(ids) - 256
    assert again.token_ids == first.token_ids


def test_free_memory_waits_for_mlx_lm_generation_stream(monkeypatch):
    """mlx-lm prefills and decodes on a stream of its own (mlx_lm.generate.generation_stream)
    and stops with one decode step still in flight; mx.synchronize() with no argument waits for
    the default stream only, so free_memory must name mlx-lm's stream too."""
    import mlx.core as mx
    from mlx_lm.generate import generation_stream

    from niah.generation import free_memory

    real, waited = mx.synchronize, []

    def spy(stream=None):
        waited.append(stream)
        return real() if stream is None else real(stream)

    monkeypatch.setattr(mx, "synchronize", spy)
    free_memory()
    assert any(s is generation_stream for s in waited), waited
