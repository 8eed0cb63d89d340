"""niah's fused attention kernels: correctness against the reference, self-test and fallback.

GPU tests (marked cuda and metal) run the real kernel of whichever backend is present and sweep
dtypes, head dims, GQA ratios, masks, sinks, key splits and odd lengths against a float32
reference with per-dtype tolerances; they prove that a deliberately broken kernel (wrong math,
or a compile error) is caught by the first-use self-test and falls back to the reference with
one warning. CPU tests exercise the same self-test logic with an injected implementation,
including Metal's fallback from the vector-load build to the element-wise build of a variant.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

import mlx.core as mx
import pytest

from niah.backend import backend
from niah.kernels import flash
from niah.sdpa import fused
from niah.sdpa.dispatch import dispatch, force_route, kv_chunks
from niah.sdpa.fused import FusedAttention, chunk_attention_fn
from niah.sdpa.reference import attention_with_lse

BACKEND = backend()
ON_KERNEL_GPU = BACKEND in ("cuda", "metal")


def gpu_test(f):
    """Marked cuda, metal and gpu (selected by -m); skipped where neither backend exists."""
    for mark in (
        pytest.mark.skipif(not ON_KERNEL_GPU, reason="needs MLX's CUDA or Metal backend"),
        pytest.mark.gpu,
        pytest.mark.metal,
        pytest.mark.cuda,
    ):
        f = mark(f)
    return f


TOL = {mx.float16: 4e-3, mx.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def _fresh():
    fused.reset()
    yield
    flash.SOURCE_PATCH = None
    flash.TILE_OVERRIDE = None
    flash.SPLITS_OVERRIDE = None
    fused.reset()


def _inputs(*, dtype, B, Hq, Hkv, qL, kL, D, mask, seed=0, sinks=False):
    keys = mx.random.split(mx.random.key(seed), 5)
    q = mx.random.normal((B, Hq, qL, D), key=keys[0]).astype(dtype)
    k = mx.random.normal((B, Hkv, kL, D), key=keys[1]).astype(dtype)
    v = mx.random.normal((B, Hkv, kL, D), key=keys[2]).astype(dtype)
    m = None
    if mask == "causal":
        m = "causal"
    elif mask == "bool":
        m = (mx.random.uniform(shape=(B, 1, qL, kL), key=keys[3]) > 0.3) | (mx.arange(kL) == 0)
    elif mask == "additive":
        m = (2 * mx.random.normal((1, Hq, qL, kL), key=keys[3])).astype(dtype)
    s = mx.random.normal((Hq,), key=keys[4]).astype(dtype) if sinks else None
    return q, k, v, m, s


def _max_err(a, b):
    return mx.max(mx.abs(a.astype(mx.float32) - b.astype(mx.float32))).item()


def _check(q, k, v, m, s, *, causal_shift=None, splits=None, tile=None):
    out, lse = flash.flash_attention_with_lse(
        q,
        k,
        v,
        scale=q.shape[-1] ** -0.5,
        mask=m,
        sinks=s,
        causal_shift=causal_shift,
        backend_name=BACKEND,
        splits=splits,
        tile=tile,
    )
    ref, ref_lse = attention_with_lse(
        q, k, v, scale=q.shape[-1] ** -0.5, mask=m, sinks=s, causal_shift=causal_shift
    )
    finite = mx.isfinite(ref_lse)
    assert mx.all(mx.isfinite(lse) == finite).item()
    assert mx.max(mx.where(finite, mx.abs(lse - ref_lse), 0.0)).item() < 1e-2
    assert _max_err(out, ref) < TOL[q.dtype]
    if tile is None and splits is None:  # the same call through the self-tested route
        fn = FusedAttention(BACKEND)
        out2, _ = fn(q, k, v, scale=q.shape[-1] ** -0.5, mask=m, sinks=s, causal_shift=causal_shift)
        assert dict(fn.ran) == {"fused": 1}, dict(fn.ran)
        failed = [r for r in fused.self_test_results() if not r.ok]
        assert not failed, failed
        assert _max_err(out2, ref) < TOL[q.dtype]


@gpu_test
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize("D", [64, 80, 128, 256])
@pytest.mark.parametrize("G", [1, 4])
@pytest.mark.parametrize(
    "qL,kL,mask",
    [(1, 1500, "none"), (37, 1459, "causal"), (200, 200, "causal"), (16, 3000, "causal")],
)
def test_kernel_matches_reference(dtype, D, G, qL, kL, mask):
    _check(*_inputs(dtype=dtype, B=2, Hq=2 * G, Hkv=2, qL=qL, kL=kL, D=D, mask=mask))


@gpu_test
@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
@pytest.mark.parametrize(
    "case",
    [
        "bool",
        "additive",
        "sinks",
        "sinks-split",
        "shift",
        "split",
        "all-masked-rows",
        "gqa16",
        "odd-batch",
    ],
)
def test_kernel_masks_sinks_splits(dtype, case):
    kw = dict(dtype=dtype, B=1, Hq=8, Hkv=2, qL=33, kL=1055, D=64, mask="none")
    if case in ("bool", "additive"):
        _check(*_inputs(**{**kw, "mask": case}))
    elif case == "sinks":
        _check(*_inputs(**{**kw, "mask": "causal"}, sinks=True))
    elif case == "sinks-split":
        _check(*_inputs(**{**kw, "mask": "causal"}, sinks=True), splits=3)
    elif case == "shift":
        _check(*_inputs(**kw), causal_shift=500)
    elif case == "split":
        _check(*_inputs(**{**kw, "qL": 4, "kL": 5001, "mask": "causal"}), splits=7)
    elif case == "all-masked-rows":  # rows 0..19 see no key: zeros and lse -inf
        _check(*_inputs(**kw), causal_shift=-20)
    elif case == "gqa16":
        _check(*_inputs(**{**kw, "Hq": 32, "qL": 16, "mask": "causal"}))
    elif case == "odd-batch":
        _check(*_inputs(**{**kw, "B": 3, "qL": 300, "kL": 300, "mask": "causal"}))


@gpu_test
def test_kernel_reads_strided_views():
    buf = mx.random.normal((1, 2, 4096, 128)).astype(mx.bfloat16)
    q = mx.random.normal((1, 16, 8, 128)).astype(mx.bfloat16).transpose(0, 2, 1, 3)  # mlx-lm layout
    k, v = buf[:, :, :3000], buf[:, :, 1000:4000]  # slices of a cache buffer
    _check(q, k, v, "causal", None)
    kt = (
        mx.random.normal((1, 2, 128, 3000)).astype(mx.bfloat16).swapaxes(-1, -2)
    )  # D not contiguous
    _check(q, kt, v, "causal", None)


def metal_test(f):
    """Marked metal and gpu; skipped off Metal (never selected by -m cuda)."""
    for mark in (
        pytest.mark.skipif(BACKEND != "metal", reason="needs MLX's Metal backend"),
        pytest.mark.gpu,
        pytest.mark.metal,
    ):
        f = mark(f)
    return f


@metal_test
@pytest.mark.parametrize("vector_loads", [True, False], ids=["vec", "scalar"])
def test_metal_builds_both_match_the_reference(vector_loads):
    """Both Metal builds on the hardware: the vector-load one (what the self-test tries first)
    and the element-wise one (its fallback), on contiguous inputs and on the views mlx-lm
    passes; then the self-tested route must be served by the vector build, not a fallback."""
    q, k, v, m, _ = _inputs(
        dtype=mx.bfloat16, B=1, Hq=8, Hkv=2, qL=37, kL=1459, D=128, mask="causal"
    )
    qt = mx.random.normal((1, 37, 8, 128)).astype(mx.bfloat16).transpose(0, 2, 1, 3)  # mlx-lm's
    buf = mx.random.normal((1, 2, 2048, 128)).astype(mx.bfloat16)
    views = (qt, buf[:, :, :1459], buf[:, :, 7:1466])  # slices of a cache buffer
    for qq, kk, vv in [(q, k, v), views]:
        out, lse = flash.flash_attention_with_lse(
            qq, kk, vv, scale=128**-0.5, mask=m, backend_name="metal", vector_loads=vector_loads
        )
        ref, ref_lse = attention_with_lse(qq, kk, vv, scale=128**-0.5, mask=m)
        assert _max_err(out, ref) < TOL[mx.bfloat16]
        assert mx.max(mx.abs(lse - ref_lse)).item() < 1e-2
    fn = FusedAttention("metal")
    fn(q, k, v, scale=128**-0.5, mask=m)
    results = fused.self_test_results()
    assert dict(fn.ran) == {"fused": 1} and [(r.loads, r.ok) for r in results] == [("vec", True)]


@gpu_test
def test_kv_chunks_route_uses_the_kernel():
    q, k, v, m, _ = _inputs(
        dtype=mx.bfloat16, B=1, Hq=8, Hkv=2, qL=16, kL=5000, D=128, mask="causal"
    )
    log = Counter()
    with force_route("kv-chunks"):
        out = dispatch(q, k, v, scale=128**-0.5, mask=m, log=log)  # the default kernel
    ref, _ = attention_with_lse(q, k, v, scale=128**-0.5, mask=m)
    assert _max_err(out, ref) < TOL[mx.bfloat16]
    results = fused.self_test_results()
    assert results and all(r.ok for r in results), results
    assert dict(log) == {"kv-chunks/fused": 1}


@gpu_test
@pytest.mark.parametrize(
    "patch,expect",
    [
        (
            lambda name, src: src.replace("* LOG2E;", "* 1.0f;", 1) if "fwd" in name else src,
            "max error",
        ),
        (lambda name, src: src + "\nthis is not a kernel;\n" if "fwd" in name else src, "Error"),
    ],
)
def test_broken_kernel_falls_back_with_one_warning(patch, expect):
    flash.SOURCE_PATCH = patch
    q, k, v, m, _ = _inputs(dtype=mx.float16, B=1, Hq=4, Hkv=2, qL=20, kL=700, D=64, mask="causal")
    fn = chunk_attention_fn(q=q, k=k)
    with pytest.warns(RuntimeWarning, match="failed its self-test") as rec:
        out, lse = fn(q, k, v, scale=0.125, mask=m)
    assert expect in str(rec[0].message) and BACKEND in str(rec[0].message)
    ref, ref_lse = attention_with_lse(q, k, v, scale=0.125, mask=m)
    assert _max_err(out, ref) == 0.0  # the reference answered
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        fn(q, k, v, scale=0.125, mask=m)
    assert [r.ok for r in fused.self_test_results()] == [False]


# --- CPU: the self-test logic with an injected implementation --------------------------------


def _fake_impl(bug: float):
    def impl(
        q,
        k,
        v,
        *,
        scale,
        mask=None,
        sinks=None,
        causal_shift=None,
        backend_name=None,
        tile=None,
        splits=None,
        out_dtype=None,
        stream=None,
        vector_loads=True,
    ):
        return attention_with_lse(
            q, k, v, scale=scale * bug, mask=mask, sinks=sinks, causal_shift=causal_shift
        )

    return impl


def _counting_impl(calls: list):
    good = _fake_impl(1.0)

    def impl(*a, **kw):
        assert "vector_loads" not in kw  # the build switch is Metal's
        calls.append(kw.get("tile"))
        return good(*a, **kw)

    return impl


def test_self_test_passes_a_correct_kernel_and_uses_it():
    calls = []
    fn = FusedAttention("cuda", impl=_counting_impl(calls))
    q, k, v, m, _ = _inputs(dtype=mx.float16, B=1, Hq=4, Hkv=2, qL=3, kL=300, D=64, mask="causal")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(q, k, v, scale=0.125, mask=m)
        fn(q, k, v, scale=0.125, mask=m)
    assert len(calls) == 3  # one self-test, two real calls
    (r,) = fused.self_test_results()
    assert r.ok and r.kernel.startswith("cuda:float16:D64:")
    assert r.loads == "" and not r.replaced and not r.kernel.endswith(("vec", "scalar"))


def test_self_test_catches_a_wrong_kernel_and_falls_back_once():
    fn = FusedAttention("metal", impl=_fake_impl(1.5))
    q, k, v, m, _ = _inputs(dtype=mx.bfloat16, B=1, Hq=4, Hkv=2, qL=5, kL=300, D=128, mask="none")
    with pytest.warns(
        RuntimeWarning,
        match=r"fused attention kernel metal:bfloat16:D128:.* failed "
        r"its self-test on .*max error",
    ):
        out, _ = fn(q, k, v, scale=0.1, mask=m)
    ref, _ = attention_with_lse(q, k, v, scale=0.1, mask=m)
    assert _max_err(out, ref) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(q, k, v, scale=0.1, mask=m)
    # another variant (causal) gets its own self-test
    with pytest.warns(RuntimeWarning):
        fn(q, k, v, scale=0.1, mask="causal")
    # per variant: the vector build failed and was replaced, then the scalar build failed too
    assert [(r.loads, r.replaced, r.ok) for r in fused.self_test_results()] == [
        ("vec", True, False),
        ("scalar", False, False),
    ] * 2


def test_self_test_turns_a_compile_error_into_a_fallback():
    def impl(*a, **kw):
        raise RuntimeError('nvrtc: error: identifier "oops" is undefined\nmore')

    fn = FusedAttention("cuda", impl=impl)
    q, k, v, m, _ = _inputs(dtype=mx.float16, B=1, Hq=2, Hkv=2, qL=2, kL=100, D=64, mask="none")
    with pytest.warns(
        RuntimeWarning, match=r"RuntimeError: nvrtc: error: identifier \"oops\" is undefined;"
    ):
        out, _ = fn(q, k, v, scale=0.125)
    assert _max_err(out, attention_with_lse(q, k, v, scale=0.125)[0]) == 0.0


def test_no_kernel_for_float32_or_cpu():
    q = mx.zeros((1, 2, 4, 64))
    if BACKEND == "cpu":
        assert chunk_attention_fn(q=q.astype(mx.float16), k=q) is None
    assert chunk_attention_fn(q=q, k=q) is None  # float32 takes the reference


def test_plan_splits_only_when_the_gpu_would_idle():
    t, s, n = flash.plan(q_shape=(1, 32, 1, 128), k_shape=(1, 8, 1 << 20, 128), backend_name="cuda")
    assert (t.rows, s) == (32, 132) and n * s >= 1 << 20
    t, s, _ = flash.plan(
        q_shape=(1, 32, 2048, 128), k_shape=(1, 8, 131072, 128), backend_name="cuda"
    )
    assert s == 1 and t.rows == 128
    t, s, _ = flash.plan(q_shape=(1, 2, 1, 64), k_shape=(1, 2, 100, 64), backend_name="cuda")
    assert s == 1  # too few keys to split


@pytest.mark.parametrize(
    "qL,kL,causal,chunk",
    [(1, 5000, False, 1024), (16, 5000, True, 1024), (300, 2048, True, 512), (7, 999, True, 4096)],
)
def test_fused_calls_match_what_kv_chunks_calls(qL, kL, causal, chunk):
    from niah.sdpa.dispatch import fused_calls

    seen = []

    def recorder(q, k, v, *, scale, mask=None, sinks=None, causal_shift=None, out_dtype=None):
        is_causal = isinstance(mask, str) or causal_shift is not None
        seen.append((q.shape[2], k.shape[2], is_causal, out_dtype is not None))
        return attention_with_lse(q, k, v, scale=scale, mask=mask, causal_shift=causal_shift)

    recorder.splits_keys = False
    q, k, v, _, _ = _inputs(dtype=mx.float32, B=1, Hq=2, Hkv=1, qL=qL, kL=kL, D=8, mask="none")
    kv_chunks(
        q, k, v, scale=0.3, mask="causal" if causal else None, chunk_size=chunk, chunk_fn=recorder
    )
    assert seen == fused_calls(qL=qL, kL=kL, causal=causal, chunk_size=chunk, splits_keys=False)
    assert fused_calls(qL=qL, kL=kL, causal=causal, chunk_size=chunk, splits_keys=True) == [
        (qL, kL, causal, False)
    ]


def test_prepare_self_tests_once_and_the_call_reuses_the_verdict():
    calls = []
    fn = FusedAttention("cuda", impl=_counting_impl(calls))
    r = fn.prepare(q_shape=(1, 4, 3, 64), k_shape=(1, 2, 300, 64), dtype=mx.float16, causal=True)
    assert r.ok and len(calls) == 1
    q, k, v, m, _ = _inputs(dtype=mx.float16, B=1, Hq=4, Hkv=2, qL=3, kL=300, D=64, mask="causal")
    fn(q, k, v, scale=0.125, mask=m)
    assert len(calls) == 2 and len(fused.self_test_results()) == 1  # no second self-test


def test_run_warm_up_builds_the_variants_the_trials_will_use(monkeypatch):
    """The runner's warm-up, with the backend reported as CUDA and an injected kernel."""
    from types import SimpleNamespace

    import niah.backend as backend_mod
    from niah.run import Progress
    from niah.run import warmup as runner
    from niah.sdpa.dispatch import resolve_config

    monkeypatch.setattr(backend_mod, "backend", lambda: "cuda")
    monkeypatch.setattr(flash, "flash_attention_with_lse", _fake_impl(1.0))
    model = SimpleNamespace(parameters=lambda: {"w": mx.zeros((2,), dtype=mx.bfloat16)})
    session = SimpleNamespace(
        model=model, info=SimpleNamespace(n_heads=8, n_kv_heads=2, head_dim=64)
    )
    todo = [
        SimpleNamespace(context=4096, prefill_step=1000),
        SimpleNamespace(context=1024, prefill_step=1000),
    ]
    notes = []
    progress = Progress()
    progress.note = notes.append
    runner._warm_kernels(
        todo, session, route="chunked", config=resolve_config(threshold=2048), progress=progress
    )
    made = fused.self_test_results()
    # 4096 keys: prefill steps of 1000 and the 96-token tail (causal), decode (plain); 1024 keys
    # stay under the threshold (stock).
    assert {(r.kernel.split(":")[0], r.kernel.split(":")[1]) for r in made} == {
        ("cuda", "bfloat16")
    }
    assert all(r.ok for r in made) and len(made) >= 2
    assert notes == [
        f"fused kernels: {len(made)} variants built and self-tested in {notes[0].split(' in ')[1]}"
    ]
    # auto on CUDA only uses the kernel for 2 <= qL <= 128: the 96-token tail
    fused.reset()
    notes.clear()
    runner._warm_kernels(
        todo, session, route="auto", config=resolve_config(threshold=2048), progress=progress
    )
    assert len(fused.self_test_results()) == 1 and "causal" in fused.self_test_results()[0].kernel


# --- routing on the self-test verdict (CPU: the backend reported as a GPU, injected kernel) ---


def _as_backend(monkeypatch, name):
    import niah.backend as backend_mod

    monkeypatch.setattr(backend_mod, "backend", lambda: name)


def _route_case():
    q, k, v, _, _ = _inputs(dtype=mx.float16, B=1, Hq=4, Hkv=2, qL=16, kL=700, D=64, mask="none")
    return q, k, v, resolve_config_for_test()


def resolve_config_for_test():
    from niah.sdpa.dispatch import ChunkConfig

    return ChunkConfig(threshold=256, chunk_size=256, q_block=64)


@pytest.mark.parametrize("bug,expect", [(1.0, "kv-chunks/fused"), (1.5, "stock")])
def test_cuda_auto_routes_on_the_self_test_verdict(monkeypatch, bug, expect):
    _as_backend(monkeypatch, "cuda")
    calls = []
    fn = FusedAttention("cuda", impl=_counting_impl(calls) if bug == 1.0 else _fake_impl(bug))
    q, k, v, config = _route_case()
    log = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if bug != 1.0 else "error")
        out = dispatch(q, k, v, scale=0.125, mask="causal", config=config, log=log, chunk_fn=fn)
    assert dict(log) == {expect: 1}
    assert [r.ok for r in fused.self_test_results()] == [bug == 1.0]
    ref, _ = attention_with_lse(q, k, v, scale=0.125, mask="causal")
    assert _max_err(out, ref) < 4e-3


def _stock_recorder(blocks: list):
    from niah.sdpa.dispatch import STOCK_SDPA

    def stock(q, k, v, **kw):
        blocks.append((q.shape[2], k.shape[2]))
        return STOCK_SDPA(q, k, v, **kw)

    return stock


@pytest.mark.parametrize("backend_name,route", [("metal", "auto"), ("cuda", "chunked")])
def test_a_failed_kernel_falls_back_to_stock_query_blocks(monkeypatch, backend_name, route):
    """A variant fails its self-test where stock has a fused kernel of its own for the call
    (float16, D 64): the call runs as query blocks through stock (on Metal sized by the FLOP
    budget over all keys, each evaluated on its own), exact, labelled so; the reference and the
    failed kernel do not run."""
    from niah.sdpa.dispatch import ChunkConfig

    _as_backend(monkeypatch, backend_name)
    fn = FusedAttention(backend_name, impl=_fake_impl(1.5))
    q, k, v, _ = _route_case()  # q 16 rows, 700 keys, D 64
    per_row = 4 * 4 * 700 * 64
    config = ChunkConfig(threshold=256, chunk_size=256, q_block=6, flop_budget=5 * per_row)
    blocks, log = [], Counter()
    with pytest.warns(RuntimeWarning, match="failed its self-test"):
        out = dispatch(
            q,
            k,
            v,
            scale=0.125,
            mask="causal",
            config=config,
            log=log,
            chunk_fn=fn,
            route=route,
            stock=_stock_recorder(blocks),
        )
    assert dict(log) == {"kv-chunks/q-split-fallback": 1}
    assert sum(fn.ran.values()) == 0  # neither the failed kernel nor its reference answered
    rows = 5 if backend_name == "metal" else 6  # Metal: the FLOP budget; else config.q_block
    assert [b[0] for b in blocks] == [rows] * (16 // rows) + ([16 % rows] if 16 % rows else [])
    assert [b[1] for b in blocks] == [
        700 - 16 + min(16, rows * (i + 1)) for i in range(len(blocks))
    ]
    ref, _ = attention_with_lse(q, k, v, scale=0.125, mask="causal")
    assert _max_err(out, ref) < 4e-3


@pytest.mark.parametrize("backend_name,route", [("metal", "auto"), ("cuda", "chunked")])
def test_a_failed_kernel_keeps_the_reference_where_stock_has_no_fused_kernel(
    monkeypatch, backend_name, route
):
    """Head dim 256 over 16-row blocks: stock has no fused kernel of its own (Metal's full
    attention stops at 128, cuDNN at 128), so the failed kernel's call runs on the reference."""
    from niah.sdpa.dispatch import ChunkConfig

    _as_backend(monkeypatch, backend_name)
    fn = FusedAttention(backend_name, impl=_fake_impl(1.5))
    q, k, v, _, _ = _inputs(dtype=mx.float16, B=1, Hq=4, Hkv=2, qL=16, kL=300, D=256, mask="none")
    config = ChunkConfig(threshold=256, chunk_size=256, q_block=64)
    blocks, log = [], Counter()
    with pytest.warns(RuntimeWarning, match="failed its self-test"):
        out = dispatch(
            q,
            k,
            v,
            scale=0.0625,
            mask="causal",
            config=config,
            log=log,
            chunk_fn=fn,
            route=route,
            stock=_stock_recorder(blocks),
        )
    assert dict(log) == {"kv-chunks/reference": 1} and blocks == []
    ref, _ = attention_with_lse(q, k, v, scale=0.0625, mask="causal")
    assert _max_err(out, ref) < 4e-3


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_stock_fallback_gives_zeros_for_rows_that_see_no_key(monkeypatch, kind):
    """Stock's answer for a row its mask hides from every key is undefined (NaN for an additive
    -inf mask on the CPU); the fallback answers zeros, as the reference does."""
    _as_backend(monkeypatch, "metal")
    fn = FusedAttention("metal", impl=_fake_impl(1.5))
    q, k, v, config = _route_case()
    keep = mx.random.uniform(shape=(16, 700), key=mx.random.key(3)) > 0.3
    keep = mx.where((mx.arange(16) == 4)[:, None], False, keep)  # row 4 sees no key
    mask = keep if kind == "bool" else mx.where(keep, 0.0, -mx.inf).astype(mx.float16)
    log = Counter()
    with pytest.warns(RuntimeWarning, match="failed its self-test"):
        out = dispatch(q, k, v, scale=0.125, mask=mask, config=config, log=log, chunk_fn=fn)
    assert dict(log) == {"kv-chunks/q-split-fallback": 1}
    assert bool(mx.all(mx.isfinite(out)).item()) and mx.abs(out[:, :, 4]).max().item() == 0
    ref, _ = attention_with_lse(q, k, v, scale=0.125, mask=mask)
    assert _max_err(out, ref) < 4e-3


METAL_COMPILE_ERROR = (
    "[metal::Device] Unable to build metal library from source\n"
    "program_source:80:1: error: 'alignas' attribute cannot be applied here"
)


def _vector_build_broken(how: str, builds: list):
    """A Metal kernel whose vector-load build fails (`how`: a compile error, or wrong values) and
    whose element-wise build is right; `builds` records which build each call asked for."""
    good, wrong = _fake_impl(1.0), _fake_impl(1.5)

    def impl(q, k, v, *, vector_loads, **kw):
        builds.append("vec" if vector_loads else "scalar")
        if vector_loads and how == "compile error":
            raise RuntimeError(METAL_COMPILE_ERROR)
        return (wrong if vector_loads else good)(q, k, v, **kw)

    return impl


@pytest.mark.parametrize(
    "how,detail",
    [("compile error", "RuntimeError: [metal::Device] Unable"), ("wrong values", "max error")],
    ids=["compile error", "wrong values"],
)
def test_metal_falls_back_to_the_element_wise_build(monkeypatch, how, detail):
    """Backend reported as Metal, the vector build broken: the variant's element-wise build
    serves the route (still kv-chunks/fused), and the results keep the failed vector attempt,
    which niah sdpa verify lists without counting it as a failed check."""
    from niah.verify import print_self_tests

    _as_backend(monkeypatch, "metal")
    builds = []
    fn = FusedAttention("metal", impl=_vector_build_broken(how, builds))
    q, k, v, config = _route_case()
    log = Counter()
    with pytest.warns(
        RuntimeWarning,
        match=r"kernel metal:float16:D64:\S+:vec \(16-byte vector "
        r"loads\) failed its self-test .*rebuilding it with "
        r"element-wise loads",
    ) as rec:
        out = dispatch(q, k, v, scale=0.125, mask="causal", config=config, log=log, chunk_fn=fn)
    assert len(rec) == 1 and detail in str(rec[0].message)  # no warning for the scalar build
    assert dict(log) == {"kv-chunks/fused": 1}
    assert builds == ["vec", "scalar", "scalar"]  # two self-tests, then the call: scalar
    ref, _ = attention_with_lse(q, k, v, scale=0.125, mask="causal")
    assert _max_err(out, ref) < 4e-3
    vec, scalar = fused.self_test_results()
    assert (vec.loads, vec.replaced, vec.ok) == ("vec", True, False) and detail in vec.detail
    assert (scalar.loads, scalar.replaced, scalar.ok) == ("scalar", False, True)
    assert scalar.kernel == vec.kernel.removesuffix(":vec") + ":scalar"
    lines = []
    assert print_self_tests(fused.self_test_results(), echo=lines.append) == (1, True)
    assert re.search(
        r":vec .* FAIL .*" + re.escape(detail) + r".* -> replaced by its "
        r"element-wise build",
        lines[1],
    ), lines
    assert ":scalar " in lines[2] and lines[2].endswith("PASS")
    assert lines[3].startswith("vector loads failed on 1 variant(s)")
    with warnings.catch_warnings():  # the verdict is kept: no second self-test, no warning
        warnings.simplefilter("error")
        dispatch(q, k, v, scale=0.125, mask="causal", config=config, log=log, chunk_fn=fn)
    assert builds[3:] == ["scalar"]


def test_run_warm_up_note_says_which_variants_lost_their_vector_build(monkeypatch):
    """The runner's warm-up on Metal (backend reported, injected kernel whose vector build does
    not compile): the note says how many variants run element-wise, and none failed."""
    from types import SimpleNamespace

    from niah.run import Progress
    from niah.run import warmup as runner
    from niah.sdpa.dispatch import resolve_config

    _as_backend(monkeypatch, "metal")
    builds = []
    monkeypatch.setattr(
        flash, "flash_attention_with_lse", _vector_build_broken("compile error", builds)
    )
    model = SimpleNamespace(parameters=lambda: {"w": mx.zeros((2,), dtype=mx.float16)})
    session = SimpleNamespace(
        model=model, info=SimpleNamespace(n_heads=8, n_kv_heads=2, head_dim=64)
    )
    notes = []
    progress = Progress()
    progress.note = notes.append
    with pytest.warns(RuntimeWarning, match="rebuilding it with element-wise loads"):
        runner._warm_kernels(
            [SimpleNamespace(context=4096, prefill_step=1000)],
            session,
            route="chunked",
            config=resolve_config(threshold=2048),
            progress=progress,
        )
    made = [r for r in fused.self_test_results() if not r.replaced]
    assert made and all(r.ok and r.loads == "scalar" for r in made)
    assert len(notes) == 1 and notes[0].endswith(
        f"; {len(made)} use element-wise loads (their vector-load build failed: niah sdpa "
        "verify shows why)"
    )


def _shape_recorder(shapes: list):
    good = _fake_impl(1.0)

    def impl(q, k, v, **kw):
        if kw.get("tile") is None:  # not a self-test (those name their tile)
            shapes.append((q.shape[2], k.shape[2]))
        return good(q, k, v, **kw)

    return impl


@pytest.mark.parametrize(
    "budget,calls",
    [
        (None, [(16, 700)]),  # fits: one launch, all keys
        (4 * 4 * 16 * 256 * 64, [(5, 689), (5, 694), (5, 699), (1, 700)]),
    ],
)
def test_metal_kernel_route_bounds_the_work_per_call(monkeypatch, budget, calls):
    from niah.sdpa.dispatch import ChunkConfig

    _as_backend(monkeypatch, "metal")
    shapes = []
    fn = FusedAttention("metal", impl=_shape_recorder(shapes))
    q, k, v, _ = _route_case()
    config = ChunkConfig(
        threshold=256, chunk_size=256, q_block=64, **({"flop_budget": budget} if budget else {})
    )
    log = Counter()
    out = dispatch(q, k, v, scale=0.125, mask="causal", config=config, log=log, chunk_fn=fn)
    assert dict(log) == {"kv-chunks/fused": 1}
    assert all(r.ok for r in fused.self_test_results())
    assert shapes == calls  # query blocks see their causal key prefixes
    for qL, kL in shapes:
        assert 4 * 4 * qL * kL * 64 <= (budget or 1e11)
    ref, _ = attention_with_lse(q, k, v, scale=0.125, mask="causal")
    assert _max_err(out, ref) < 4e-3


@pytest.mark.parametrize("what", ["v head dim", "v dtype", "k dtype"])
def test_fused_path_needs_equal_head_dims_and_dtypes(monkeypatch, what):
    _as_backend(monkeypatch, "cuda")
    q, k, v, _, _ = _inputs(dtype=mx.float16, B=1, Hq=4, Hkv=2, qL=3, kL=300, D=64, mask="none")
    assert isinstance(chunk_attention_fn(q=q, k=k, v=v), FusedAttention)
    if what == "v head dim":
        v = v[..., :32]
    elif what == "v dtype":
        v = v.astype(mx.bfloat16)
    else:
        k = k.astype(mx.bfloat16)
    assert chunk_attention_fn(q=q, k=k, v=v) is None
    calls = []
    fn = FusedAttention("cuda", impl=_counting_impl(calls))
    out, _ = fn(q, k, v, scale=0.125)
    assert calls == [] and dict(fn.ran) == {"reference": 1}
    assert out.shape == (*q.shape[:3], v.shape[-1])


@pytest.mark.parametrize(
    "backend_name,budget",
    [("metal", 4 * 4 * 16 * 256 * 64), ("metal", None), ("cpu", None), ("cuda", None)],
)
@pytest.mark.parametrize("causal", [True, False])
def test_planned_fused_calls_match_what_the_route_calls(monkeypatch, backend_name, budget, causal):
    from niah.sdpa.dispatch import ChunkConfig, kv_route, planned_fused_calls

    _as_backend(monkeypatch, backend_name)
    seen = []

    def recorder(q, k, v, *, scale, mask=None, sinks=None, causal_shift=None, out_dtype=None):
        is_causal = isinstance(mask, str) or causal_shift is not None
        seen.append((q.shape[2], k.shape[2], is_causal, out_dtype is not None))
        return attention_with_lse(q, k, v, scale=scale, mask=mask, causal_shift=causal_shift)

    recorder.splits_keys = backend_name == "cuda"
    q, k, v, config = _route_case()
    config = ChunkConfig(
        threshold=256, chunk_size=256, q_block=64, **({"flop_budget": budget} if budget else {})
    )
    kv_route(
        q, k, v, scale=0.125, mask="causal" if causal else None, config=config, chunk_fn=recorder
    )
    planned = planned_fused_calls(
        B=1, Hq=4, qL=16, kL=700, D=64, causal=causal, config=config, backend_name=backend_name
    )
    assert set(seen) == set(planned) and len(planned) == len(set(planned))
