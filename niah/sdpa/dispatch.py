"""Routing for niah's SDPA: stock fused, query-split, or key-chunked with a logsumexp merge.

Routes
- ``stock``: mx.fast.scaled_dot_product_attention unchanged (always used below the threshold,
  so short contexts are bit-identical to stock).
- ``q-split``: queries split into blocks, the stock fused kernel per block, each block evaluated
  on its own: exact, no merge, bounded work per dispatch. With a causal mask each block only
  reads the keys it can see.
- ``kv-chunks``: keys split into chunks; each chunk gives (out, lse) from niah's fused kernel
  (niah.sdpa.fused: niah.kernels, self-tested) where one exists for the call, else from the
  plain-ops reference; chunks are merged by a streaming logsumexp merge and evaluated one at a
  time, so no GPU command buffer spans the whole key range (the macOS watchdog is per command
  buffer). On Metal the work per call is bounded by a FLOP budget (budget.py: key chunks, query
  blocks when needed, one launch when it all fits). When a kernel exists but a variant the call
  needs failed its self-test, the call runs as query blocks through stock where stock's own
  fused kernel serves it (`stock_serves`; blocks sized by the FLOP budget on Metal, each
  evaluated on its own), else on the reference. The route is logged by what ran:
  kv-chunks/fused, kv-chunks/q-split-fallback or kv-chunks/reference.
- ``auto``: stock below the threshold; above it kv-chunks on Metal and CPU (watchdog, and
  bounded memory for the unfused CPU path). On CUDA (no watchdog, fused cuDNN): kv-chunks with
  niah's fused kernel for 2 <= qL <= CUDA_FUSED_MAX_QL, where its split-K launch beats stock
  (docs/sdpa.md), and only when the kernel passed its self-tests; stock otherwise.

Configuration: arguments, then NIAH_SDPA_CHUNK_THRESHOLD / NIAH_SDPA_CHUNK_SIZE /
NIAH_SDPA_Q_BLOCK / NIAH_SDPA_FLOP_BUDGET, then MLX_SDPA_CHUNK_THRESHOLD / MLX_SDPA_CHUNK_SIZE,
then the defaults.
`FORCE_ROUTE` (or the `force_route` context manager) overrides the route for tests.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter

import mlx.core as mx

from .. import backend as _backend_mod
from ..errors import NiahError
from .budget import DEFAULT_FLOP_BUDGET, ChunkConfig  # noqa: F401 - ChunkConfig re-exported
from .chunks import (  # noqa: F401
    _slice_mask_keys,
    _slice_mask_rows,
    fused_calls,
    kv_chunks,
    kv_route,
    planned_fused_calls,
    q_blocks,
    work_plan,
)
from .fallback import (  # noqa: F401 - re-exported
    STOCK_FUSED_HEAD_DIMS,
    STOCK_FUSED_MAX_D_CUDA,
    fallback_q_block,
    stock_serves,
)
from .fused import chunk_attention_fn

DEFAULT_THRESHOLD = 65536
DEFAULT_CHUNK_SIZE = 32768
DEFAULT_Q_BLOCK = 1024
CUDA_FUSED_MAX_QL = 128
ROUTES = ("stock", "q-split", "kv-chunks", "auto")
FALLBACK_LABEL = "kv-chunks/q-split-fallback"  # a failed kernel's calls, run on stock blocks

# The test override switch: when set, every call takes this route (threshold ignored).
FORCE_ROUTE: str | None = None

# mx.fast's own function, captured before any patching so the stock route never recurses.
STOCK_SDPA = mx.fast.scaled_dot_product_attention


@contextlib.contextmanager
def force_route(route: str | None):
    """Force a route for the duration (tests)."""
    global FORCE_ROUTE
    if route is not None and route not in ROUTES:
        raise ValueError(f"unknown route {route!r}: use one of {', '.join(ROUTES)}")
    old, FORCE_ROUTE = FORCE_ROUTE, route
    try:
        yield
    finally:
        FORCE_ROUTE = old


class SettingError(NiahError, ValueError):
    """A bad NIAH_SDPA_* / MLX_SDPA_* value: one line for the CLI, a ValueError for callers."""


def _env_int(*names: str) -> int | None:
    for name in names:
        raw = os.environ.get(name)
        if raw:
            try:
                value = int(raw)
            except ValueError:
                raise SettingError(
                    f"{name}={raw!r} is not a whole number: set it like {name}=65536"
                ) from None
            if value <= 0:
                raise SettingError(f"{name}={raw!r} must be positive: set it like {name}=65536")
            return value
    return None


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a number: set it like {name}=1e11") from None
    if not value > 0:
        raise SettingError(f"{name}={raw!r} must be positive: set it like {name}=1e11")
    return value


def resolve_config(
    *,
    threshold: int | None = None,
    chunk_size: int | None = None,
    q_block: int | None = None,
    flop_budget: float | None = None,
) -> ChunkConfig:
    """Arguments, then NIAH_SDPA_* (NIAH_SDPA_FLOP_BUDGET: FLOPs per Metal command buffer),
    then MLX_SDPA_CHUNK_*, then defaults."""
    t = (
        threshold
        or _env_int("NIAH_SDPA_CHUNK_THRESHOLD", "MLX_SDPA_CHUNK_THRESHOLD")
        or DEFAULT_THRESHOLD
    )
    c = chunk_size or _env_int("NIAH_SDPA_CHUNK_SIZE", "MLX_SDPA_CHUNK_SIZE") or DEFAULT_CHUNK_SIZE
    qb = q_block or _env_int("NIAH_SDPA_Q_BLOCK") or DEFAULT_Q_BLOCK
    fb = flop_budget or _env_float("NIAH_SDPA_FLOP_BUDGET") or DEFAULT_FLOP_BUDGET
    return ChunkConfig(threshold=int(t), chunk_size=int(c), q_block=int(qb), flop_budget=float(fb))


def choose_route(
    *,
    qL: int,
    kL: int,
    route: str = "auto",
    config: ChunkConfig,
    backend_name: str | None = None,
    fused_ok=None,
) -> str:
    """The route a call of these sizes takes.

    `fused_ok`: None, or a callable telling whether niah's fused kernel serves this call (a
    kernel exists and every variant the call needs passed its self-test)."""
    if FORCE_ROUTE is not None and FORCE_ROUTE != "auto":
        return FORCE_ROUTE
    if route not in ("auto", "chunked") and route in ROUTES:
        return route if kL >= config.threshold or route == "stock" else "stock"
    if kL < config.threshold:
        return "stock"
    if route == "chunked":
        return "kv-chunks"
    name = backend_name or _backend_mod.backend()
    if name == "cuda":
        # No watchdog on CUDA and cuDNN is fastest for decode and long prefill steps; niah's
        # split-K kernel wins for short query blocks over long keys. q-split is not used: with
        # a causal mask it gives every query block a new key length, and the backend plans
        # each new shape anew (docs/sdpa.md).
        if 2 <= qL <= CUDA_FUSED_MAX_QL and fused_ok is not None and fused_ok():
            return "kv-chunks"
        return "stock"
    return "kv-chunks"


def q_split(
    q,
    k,
    v,
    *,
    scale: float,
    mask=None,
    sinks=None,
    q_block: int,
    stock=None,
    evaluate: bool = True,
    **kwargs,
) -> mx.array:
    """Query blocks through the stock fused kernel, each evaluated on its own."""
    stock = stock or STOCK_SDPA
    qL, kL = q.shape[2], k.shape[2]
    causal = isinstance(mask, str)
    outs = []
    for a in range(0, qL, q_block):
        b = min(a + q_block, qL)
        qb = q[:, :, a:b]
        if causal:
            visible = kL - qL + b  # last row of the block sees keys [0, visible)
            o = stock(
                qb,
                k[:, :, :visible],
                v[:, :, :visible],
                scale=scale,
                mask="causal",
                sinks=sinks,
                **kwargs,
            )
        else:
            o = stock(
                qb, k, v, scale=scale, mask=_slice_mask_rows(mask, a, b), sinks=sinks, **kwargs
            )
        if evaluate:
            mx.eval(o)
        outs.append(o)
    return outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=2)


def _mask_kind(mask) -> int:
    if mask is None or isinstance(mask, str):
        return 0
    return 1 if mask.dtype == mx.bool_ else 2


def fused_fn(
    q, k, v, *, mask=None, sinks=None, chunk_size: int, chunk_fn=None, q_block: int | None = None
):
    """`chunk_fn` (niah's fused kernel for this kv_chunks call) when every variant the call will
    use passed its self-test (run now if not yet run); else None (it must not serve the call).

    A `chunk_fn` without a `prepare` method (a test double) is returned as given."""
    if chunk_fn is None or not hasattr(chunk_fn, "prepare"):
        return chunk_fn
    B, Hq, qL, D = q.shape
    Hkv, kL = k.shape[1], k.shape[2]
    if q_block is not None and q_block < qL:  # the variants of the first query block
        kL, qL = (kL - qL + q_block if isinstance(mask, str) else kL), q_block
        if kL <= 0:
            return chunk_fn
    calls = fused_calls(
        qL=qL,
        kL=kL,
        causal=isinstance(mask, str),
        chunk_size=chunk_size,
        splits_keys=chunk_fn.splits_keys,
    )
    for i, (cq, ck, causal, out32) in enumerate(calls):
        verdict = chunk_fn.prepare(
            q_shape=(B, Hq, cq, D),
            k_shape=(B, Hkv, ck, D),
            dtype=q.dtype,
            causal=causal,
            out_dtype=mx.float32 if out32 else None,
            mask_kind=_mask_kind(mask),
            sinks=sinks is not None and i == 0,
        )
        if not verdict.ok:
            return None
    return chunk_fn


def ran_labels(fn, before) -> list[str]:
    """kv-chunks/fused and/or kv-chunks/reference: what the chunks of one call ran."""
    ran = getattr(fn, "ran", None)
    if fn is None:
        return ["kv-chunks/reference"]
    if ran is None:
        return ["kv-chunks/custom"]
    return [f"kv-chunks/{kind}" for kind in ("fused", "reference") if ran[kind] > before[kind]]


def _zero_unseen_rows(out, mask):
    """Rows an array mask hides from every key give zeros (as the reference does), never NaN."""
    if mask is None or isinstance(mask, str):
        return out
    keep = mask if mask.dtype == mx.bool_ else mask > -mx.inf
    seen = mx.any(keep, axis=-1, keepdims=True)
    return mx.where(seen, out, mx.zeros((), dtype=out.dtype))


class _Kernel:
    """niah's fused kernel for one call, looked up and self-tested at most once, when asked."""

    def __init__(self, q, k, v, *, mask, sinks, config: ChunkConfig, chunk_fn=None):
        self.q, self.k, self.v, self.mask, self.sinks = q, k, v, mask, sinks
        self.config, self.given = config, chunk_fn
        self.kernel = self.passed = None
        self.checked = False

    def serves(self) -> bool:
        """Whether a kernel exists and passed the self-tests of every variant the call uses."""
        if not self.checked:
            q, k, v = self.q, self.k, self.v
            self.kernel = (
                self.given if self.given is not None else chunk_attention_fn(q=q, k=k, v=v)
            )
            plan = work_plan(q, k, config=self.config, fused=True)
            self.passed = fused_fn(
                q,
                k,
                v,
                mask=self.mask,
                sinks=self.sinks,
                chunk_size=plan.chunk,
                q_block=plan.q_block,
                chunk_fn=self.kernel,
            )
            self.checked = True
        return self.passed is not None

    @property
    def failed(self) -> bool:
        """A kernel exists for the call but a variant it needs failed its self-test."""
        return not self.serves() and self.kernel is not None


def _kv_chunks(
    q,
    k,
    v,
    *,
    scale: float,
    mask,
    sinks,
    config: ChunkConfig,
    fused: _Kernel,
    stock,
    labels: list,
    **kwargs,
) -> mx.array:
    """The kv-chunks route: niah's kernel when it passed, else stock query blocks (a kernel
    that failed its self-test, where stock serves the call), else the reference."""
    fused.serves()
    fn = fused.passed
    if fused.failed:
        name = _backend_mod.backend()
        q_block = fallback_q_block(q, k, config=config, backend_name=name)
        if stock_serves(q, k, v, mask=mask, q_block=q_block, backend_name=name):
            labels.append(FALLBACK_LABEL)
            out = q_split(
                q, k, v, scale=scale, mask=mask, sinks=sinks, q_block=q_block, stock=stock, **kwargs
            )
            return _zero_unseen_rows(out, mask)
    before = Counter(getattr(fn, "ran", None) or {})
    out, _ = kv_route(q, k, v, scale=scale, mask=mask, sinks=sinks, config=config, chunk_fn=fn)
    labels.extend(ran_labels(fn, before))
    return out


def dispatch(
    q,
    k,
    v,
    *,
    scale: float,
    mask=None,
    sinks=None,
    route: str = "auto",
    config: ChunkConfig | None = None,
    log: Counter | None = None,
    stock=None,
    chunk_fn=None,
    **kwargs,
) -> mx.array:
    """Run attention on the chosen route; `log` counts the routes taken, kv-chunks named by
    what ran (kv-chunks/fused, kv-chunks/q-split-fallback or kv-chunks/reference).

    Key chunks use niah's fused kernel (niah.sdpa.fused.chunk_attention_fn) where one exists;
    `chunk_fn` fixes the kernel instead (tests inject failing variants this way)."""
    config = config or resolve_config()
    stock = stock or STOCK_SDPA
    fused = _Kernel(q, k, v, mask=mask, sinks=sinks, config=config, chunk_fn=chunk_fn)
    name = choose_route(
        qL=q.shape[2], kL=k.shape[2], route=route, config=config, fused_ok=fused.serves
    )
    if name in ("stock", "q-split"):
        if log is not None:
            log[name] += 1
        if name == "stock":
            return stock(q, k, v, scale=scale, mask=mask, sinks=sinks, **kwargs)
        return q_split(
            q,
            k,
            v,
            scale=scale,
            mask=mask,
            sinks=sinks,
            q_block=config.q_block,
            stock=stock,
            **kwargs,
        )
    labels = []
    out = _kv_chunks(
        q,
        k,
        v,
        scale=scale,
        mask=mask,
        sinks=sinks,
        config=config,
        fused=fused,
        stock=stock,
        labels=labels,
        **kwargs,
    )
    if log is not None:
        for label in labels:
            log[label] += 1
    return out


def scaled_dot_product_attention(
    q,
    k,
    v,
    *,
    scale: float,
    mask=None,
    sinks=None,
    chunk_size: int | None = None,
    threshold: int | None = None,
    stream=None,
) -> mx.array:
    """Drop-in for mx.fast.scaled_dot_product_attention with key chunking past a threshold
    (key chunks through niah's self-tested fused kernel where one exists)."""
    config = resolve_config(threshold=threshold, chunk_size=chunk_size)
    extra = {"stream": stream} if stream is not None else {}
    return dispatch(q, k, v, scale=scale, mask=mask, sinks=sinks, config=config, **extra)
