"""`niah sdpa verify`: every route against the reference over the upstream test plan.

Cases sweep dtypes (float16, bfloat16, float32), head dims (64, 80, 128, 256), GQA (1:1, 4:1,
16:1), batch 1-4, causal masks crossing chunk boundaries, bool and additive masks, sinks, key
lengths of exactly one chunk, one chunk + 1 and three unequal chunks, non-causal qL = kL, and
qL = 16 prefill steps at 128K and 256K keys. The ground truth is NumPy float64 for small cases
and the float32 plain-ops reference for the long ones. Routes: kv-chunks (with niah's fused
kernel, one launch per host chunk, where a kernel exists; else the plain-ops reference), the
fused kernel in one launch over all keys (split-K), and q-split. A route passes when its max
error is within max(2 x stock's own error, the dtype's tolerance); the fused kernels' first-use
self-tests are listed after the cases, and the count of fused rows within 2x of stock's own
error is printed. On Metal each kernel name ends in the build that serves it (`:vec`, 16-byte
vector loads, or `:scalar`, element-wise loads); a vector build that failed and was replaced by
the scalar one is listed too, with its error, but counts as no failed check (its variant runs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

DTYPE_TOL = {"float32": 2e-5, "float16": 4e-3, "bfloat16": 3e-2}


@dataclass(frozen=True)
class Case:
    name: str
    dtype: str
    B: int
    Hq: int
    Hkv: int
    qL: int
    kL: int
    D: int
    mask: str  # none | causal | bool | additive
    sinks: bool = False
    chunk: int = 512

    @property
    def long(self) -> bool:
        return self.kL >= 65536


def cases(*, quick: bool = False, long: bool = True) -> list[Case]:
    out = []
    c = 512
    for dtype in ("float16", "bfloat16", "float32"):
        for D in (64, 80, 128, 256):
            out.append(Case(f"causal 3 chunks D{D}", dtype, 1, 8, 2, 64, 3 * c - 77, D, "causal"))
        out.append(Case("kL = chunk", dtype, 1, 4, 4, 32, c, 64, "causal"))
        out.append(Case("kL = chunk + 1", dtype, 1, 4, 4, 32, c + 1, 64, "causal"))
        out.append(Case("GQA 4:1", dtype, 2, 16, 4, 48, 2 * c + 100, 128, "causal"))
        out.append(Case("GQA 16:1", dtype, 1, 32, 2, 16, 2 * c + 9, 64, "causal"))
        out.append(Case("batch 3 non-causal qL=kL", dtype, 3, 4, 2, 700, 700, 64, "none"))
        out.append(Case("batch 4 decode qL=1", dtype, 4, 8, 2, 1, 3 * c + 5, 128, "none"))
        out.append(Case("bool mask", dtype, 2, 8, 2, 33, 2 * c + 31, 64, "bool"))
        out.append(Case("additive mask", dtype, 1, 8, 8, 33, 2 * c + 31, 64, "additive"))
        out.append(Case("sinks causal", dtype, 1, 8, 2, 40, 2 * c + 3, 64, "causal", sinks=True))
        out.append(Case("prefill step qL 16", dtype, 1, 8, 2, 16, 4 * c, 128, "causal"))
    if long and not quick:
        for kL in (131072, 262144):
            out.append(
                Case(
                    f"qL 16 at {kL // 1024}K keys",
                    "bfloat16",
                    1,
                    32,
                    8,
                    16,
                    kL,
                    128,
                    "causal",
                    chunk=32768,
                )
            )
            out.append(
                Case(
                    f"qL 16 at {kL // 1024}K keys",
                    "float16",
                    1,
                    32,
                    8,
                    16,
                    kL,
                    128,
                    "causal",
                    chunk=32768,
                )
            )
    return out


def make_inputs(case: Case, *, seed: int = 0):
    import mlx.core as mx

    rng = np.random.default_rng(seed)
    q = rng.standard_normal((case.B, case.Hq, case.qL, case.D), dtype=np.float32)
    k = rng.standard_normal((case.B, case.Hkv, case.kL, case.D), dtype=np.float32)
    v = rng.standard_normal((case.B, case.Hkv, case.kL, case.D), dtype=np.float32)
    dt = getattr(mx, case.dtype)
    q, k, v = (mx.array(a).astype(dt) for a in (q, k, v))
    mask = None
    if case.mask == "causal":
        mask = "causal"
    elif case.mask == "bool":
        keep = rng.random((case.B, 1, case.qL, case.kL)) > 0.3
        keep[..., 0] = True
        keep[:, :, 1, :] = False  # one fully masked row
        mask = mx.array(keep)
    elif case.mask == "additive":
        mask = mx.array(rng.standard_normal((case.qL, case.kL), dtype=np.float32)).astype(dt)
    sinks = (
        mx.array(rng.standard_normal((case.Hq,), dtype=np.float32)).astype(dt)
        if case.sinks
        else None
    )
    return q, k, v, mask, sinks


def numpy_reference(q, k, v, *, scale, mask, sinks) -> np.ndarray:
    """float64 attention in NumPy; fully masked rows give 0."""
    import mlx.core as mx

    qn = np.array(q.astype(mx.float32), dtype=np.float64)
    kn = np.array(k.astype(mx.float32), dtype=np.float64)
    vn = np.array(v.astype(mx.float32), dtype=np.float64)
    B, Hq, qL, D = qn.shape
    Hkv, kL = kn.shape[1], kn.shape[2]
    G = Hq // Hkv
    kn, vn = np.repeat(kn, G, axis=1), np.repeat(vn, G, axis=1)
    s = np.einsum("bhqd,bhkd->bhqk", qn * scale, kn)
    if isinstance(mask, str):
        keep = np.arange(kL)[None, :] <= np.arange(qL)[:, None] + (kL - qL)
        s = np.where(keep, s, -np.inf)
    elif mask is not None:
        m = np.array(mask.astype(mx.float32) if mask.dtype != mx.bool_ else mask)
        s = np.where(m, s, -np.inf) if m.dtype == bool else s + m.astype(np.float64)
    cols = [s]
    if sinks is not None:
        cols.append(
            np.broadcast_to(
                np.array(sinks.astype(mx.float32), dtype=np.float64)[None, :, None, None],
                (B, Hq, qL, 1),
            )
        )
    full = np.concatenate(cols, axis=-1)
    mmax = np.max(full, axis=-1, keepdims=True)
    mmax = np.where(np.isfinite(mmax), mmax, 0.0)
    p = np.exp(full - mmax)
    denom = p.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", p[..., :kL], vn) / np.where(denom > 0, denom, 1)
    return out


def _err(a, ref: np.ndarray, *, rows_ok: np.ndarray | None = None) -> float:
    """Max absolute error of `a` against `ref` over the rows compared; an empty comparison is
    an error in the check itself (it could never fail), not a pass."""
    import mlx.core as mx

    diff = np.abs(np.array(a.astype(mx.float32), dtype=np.float64) - ref)
    if rows_ok is not None:
        diff = diff[rows_ok]
    if not diff.size:
        raise ValueError(
            f"nothing to compare: output {tuple(a.shape)}, reference {ref.shape}, "
            f"{'no row selected' if rows_ok is not None else 'empty arrays'}"
        )
    return float(diff.max())


def check_case(case: Case, *, routes=("kv-chunks", "fused", "q-split")) -> list[dict]:
    """Run one case on each route; rows of (route, error, stock error, tolerance, ok)."""
    import mlx.core as mx

    from .sdpa.dispatch import STOCK_SDPA, kv_chunks, q_split, ran_labels
    from .sdpa.fused import chunk_attention_fn
    from .sdpa.reference import attention_with_lse

    q, k, v, mask, sinks = make_inputs(case)
    scale = case.D**-0.5
    if case.long:
        ref32, _ = attention_with_lse(q, k, v, scale=scale, mask=mask, sinks=sinks)
        ref = np.array(ref32.astype(mx.float32), dtype=np.float64)
    else:
        ref = numpy_reference(q, k, v, scale=scale, mask=mask, sinks=sinks)
    rows_ok = None
    if case.mask == "bool":  # stock's answer for a fully masked row is undefined; compare the rest
        keep = np.array(mask)
        rows_ok = np.broadcast_to(keep.any(-1, keepdims=True), ref.shape)
    stock = STOCK_SDPA(q, k, v, scale=scale, mask=mask, sinks=sinks)
    stock_err = _err(stock, ref, rows_ok=rows_ok)
    tol = max(2 * stock_err, DTYPE_TOL[case.dtype])
    rows = []
    for route in routes:
        if route == "kv-chunks":
            fn = chunk_attention_fn(q=q, k=k, v=v)
            if fn is not None:
                fn.splits_keys = False  # one launch per host chunk, as on Metal
            out, lse = kv_chunks(
                q, k, v, scale=scale, mask=mask, sinks=sinks, chunk_size=case.chunk, chunk_fn=fn
            )
            label = "+".join(ran_labels(fn, Counter()))
            finite = bool(mx.all(mx.isfinite(out)).item())
        elif route == "fused":
            fn = chunk_attention_fn(q=q, k=k, v=v)
            if fn is None:
                continue
            out, _ = fn(q, k, v, scale=scale, mask=mask, sinks=sinks)  # whole range, split-K
            label = "fused (one launch)" if fn.ran["fused"] else "reference (fused failed)"
            finite = bool(mx.all(mx.isfinite(out)).item())
        else:
            out = q_split(
                q, k, v, scale=scale, mask=mask, sinks=sinks, q_block=max(1, case.qL // 3)
            )
            label = "q-split"
            finite = True
        err = _err(out, ref, rows_ok=rows_ok)
        rows.append(
            {
                "case": case.name,
                "dtype": case.dtype,
                "shape": _shape(case),
                "route": label,
                "error": err,
                "stock_error": stock_err,
                "tolerance": tol,
                "ok": bool(err <= tol and finite and np.isfinite(err)),
            }
        )
    return rows


def _shape(c: Case) -> str:
    return f"B{c.B} H{c.Hq}/{c.Hkv} q{c.qL} k{c.kL} D{c.D} {c.mask}{' sinks' if c.sinks else ''}"


def _memory_allows(case: Case) -> bool:
    from .preflight import working_set_bytes

    need = case.Hq * case.qL * case.kL * 4 * 4 + 4 * case.Hkv * case.kL * case.D * 4
    return need < 0.5 * working_set_bytes()


def run_verify(*, quick: bool = False, long: bool = True, echo=print) -> bool:
    """Print the table; True when every case passes."""
    from .model import device_description

    echo(f"niah sdpa verify on {device_description()}")
    header = f"{'case':<26} {'dtype':<9} {'shape':<34} {'route':<24} {'max err':>9} {'stock err':>9} {'tol':>9}  result"
    echo(header)
    ok_all = True
    n = 0
    within = [0, 0]  # fused rows whose error is <= 2x stock's own error, of all fused rows
    for case in cases(quick=quick, long=long):
        if case.long and not _memory_allows(case):
            echo(f"{case.name:<26} {case.dtype:<9} {_shape(case):<34} skipped: not enough memory")
            continue
        for row in check_case(case):
            n += 1
            ok_all &= row["ok"]
            if "fused" in row["route"]:
                within[0] += row["error"] <= 2 * row["stock_error"]
                within[1] += 1
            echo(
                f"{row['case']:<26} {row['dtype']:<9} {row['shape']:<34} {row['route']:<24} "
                f"{row['error']:>9.2e} {row['stock_error']:>9.2e} {row['tolerance']:>9.2e}  "
                f"{'PASS' if row['ok'] else 'FAIL'}"
            )
    from .sdpa.fused import self_test_results

    checks, passed = print_self_tests(self_test_results(), echo=echo)
    n += checks
    ok_all &= passed
    if within[1]:
        echo(f"fused routes within 2x of stock's own error: {within[0]}/{within[1]}")
    echo(f"{n} checks: {'all PASS' if ok_all else 'FAILURES above'}")
    return ok_all


def print_self_tests(tests, *, echo=print) -> tuple[int, bool]:
    """List the fused kernels' self-test verdicts; (checks counted, all of them passed).

    A replaced vector build (Metal) is listed with its error and a note, not counted."""
    if not tests:
        return 0, True
    echo(f"fused kernel self-tests on {tests[0].device} (first use of each variant):")
    n, ok_all = 0, True
    for t in tests:
        result = "PASS" if t.ok else "FAIL " + t.detail
        if t.replaced:
            result += " -> replaced by its element-wise build (:scalar, below)"
        else:
            n += 1
            ok_all &= t.ok
        echo(f"  {t.kernel:<52} {t.case:<58} {t.error:>9.2e} {t.tolerance:>9.2e}  {result}")
    replaced = sum(t.replaced for t in tests)
    if replaced:
        echo(
            f"vector loads failed on {replaced} variant(s): each was rebuilt with element-wise "
            "loads, whose verdict follows its failed vector build"
        )
    return n, ok_all
