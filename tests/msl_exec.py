"""Run niah's Metal kernel sources on the CPU: a stand-in for mx.fast.metal_kernel (test helper).

`Executor.metal_kernel(...)` takes the arguments of mx.fast.metal_kernel and returns a callable
taking those of the kernel it builds (inputs, template, grid, threadgroup, output shapes and
dtypes). Each call wraps the body in the signature MLX's metal_kernel writes for it (see
`signature`), compiles header + body as C++ against tests/msl_shim.h (which implements the MSL
the kernels use: threadgroups of lanes with barriers, simd shuffles, simdgroup matrices with
MLX's fragment layout), runs it on the inputs, and returns mx arrays. Outputs start as NaN
bytes, so an element the kernel never writes shows.

Compilation is the slow part: `record()` collects the instantiations a set of calls needs
(returning zeros), `build()` compiles them all in one g++ run into a shared library cached
under the system temp dir by content hash; later calls of a built instantiation run at once.
Inputs reach the kernel as MLX passes them: a row-contiguous copy at a 64-byte aligned address,
except arrays made by `Executor.view` (a strided view into a larger buffer, at its byte offset,
with its element strides), which pass as views unless the kernel was built with
ensure_row_contiguous and the view is not row-contiguous (then MLX copies it). `constant` vs
`device` is written as MLX would but means nothing to C++; function-scope `threadgroup` array
declarations become statics (`threadgroup_statics`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

HERE = Path(__file__).resolve().parent
SHIM = HERE / "msl_shim.h"
COMPILER = shutil.which("g++") or shutil.which("clang++")
MAX_CONSTANT_ARRAY_SIZE = 8  # mlx/backend/metal: smaller inputs are passed as `constant`
ATTRIBUTES = [  # MLX's list, in its order; one is passed when its name occurs in the body
    ("dispatch_quadgroups_per_threadgroup", "uint"),
    ("dispatch_simdgroups_per_threadgroup", "uint"),
    ("dispatch_threads_per_threadgroup", "uint3"),
    ("grid_origin", "uint3"),
    ("grid_size", "uint3"),
    ("quadgroup_index_in_threadgroup", "uint"),
    ("quadgroups_per_threadgroup", "uint"),
    ("simdgroup_index_in_threadgroup", "uint"),
    ("simdgroups_per_threadgroup", "uint"),
    ("thread_execution_width", "uint"),
    ("thread_index_in_quadgroup", "uint"),
    ("thread_index_in_simdgroup", "uint"),
    ("thread_index_in_threadgroup", "uint"),
    ("thread_position_in_grid", "uint3"),
    ("thread_position_in_threadgroup", "uint3"),
    ("threadgroup_position_in_grid", "uint3"),
    ("threadgroups_per_grid", "uint3"),
    ("threads_per_grid", "uint3"),
    ("threads_per_simdgroup", "uint"),
    ("threads_per_threadgroup", "uint3"),
]
SUPPORTED_ATTRS = {
    "simdgroup_index_in_threadgroup",
    "simdgroups_per_threadgroup",
    "thread_index_in_simdgroup",
    "thread_index_in_threadgroup",
    "thread_position_in_grid",
    "thread_position_in_threadgroup",
    "threadgroup_position_in_grid",
    "threadgroups_per_grid",
    "threads_per_grid",
    "threads_per_simdgroup",
    "threads_per_threadgroup",
}
TYPE = {
    "float16": "float16_t",
    "bfloat16": "bfloat16_t",
    "float32": "float",
    "int32": "int32_t",
    "bool": "bool",
    "uint32": "uint32_t",
    "int64": "int64_t",
}
NP = {
    "float16": np.uint16,
    "bfloat16": np.uint16,
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "uint32": np.uint32,
    "int64": np.int64,
}


def _dname(dtype) -> str:
    return str(dtype).split(".")[-1]


@dataclass(frozen=True)
class Spec:
    """One instantiation: what MLX would compile for one call."""

    name: str
    header: str
    source: str
    inputs: tuple  # (name, dtype name, ndim, passed as `constant`)
    outputs: tuple  # (name, dtype name)
    template: tuple  # (name, kind, rendered value)

    @property
    def key(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


_TG_ARRAY = re.compile(
    r"^(\s*(?:alignas\([^)]*\)\s*)?)threadgroup(\s+[A-Za-z_][\w:<>, ]*\s+"
    r"[A-Za-z_]\w*\s*\[)",
    re.M,
)


def threadgroup_statics(source: str) -> str:
    """`[alignas(n)] threadgroup T name[N];` at the start of a line -> a function-scope static,
    storage shared by the lanes of the threadgroup (the shim runs lanes as fibers)."""
    return _TG_ARRAY.sub(r"\1static\2", source)


def signature(spec: Spec, fn: str) -> str:
    """The kernel function MLX's metal_kernel writes around the body (write_signature)."""
    lines = []
    for name, dt, ndim, const in spec.inputs:
        loc = "constant" if const else "device"
        lines.append(f"  const {loc} {TYPE[dt]}{'&' if ndim == 0 else '*'} {name}")
        if ndim > 0:
            if f"{name}_shape" in spec.source:
                lines.append(f"  const constant int* {name}_shape")
            if f"{name}_strides" in spec.source:
                lines.append(f"  const constant int64_t* {name}_strides")
            if f"{name}_ndim" in spec.source:
                lines.append(f"  const constant int& {name}_ndim")
    lines += [f"  device {TYPE[dt]}* {name}" for name, dt in spec.outputs]
    lines += [f"  {t} {a}" for a, t in ATTRIBUTES if a in spec.source]
    tpl = (
        "template <" + ", ".join(f"{kind} {n}" for n, kind, _ in spec.template) + ">\n"
        if spec.template
        else ""
    )
    body = threadgroup_statics(spec.source)
    return f"{tpl}void {fn}(\n" + ",\n".join(lines) + ") {\n" + body + "\n}\n"


def _launcher(spec: Spec, fn: str) -> str:
    """extern "C" entry: buffers, shapes, strides by input index; outputs; grid; threadgroup."""
    args = []
    for i, (name, dt, ndim, _) in enumerate(spec.inputs):
        args.append(f"*({TYPE[dt]}*)in[{i}]" if ndim == 0 else f"({TYPE[dt]}*)in[{i}]")
        if ndim > 0:
            if f"{name}_shape" in spec.source:
                args.append(f"shapes[{i}]")
            if f"{name}_strides" in spec.source:
                args.append(f"strides[{i}]")
            if f"{name}_ndim" in spec.source:
                args.append(f"ndims[{i}]")
    args += [f"({TYPE[dt]}*)out[{i}]" for i, (_, dt) in enumerate(spec.outputs)]
    for a, _ in ATTRIBUTES:
        if a in spec.source:
            if a not in SUPPORTED_ATTRS:
                raise NotImplementedError(f"attribute {a} is not implemented by the executor")
            args.append(f"a.{a}")
    tpl = "<" + ", ".join(v for _, _, v in spec.template) + ">" if spec.template else ""
    return (
        f'extern "C" const char* launch_{fn}(void** in, int** shapes, int64_t** strides, '
        f"int* ndims, void** out, const unsigned* grid, const unsigned* tg) {{\n"
        f"  static std::string err;\n"
        f"  err = mslx::launch(grid, tg, [&](const mslx::Attrs& a) {{ {fn}{tpl}({', '.join(args)}); }});\n"
        f"  return err.c_str();\n}}\n"
    )


def translation_unit(specs: list[Spec]) -> str:
    parts, headers = [], []
    for spec in specs:
        if spec.header not in headers:
            headers.append(spec.header)
            parts.append(spec.header)
        fn = f"k_{spec.key}"
        parts.append(signature(spec, fn))
        parts.append(_launcher(spec, fn))
    return "\n".join(parts)


def compile_library(
    specs: list[Spec], *, cache_dir: Path, flags=("-O1", "-fno-strict-aliasing")
) -> Path:
    """One shared library for these instantiations, cached by the hash of its text."""
    if COMPILER is None:
        raise RuntimeError("no C++ compiler (install g++)")
    inc = cache_dir / "include"
    inc.mkdir(parents=True, exist_ok=True)
    for name in ("metal_stdlib", "metal_simdgroup", "metal_simdgroup_matrix", "metal_math"):
        (inc / name).write_text(f'#include "{SHIM}"\n')
    text = translation_unit(specs)
    digest = hashlib.sha256((text + SHIM.read_text() + " ".join(flags)).encode()).hexdigest()[:20]
    lib = cache_dir / f"msl_{digest}.so"
    if lib.exists():
        return lib
    src = cache_dir / f"msl_{digest}.cpp"
    src.write_text(f'#include "{SHIM}"\n' + text)
    tmp = cache_dir / f"msl_{digest}.{os.getpid()}.so"
    res = subprocess.run(
        [
            COMPILER,
            "-std=c++17",
            "-shared",
            "-fPIC",
            *flags,
            "-w",
            f"-I{inc}",
            str(src),
            "-o",
            str(tmp),
        ],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise CompileError(res.stderr[-6000:])
    tmp.replace(lib)
    return lib


class CompileError(RuntimeError):
    pass


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"niah-msl-exec-{os.getuid()}"


class Executor:
    """mx.fast.metal_kernel, executed on the CPU."""

    def __init__(self, *, cache_dir: Path | None = None, patch=None):
        self.cache_dir = Path(cache_dir or default_cache_dir())
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.patch = patch  # callable(source) -> source, applied to every body (tests)
        self.recording: list[Spec] | None = None
        self.built: dict[str, ctypes.CDLL] = {}
        self.launches = 0
        self.views: dict[int, tuple] = {}  # id(mx array) -> (that array, its numpy view)

    def record(self) -> None:
        self.recording = []

    def build(self, *, jobs: int | None = None) -> None:
        """Compile every recorded instantiation: `jobs` g++ processes at a time, one library
        per process and header."""
        specs, self.recording = self.recording or [], None
        todo = sorted(
            {s.key: s for s in specs if s.key not in self.built}.values(), key=lambda s: s.key
        )
        if not todo:
            return
        jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
        by_header: dict[str, list[Spec]] = {}  # one header per library (a patched header
        for s in todo:  # redefines what the original defines)
            by_header.setdefault(s.header, []).append(s)
        parts = [
            group[i::jobs] for group in by_header.values() for i in range(jobs) if group[i::jobs]
        ]
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            libs = list(
                pool.map(lambda part: compile_library(part, cache_dir=self.cache_dir), parts)
            )
        for part, path in zip(parts, libs):
            lib = ctypes.CDLL(str(path))
            for s in part:
                self.built[s.key] = lib

    def view(self, base: mx.array, make) -> mx.array:
        """make(base) (a slice or transpose, applied to mx and numpy alike) as MLX would hand it
        to a kernel: a strided view into base's buffer (64-byte aligned, as an MLX allocation),
        at its byte offset, with its element strides. Returns the view's values; passing that
        very array to a kernel passes the view."""
        arr = make(base)
        mx.eval(arr)
        self.views[id(arr)] = (arr, make(_aligned_copy(_to_numpy(base))))
        return arr

    def _input(self, a: mx.array, ensure_row_contiguous: bool) -> np.ndarray:
        """What the kernel's pointer and strides describe (MLX's CustomKernel::eval_gpu)."""
        held = self.views.get(id(a))
        if held is None or held[0] is not a:
            return _aligned_copy(_to_numpy(a))
        v = held[1]
        return _aligned_copy(v) if ensure_row_contiguous and not v.flags.c_contiguous else v

    def metal_kernel(
        self,
        *,
        name,
        input_names,
        output_names,
        source,
        header="",
        ensure_row_contiguous=True,
        atomic_outputs=False,
        **_,
    ):
        if atomic_outputs:
            raise NotImplementedError("atomic outputs")
        src = self.patch(source) if self.patch else source
        ex = self

        def kernel(
            *,
            inputs,
            output_shapes,
            output_dtypes,
            grid,
            threadgroup,
            template=(),
            init_value=None,
            verbose=False,
            stream=None,
        ):
            spec = Spec(
                name=name,
                header=header,
                source=src,
                inputs=tuple(
                    (n, _dname(a.dtype), a.ndim, a.size < MAX_CONSTANT_ARRAY_SIZE)
                    for n, a in zip(input_names, inputs)
                ),
                outputs=tuple((n, _dname(d)) for n, d in zip(output_names, output_dtypes)),
                template=tuple(_template_arg(n, v) for n, v in template),
            )
            if ex.recording is not None:
                ex.recording.append(spec)
                return [mx.zeros(s, dtype=d) for s, d in zip(output_shapes, output_dtypes)]
            if spec.key not in ex.built:
                ex.recording = [spec]
                ex.build()
            arrays = [ex._input(a, ensure_row_contiguous) for a in inputs]
            return ex._run(
                spec, arrays, output_shapes, output_dtypes, grid, threadgroup, init_value
            )

        return kernel

    def _run(self, spec, arrays, output_shapes, output_dtypes, grid, threadgroup, init_value):
        lib = self.built[spec.key]
        keep = []
        n_in = len(arrays)
        in_ptrs = (ctypes.c_void_p * n_in)()
        shapes = (ctypes.POINTER(ctypes.c_int) * n_in)()
        strides = (ctypes.POINTER(ctypes.c_int64) * n_in)()
        ndims = (ctypes.c_int * n_in)()
        for i, arr in enumerate(arrays):
            sh = np.ascontiguousarray(arr.shape, dtype=np.int32)
            st = np.ascontiguousarray([s // arr.itemsize for s in arr.strides], dtype=np.int64)
            keep += [arr, sh, st]
            in_ptrs[i] = arr.ctypes.data
            shapes[i] = sh.ctypes.data_as(ctypes.POINTER(ctypes.c_int))
            strides[i] = st.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
            ndims[i] = arr.ndim
        outs = []
        out_ptrs = (ctypes.c_void_p * len(output_shapes))()
        for i, (shape, dt) in enumerate(zip(output_shapes, output_dtypes)):
            o = np.empty(shape, dtype=NP[_dname(dt)])
            if init_value is not None:
                o[...] = _to_numpy(mx.full(shape, init_value, dtype=dt))
            else:
                o.view(np.uint8)[...] = 0xFF  # NaN in every float format: unwritten shows
            outs.append(o)
            out_ptrs[i] = o.ctypes.data
        g = (ctypes.c_uint * 3)(*grid)
        t = (ctypes.c_uint * 3)(*threadgroup)
        fn = getattr(lib, f"launch_k_{spec.key}")
        fn.restype = ctypes.c_char_p
        err = fn(in_ptrs, shapes, strides, ndims, out_ptrs, g, t)
        self.launches += 1
        if err:
            raise RuntimeError(f"{spec.name}: {err.decode()}")
        return [_from_numpy(o, dt) for o, dt in zip(outs, output_dtypes)]


def _template_arg(name, value):
    if isinstance(value, bool):
        return (name, "bool", "1" if value else "0")  # MLX writes bools through an ostream
    if isinstance(value, int):
        return (name, "int", str(value))
    return (name, "typename", TYPE[_dname(value)])


def _aligned_copy(arr: np.ndarray, align: int = 64) -> np.ndarray:
    """A C-contiguous copy starting on an `align`-byte boundary (MLX buffers are page- or
    heap-aligned; numpy only promises 16)."""
    raw = np.empty(arr.nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    out = raw[start : start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def _to_numpy(a: mx.array) -> np.ndarray:
    name = _dname(a.dtype)
    if name in ("float16", "bfloat16"):
        return np.ascontiguousarray(np.array(a.view(mx.uint16)))
    return np.ascontiguousarray(np.array(a))


def _from_numpy(o: np.ndarray, dtype) -> mx.array:
    name = _dname(dtype)
    if name in ("float16", "bfloat16"):
        return mx.array(o).view(dtype)
    return mx.array(o)
