"""The fused step: niah's kernels (niah.kernels) self-tested against the reference, with fallback.

`chunk_attention_fn(q=..., k=...)` returns a `FusedAttention` (a callable with the signature of
niah.sdpa.reference.attention_with_lse) when this backend has a kernel for the dtype and head
dim (float16/bfloat16; D in niah.kernels.flash.SUPPORTED_HEAD_DIMS), else None and the caller
uses the reference. float32 always takes the reference: it is exact there and rare at long
context.

Safety on hardware nobody here ran: the first call of each kernel variant (backend, dtype, head
dim, tile, mask/causal/sinks/split flags) in a process first runs a small case with the same
variant against the float32 reference. A compile error or a mismatch marks the variant failed,
and one RuntimeWarning names the device, the kernel and the case. A FusedAttention called
directly answers a failed variant with the reference; niah.sdpa.dispatch routes calls whose
variants failed to stock query blocks where stock serves them (docs/sdpa.md).
`self_test_results()` lists every verdict (niah sdpa verify prints them); `reset()` forgets
them and the built kernels (tests).

On Metal each variant is built first with 16-byte vector loads (`loads` "vec", kernel names end
in `:vec`); when that build fails to compile or fails its self-test, the same variant is rebuilt
with element-wise loads only (`:scalar`, none of the vector code compiled) and self-tested, and
the scalar build serves the variant when it passes. The failed vector attempt stays in
`self_test_results()` (marked `replaced`, with its error) just before the verdict that replaced
it, and warns on its own. CUDA has one build per variant (`loads` "").
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, replace

import mlx.core as mx

from .. import backend as backend_mod
from .. import kernels
from ..kernels import flash
from .reference import attention_with_lse

SELF_TEST_TOL = {"float16": 4e-3, "bfloat16": 3e-2}
LSE_TOL = 1e-2


@dataclass(frozen=True)
class SelfTest:
    backend: str
    device: str
    kernel: str
    case: str
    ok: bool
    error: float
    tolerance: float
    detail: str = ""
    loads: str = ""  # Metal: "vec" (16-byte vector loads) or "scalar" (element-wise); CUDA: ""
    replaced: bool = False  # a failed "vec" build whose variant was rebuilt as "scalar"


# Verdicts by variant key; a replaced vector attempt is kept under (*key, "vec"), inserted first.
_RESULTS: dict[tuple, SelfTest] = {}


def reset() -> None:
    """Forget self-test verdicts and built kernels (tests)."""
    _RESULTS.clear()
    kernels.forget_builds()


def self_test_results() -> list[SelfTest]:
    return list(_RESULTS.values())


def _backend() -> str:
    return backend_mod.backend()


def _device() -> str:
    return backend_mod.device_name()


def _dtype_name(dtype) -> str:
    return str(dtype).split(".")[-1]


class FusedAttention:
    """attention_with_lse through niah's kernel, self-tested per variant, else the reference.

    `ran` counts what each call actually ran ("fused" or "reference"), so a route label can
    name it (niah.sdpa.dispatch reads it)."""

    def __init__(self, backend_name: str, *, impl=None):
        self.backend_name = backend_name
        self.impl = impl or flash.flash_attention_with_lse
        # On CUDA one launch covers the whole key range (split-K on the device); on Metal each
        # chunk is its own command buffer (the watchdog is per command buffer).
        self.splits_keys = backend_name == "cuda"
        self.ran: Counter = Counter()

    def variant(self, q, k, *, mask, sinks, causal_shift, out_dtype=None):
        tile, splits, _ = flash.plan(
            q_shape=q.shape, k_shape=k.shape, backend_name=self.backend_name
        )
        flags = flash.flags_for(mask=mask, sinks=sinks, causal_shift=causal_shift, split=splits > 1)
        out = _dtype_name(out_dtype or q.dtype)
        return (self.backend_name, _dtype_name(q.dtype), q.shape[-1], tile, flags, out)

    def prepare(
        self,
        *,
        q_shape,
        k_shape,
        dtype,
        causal: bool,
        out_dtype=None,
        mask_kind: int = 0,
        sinks: bool = False,
    ) -> SelfTest:
        """Build and self-test the variant a call of these shapes would use (no big arrays).
        `mask_kind`: 0 none, 1 bool, 2 additive (as flash.Flags)."""
        tile, splits, _ = flash.plan(
            q_shape=q_shape, k_shape=k_shape, backend_name=self.backend_name
        )
        flags = flash.Flags(causal=causal, mask=mask_kind, sinks=sinks, split=splits > 1)
        key = (
            self.backend_name,
            _dtype_name(dtype),
            q_shape[-1],
            tile,
            flags,
            _dtype_name(out_dtype or dtype),
        )
        self._ensure(key)
        return _RESULTS[key]

    def _ensure(self, key) -> None:
        """Self-test the variant once; on Metal the vector build first, then the scalar one."""
        if key in _RESULTS:
            return
        r = self._self_test(key, loads="vec" if self.backend_name == "metal" else "")
        if not r.ok and r.loads == "vec":
            _RESULTS[(*key, "vec")] = replace(r, replaced=True)
            _warn_failed(r, "rebuilding it with element-wise loads")
            r = self._self_test(key, loads="scalar")
        _RESULTS[key] = r
        if not r.ok:
            _warn_failed(
                r,
                "falling back for it (stock query blocks where stock serves "
                "the call, else the reference)",
            )

    def __call__(
        self,
        q,
        k,
        v,
        *,
        scale: float,
        mask=None,
        sinks=None,
        causal_shift=None,
        out_dtype=None,
        stream=None,
    ):
        """(out, lse); out in q.dtype, or float32 when out_dtype=mx.float32 (merge partials)."""
        usable = (
            scale > 0
            and kernels.compatible(q, k, v)
            and flash.supported(backend_name=self.backend_name, dtype=q.dtype, D=q.shape[-1])
        )
        if usable:
            key = self.variant(
                q, k, mask=mask, sinks=sinks, causal_shift=causal_shift, out_dtype=out_dtype
            )
            self._ensure(key)
            usable = _RESULTS[key].ok
        if not usable:
            self.ran["reference"] += 1
            return attention_with_lse(
                q, k, v, scale=scale, mask=mask, sinks=sinks, causal_shift=causal_shift
            )
        self.ran["fused"] += 1
        extra = {"out_dtype": out_dtype} if out_dtype is not None else {}
        extra.update(_loads_option(_RESULTS[key].loads))
        return self.impl(
            q,
            k,
            v,
            scale=scale,
            mask=mask,
            sinks=sinks,
            causal_shift=causal_shift,
            backend_name=self.backend_name,
            stream=stream,
            **extra,
        )

    def _measure(self, inputs, *, key, splits: int, loads: str) -> tuple[float, float, bool]:
        """The build's (max output error, max lse error, same infinite lse rows) against the
        reference on one case."""
        q, k, v, mask, sinks = inputs
        backend_name, dtype_name, D, tile, _flags, out_name = key
        extra = {} if out_name == dtype_name else {"out_dtype": getattr(mx, out_name)}
        extra.update(_loads_option(loads))
        out, lse = self.impl(
            q,
            k,
            v,
            scale=D**-0.5,
            mask=mask,
            sinks=sinks,
            backend_name=backend_name,
            tile=tile,
            splits=splits,
            **extra,
        )
        ref, ref_lse = attention_with_lse(q, k, v, scale=D**-0.5, mask=mask, sinks=sinks)
        mx.eval(out, lse, ref, ref_lse)
        err = mx.max(mx.abs(out.astype(mx.float32) - ref.astype(mx.float32))).item()
        finite = mx.isfinite(ref_lse)
        lse_err = mx.max(mx.where(finite, mx.abs(lse - ref_lse), 0.0)).item()
        return err, lse_err, bool(mx.all(mx.isfinite(lse) == finite).item())

    def _self_test(self, key, *, loads: str = "") -> SelfTest:
        """Run the variant's build (`loads`: Metal's "vec" or "scalar"; "" on CUDA) on a small
        case against the reference."""
        backend_name, dtype_name, D, tile, flags, out_name = key
        G, Hkv = 2, 2
        qL = tile.rows // G + 3  # two row tiles, the second partly filled
        kL = 3 * tile.bc + 5  # three key tiles, the last partly filled
        splits = 2 if flags.split else 1
        case = (
            f"{dtype_name} B1 H{G * Hkv}/{Hkv} q{qL} k{kL} D{D} tile {tile} "
            f"{flags.label()} splits {splits}"
        )
        kernel = (
            f"{backend_name}:{dtype_name}:D{D}:{tile}:{flags.label()}"
            f"{'' if out_name == dtype_name else ':out-' + out_name}"
            f"{':' + loads if loads else ''}"
        )
        verdict = dict(
            backend=backend_name,
            device=_device(),
            kernel=kernel,
            case=case,
            tolerance=SELF_TEST_TOL[dtype_name],
            loads=loads,
        )
        tol = verdict["tolerance"]
        try:
            q, k, v, mask, sinks = _self_test_inputs(
                dtype_name, D=D, G=G, Hkv=Hkv, qL=qL, kL=kL, flags=flags
            )
            err, lse_err, same_inf = self._measure(
                (q, k, v, mask, sinks), key=key, splits=splits, loads=loads
            )
        except Exception as exc:  # noqa: BLE001 - compile or launch failure: fall back
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return SelfTest(
                **verdict,
                ok=False,
                error=float("nan"),
                detail=f"{type(exc).__name__}: {first[:300]}",
            )
        ok = err <= tol and lse_err <= LSE_TOL and same_inf and err == err
        detail = (
            ""
            if ok
            else (
                f"max error {err:.3g} (tolerance {tol:.1g}), lse error {lse_err:.3g}"
                f"{'' if same_inf else ', masked rows differ'}"
            )
        )
        return SelfTest(**verdict, ok=ok, error=err, detail=detail)


def _self_test_inputs(
    dtype_name: str, *, D: int, G: int, Hkv: int, qL: int, kL: int, flags: flash.Flags
):
    """(q, k, v, mask, sinks) of a self-test: seeded, with the variant's mask and sinks."""
    kq, kk, kv, km, ks = mx.random.split(mx.random.key(1234), 5)
    dt = getattr(mx, dtype_name)
    q = mx.random.normal((1, G * Hkv, qL, D), key=kq).astype(dt)
    k = mx.random.normal((1, Hkv, kL, D), key=kk).astype(dt)
    v = mx.random.normal((1, Hkv, kL, D), key=kv).astype(dt)
    mask = "causal" if flags.causal else None
    if flags.mask == 1:
        keep = mx.random.uniform(shape=(1, 1, qL, kL), key=km) > 0.3
        mask = keep | (mx.arange(kL) == 0)
    elif flags.mask == 2:
        mask = mx.random.normal((qL, kL), key=km).astype(dt)
    sinks = mx.random.normal((G * Hkv,), key=ks).astype(dt) if flags.sinks else None
    return q, k, v, mask, sinks


def _loads_option(loads: str) -> dict:
    """The kernel's vector_loads argument for a build ("vec"/"scalar" on Metal; none on CUDA)."""
    return {"vector_loads": loads == "vec"} if loads else {}


def _warn_failed(r: SelfTest, then: str) -> None:
    loads = {"vec": " (16-byte vector loads)", "scalar": " (element-wise loads)"}.get(r.loads, "")
    warnings.warn(
        f"niah: fused attention kernel {r.kernel}{loads} failed its self-test on "
        f"{r.device} ({r.case}): {r.detail}; {then}",
        RuntimeWarning,
        stacklevel=4,
    )


def warm_up(*, dtype, n_heads: int, n_kv_heads: int, head_dim: int, calls) -> list[SelfTest]:
    """Build and self-test, before any timing, the kernel variants that `calls` will use.

    `calls`: (qL, kL, causal, out_float32) per fused call, e.g. from
    niah.sdpa.chunks.planned_fused_calls. Returns the verdicts (empty without a kernel here)."""
    name = _backend()
    if not flash.supported(backend_name=name, dtype=dtype, D=head_dim):
        return []
    fa = FusedAttention(name)
    out = []
    for qL, kL, causal, out32 in calls:
        r = fa.prepare(
            q_shape=(1, n_heads, qL, head_dim),
            k_shape=(1, n_kv_heads, kL, head_dim),
            dtype=dtype,
            causal=causal,
            out_dtype=mx.float32 if out32 else None,
        )
        if r not in out:
            out.append(r)
    return out


def chunk_attention_fn(*, q, k, v=None):
    """A FusedAttention for this backend, dtype and head dim, or None (use the reference).

    None too when q, k and v differ in head dim or dtype. A FusedAttention still self-tests
    each variant on first use; routing on the verdict is niah.sdpa.dispatch.fused_fn's job."""
    name = _backend()
    if not kernels.compatible(q, k, v) or not flash.supported(
        backend_name=name, dtype=q.dtype, D=q.shape[-1]
    ):
        return None
    return FusedAttention(name)
