"""The Metal kernel sources EXECUTED on the CPU, against a float64 reference.

mx.fast.metal_kernel is replaced by tests/msl_exec.py's executor: niah's host code
(niah.kernels.flash: tile and split planning, params, grid, the combine launch) runs unchanged
and each Metal body, wrapped in the signature MLX would write, runs as C++ against
tests/msl_shim.h (threadgroups of lanes with barriers, simd shuffles, simdgroup matrices in
MLX's fragment layout). The sweep covers what the dispatcher can pick: both dtypes, every
supported head dim with the tile niah chooses, explicit tiles, causal masks with positive and
negative shifts, bool and additive masks, fully masked rows, sinks, key splits with the combine
kernel, float32 partial outputs, GQA packing, batches and partial tiles; then the FusedAttention
route end to end. Bugs injected into the source (an off-by-one tile index, a missing barrier, a
wrong scale) must make the result wrong. All instantiations compile once, in one parallel g++
run, cached by content under the system temp dir.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np
import pytest

import msl_exec
from niah import kernels
from niah.kernels import FusedAttention, flash

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
    mask: str = "causal"          # none | causal | bool | additive
    sinks: bool = False
    causal_shift: int | None = None
    splits: int | None = None
    tile: flash.Tile | None = None
    out32: bool = False


CASES = [Case(f"causal D{D} {dt}", dtype=dt, D=D)
         for D in flash.SUPPORTED_HEAD_DIMS for dt in ("float16", "bfloat16")] + [
    Case("decode G4 (small tile)", D=128, Hq=8, Hkv=2, qL=1, kL=200, mask="none"),
    Case("decode G4 split 2 + combine", D=128, Hq=8, Hkv=2, qL=1, kL=200, mask="none", splits=2),
    Case("split 3 + combine + sinks", dtype="bfloat16", qL=9, kL=300, sinks=True, splits=3),
    Case("sinks (9-16 rows)", dtype="float16", qL=6, kL=130, sinks=True),
    Case("decode D256", D=256, qL=1, kL=60, mask="none"),
    Case("bool mask, a fully masked row", qL=21, kL=77, mask="bool"),
    Case("additive mask", dtype="bfloat16", D=80, qL=13, kL=90, mask="additive"),
    Case("causal shift +30", qL=20, kL=70, mask="none", causal_shift=30),
    Case("causal shift -5 (masked rows)", qL=20, kL=70, mask="none", causal_shift=-5),
    Case("float32 partials", qL=20, kL=70, mask="none", causal_shift=10, out32=True),
    Case("float32 partials split", qL=3, kL=300, mask="none", causal_shift=250, out32=True,
         splits=2),
    Case("GQA 8 packing, partial tiles", dtype="bfloat16", Hq=16, Hkv=2, qL=5, kL=83),
    Case("batch 2 non-causal", B=2, qL=7, kL=64, mask="none"),
    Case("qL = kL causal", qL=45, kL=45),
    Case("tile 1x1x32", tile=flash.Tile(1, 1, 32, 8)),
    Case("tile 2x2x32", qL=40, tile=flash.Tile(2, 2, 32, 8)),
    Case("tile 1x1x16", D=128, tile=flash.Tile(1, 1, 16, 8)),
]
BUG_CASE = Case("bug probe", tile=flash.Tile(2, 1, 32, 8), qL=19, kL=101)
BARRIER = "threadgroup_barrier(metal::mem_flags::mem_threadgroup);"
BUGS = {
    "off-by-one key tile": lambda s: s.replace("const int key0 = kb + t * BC;",
                                               "const int key0 = kb + (t + 1) * BC;"),
    "missing barrier after the K/V load": lambda s: _drop_nth(s, BARRIER, 1),
    "missing barrier before the K/V load": lambda s: _drop_nth(s, BARRIER, 0),
    "wrong scale": lambda s: s.replace("as_type<float>(params[1]) * LOG2E",
                                       "as_type<float>(params[1]) * 1.5f * LOG2E"),
}


def _drop_nth(src: str, text: str, n: int) -> str:
    parts = src.split(text)
    assert len(parts) > n + 1, f"{text!r} occurs {len(parts) - 1} times"
    return text.join(parts[:n + 1]) + text.join(parts[n + 1:])


def _fwd_patch(bug):
    return lambda name, src: bug(src) if name == "flash_fwd.metal" else src


def inputs(c: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    dt = getattr(mx, c.dtype)
    q = mx.array(rng.standard_normal((c.B, c.Hq, c.qL, c.D), dtype=np.float32)).astype(dt)
    k = mx.array(rng.standard_normal((c.B, c.Hkv, c.kL, c.D), dtype=np.float32)).astype(dt)
    v = mx.array(rng.standard_normal((c.B, c.Hkv, c.kL, c.D), dtype=np.float32)).astype(dt)
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


def run_case(c: Case):
    q, k, v, mask, sinks = inputs(c)
    out, lse = flash.flash_attention_with_lse(
        q, k, v, scale=c.D ** -0.5, mask=mask, sinks=sinks, causal_shift=c.causal_shift,
        backend_name="metal", tile=c.tile, splits=c.splits,
        out_dtype=mx.float32 if c.out32 else None)
    return (q, k, v, mask, sinks), out, lse


def errors(c: Case, args, out, lse):
    q, k, v, mask, sinks = args
    ref, ref_lse = reference64(q, k, v, scale=c.D ** -0.5, mask=mask, sinks=sinks,
                               causal_shift=c.causal_shift)
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
    q, k, v, _, _ = inputs(c)
    log = Counter()
    fn = FusedAttention("metal")
    out = dispatch(q, k, v, scale=c.D ** -0.5, mask="causal", log=log, chunk_fn=fn,
                   config=ChunkConfig(threshold=64, chunk_size=64, q_block=64))
    return c, (q, k, v), out, log


@pytest.fixture(scope="module")
def executor():
    ex = msl_exec.Executor()
    mp = pytest.MonkeyPatch()
    mp.setattr(mx.fast, "metal_kernel", ex.metal_kernel)
    flash._KERNELS.clear()
    kernels.reset()
    try:
        ex.record()  # every instantiation the tests below will launch, compiled in one go
        for c in CASES + [BUG_CASE]:
            run_case(c)
        for bug in BUGS.values():
            flash.SOURCE_PATCH = _fwd_patch(bug)
            run_case(BUG_CASE)
        flash.SOURCE_PATCH = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # recorded self-tests see zeros and fail
            _self_test_route()
        kernels.reset()  # the recorded self-tests compared zeros: forget them
        ex.build()
        yield ex
    finally:
        flash.SOURCE_PATCH = None
        flash._KERNELS.clear()
        kernels.reset()
        mp.undo()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_metal_source_matches_float64_reference(executor, case):
    args, out, lse = run_case(case)
    err, lse_err, same_inf, finite = errors(case, args, out, lse)
    tol = F32_OUT_TOL if case.out32 else TOL[case.dtype]
    assert finite and same_inf, (case, err, lse_err)
    assert err <= tol and lse_err <= LSE_TOL, (case, err, lse_err)
    assert out.dtype == (mx.float32 if case.out32 else getattr(mx, case.dtype))


@pytest.mark.parametrize("bug", list(BUGS), ids=list(BUGS))
def test_executor_catches_an_injected_bug(executor, bug):
    src = (flash.HERE / "flash_fwd.metal").read_text()
    assert BUGS[bug](src) != src, "the patch no longer applies: update it"
    args, out, lse = run_case(BUG_CASE)  # the unpatched kernel passes ...
    err, lse_err, _, _ = errors(BUG_CASE, args, out, lse)
    assert err <= TOL["float16"] and lse_err <= LSE_TOL
    flash.SOURCE_PATCH = _fwd_patch(BUGS[bug])
    try:
        args, out, lse = run_case(BUG_CASE)  # ... the patched one must not
    finally:
        flash.SOURCE_PATCH = None
    err, lse_err, same_inf, finite = errors(BUG_CASE, args, out, lse)
    assert not (err <= TOL["float16"] and lse_err <= LSE_TOL and same_inf and finite), (bug, err)


def test_fused_route_on_the_executed_metal_source(executor):
    c, (q, k, v), out, log = _self_test_route()
    assert dict(log) == {"kv-chunks/fused": 1}
    results = kernels.self_test_results()
    assert results and all(r.ok for r in results), results
    ref, _ = reference64(q, k, v, scale=c.D ** -0.5, mask="causal", sinks=None, causal_shift=None)
    assert np.max(np.abs(np.array(out.astype(mx.float32)) - ref)) <= TOL[c.dtype]


def test_tiles_the_dispatcher_picks_are_swept():
    picked = {flash.choose_tile(rows=r, D=D, backend_name="metal")
              for D in flash.SUPPORTED_HEAD_DIMS for r in (1, 4, 8, 16, 64, 4096)}
    swept = {flash.plan(q_shape=(c.B, c.Hq, c.qL, c.D), k_shape=(c.B, c.Hkv, c.kL, c.D),
                        backend_name="metal", tile=c.tile)[0] for c in CASES}
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
    coords = {((q & 4) + (lane // 2) % 4, (q & 2) * 2 + (lane % 2) * 2 + e)
              for lane in range(32) for q in [lane // 4] for e in (0, 1)}
    assert len(coords) == 64  # every element of the 8x8 block held by exactly one lane slot
    ex = msl_exec.Executor()
    kern = ex.metal_kernel(name="layout_probe", input_names=["a", "b", "c"],
                           output_names=["d", "shuffled"], source=LAYOUT_PROBE)
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3))
    d, sh = kern(inputs=[mx.array(a), mx.array(b), mx.array(c)], grid=(32, 1, 1),
                 threadgroup=(32, 1, 1), output_shapes=[(8, 8), (32,)],
                 output_dtypes=[mx.float32, mx.float32])
    assert np.allclose(np.array(d), a @ b + c, atol=1e-5)
    assert np.array(sh).tolist() == [float(i ^ 5) for i in range(32)]
