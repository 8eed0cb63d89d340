"""The GGUF header: metadata, the tensor table, and whether the table agrees with the file.

`parse_header` reads the metadata (as `mx.load` returns it: str, list[str], numpy values) and
the tensor table without touching tensor data, fast for 256K-entry vocabularies.
`check_layout` then holds every tensor's byte size (from its type and shape) against where the
next tensor starts and where the file ends, so a damaged or truncated file is one line naming
the tensor instead of garbage weights or a reshape error. `scalar` reads one metadata value.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import NiahError

DEFAULT_ALIGNMENT = 32  # GGUF's data alignment when general.alignment is absent

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY = {
    0: "u1",
    1: "i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_STRING, _ARRAY = 8, 9
# GGML type id -> (name, elements per block, bytes per block); the types llama.cpp writes.
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
}


def scalar(meta: dict, key: str, default=None):
    """One metadata value as a Python scalar (numpy values unwrapped), or `default`."""
    v = meta.get(key, default)
    if hasattr(v, "item"):
        v = v.item()
    return v


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dims: tuple[int, ...]  # GGUF order: fastest-varying first
    type_id: int
    offset: int  # absolute byte offset in the file

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.type_id, (f"type {self.type_id}",))[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.dims))

    @property
    def nbytes(self) -> int | None:
        """Bytes the type and shape take (None for an unknown type)."""
        if self.type_id not in GGML_TYPES:
            return None
        _, block, size = GGML_TYPES[self.type_id]
        return math.prod(self.dims) // block * size

    def raw(self, data, *, base: int = 0):
        """The tensor's bytes as the gguf package's dequantize expects them, from `data`
        holding the file's bytes from offset `base` on."""
        if self.type_id not in GGML_TYPES:
            raise KeyError(self.type_id)
        _, block, size = GGML_TYPES[self.type_id]
        rows = math.prod(self.dims[1:])
        nbytes = self.dims[0] // block * size
        start = self.offset - base
        return data[start : start + rows * nbytes].reshape(rows, nbytes)


@dataclass(frozen=True)
class Header:
    meta: dict
    tensors: list
    alignment: int = DEFAULT_ALIGNMENT


class _Reader:
    """Sequential reads over a file opened for its header, growing the buffer on demand."""

    def __init__(self, f, path):
        self.f, self.path, self.buf, self.pos = f, path, f.read(1 << 20), 0
        self.size = os.fstat(f.fileno()).st_size

    def need(self, n: int) -> None:
        # a length or count past the end is a damaged file: never ask the OS for that many bytes
        if self.pos + n > self.size:
            raise NiahError(f"GGUF {str(self.path)!r} is truncated: download it again")
        while self.pos + n > len(self.buf):
            more = self.f.read(max(1 << 20, n))
            if not more:
                raise NiahError(f"GGUF {str(self.path)!r} is truncated: download it again")
            self.buf += more

    def unpack(self, fmt: str):
        n = struct.calcsize(fmt)
        self.need(n)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self) -> str:
        n = self.unpack("<Q")
        self.need(n)
        s = self.buf[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def strings(self, count: int) -> list[str]:
        """`count` length-prefixed strings in a row (a vocabulary: the hot loop of a header)."""
        out, length = [], struct.Struct("<Q").unpack_from
        buf, pos = self.buf, self.pos
        for _ in range(count):
            if pos + 8 > len(buf):
                self.pos = pos
                self.need(8)
                buf = self.buf
            (n,) = length(buf, pos)
            pos += 8
            if pos + n > len(buf):
                self.pos = pos
                self.need(n)
                buf = self.buf
            out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out

    def value(self, vtype: int):
        import numpy as np

        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array(self.unpack("<I"), self.unpack("<Q"))
        if vtype not in _SCALARS:
            raise NiahError(
                f"GGUF {str(self.path)!r} has an unreadable metadata value type {vtype}"
            )
        return np.array(self.unpack(_SCALARS[vtype]), dtype=_NUMPY[vtype])

    def array(self, etype: int, count: int):
        import numpy as np

        if etype == _STRING:
            return self.strings(count)
        if etype not in _NUMPY:
            raise NiahError(
                f"GGUF {str(self.path)!r} has an unreadable metadata array type {etype}"
            )
        n = np.dtype(_NUMPY[etype]).itemsize * count
        self.need(n)
        arr = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=count, offset=self.pos).copy()
        self.pos += n
        return arr


def parse_header(path: str | Path) -> Header:
    """Metadata (as mx.load returns it: str, list[str], numpy values) and the tensor table."""
    with open(path, "rb") as f:
        r = _Reader(f, path)
        r.need(24)
        if r.buf[:4] != b"GGUF":
            raise NiahError(f"{str(path)!r} is not a GGUF file (no GGUF magic): give a .gguf file")
        r.pos = 4
        version, n_tensors, n_kv = r.unpack("<I"), r.unpack("<Q"), r.unpack("<Q")
        if version < 2:
            raise NiahError(
                f"GGUF {str(path)!r} is version {version}: convert it with a current llama.cpp"
            )
        meta = {}
        for _ in range(n_kv):
            key = r.string()
            meta[key] = r.value(r.unpack("<I"))
        entries = []
        for _ in range(n_tensors):
            name = r.string()
            dims = tuple(r.unpack("<Q") for _ in range(r.unpack("<I")))
            entries.append((name, dims, r.unpack("<I"), r.unpack("<Q")))
    align = int(meta.get("general.alignment", DEFAULT_ALIGNMENT))
    start = (r.pos + align - 1) // align * align
    return Header(
        meta=meta,
        tensors=[TensorEntry(n, d, t, start + o) for n, d, t, o in entries],
        alignment=align,
    )


def check_layout(path: str | Path, header: Header) -> None:
    """Refuse a tensor table that disagrees with the file: a row its type's blocks do not
    divide, a tensor running into the next one or leaving more than alignment padding before
    it (its type field was changed), or data past the end of the file (truncated).
    Tensors of unknown types are left to the readers, which name them."""
    name = Path(path).name
    known = sorted((t for t in header.tensors if t.nbytes is not None), key=lambda t: t.offset)
    for t in known:
        _, block, _ = GGML_TYPES[t.type_id]
        if not t.dims or t.dims[0] % block:
            raise NiahError(
                f"GGUF {name!r}: tensor {t.name!r} is {t.type_name}, whose "
                f"{block}-value blocks do not divide its shape {_shape(t)}: the "
                "type field does not match the data; get an intact file"
            )
    for t, nxt in zip(known, known[1:]):
        room = nxt.offset - t.offset
        if not t.nbytes <= room < t.nbytes + header.alignment:
            raise NiahError(
                f"GGUF {name!r}: tensor {t.name!r} ({t.type_name}, shape "
                f"{_shape(t)}) needs {t.nbytes} bytes but has {room} before the "
                "next tensor: the type field does not match the data; get an "
                "intact file"
            )
    size = Path(path).stat().st_size
    if known and known[-1].offset + known[-1].nbytes > size:
        last = next(t for t in known if t.offset + t.nbytes > size)
        raise NiahError(
            f"GGUF {name!r} is truncated: tensor {last.name!r} ends past the "
            f"file's {size} bytes; download it again"
        )


def _shape(t: TensorEntry) -> str:
    return "x".join(str(d) for d in t.shape)
