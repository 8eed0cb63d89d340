"""niah.sdpa against a float64 NumPy reference: dtypes, head dims, GQA, masks, sinks, odd
lengths, chunk boundaries; merge semantics; routing and environment overrides; patching."""

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest

from niah import sdpa
from niah.backend import backend
from niah.sdpa import dispatch
from niah.sdpa.dispatch import kv_chunks, q_split
from niah.sdpa.quantized import quantized_dispatch
from niah.verify import Case, check_case, make_inputs, numpy_reference

ON_GPU = backend() != "cpu"
# float32 matmuls on GPUs may run in TF32 (about 1e-4 absolute here); CPUs are exact to ~1e-6.
F32 = 2e-3 if ON_GPU else 1e-5

MATRIX = [
    Case(f"D{D} {dtype} {mask}", dtype, B, Hq, Hkv, qL, kL, D, mask, sinks=sinks, chunk=chunk)
    for dtype in ("float32", "float16", "bfloat16")
    for (B, Hq, Hkv, qL, kL, D, mask, sinks, chunk) in [
        (1, 4, 4, 16, 1024, 64, "causal", False, 512),  # kL = 2 chunks exactly
        (1, 8, 2, 33, 1025, 80, "causal", False, 512),  # chunk + 1, GQA 4:1, odd lengths
        (2, 16, 1, 7, 1300, 128, "causal", True, 512),  # 16:1 GQA, sinks, 3 unequal chunks
        (3, 4, 2, 300, 300, 256, "none", False, 128),  # non-causal qL = kL, D 256
        (1, 8, 4, 1, 2000, 64, "none", False, 512),  # decode
        (2, 8, 2, 40, 1100, 64, "bool", False, 512),
        (1, 8, 8, 40, 1100, 128, "additive", False, 512),
        (1, 8, 2, 600, 600, 64, "causal", False, 256),  # causal qL = kL crossing chunks
    ]
]


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: c.name)
def test_routes_against_float64(case):
    rows = check_case(case)
    for row in rows:
        assert row["ok"], row


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_lse_matches_float64(dtype):
    case = Case("lse", dtype, 2, 8, 2, 24, 999, 64, "causal", sinks=True, chunk=256)
    q, k, v, mask, sinks = make_inputs(case)
    out, lse = kv_chunks(q, k, v, scale=0.125, mask=mask, sinks=sinks, chunk_size=case.chunk)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == mx.float32 and lse.shape == (2, 8, 24)
    qn = np.array(q.astype(mx.float32), dtype=np.float64) * 0.125
    kn = np.repeat(np.array(k.astype(mx.float32), dtype=np.float64), 4, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", qn, kn)
    keep = np.arange(999)[None, :] <= np.arange(24)[:, None] + 999 - 24
    s = np.where(keep, s, -np.inf)
    s = np.concatenate(
        [
            s,
            np.broadcast_to(
                np.array(sinks.astype(mx.float32), np.float64)[None, :, None, None], (2, 8, 24, 1)
            ),
        ],
        -1,
    )
    ref = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
    assert np.abs(np.array(lse) - ref).max() < (
        5e-4 if dtype == "float32" else 2e-2
    )  # GPUs may use TF32


def test_fully_masked_chunks_give_no_nan():
    q = mx.random.normal((1, 4, 8, 64))
    k = mx.random.normal((1, 2, 1024, 64))
    v = mx.random.normal((1, 2, 1024, 64))
    keep = np.zeros((1, 1, 8, 1024), bool)
    keep[..., 700:710] = True  # only chunk 1 (of 0..3 at 256) has visible keys
    keep[:, :, 3, :] = False  # and one row sees nothing at all
    out, lse = kv_chunks(q, k, v, scale=0.125, mask=mx.array(keep), chunk_size=256)
    assert bool(mx.all(mx.isfinite(out)).item())
    assert np.all(np.array(out)[:, :, 3] == 0) and np.all(np.isneginf(np.array(lse)[:, :, 3]))
    ref = numpy_reference(q, k, v, scale=0.125, mask=mx.array(keep), sinks=None)
    assert np.abs(np.array(out) - ref).max() < F32


def test_merge_chunks_list_and_stacked_and_streaming():
    q = mx.random.normal((1, 2, 5, 32))
    k = mx.random.normal((1, 2, 300, 32))
    v = mx.random.normal((1, 2, 300, 32))
    full, full_lse = sdpa.attention_with_lse(q, k, v, scale=0.2)
    parts = [
        sdpa.attention_with_lse(q, k[:, :, a:b], v[:, :, a:b], scale=0.2)
        for a, b in [(0, 100), (100, 117), (117, 300)]
    ]
    out, lse = sdpa.merge_chunks([p[0] for p in parts], [p[1] for p in parts])
    out2, lse2 = sdpa.merge_chunks(mx.stack([p[0] for p in parts]), mx.stack([p[1] for p in parts]))
    acc = sdpa.Accumulator()
    for o, part_lse in parts:
        acc.add(o, part_lse)
    out3, lse3 = acc.result()
    for o, got_lse in [(out, lse), (out2, lse2), (out3, lse3)]:
        assert mx.abs(o - full).max().item() < F32 and mx.abs(got_lse - full_lse).max().item() < F32
    # a -inf partial contributes nothing
    dead = (mx.zeros_like(parts[0][0]), mx.full(parts[0][1].shape, -mx.inf))
    o4, l4 = sdpa.merge_chunks([dead[0], full], [dead[1], full_lse])
    assert mx.abs(o4 - full).max().item() < F32


def test_public_function_routes_by_threshold():
    q = mx.random.normal((1, 4, 16, 64)).astype(mx.float16)
    k = mx.random.normal((1, 2, 1000, 64)).astype(mx.float16)
    v = mx.random.normal((1, 2, 1000, 64)).astype(mx.float16)
    stock = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask="causal")
    below = sdpa.scaled_dot_product_attention(q, k, v, scale=0.125, mask="causal")
    assert mx.array_equal(below, stock).item()  # below threshold: bit-identical to stock
    chunked = sdpa.scaled_dot_product_attention(
        q, k, v, scale=0.125, mask="causal", threshold=512, chunk_size=300
    )
    assert chunked.dtype == mx.float16 and chunked.shape == q.shape
    assert mx.abs(chunked.astype(mx.float32) - stock.astype(mx.float32)).max().item() < 4e-3


def test_route_choice_and_env(monkeypatch):
    cfg = dispatch.resolve_config()
    assert (cfg.threshold, cfg.chunk_size) == (65536, 32768)
    monkeypatch.setenv("MLX_SDPA_CHUNK_THRESHOLD", "1000")
    monkeypatch.setenv("MLX_SDPA_CHUNK_SIZE", "100")
    assert dispatch.resolve_config() == dispatch.ChunkConfig(1000, 100, 1024)
    monkeypatch.setenv("NIAH_SDPA_CHUNK_THRESHOLD", "2000")
    assert dispatch.resolve_config().threshold == 2000
    assert dispatch.resolve_config(threshold=5).threshold == 5
    monkeypatch.setenv("NIAH_SDPA_CHUNK_SIZE", "zero")
    with pytest.raises(ValueError, match="NIAH_SDPA_CHUNK_SIZE"):
        dispatch.resolve_config()
    c = dispatch.ChunkConfig(1000, 100, 64)
    assert dispatch.choose_route(qL=16, kL=999, config=c, backend_name="metal") == "stock"
    assert dispatch.choose_route(qL=16, kL=1000, config=c, backend_name="metal") == "kv-chunks"
    assert dispatch.choose_route(qL=16, kL=1000, config=c, backend_name="cpu") == "kv-chunks"
    assert dispatch.choose_route(qL=2048, kL=1000, config=c, backend_name="cuda") == "stock"
    assert dispatch.choose_route(qL=1, kL=1000, config=c, backend_name="cuda") == "stock"
    with dispatch.force_route("q-split"):
        assert dispatch.choose_route(qL=1, kL=10, config=c, backend_name="cpu") == "q-split"
    assert dispatch.FORCE_ROUTE is None


def test_q_split_is_exact():
    q = mx.random.normal((1, 8, 100, 64))
    k = mx.random.normal((1, 2, 400, 64))
    v = mx.random.normal((1, 2, 400, 64))
    for mask in (None, "causal"):
        a = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask=mask)
        b = q_split(q, k, v, scale=0.125, mask=mask, q_block=33)
        assert mx.abs(a - b).max().item() < (F32 if ON_GPU else 1e-6)


def test_patch_reaches_functions_imported_before():
    from mlx_lm.models import base  # imported before the patch

    q = mx.random.normal((1, 4, 8, 64))
    k = mx.random.normal((1, 2, 700, 64))
    with sdpa.patched("chunked", threshold=256, chunk_size=128) as state:
        out = base.scaled_dot_product_attention(q, k, k, cache=None, scale=0.125, mask="causal")
    # float32 has no fused kernel on any backend: the chunks ran the reference, and say so
    assert state.routes["kv-chunks/reference"] == 1 and state.summary() == "kv-chunks/reference"
    ref = mx.fast.scaled_dot_product_attention(q, k, k, scale=0.125, mask="causal")
    assert mx.abs(out - ref).max().item() < F32
    assert mx.fast.scaled_dot_product_attention is dispatch.STOCK_SDPA  # restored


def test_quantized_kv_path_is_chunked():
    from mlx_lm.models import base
    from mlx_lm.models.cache import QuantizedKVCache

    dt = mx.float16 if ON_GPU else mx.float32  # MLX's CUDA quantized matmul wants half inputs
    q = mx.random.normal((1, 8, 4, 64)).astype(dt)
    k = mx.random.normal((1, 2, 900, 64)).astype(dt)
    v = mx.random.normal((1, 2, 900, 64)).astype(dt)
    qk, qv = mx.quantize(k, group_size=64, bits=8), mx.quantize(v, group_size=64, bits=8)
    cache = QuantizedKVCache(group_size=64, bits=8)
    if backend() == "cuda":
        # MLX 0.32's CUDA quantized_matmul has no kernel for these attention shapes (measured on
        # the H100): mlx-lm's own path fails, and niah's attends over the dequantized K/V
        with pytest.raises(RuntimeError, match="quantized_matmul"):
            mx.eval(
                base.quantized_scaled_dot_product_attention(
                    q * 1, qk, qv, scale=0.125, mask="causal", group_size=64, bits=8
                )
            )
        with sdpa.patched("chunked", threshold=256, chunk_size=200) as state:
            out = base.scaled_dot_product_attention(
                q, qk, qv, cache=cache, scale=0.125, mask="causal"
            )
        assert state.summary().startswith("dequantized-kv-chunks"), state.routes
        ref = mx.fast.scaled_dot_product_attention(
            *(
                x.astype(mx.float32)
                for x in (
                    q,
                    mx.dequantize(*qk, group_size=64, bits=8),
                    mx.dequantize(*qv, group_size=64, bits=8),
                )
            ),
            scale=0.125,
            mask="causal",
        )
        assert mx.abs(out - ref).max().item() < 1e-2
        return
    ref = base.quantized_scaled_dot_product_attention(
        q * 1,
        qk,
        qv,
        scale=0.125,
        mask="causal",  # it scales q in place
        group_size=64,
        bits=8,
    )
    with sdpa.patched("chunked", threshold=256, chunk_size=200) as state:
        out = base.scaled_dot_product_attention(q, qk, qv, cache=cache, scale=0.125, mask="causal")
    assert state.routes["quantized-kv-chunks"] == 1
    assert mx.abs(out - ref).max().item() < (1e-2 if ON_GPU else 1e-3)


# --- work per command buffer (Metal watchdog) and reference memory -----------------------------


@pytest.mark.parametrize("kL", [131072, 262144])
@pytest.mark.parametrize("Hq,D", [(32, 128), (64, 128), (64, 256)])
@pytest.mark.parametrize("qL", [1, 16, 512, 2048, 8192])
def test_flop_budget_bounds_every_call(kL, Hq, D, qL):
    from niah.sdpa.budget import DEFAULT_FLOP_BUDGET, MIN_CHUNK_KEYS, attention_flops, plan_work

    for _fused, cap in ((True, None), (False, 32768)):
        plan = plan_work(B=1, Hq=Hq, qL=qL, kL=kL, D=D, budget=DEFAULT_FLOP_BUDGET, max_chunk=cap)
        assert plan.call_flops(B=1, Hq=Hq, D=D) <= DEFAULT_FLOP_BUDGET, plan
        assert 1 <= plan.q_block <= qL and min(kL, MIN_CHUNK_KEYS) <= plan.chunk <= (cap or kL)
        # as large as the budget allows: doubling the keys (or the block, once keys are at the
        # floor) would not fit, unless the call already covers everything
        if plan.chunk < (cap or kL) and plan.q_block == qL:
            assert (
                attention_flops(B=1, Hq=Hq, qL=qL, kL=plan.chunk + 256, D=D) > DEFAULT_FLOP_BUDGET
            )
        if plan.q_block < qL:
            assert plan.chunk == min(kL, MIN_CHUNK_KEYS, cap or kL)
            assert (
                plan.call_flops(B=1, Hq=Hq, D=D) * (plan.q_block + 1) / plan.q_block
                > DEFAULT_FLOP_BUDGET
            )


def test_flop_budget_examples():
    from niah.sdpa.budget import attention_flops, plan_work

    # the key-count-only chunking this replaces: 32K keys at qL 8192, 64 heads, D 128 = 8.8 TFLOP
    assert attention_flops(B=1, Hq=64, qL=8192, kL=32768, D=128) > 80 * 1e11
    p = plan_work(B=1, Hq=64, qL=8192, kL=262144, D=128)
    assert (p.q_block, p.chunk) == (2980, 1024)  # queries split: 1024 keys x 2980 rows
    p = plan_work(B=1, Hq=32, qL=2048, kL=131072, D=128)
    assert (p.q_block, p.chunk) == (2048, 2816)
    p = plan_work(B=1, Hq=32, qL=1, kL=262144, D=128)
    assert (p.q_block, p.chunk) == (1, 262144)  # decode: one launch, keys split on the device
    with pytest.raises(ValueError, match="positive"):
        plan_work(B=1, Hq=1, qL=1, kL=1, D=64, budget=0)


def test_flop_budget_from_env(monkeypatch):
    monkeypatch.setenv("NIAH_SDPA_FLOP_BUDGET", "2e9")
    assert dispatch.resolve_config().flop_budget == 2e9
    monkeypatch.setenv("NIAH_SDPA_FLOP_BUDGET", "lots")
    with pytest.raises(ValueError, match="NIAH_SDPA_FLOP_BUDGET='lots' is not a number"):
        dispatch.resolve_config()


@pytest.mark.parametrize("mask", ["causal", "bool", "additive", "shift", "none"])
def test_reference_query_blocks_bound_memory_and_agree(monkeypatch, mask):
    from niah.sdpa import reference

    B, Hq, Hkv, qL, kL, D = 2, 4, 2, 37, 50, 16
    q = mx.random.normal((B, Hq, qL, D))
    k = mx.random.normal((B, Hkv, kL, D))
    v = mx.random.normal((B, Hkv, kL, D))
    m, shift = {"causal": "causal", "none": None}.get(mask), None
    if mask == "bool":
        m = mx.random.uniform(shape=(B, 1, qL, kL)) > 0.5
    elif mask == "additive":
        m = mx.random.normal((qL, kL))
    elif mask == "shift":
        shift = -3  # the first rows see no key
    sinks = mx.random.normal((Hq,))
    whole = reference.attention_with_lse(
        q, k, v, scale=0.25, mask=m, sinks=sinks, causal_shift=shift
    )
    blocks = []
    real = reference._attention

    def spy(q, *a, **kw):
        blocks.append(q.shape[2])
        assert 4 * B * Hq * q.shape[2] * kL <= 4 * B * Hq * kL * 8  # one score tensor in budget
        return real(q, *a, **kw)

    monkeypatch.setattr(reference, "_attention", spy)
    part = reference.attention_with_lse(
        q,
        k,
        v,
        scale=0.25,
        mask=m,
        sinks=sinks,
        causal_shift=shift,
        scores_budget=4 * B * Hq * kL * 8,
    )  # 8 rows per block
    assert blocks == [8, 8, 8, 8, 5]
    for a, b in zip(whole, part):
        assert mx.array_equal(mx.isinf(a), mx.isinf(b)).item()
        assert mx.max(mx.abs(mx.where(mx.isinf(a), 0, a - b))).item() < 1e-5


@pytest.mark.parametrize("mask", ["causal", "none", "bool"])
@pytest.mark.parametrize("qL,kL", [(40, 300), (60, 25)])  # 60 > 25: the first rows see no key
def test_metal_kv_route_query_blocks_match_the_reference(mask, qL, kL):
    from niah.sdpa.chunks import kv_route
    from niah.sdpa.reference import attention_with_lse as ref_lse

    q = mx.random.normal((1, 4, qL, 16))
    k = mx.random.normal((1, 2, kL, 16))
    v = mx.random.normal((1, 2, kL, 16))
    sinks = mx.random.normal((4,))
    m = {"causal": "causal", "none": None}.get(mask)
    if mask == "bool":
        m = mx.random.uniform(shape=(1, 1, qL, kL)) > 0.4
    # a budget of 16 rows x 1024 keys per call (kL < 1024: the queries are split)
    config = dispatch.ChunkConfig(
        threshold=1, chunk_size=64, q_block=8, flop_budget=4 * 4 * 16 * min(kL, 1024) * 16
    )
    out, lse = kv_route(
        q, k, v, scale=0.25, mask=m, sinks=sinks, config=config, backend_name="metal"
    )
    ref, rlse = ref_lse(q, k, v, scale=0.25, mask=m, sinks=sinks)
    tol = 5e-4 if ON_GPU else 1e-5  # float32 matmuls on CUDA differ by about 1e-4 (H200)
    assert mx.max(mx.abs(out - ref)).item() < tol
    assert mx.max(mx.abs(lse - rlse)).item() < tol


def _niah_imports(path) -> set[str]:
    """Every niah module a file imports (module level or inside functions), absolute names."""
    import ast

    parts = list(path.relative_to(path.parents[2]).with_suffix("").parts)
    package = parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{a.name}" if target == "niah" else target for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name for name in found if name.split(".")[0] == "niah"}


@pytest.mark.parametrize(
    "package,allowed",
    [
        ("sdpa", ("niah.sdpa", "niah.kernels", "niah.backend", "niah.errors")),
        ("kernels", ("niah.kernels", "niah.backend", "niah.errors")),
    ],
)
def test_attention_packages_import_nothing_above_them(package, allowed):
    """niah.kernels is the bottom layer: it stands on niah.backend and niah.errors only. niah.sdpa
    stands on those and imports niah.kernels downward (niah.sdpa.fused self-tests the kernels
    against sdpa's reference); nothing imports back up."""
    from pathlib import Path

    import niah

    folder = Path(niah.__file__).parent / package
    files = sorted(folder.rglob("*.py"))
    assert files
    for path in files:
        for name in _niah_imports(path):
            assert name.startswith(allowed), f"{path.name} imports {name}"


def test_sdpa_uses_the_fused_kernels_without_being_handed_them(monkeypatch):
    """The public drop-in, dispatch and patched reach niah's fused kernel by themselves (backend
    reported as CUDA, the kernel's launch replaced by the reference on the CPU)."""
    import niah.backend as backend_mod
    from niah.kernels import flash
    from niah.sdpa import fused
    from niah.sdpa.reference import attention_with_lse

    launches = []

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
    ):
        launches.append(tile)
        return attention_with_lse(
            q, k, v, scale=scale, mask=mask, sinks=sinks, causal_shift=causal_shift
        )

    monkeypatch.setattr(backend_mod, "backend", lambda: "cuda")
    monkeypatch.setattr(flash, "flash_attention_with_lse", impl)
    fused.reset()
    q = mx.random.normal((1, 4, 16, 64)).astype(mx.float16)
    k = mx.random.normal((1, 2, 600, 64)).astype(mx.float16)
    try:
        out = sdpa.scaled_dot_product_attention(q, k, k, scale=0.125, mask="causal", threshold=256)
        with sdpa.patched("auto", threshold=256) as state:
            mx.fast.scaled_dot_product_attention(q, k, k, scale=0.125, mask="causal")
    finally:
        fused.reset()
    assert launches and launches[0] is not None  # a self-test, then the calls
    assert len(launches) == 3 and state.summary() == "kv-chunks/fused"
    ref, _ = attention_with_lse(q, k, k, scale=0.125, mask="causal")
    assert mx.abs(out.astype(mx.float32) - ref.astype(mx.float32)).max().item() < 4e-3


@pytest.mark.parametrize("route", ["auto", "stock", "chunked"])
@pytest.mark.parametrize("mask", ["causal", None, "bool"])
@pytest.mark.parametrize("qL,kL", [(1, 777), (37, 900), (128, 128)])
def test_dequantized_route_matches_mlx_lm_quantized_attention(route, mask, qL, kL):
    """The CUDA route for a quantized KV cache (dequantized_dispatch) against mlx-lm's own
    quantized attention, the reference always on the CPU stream, where MLX's quantized matmul
    takes every shape (on the CUDA stream it has no kernel for most of these: measured on the
    H100); GQA 4:1, odd lengths, key chunks of 200 past 256 keys."""
    from mlx_lm.models import base

    mx.random.seed(3)
    q = mx.random.normal((1, 8, qL, 64))
    k = mx.random.normal((1, 2, kL, 64))
    v = mx.random.normal((1, 2, kL, 64))
    m = mask
    if mask == "bool":
        m = mx.random.uniform(shape=(1, 1, qL, kL)) > 0.3
    qk, qv = mx.quantize(k, group_size=64, bits=8), mx.quantize(v, group_size=64, bits=8)
    with mx.stream(mx.cpu):
        ref = base.quantized_scaled_dot_product_attention(
            q * 1, qk, qv, scale=0.125, mask=m, group_size=64, bits=8
        )
        mx.eval(ref)
    log = Counter()
    out = quantized_dispatch(
        q,
        qk,
        qv,
        scale=0.125,
        mask=m,
        route=route,
        config=dispatch.resolve_config(threshold=256, chunk_size=200),
        log=log,
        backend_name="cuda",
    )
    # the reference on the CPU, the route on the GPU: 1.5e-3 measured at 128x128 (H200)
    assert mx.abs(out - ref).max().item() < (3e-3 if ON_GPU else 1e-4)
    assert log and all(name.startswith("dequantized-") for name in log), log
    # the route is the one the plain dispatcher takes for the dequantized K/V (on a real GPU
    # `auto` may take stock where its fused kernel does not do float32)
    plain = Counter()
    k, v = (mx.dequantize(*t, group_size=64, bits=8) for t in (qk, qv))
    config = dispatch.resolve_config(threshold=256, chunk_size=200)
    dispatch.dispatch(q, k, v, scale=0.125, mask=m, route=route, config=config, log=plain)
    assert log == Counter({"dequantized-" + name: n for name, n in plain.items()}), (log, plain)
    if not ON_GPU:
        chunked = route != "stock" and kL >= 256  # the threshold
        assert any("kv-chunks" in name for name in log) == chunked, log
