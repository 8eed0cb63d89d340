"""The Metal kernel sources EXECUTED on the CPU, against a float64 reference.

mx.fast.metal_kernel is replaced by tests/msl_exec.py's executor: niah's host code
(niah.kernels.flash: tile and split planning, params, grid, the combine launch) runs unchanged
and each Metal body, wrapped in the signature MLX would write, runs as C++ against
tests/msl_shim.h (threadgroups of lanes with barriers, simd shuffles, simdgroup matrices in
MLX's fragment layout). The sweep covers what the dispatcher can pick: both dtypes, every
supported head dim with the tile niah chooses, explicit tiles, causal masks with positive and
negative shifts, bool and additive masks, fully masked rows, sinks, key splits with the combine
kernel, float32 partial outputs, GQA packing, batches and partial tiles; then the FusedAttention
route end to end. Inputs also arrive as the views MLX passes (a KV-cache slice, transposed
heads, a 2-byte offset, padded rows, a strided head dim): the 16-byte vector loads must run for
the layouts vector_ok admits and the element-wise fallback for the others, which bugs injected
into only one path prove. Bugs injected into the source (an off-by-one tile index, a missing
barrier, a wrong scale, a vector_ok missing one of its checks) must make the result wrong (a
misaligned vector load fails the launch). The forward kernel has two builds (NIAH_VECTOR_LOADS
1 and 0): the sweep runs in full on the vector build and on a representative subset of the
element-wise build, and the load-path bugs prove that at 0 every layout loads element by
element. A vector build broken at compile time or in its values must fall back to the
element-wise build through the first-use self-test, the route still fused. All instantiations
compile once, in one parallel g++ run, cached by content under the system temp dir.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, replace

import mlx.core as mx
import msl_exec
import numpy as np
import pytest

from niah.kernels import flash
from niah.sdpa import fused
from niah.sdpa.fused import FusedAttention

pytestmark = pytest.mark.skipif(msl_exec.COMPILER is None, reason="needs g++ or clang++")

TOL = {"float16": 4e-3, "bfloat16": 3e-2}
LSE_TOL = 1e-4
F32_OUT_TOL = 1e-4  # float32 partial outputs (kv-chunk partials) round nothing to 16 bits


@dataclass(frozen=True)
class Case:
    name: str
    dtype: str = "float16"
    B: int = 1
    Hq: int = 4
    Hkv: int = 2
    qL: int = 19
    kL: int = 101
    D: int = 64
    mask: str = "causal"  # none | causal | bool | additive
    sinks: bool = False
    causal_shift: int | None = None
    splits: int | None = None
    tile: flash.Tile | None = None
    out32: bool = False
    layouts: tuple = ("contiguous",) * 3  # q, k, v: see _layout


def _layout(name: str, shape):
    """(base shape, the view of a base array that has `shape`, the load path vector_ok picks)."""
    B, H, L, D = shape
    return {
        "cache": ((B, H, L + 37, D), lambda a: a[:, :, :L], "vec"),  # a KV cache's first L rows
        "cache+5": ((B, H, L + 37, D), lambda a: a[:, :, 5 : 5 + L], "vec"),  # whole rows in
        "transposed": ((B, L, H, D), lambda a: a.transpose(0, 2, 1, 3), "vec"),  # as mlx-lm's
        "offset1": ((B, H, L, D + 8), lambda a: a[..., 1 : D + 1], "elem"),  # 2 bytes past 16
        # rows D + 4 apart (not a multiple of 8), heads an even number of rows apart (a multiple)
        "rowpad4": ((B, H, L + L % 2, D + 4), lambda a: a[:, :, :L, :D], "elem"),
        "dstride2": ((B, H, L, 2 * D), lambda a: a[..., ::2], "elem"),  # innermost stride 2
    }[name]


CASES = [
    Case(f"causal D{D} {dt}", dtype=dt, D=D)
    for D in flash.SUPPORTED_HEAD_DIMS
    for dt in ("float16", "bfloat16")
] + [
    Case("decode G4 (small tile)", D=128, Hq=8, Hkv=2, qL=1, kL=200, mask="none"),
    Case("decode G4 split 2 + combine", D=128, Hq=8, Hkv=2, qL=1, kL=200, mask="none", splits=2),
    Case("split 3 + combine + sinks", dtype="bfloat16", qL=9, kL=300, sinks=True, splits=3),
    Case("sinks (9-16 rows)", dtype="float16", qL=6, kL=130, sinks=True),
    Case("decode D256", D=256, qL=1, kL=60, mask="none"),
    Case("bool mask, a fully masked row", qL=21, kL=77, mask="bool"),
    Case("additive mask", dtype="bfloat16", D=80, qL=13, kL=90, mask="additive"),
    Case("causal shift +30", qL=20, kL=70, mask="none", causal_shift=30),
    Case("causal shift -5 (masked rows)", qL=20, kL=70, mask="none", causal_shift=-5),
    Case(
        "masked rows + sinks",
        dtype="bfloat16",
        qL=20,
        kL=70,
        mask="none",
        causal_shift=-5,
        sinks=True,
    ),
    Case(
        "masked rows + sinks, split 2",
        qL=20,
        kL=150,
        mask="none",
        causal_shift=-5,
        sinks=True,
        splits=2,
    ),
    Case("float32 partials", qL=20, kL=70, mask="none", causal_shift=10, out32=True),
    Case(
        "float32 partials split", qL=3, kL=300, mask="none", causal_shift=250, out32=True, splits=2
    ),
    Case("GQA 8 packing, partial tiles", dtype="bfloat16", Hq=16, Hkv=2, qL=5, kL=83),
    Case("batch 2 non-causal", B=2, qL=7, kL=64, mask="none"),
    Case("qL = kL causal", qL=45, kL=45),
    Case("tile 1x1x32", tile=flash.Tile(1, 1, 32, 8)),
    Case("tile 2x2x32", qL=40, tile=flash.Tile(2, 2, 32, 8)),
    Case("tile 1x1x16", D=128, tile=flash.Tile(1, 1, 16, 8)),
    Case(
        "views: transposed q, cache k/v (vector)",
        dtype="bfloat16",
        D=128,
        layouts=("transposed", "cache", "cache+5"),
    ),
    Case("views: 2-byte offset q/k/v (element-wise)", D=80, layouts=("offset1",) * 3),
    Case(
        "views: padded rows, strided d, split 3 + combine",
        dtype="bfloat16",
        qL=9,
        kL=300,
        sinks=True,
        splits=3,
        layouts=("rowpad4", "dstride2", "cache"),
    ),
    Case(
        "views: decode D256",
        D=256,
        qL=1,
        kL=60,
        mask="none",
        layouts=("transposed", "offset1", "offset1"),
    ),
]
BUG_CASE = Case("bug probe", tile=flash.Tile(2, 1, 32, 8), qL=19, kL=101)
# The element-wise build (NIAH_VECTOR_LOADS 0) on a subset: both dtypes, the smallest and largest
# head dims, masks, sinks, masked rows, splits + combine, float32 partials, GQA, explicit tiles
# and every view layout.
SCALAR_CASES = {
    "causal D64 float16",
    "causal D256 bfloat16",
    "decode G4 split 2 + combine",
    "split 3 + combine + sinks",
    "bool mask, a fully masked row",
    "additive mask",
    "masked rows + sinks",
    "float32 partials split",
    "GQA 8 packing, partial tiles",
    "tile 2x2x32",
    "tile 1x1x16",
    "views: transposed q, cache k/v (vector)",
    "views: 2-byte offset q/k/v (element-wise)",
    "views: padded rows, strided d, split 3 + combine",
    "views: decode D256",
}
SWEEP = [(c, True) for c in CASES] + [(c, False) for c in CASES if c.name in SCALAR_CASES]
LOADS = {True: "vec", False: "scalar"}
BARRIER = "threadgroup_barrier(metal::mem_flags::mem_threadgroup);"
BUGS = {
    "off-by-one key tile": lambda s: s.replace(
        "const int key0 = kb + t * BC;", "const int key0 = kb + (t + 1) * BC;"
    ),
    "missing barrier after the K/V load": lambda s: _drop_nth(s, BARRIER, 1),
    "missing barrier before the K/V load": lambda s: _drop_nth(s, BARRIER, 0),
    "wrong scale": lambda s: s.replace(
        "as_type<float>(params[1]) * LOG2E", "as_type<float>(params[1]) * 1.5f * LOG2E"
    ),
}


def _drop_nth(src: str, text: str, n: int) -> str:
    parts = src.split(text)
    assert len(parts) > n + 1, f"{text!r} occurs {len(parts) - 1} times"
    return text.join(parts[: n + 1]) + text.join(parts[n + 1 :])


def _fwd_patch(bug, file="flash_fwd.metal"):
    return lambda name, src: bug(src) if name == file else src


def _reverse(old: str, new: str):
    return lambda s: s.replace(old, new)


# Bugs in one load path each: (tensor, path it breaks, patch of flash_fwd.metal). Chunks or
# elements of a row land in reverse order.
PATH_BUGS = {
    "vector Q load": (
        "q",
        "vec",
        _reverse(
            "store16(sQ + r * LDS + cc * VEC, x);",
            "store16(sQ + r * LDS + (CPR - 1 - cc) * VEC, x);",
        ),
    ),
    "vector K/V load": (
        "kv",
        "vec",
        _reverse(
            "store16(sK + r * LDS + cc * VEC, xk);",
            "store16(sK + r * LDS + (CPR - 1 - cc) * VEC, xk);",
        ),
    ),
    "element-wise Q load": (
        "q",
        "elem",
        _reverse("    sQ[r * LDS + d] = x;", "    sQ[r * LDS + (D - 1 - d)] = x;"),
    ),
    "element-wise K/V load": (
        "kv",
        "elem",
        _reverse("sK[r * LDS + d] = ok ?", "sK[r * LDS + (D - 1 - d)] = ok ?"),
    ),
}
# Layouts of q, k, v -> the paths (q, k/v) flash_fwd.metal must take: K and V decide together.
PATH_LAYOUTS = [
    (("contiguous",) * 3, ("vec", "vec")),
    (("transposed", "cache", "cache+5"), ("vec", "vec")),
    (("offset1", "cache", "cache"), ("elem", "vec")),
    (("transposed", "cache", "dstride2"), ("vec", "elem")),
    (("rowpad4", "offset1", "offset1"), ("elem", "elem")),
]
# vector_ok missing one check (a patch of flash_common.metal) and a layout it then lets through.
CHECK_BUGS = {
    "no pointer alignment check": (
        ("offset1",) * 3,
        _reverse(" &&\n         reinterpret_cast<ulong>(p) % 16 == 0;", ";"),
    ),
    "no innermost-stride check": (("dstride2",) * 3, _reverse("st[3] == 1 && ", "")),
    "no row-stride check": (
        ("rowpad4",) * 3,
        _reverse("st[1] % VEC == 0 && st[2] % VEC == 0 &&", "st[1] % VEC == 0 &&"),
    ),
}


NOT_DECLARED = "niah_not_declared"
# The vector build broken (patches of flash_fwd.metal inside #if NIAH_VECTOR_LOADS): (patch, what
# the failed self-test reports). The element-wise build of the same patched source is right.
VECTOR_BUILD_BUGS = {
    "compile error": (
        _reverse(
            "alignas(16) threadgroup T sV[BC * LDS];\n",
            f"alignas(16) threadgroup T sV[BC * LDS];\n{NOT_DECLARED} = 1;\n",
        ),
        "CompileError",
    ),
    "wrong values": (PATH_BUGS["vector K/V load"][2], "max error"),
}


def _tensor(rng, shape, dt, layout: str, ex):
    if layout == "contiguous":
        return mx.array(rng.standard_normal(shape, dtype=np.float32)).astype(dt)
    base_shape, make, _ = _layout(layout, shape)
    base = mx.array(rng.standard_normal(base_shape, dtype=np.float32)).astype(dt)
    return ex.view(base, make)


def inputs(c: Case, seed: int = 0, ex=None):
    rng = np.random.default_rng(seed)
    dt = getattr(mx, c.dtype)
    q, k, v = (
        _tensor(rng, (c.B, h, n, c.D), dt, lay, ex)
        for h, n, lay in zip((c.Hq, c.Hkv, c.Hkv), (c.qL, c.kL, c.kL), c.layouts)
    )
    mask = {"causal": "causal", "none": None}.get(c.mask)
    if c.mask == "bool":
        keep = rng.random((c.B, 1, c.qL, c.kL)) > 0.3
        keep[:, :, 2, :] = False  # a fully masked row
        mask = mx.array(keep)
    elif c.mask == "additive":
        mask = mx.array(2 * rng.standard_normal((c.qL, c.kL), dtype=np.float32)).astype(dt)
    sinks = mx.array(rng.standard_normal((c.Hq,), dtype=np.float32)).astype(dt) if c.sinks else None
    return q, k, v, mask, sinks


def reference64(q, k, v, *, scale, mask, sinks, causal_shift):
    """(out, natural-log lse) in float64; fully masked rows give 0 and -inf."""
    f = lambda a: np.array(a.astype(mx.float32), dtype=np.float64)  # noqa: E731
    qn, kn, vn = f(q), f(k), f(v)
    B, Hq, qL, D = qn.shape
    G = Hq // kn.shape[1]
    kL = kn.shape[2]
    kn, vn = np.repeat(kn, G, axis=1), np.repeat(vn, G, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", qn, kn) * scale
    shift = (kL - qL) if isinstance(mask, str) else causal_shift
    if shift is not None:
        s = np.where(np.arange(kL)[None, :] <= np.arange(qL)[:, None] + shift, s, -np.inf)
    if mask is not None and not isinstance(mask, str):
        m = np.array(mask) if mask.dtype == mx.bool_ else f(mask)
        s = np.where(m, s, -np.inf) if m.dtype == bool else s + m
    cols = [s]
    if sinks is not None:
        cols.append(np.broadcast_to(f(sinks)[None, :, None, None], (B, Hq, qL, 1)))
    full = np.concatenate(cols, axis=-1)
    m = np.max(full, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(full - m)
    den = p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", p[..., :kL], vn) / np.where(den > 0, den, 1)
    with np.errstate(divide="ignore"):
        lse = np.where(den > 0, m + np.log(np.where(den > 0, den, 1)), -np.inf)[..., 0]
    return out, lse


def run_case(c: Case, ex=None, *, vector_loads: bool = True):
    q, k, v, mask, sinks = inputs(c, ex=ex)
    out, lse = flash.flash_attention_with_lse(
        q,
        k,
        v,
        scale=c.D**-0.5,
        mask=mask,
        sinks=sinks,
        causal_shift=c.causal_shift,
        backend_name="metal",
        tile=c.tile,
        splits=c.splits,
        out_dtype=mx.float32 if c.out32 else None,
        vector_loads=vector_loads,
    )
    return (q, k, v, mask, sinks), out, lse


def errors(c: Case, args, out, lse):
    q, k, v, mask, sinks = args
    ref, ref_lse = reference64(
        q, k, v, scale=c.D**-0.5, mask=mask, sinks=sinks, causal_shift=c.causal_shift
    )
    o = np.array(out.astype(mx.float32), dtype=np.float64)
    ln = np.array(lse, dtype=np.float64)
    same_inf = bool(np.all(np.isfinite(ln) == np.isfinite(ref_lse)))
    fin = np.isfinite(ref_lse)
    lse_err = float(np.max(np.abs(ln[fin] - ref_lse[fin]))) if fin.any() else 0.0
    return float(np.max(np.abs(o - ref))), lse_err, same_inf, bool(np.all(np.isfinite(o)))


def _self_test_route():
    """FusedAttention on 'metal' through dispatch: self-tests + chunks, on the executor."""
    from niah.sdpa.dispatch import ChunkConfig, dispatch

    c = Case("route", dtype="bfloat16", Hq=8, Hkv=2, qL=12, kL=150)
    fused.reset()  # every variant self-tests afresh
    q, k, v, _, _ = inputs(c)
    log = Counter()
    fn = FusedAttention("metal")
    out = dispatch(
        q,
        k,
        v,
        scale=c.D**-0.5,
        mask="causal",
        log=log,
        chunk_fn=fn,
        config=ChunkConfig(threshold=64, chunk_size=64, q_block=64),
    )
    return c, (q, k, v), out, log


def _record_launches(ex) -> None:
    """Launch (recording, not running) every instantiation the tests below will run."""
    for c, vector_loads in SWEEP + [(BUG_CASE, True), (BUG_CASE, False)]:
        run_case(c, ex, vector_loads=vector_loads)
    patches = (
        [(_fwd_patch(bug), vl) for bug in BUGS.values() for vl in (True, False)]
        + [(_fwd_patch(bug), vl) for _, _, bug in PATH_BUGS.values() for vl in (True, False)]
        + [(_fwd_patch(bug, "flash_common.metal"), True) for _, bug in CHECK_BUGS.values()]
    )
    for patch, vector_loads in patches:
        flash.SOURCE_PATCH = patch
        run_case(BUG_CASE, vector_loads=vector_loads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recorded self-tests see zeros and fail: both builds run
        for patch in [None] + [_fwd_patch(bug) for bug, _ in VECTOR_BUILD_BUGS.values()]:
            flash.SOURCE_PATCH = patch
            _self_test_route()
    flash.SOURCE_PATCH = None
    # the broken vector build compiles (and fails) in its own test, not in the shared libraries
    ex.recording = [spec for spec in ex.recording if NOT_DECLARED not in spec.source]


@pytest.fixture(scope="module")
def executor():
    ex = msl_exec.Executor()
    mp = pytest.MonkeyPatch()
    mp.setattr(mx.fast, "metal_kernel", ex.metal_kernel)
    flash._KERNELS.clear()
    fused.reset()
    try:
        ex.record()  # every instantiation the tests below will launch, compiled in one go
        _record_launches(ex)
        fused.reset()  # the recorded self-tests compared zeros: forget them
        ex.build()
        yield ex
    finally:
        flash.SOURCE_PATCH = None
        flash._KERNELS.clear()
        fused.reset()
        mp.undo()


@pytest.mark.parametrize(
    "case,vector_loads", SWEEP, ids=[f"{c.name} [{LOADS[vl]}]" for c, vl in SWEEP]
)
def test_metal_source_matches_float64_reference(executor, case, vector_loads):
    args, out, lse = run_case(case, executor, vector_loads=vector_loads)
    err, lse_err, same_inf, finite = errors(case, args, out, lse)
    tol = F32_OUT_TOL if case.out32 else TOL[case.dtype]
    assert finite and same_inf, (case, err, lse_err)
    assert err <= tol and lse_err <= LSE_TOL, (case, err, lse_err)
    assert out.dtype == (mx.float32 if case.out32 else getattr(mx, case.dtype))


@pytest.mark.parametrize("vector_loads", [True, False], ids=LOADS.values())
@pytest.mark.parametrize("bug", list(BUGS), ids=list(BUGS))
def test_executor_catches_an_injected_bug(executor, bug, vector_loads):
    src = (flash.HERE / "flash_fwd.metal").read_text()
    assert BUGS[bug](src) != src, "the patch no longer applies: update it"
    args, out, lse = run_case(BUG_CASE, vector_loads=vector_loads)  # the unpatched kernel passes
    err, lse_err, _, _ = errors(BUG_CASE, args, out, lse)
    assert err <= TOL["float16"] and lse_err <= LSE_TOL
    flash.SOURCE_PATCH = _fwd_patch(BUGS[bug])
    try:
        args, out, lse = run_case(BUG_CASE, vector_loads=vector_loads)  # the patched one must not
    finally:
        flash.SOURCE_PATCH = None
    err, lse_err, same_inf, finite = errors(BUG_CASE, args, out, lse)
    assert not (err <= TOL["float16"] and lse_err <= LSE_TOL and same_inf and finite), (bug, err)


def _patched_run_is_wrong(case: Case, ex, patch, *, vector_loads: bool = True) -> bool:
    """Run `case` with the kernel source patched: True if the launch fails or the result is off."""
    flash.SOURCE_PATCH = patch
    try:
        args, out, lse = run_case(case, ex, vector_loads=vector_loads)
    except RuntimeError as exc:  # the shim's fault on a misaligned vector load
        assert "not aligned" in str(exc), exc
        return True
    finally:
        flash.SOURCE_PATCH = None
    err, lse_err, same_inf, finite = errors(case, args, out, lse)
    return not (err <= TOL[case.dtype] and lse_err <= LSE_TOL and same_inf and finite)


@pytest.mark.parametrize("vector_loads", [True, False], ids=LOADS.values())
@pytest.mark.parametrize("layouts,paths", PATH_LAYOUTS, ids=lambda x: "-".join(x))
@pytest.mark.parametrize("bug", list(PATH_BUGS), ids=list(PATH_BUGS))
def test_each_layout_takes_its_load_path(executor, bug, layouts, paths, vector_loads):
    """A bug in one load path breaks exactly the layouts that must take that path. Vector build:
    contiguous, cache and transposed inputs load in 16-byte chunks, the rest element by element;
    element-wise build: every layout element by element (the vector code is not compiled)."""
    tensor, path, patch = PATH_BUGS[bug]
    src = (flash.HERE / "flash_fwd.metal").read_text()
    assert patch(src) != src, "the patch no longer applies: update it"
    case = replace(BUG_CASE, layouts=layouts)
    run = lambda p: _patched_run_is_wrong(case, executor, p, vector_loads=vector_loads)  # noqa: E731
    assert not run(None)  # unpatched: right on every layout
    taken = paths[0 if tensor == "q" else 1] if vector_loads else "elem"
    assert run(_fwd_patch(patch)) == (taken == path), (bug, layouts)


@pytest.mark.parametrize("bug", list(CHECK_BUGS), ids=list(CHECK_BUGS))
def test_vector_ok_needs_each_of_its_checks(executor, bug):
    layouts, patch = CHECK_BUGS[bug]
    src = (flash.HERE / "flash_common.metal").read_text()
    assert patch(src) != src, "the patch no longer applies: update it"
    case = replace(BUG_CASE, layouts=layouts)
    assert not _patched_run_is_wrong(case, executor, None)
    assert _patched_run_is_wrong(case, executor, _fwd_patch(patch, "flash_common.metal")), bug


def test_fused_route_on_the_executed_metal_source(executor):
    c, (q, k, v), out, log = _self_test_route()
    assert dict(log) == {"kv-chunks/fused": 1}
    results = fused.self_test_results()
    assert results and all(r.ok and r.loads == "vec" for r in results), results
    ref, _ = reference64(q, k, v, scale=c.D**-0.5, mask="causal", sinks=None, causal_shift=None)
    assert np.max(np.abs(np.array(out.astype(mx.float32)) - ref)) <= TOL[c.dtype]


@pytest.mark.parametrize("bug", list(VECTOR_BUILD_BUGS), ids=list(VECTOR_BUILD_BUGS))
def test_a_broken_vector_build_falls_back_to_the_element_wise_build(executor, bug):
    """The executed source with its vector build broken (it fails to compile, or its loads are
    wrong): each variant's self-test rebuilds it with NIAH_VECTOR_LOADS 0, whose code the patch
    does not reach; the route stays fused and right, and the results keep the failed attempts."""
    patch, detail = VECTOR_BUILD_BUGS[bug]
    src = (flash.HERE / "flash_fwd.metal").read_text()
    assert patch(src) != src, "the patch no longer applies: update it"
    flash.SOURCE_PATCH = _fwd_patch(patch)
    try:
        with pytest.warns(RuntimeWarning, match="rebuilding it with element-wise loads"):
            c, (q, k, v), out, log = _self_test_route()
    finally:
        flash.SOURCE_PATCH = None
    assert dict(log) == {"kv-chunks/fused": 1}
    results = fused.self_test_results()
    tried = [(r.loads, r.replaced, r.ok) for r in results]
    assert results and tried == [("vec", True, False), ("scalar", False, True)] * (
        len(results) // 2
    )
    assert all(detail in r.detail for r in results if r.replaced), results
    ref, _ = reference64(q, k, v, scale=c.D**-0.5, mask="causal", sinks=None, causal_shift=None)
    assert np.max(np.abs(np.array(out.astype(mx.float32)) - ref)) <= TOL[c.dtype]
    fused.reset()


def test_tiles_the_dispatcher_picks_are_swept():
    picked = {
        flash.choose_tile(rows=r, D=D, backend_name="metal")
        for D in flash.SUPPORTED_HEAD_DIMS
        for r in (1, 4, 8, 16, 64, 4096)
    }
    swept = {
        flash.plan(
            q_shape=(c.B, c.Hq, c.qL, c.D),
            k_shape=(c.B, c.Hkv, c.kL, c.D),
            backend_name="metal",
            tile=c.tile,
        )[0]
        for c in CASES
    }
    assert picked <= swept, picked - swept


LAYOUT_PROBE = """
const uint lane = thread_index_in_simdgroup;
// MLX steel BaseMMAFrag<T, 8, 8>::get_coord, written as MLX writes it
const short qid = short(lane / 4);
const short fm = (qid & 4) + short((lane / 2) % 4);
const short fn = (qid & 2) * 2 + short(lane % 2) * 2;
simdgroup_matrix<float, 8, 8> A, B, C, D;
A.thread_elements()[0] = a[fm * 8 + fn]; A.thread_elements()[1] = a[fm * 8 + fn + 1];
B.thread_elements()[0] = b[fm * 8 + fn]; B.thread_elements()[1] = b[fm * 8 + fn + 1];
C.thread_elements()[0] = c[fm * 8 + fn]; C.thread_elements()[1] = c[fm * 8 + fn + 1];
simdgroup_multiply_accumulate(D, A, B, C);
d[fm * 8 + fn] = D.thread_elements()[0];
d[fm * 8 + fn + 1] = D.thread_elements()[1];
shuffled[lane] = simd_shuffle_xor(float(lane), ushort(5));
"""


def test_executor_simd_semantics_match_mlx_layout():
    """The executor's simdgroup matrix and shuffle, independent of niah's kernel: the 32 lanes'
    fragments in MLX's layout multiply as numpy does, and xor shuffles swap lanes."""
    coords = {
        ((q & 4) + (lane // 2) % 4, (q & 2) * 2 + (lane % 2) * 2 + e)
        for lane in range(32)
        for q in [lane // 4]
        for e in (0, 1)
    }
    assert len(coords) == 64  # every element of the 8x8 block held by exactly one lane slot
    ex = msl_exec.Executor()
    kern = ex.metal_kernel(
        name="layout_probe",
        input_names=["a", "b", "c"],
        output_names=["d", "shuffled"],
        source=LAYOUT_PROBE,
    )
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3))
    d, sh = kern(
        inputs=[mx.array(a), mx.array(b), mx.array(c)],
        grid=(32, 1, 1),
        threadgroup=(32, 1, 1),
        output_shapes=[(8, 8), (32,)],
        output_dtypes=[mx.float32, mx.float32],
    )
    assert np.allclose(np.array(d), a @ b + c, atol=1e-5)
    assert np.array(sh).tolist() == [float(i ^ 5) for i in range(32)]


VECTOR_PROBE = """
const uint i = thread_position_in_grid.x;
float4 f = float4(*reinterpret_cast<const device half4*>(a + 4 * i));
for (int j = 0; j < 4; ++j) out[4 * i + j] = f[j];
uint4 chunk = *reinterpret_cast<const device uint4*>(a + 8 * (i / 2));
bits[i] = chunk[0];
"""


@pytest.mark.parametrize("offset,fault", [(0, None), (1, "8 bytes"), (4, "16 bytes")])
def test_executor_vector_loads_follow_msl(offset, fault):
    """Vector loads through cast pointers, as MSL: half4 -> float4 converts, uint4 carries bits;
    a view that starts `offset` halves into a 64-byte aligned buffer is passed at that address
    (it is row-contiguous, so MLX passes it as is), and a load it misaligns fails the launch."""
    ex = msl_exec.Executor()
    kern = ex.metal_kernel(
        name="vector_probe", input_names=["a"], output_names=["out", "bits"], source=VECTOR_PROBE
    )
    a = ex.view(mx.arange(32).astype(mx.float16), lambda x: x[offset : offset + 16])

    def run():
        return kern(
            inputs=[a],
            grid=(4, 1, 1),
            threadgroup=(4, 1, 1),
            output_shapes=[(16,), (4,)],
            output_dtypes=[mx.float32, mx.uint32],
        )

    if fault:
        with pytest.raises(RuntimeError, match=f"not aligned to {fault}"):
            run()
        return
    out, bits = run()
    assert np.array(out).tolist() == list(range(16))
    halves = np.arange(16, dtype=np.float16).view(np.uint16).astype(np.uint32)
    assert np.array(bits).tolist() == [
        int(halves[8 * (i // 2)] | halves[8 * (i // 2) + 1] << 16) for i in range(4)
    ]
