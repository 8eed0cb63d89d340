"""Read a GGUF file's tensors and metadata, whatever its quant types, and name it by digest.

Two readers, one result. `mx.load` reads F32/F16/Q4_0/Q4_1/Q8_0 directly (the quantized ones
as MLX affine triples, group size 32, bit-exact); files holding any other type (the K-quants
Q4_K/Q5_K/Q6_K, Q5_0, ...) are read with the `gguf` package, which dequantizes every block in
numpy. The weights then become what the user chose (`QUANT_MODES`):

- ``auto``: keep an mx.load-readable file exactly as stored; otherwise 8-bit, group 64.
- ``q8`` / ``q4``: every 2-D weight re-quantized to MLX 8- or 4-bit affine, group 64.
- ``f16``: every 2-D weight in float16.

One-dimensional tensors (norms, biases) stay float32 in every mode, as `mx.load` gives them.
The file's identity is niah.identity's digest (sha256), memoised per (path, size, mtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NiahError
from ..identity import file_digest  # noqa: F401 - re-exported: the GGUF's digest
from .header import check_layout, parse_header

NATIVE_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q8_0"})
QUANT_MODES = ("auto", "q8", "q4", "f16")
DEFAULT_QUANT = "auto"
QUANT_GROUP_SIZE = 64
NATIVE_GROUP_SIZE = 32
GGUF_PACKAGE = "gguf==0.19.0"


@dataclass
class RawGGUF:
    """Tensors keyed by GGUF name (quantized ones as name.weight/.scales/.biases), metadata,
    the per-tensor quantization (name -> (group_size, bits)) and how they were produced."""

    tensors: dict
    meta: dict
    quantized: dict = field(default_factory=dict)
    types: dict = field(default_factory=dict)      # GGUF type name -> tensor count
    weights: str = ""                              # e.g. "native", "q8/g64", "f16"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise NiahError(f"GGUF file {str(path)!r} not found: check the path")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise NiahError(f"{str(path)!r} is not a GGUF file (no GGUF magic): give a .gguf "
                            "file from llama.cpp or the hub")


def read_gguf(path: str | Path, *, quant: str = DEFAULT_QUANT) -> RawGGUF:
    """Tensors and metadata of `path`, with weights in the `quant` mode (see the module doc)."""
    if quant not in QUANT_MODES:
        raise NiahError(f"unknown --gguf-quant {quant!r}: use one of {', '.join(QUANT_MODES)}")
    path = Path(path)
    _check_file(path)
    header = parse_header(path)
    check_layout(path, header)
    types = {}
    for t in header.tensors:
        types[t.type_name] = types.get(t.type_name, 0) + 1
    if not set(types) <= NATIVE_TYPES:
        return _read_with_gguf(path, header, quant="q8" if quant == "auto" else quant, types=types)
    raw = _read_with_mx(path, types=types)
    if quant != "auto":
        _requantize(raw, quant)
    return raw


def _read_with_mx(path: Path, *, types) -> RawGGUF:
    import mlx.core as mx

    try:
        tensors, meta = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises plain exceptions for unreadable files
        raise NiahError(f"cannot read GGUF {str(path)!r} with mx.load ({exc}): its quant types "
                        f"need the gguf package: pip install {GGUF_PACKAGE}") from None
    quantized = {}
    for name, value in tensors.items():
        if name.endswith(".scales"):
            base = name[: -len(".scales")]
            packed = tensors[f"{base}.weight"].shape[-1]
            bits = packed * 32 // (value.shape[-1] * NATIVE_GROUP_SIZE)
            quantized[base] = (NATIVE_GROUP_SIZE, bits)
    return RawGGUF(tensors=tensors, meta=meta, quantized=quantized, types=types or {},
                   weights="native")


def _requantize(raw: RawGGUF, quant: str) -> None:
    """Turn an mx.load result into the requested mode (dequantize, then quantize again)."""
    import mlx.core as mx

    for base, (group, bits) in list(raw.quantized.items()):
        w = mx.dequantize(raw.tensors.pop(f"{base}.weight"), raw.tensors.pop(f"{base}.scales"),
                          raw.tensors.pop(f"{base}.biases"), group_size=group, bits=bits)
        raw.tensors[f"{base}.weight"] = w
    raw.quantized = {}
    for name in [n for n, v in raw.tensors.items() if v.ndim == 2 and n.endswith(".weight")]:
        _store(raw, name, raw.tensors.pop(name), quant)
    raw.weights = _mode_name(quant)


def _mode_name(quant: str) -> str:
    return "f16" if quant == "f16" else f"{quant}/g{QUANT_GROUP_SIZE}"


def _store(raw: RawGGUF, name: str, w, quant: str) -> None:
    """Put one float 2-D weight into `raw` in the requested mode."""
    import mlx.core as mx

    bits = {"q8": 8, "q4": 4}.get(quant)
    if bits is None or w.shape[-1] % QUANT_GROUP_SIZE:
        raw.tensors[name] = w.astype(mx.float16)
        return
    q, scales, biases = mx.quantize(w, group_size=QUANT_GROUP_SIZE, bits=bits)
    mx.eval(q, scales, biases)
    base = name[: -len(".weight")]
    raw.tensors.update({f"{base}.weight": q, f"{base}.scales": scales, f"{base}.biases": biases})
    raw.quantized[base] = (QUANT_GROUP_SIZE, bits)


def _read_with_gguf(path: Path, header, *, quant: str, types: dict) -> RawGGUF:
    import importlib.metadata as md

    import mlx.core as mx
    import numpy as np

    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError:
        raise NiahError(f"GGUF {path.name!r} holds {', '.join(sorted(set(types) - NATIVE_TYPES))} "
                        f"tensors, which need the gguf package: pip install {GGUF_PACKAGE}") from None
    raw = RawGGUF(tensors={}, meta=header.meta, types=types, weights=_mode_name(quant))
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for t in header.tensors:
        try:
            qtype = GGMLQuantizationType(t.type_id)
            values = dequantize(t.raw(data), qtype)
        except (NotImplementedError, KeyError, ValueError) as exc:
            raise NiahError(f"GGUF tensor {t.name!r} has quant type {t.type_name}, which neither "
                            f"mx.load nor gguf {md.version('gguf')} can read "
                            f"({type(exc).__name__}): re-quantize the file, e.g. to Q8_0 or "
                            "Q4_K_M with llama-quantize") from None
        arr = mx.array(np.ascontiguousarray(values.reshape(t.shape), dtype=np.float32))
        if arr.ndim == 2 and t.name.endswith(".weight"):
            _store(raw, t.name, arr, quant)
        else:
            raw.tensors[t.name] = arr
    del data
    return raw
