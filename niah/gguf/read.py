"""Read a GGUF file's tensors and metadata, whatever its quant types, and name it by digest.

Two readers, one result. `mx.load` reads F32/F16/Q4_0/Q4_1/Q8_0 directly (the quantized ones
as MLX affine triples, group size 32, bit-exact); files holding any other type (the K-quants
Q4_K/Q5_K/Q6_K, Q5_0, ...) are read block by block and every tensor dequantized to float32.
The weights then become what the user chose (`QUANT_MODES`):

- ``auto``: keep an mx.load-readable file exactly as stored; otherwise 8-bit, group 64.
- ``q8`` / ``q4``: every 2-D weight re-quantized to MLX 8- or 4-bit affine, group 64.
- ``f16``: every 2-D weight in float16.

One-dimensional tensors (norms, biases) stay float32 in every mode, as `mx.load` gives them.
The file's identity is niah.identity's digest (sha256; an unchanged file is not hashed again).

A file that needs converting (a type mx.load cannot read, or a mode other than ``auto``) is
converted once: the result is kept in the weight cache (niah.gguf.cache) under `cache_key`,
and later reads load it from there. The K-quants and Q5_0/Q8_0 are dequantized with MLX ops
(niah.gguf.dequant, equal to gguf's numpy results; F32/F16 too), other types with gguf's
numpy code, so only those need the gguf package.

A file written or replaced while it is read (a download or llama-quantize still running, a
copy over it) is refused with one line: its stat before the read must still hold after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..digest_store import stat_key
from ..errors import NiahError
from ..identity import file_digest, full_file_digest
from . import cache as weight_cache
from .dequant import dequantize as mlx_dequantize
from .header import check_layout, parse_header

NATIVE_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q8_0"})
QUANT_MODES = ("auto", "q8", "q4", "f16")
DEFAULT_QUANT = "auto"
QUANT_GROUP_SIZE = 64
NATIVE_GROUP_SIZE = 32
GGUF_PACKAGE = "gguf==0.19.0"
# Bump when the conversion's output changes for the same file and mode: it is part of the
# weight cache's key, so entries written by an older conversion are never read again.
CONVERSION_VERSION = 1


@dataclass
class RawGGUF:
    """Tensors keyed by GGUF name (quantized ones as name.weight/.scales/.biases), metadata,
    the per-tensor quantization (name -> (group_size, bits)) and how they were produced."""

    tensors: dict
    meta: dict
    quantized: dict = field(default_factory=dict)
    types: dict = field(default_factory=dict)  # GGUF type name -> tensor count
    weights: str = ""  # e.g. "native", "q8/g64", "f16"
    digest: str = ""  # the file's digest (niah.identity)
    cache: str = ""  # weight cache: "hit", "stored", "rebuilt" (a corrupt entry replaced),
    # "unwritable", "off"; "" when nothing was converted


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise NiahError(f"GGUF file {str(path)!r} not found: check the path")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise NiahError(
                f"{str(path)!r} is not a GGUF file (no GGUF magic): give a .gguf "
                "file from llama.cpp or the hub"
            )


def read_gguf(path: str | Path, *, quant: str = DEFAULT_QUANT, on_progress=None) -> RawGGUF:
    """Tensors and metadata of `path`, with weights in the `quant` mode (see the module doc).

    on_progress(done, total, what), when given, is called as tensors are converted. A file
    written or replaced while it is read is refused (`check_unchanged`), never returned as
    a mix of two versions nor kept in the weight cache."""
    if quant not in QUANT_MODES:
        raise NiahError(f"unknown --gguf-quant {quant!r}: use one of {', '.join(QUANT_MODES)}")
    path = Path(path)
    _check_file(path)
    before = stat_key(os.stat(path))
    raw = _read(path, quant=quant, on_progress=on_progress, before=before)
    check_unchanged(path, before)
    return raw


def check_unchanged(path: Path, before: tuple) -> None:
    """Refuse `path` when its (size, mtime, inode, ctime) is no longer `before`: it was
    written or replaced meanwhile. A same-size rewrite within one tick of the file system's
    clock (a few ms) is not seen; the digest store has the same limit."""
    try:
        now = stat_key(os.stat(path))
    except OSError:
        now = None
    if now != before:
        raise _changed(path)


def _changed(path: Path) -> NiahError:
    return NiahError(
        f"GGUF {str(path)!r} changed while niah read it (written or replaced meanwhile): "
        "wait until it is written completely, then run again"
    )


def _tensor_bytes(fh, t, *, path: Path):
    """Tensor `t`'s bytes, read from the open file `fh`. Not a memory map: a file cut short
    while mapped kills the process (SIGBUS); a short read here is one line instead."""
    import numpy as np

    n = t.nbytes or 0
    buf = np.empty(n, dtype=np.uint8)
    view, got = memoryview(buf), 0
    fh.seek(t.offset)
    while got < n:
        step = fh.readinto(view[got:])
        if not step:
            raise _changed(path)
        got += step
    return buf


def _read(path: Path, *, quant: str, on_progress, before: tuple) -> RawGGUF:
    header = parse_header(path)
    check_layout(path, header)
    types = {}
    for t in header.tensors:
        types[t.type_name] = types.get(t.type_name, 0) + 1
    native = set(types) <= NATIVE_TYPES
    digest = file_digest(path)
    if native and quant == "auto":
        raw = _read_with_mx(path, types=types)
        raw.digest = digest
        return raw
    mode = "q8" if quant == "auto" else quant
    if not weight_cache.cache_enabled():
        raw = _convert(path, header, native=native, mode=mode, types=types, on_progress=on_progress)
        raw.digest, raw.cache = digest, "off"
        return raw
    return _read_cached(
        path,
        header,
        native=native,
        mode=mode,
        types=types,
        digest=digest,
        on_progress=on_progress,
        before=before,
    )


def cache_key(*, digest: str, weights: str) -> str:
    """The weight cache key: what decides the converted values (the file, the mode, this
    conversion's version, the MLX and gguf versions, the device that computed them)."""
    import hashlib
    import importlib.metadata as md
    import json

    import mlx.core as mx

    try:
        gguf_version = md.version("gguf")
    except md.PackageNotFoundError:
        gguf_version = "none"
    parts = {
        "digest": digest,
        "weights": weights,
        "conversion": CONVERSION_VERSION,
        "mlx": mx.__version__,
        "gguf": gguf_version,
        "device": str(mx.default_device()),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _read_cached(
    path: Path, header, *, native: bool, mode: str, types: dict, digest: str, on_progress, before
) -> RawGGUF:
    # the whole file's sha256, never the > 2 GiB fingerprint `digest` may be: a tensor
    # changed between head and tail must not find the old file's conversion
    key = cache_key(digest=full_file_digest(path), weights=_mode_name(mode))
    entry, status = weight_cache.lookup(key)
    if entry is not None:
        return RawGGUF(
            tensors=entry.tensors,
            meta=header.meta,
            quantized=entry.quantized,
            types=types,
            weights=_mode_name(mode),
            digest=digest,
            cache="hit",
        )
    raw = _convert(path, header, native=native, mode=mode, types=types, on_progress=on_progress)
    check_unchanged(path, before)  # a mix of two versions never enters the cache
    stored = weight_cache.store(
        key,
        weight_cache.Entry(raw.tensors, raw.quantized),
        source={"file": path.name, "digest": digest, "weights": raw.weights},
    )
    raw.digest = digest
    raw.cache = (
        "unwritable" if stored == "unwritable" else ("rebuilt" if status == "corrupt" else "stored")
    )
    return raw


def _convert(path: Path, header, *, native: bool, mode: str, types: dict, on_progress) -> RawGGUF:
    """Read and convert to `mode` (q8/q4/f16): no cache involved."""
    if not native:
        return _read_with_gguf(path, header, quant=mode, types=types, on_progress=on_progress)
    raw = _read_with_mx(path, types=types)
    raw.meta = header.meta  # the same metadata a cache hit returns
    _requantize(raw, mode)
    return raw


def _read_with_mx(path: Path, *, types) -> RawGGUF:
    import mlx.core as mx

    try:
        tensors, meta = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises plain exceptions for unreadable files
        raise NiahError(
            f"cannot read GGUF {str(path)!r} with mx.load ({exc}): its quant types "
            f"need the gguf package: pip install {GGUF_PACKAGE}"
        ) from None
    quantized = {}
    for name, value in tensors.items():
        if name.endswith(".scales"):
            base = name[: -len(".scales")]
            packed = tensors[f"{base}.weight"].shape[-1]
            bits = packed * 32 // (value.shape[-1] * NATIVE_GROUP_SIZE)
            quantized[base] = (NATIVE_GROUP_SIZE, bits)
    return RawGGUF(
        tensors=tensors, meta=meta, quantized=quantized, types=types or {}, weights="native"
    )


def _requantize(raw: RawGGUF, quant: str) -> None:
    """Turn an mx.load result into the requested mode (dequantize, then quantize again)."""
    import mlx.core as mx

    for base, (group, bits) in list(raw.quantized.items()):
        w = mx.dequantize(
            raw.tensors.pop(f"{base}.weight"),
            raw.tensors.pop(f"{base}.scales"),
            raw.tensors.pop(f"{base}.biases"),
            group_size=group,
            bits=bits,
        )
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


def _gguf_dequantizer(path: Path, types: dict):
    """gguf's numpy dequantize, for the types niah.gguf.dequant does not cover."""
    try:
        from gguf.quants import dequantize
    except ImportError:
        raise NiahError(
            f"GGUF {path.name!r} holds {', '.join(sorted(set(types) - NATIVE_TYPES))} "
            f"tensors, which need the gguf package: pip install {GGUF_PACKAGE}"
        ) from None
    return dequantize


def _dequantize(t, data, *, path: Path, types: dict):
    """One tensor (`data`: its bytes) as a float32 MLX array of its shape: MLX ops where
    niah.gguf.dequant has the type, else gguf's numpy code."""
    import importlib.metadata as md

    import mlx.core as mx
    import numpy as np

    try:
        blocks = t.raw(data, base=t.offset)
        arr = mlx_dequantize(blocks, t.type_name, t.shape)
        if arr is not None:
            return arr
        dequantize = _gguf_dequantizer(path, types)
        from gguf import GGMLQuantizationType

        values = dequantize(blocks, GGMLQuantizationType(t.type_id))
    except (NotImplementedError, KeyError, ValueError) as exc:
        try:
            version = f"gguf {md.version('gguf')}"
        except md.PackageNotFoundError:
            version = "the gguf package"
        raise NiahError(
            f"GGUF tensor {t.name!r} has quant type {t.type_name}, which neither "
            f"mx.load nor {version} can read ({type(exc).__name__}): re-quantize "
            "the file, e.g. to Q8_0 or Q4_K_M with llama-quantize"
        ) from None
    return mx.array(np.ascontiguousarray(values.reshape(t.shape), dtype=np.float32))


def _read_with_gguf(path: Path, header, *, quant: str, types: dict, on_progress=None) -> RawGGUF:
    """Every tensor dequantized from its GGML blocks, weights stored in the `quant` mode."""
    import mlx.core as mx

    raw = RawGGUF(tensors={}, meta=header.meta, types=types, weights=_mode_name(quant))
    total = len(header.tensors)
    with open(path, "rb", buffering=0) as fh:
        for done, t in enumerate(header.tensors, 1):
            data = _tensor_bytes(fh, t, path=path)
            arr = _dequantize(t, data, path=path, types=types)
            mx.eval(arr)
            del data
            if arr.ndim == 2 and t.name.endswith(".weight"):
                _store(raw, t.name, arr, quant)
            else:
                raw.tensors[t.name] = arr
            if on_progress is not None:
                on_progress(done, total, "converting weights")
    return raw
