"""Which backend runs (metal / cuda / cpu) and what the GPU is: name, architecture, Apple GPU
family, and whether it is a paravirtual device (a macOS virtual machine's GPU, on which
hardware validation of Metal kernels means nothing).

niah.sdpa and niah.kernels both stand on this module, so neither imports the other for it.
`describe_gpu()` reads MLX's device info; `apple_family(architecture)` maps an Apple GPU
architecture name such as ``applegpu_g13p`` (generation 13, the M1) to its Metal GPU family
(Apple7). Apple7 is the first family with simdgroup matrices and bfloat, which niah's Metal
kernels use. `compute_units(backend_name)` is the GPU's count of SMs (CUDA) or cores (Metal),
which sizes the fused kernel's key splits: read from the CUDA driver; a documented default where
the device does not say (Metal: MLX does not report the core count), with the source recorded.
`mlx_kernel_cache()` is where MLX's CUDA backend keeps the kernels it compiles at run time, and
`cold_kernel_cache_note()` the line to print when it holds none yet (docs/sdpa.md).
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

# Apple GPU generation (the number in "applegpu_gNN") -> Metal GPU family (AppleN).
# g13: M1/A14 (Apple7), g14: M2/A15 (Apple8), g15: M3/A17 Pro (Apple9), g16: M4 (Apple9).
_GEN_TO_FAMILY = {13: 7, 14: 8, 15: 9, 16: 9}
MIN_KERNEL_FAMILY = 7  # simdgroup_matrix and bfloat
# Compute units when the device does not say: an H100 SXM's 132 SMs; 32 cores for a mid-size
# Apple GPU. They only shape the fused kernel's key splits, never its results.
DEFAULT_COMPUTE_UNITS = {"cuda": 132, "metal": 32}
_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16  # CUDA driver API attribute id


@dataclass(frozen=True)
class GpuInfo:
    backend: str  # metal | cuda | cpu
    name: str  # device name as the backend reports it ("" on cpu)
    architecture: str  # e.g. applegpu_g13p, sm_90 ("" when unknown)
    family: int | None  # Apple GPU family number on Metal (7 = Apple7), else None
    paravirtual: bool  # a virtual machine's GPU: kernel validation is not meaningful

    def family_label(self) -> str:
        if self.backend != "metal":
            return "-"
        return f"Apple{self.family}" if self.family else "unknown"

    def can_validate_kernels(self) -> bool:
        """True when niah's fused kernels can be validated on this device's hardware."""
        if self.backend == "cuda":
            return True
        return (
            self.backend == "metal"
            and not self.paravirtual
            and self.family is not None
            and self.family >= MIN_KERNEL_FAMILY
        )


def backend() -> str:
    """'metal', 'cuda' or 'cpu': where the default device runs."""
    if mx.default_device() == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "cuda"
    return "cpu"


def apple_family(architecture: str) -> int | None:
    """The Metal GPU family of an Apple GPU architecture name, or None if not recognised."""
    m = re.search(r"applegpu_g(\d+)", architecture or "")
    if not m:
        return None
    gen = int(m.group(1))
    if gen in _GEN_TO_FAMILY:
        return _GEN_TO_FAMILY[gen]
    return None if gen < min(_GEN_TO_FAMILY) else max(_GEN_TO_FAMILY.values())


def is_paravirtual(name: str) -> bool:
    """macOS virtual machines (e.g. GitHub-hosted runners) name their GPU 'Apple Paravirtual
    device'."""
    return "paravirtual" in (name or "").lower()


def _device_info() -> dict:
    try:
        return (
            dict(mx.device_info()) if hasattr(mx, "device_info") else dict(mx.metal.device_info())
        )
    except Exception:  # noqa: BLE001 - no GPU, or an MLX without device_info
        return {}


def describe_gpu(*, info: dict | None = None, backend_name: str | None = None) -> GpuInfo:
    """What the default device is; `info`/`backend_name` override (tests)."""
    be = backend_name or backend()
    info = _device_info() if info is None else info
    name = str(info.get("device_name") or "") if be != "cpu" else ""
    arch = str(info.get("architecture") or "") if be != "cpu" else ""
    family = apple_family(arch) if be == "metal" else None
    return GpuInfo(
        backend=be,
        name=name,
        architecture=arch,
        family=family,
        paravirtual=be == "metal" and (is_paravirtual(name) or is_paravirtual(arch)),
    )


def device_name() -> str:
    """A short name for messages: the GPU's name, else the default device."""
    g = describe_gpu()
    return g.name or g.architecture or str(mx.default_device())


@dataclass(frozen=True)
class ComputeUnits:
    count: int  # SMs (CUDA) or GPU cores (Metal)
    source: str  # "device" (read from it) or "default" (DEFAULT_COMPUTE_UNITS)

    def label(self) -> str:
        return f"{self.count} ({'from the device' if self.source == 'device' else 'default: the device does not say'})"


def compute_units(backend_name: str, *, read=None) -> ComputeUnits:
    """The GPU's SM/core count: CUDA's from the driver (device 0 of this process), else
    DEFAULT_COMPUTE_UNITS. `read` (tests) replaces the driver query: () -> int | None."""
    count = (read or _cuda_sm_count)() if backend_name == "cuda" else None
    if count:
        return ComputeUnits(count=int(count), source="device")
    return ComputeUnits(count=DEFAULT_COMPUTE_UNITS.get(backend_name, 32), source="default")


@functools.lru_cache(maxsize=1)
def _cuda_sm_count() -> int | None:
    """CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT of the default CUDA device through the driver
    library, or None without a driver (MLX's device_info does not report it)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        dev, value = ctypes.c_int(), ctypes.c_int()
        index = getattr(mx.default_device(), "index", 0) or 0
        if lib.cuInit(0) or lib.cuDeviceGet(ctypes.byref(dev), index):
            return None
        if lib.cuDeviceGetAttribute(
            ctypes.byref(value), _CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev
        ):
            return None
        return value.value or None
    except (OSError, AttributeError):
        return None


def mlx_kernel_cache(*, environ=None) -> Path:
    """The folder MLX's CUDA backend reads and writes the kernels it compiles with NVRTC:
    $MLX_PTX_CACHE_DIR, else <temp dir>/mlx/<MLX version>/ptx, the temp dir found as C++'s
    std::filesystem::temp_directory_path finds it (TMPDIR, TMP, TEMP, TEMPDIR, else /tmp)."""
    env = os.environ if environ is None else environ
    if env.get("MLX_PTX_CACHE_DIR"):
        return Path(env["MLX_PTX_CACHE_DIR"])
    tmp = next((env[k] for k in ("TMPDIR", "TMP", "TEMP", "TEMPDIR") if env.get(k)), "/tmp")
    return Path(tmp) / "mlx" / mx.__version__ / "ptx"


def cold_kernel_cache_note(backend_name: str, *, folder: Path) -> str | None:
    """On CUDA, when MLX has compiled no kernel into `folder` yet (a machine's first MLX run,
    or its temp dir cleared), the line saying why the first model call may take minutes;
    None otherwise (Metal and the CPU ship their kernels built)."""
    if backend_name != "cuda":
        return None
    try:
        if any(folder.glob("*.ptx")):
            return None
    except OSError:
        pass
    return (
        f"MLX compiles its CUDA kernels for this model on first use (none in {folder} yet): "
        "the first model call may take minutes; later runs on this machine reuse them"
    )
