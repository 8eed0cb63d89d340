"""Type-check the Metal kernel sources on any machine (no Apple GPU here).

Each Metal body is wrapped in the signature that mx.fast.metal_kernel generates for it (inputs,
shapes/strides where the body uses them, outputs, thread attributes, template parameters),
instantiated for every tile/flag combination niah dispatches, and compiled with
`-fsyntax-only` against tests/msl_shim.h (threadgroup arrays rewritten as tests/msl_exec.py does),
so a typo, an undeclared name or a type error in the
Metal code fails CI, in both builds of the forward kernel (NIAH_VECTOR_LOADS 1 and 0); the
element-wise build (0) is checked to hold none of the vector-load code after preprocessing.
The CUDA sources compile and run on the H100 (tests/test_kernels.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from msl_exec import threadgroup_statics

from niah.kernels import flash

KDIR = Path(flash.__file__).resolve().parent
SHIM = Path(__file__).resolve().parent / "msl_shim.h"
ATTRS = {
    "simdgroup_index_in_threadgroup": "uint",
    "thread_index_in_simdgroup": "uint",
    "thread_index_in_threadgroup": "uint",
    "thread_position_in_grid": "uint3",
    "threadgroup_position_in_grid": "uint3",
    "threadgroups_per_grid": "uint3",
}
COMPILER = shutil.which("clang++") or shutil.which("g++")


def signature(
    name: str,
    source: str,
    inputs: list[tuple[str, str, int]],
    outputs: list[tuple[str, str]],
    template: list[tuple[str, str]],
) -> str:
    """What mx.fast.metal_kernel writes around a body (mlx/backend/common/metal_kernel.cpp)."""
    params = []
    for arg, dtype, ndim in inputs:
        params.append(f"const device {dtype}* {arg}")
        if ndim and f"{arg}_shape" in source:
            params.append(f"const constant int* {arg}_shape")
        if ndim and f"{arg}_strides" in source:
            params.append(f"const constant int64_t* {arg}_strides")
    params += [f"device {dtype}* {arg}" for arg, dtype in outputs]
    params += [f"{t} {a}" for a, t in ATTRS.items() if a in source]
    tpl = "template <" + ", ".join(f"{kind} {n}" for n, kind in template) + ">\n"
    body = threadgroup_statics(source)
    return f"{tpl}void {name}(\n  " + ",\n  ".join(params) + ") {\n" + body + "\n}\n"


def fwd_unit(
    tile: flash.Tile, D: int, dtype: str, flags: flash.Flags, *, out32: bool = False
) -> str:
    src = (KDIR / "flash_fwd.metal").read_text()
    mask_t = "bool" if flags.mask == 1 else dtype
    out_t = "float" if flags.split or out32 else dtype
    body = signature(
        "fwd",
        src,
        [
            ("q", dtype, 4),
            ("k", dtype, 4),
            ("v", dtype, 4),
            ("params", "int", 1),
            ("mask", mask_t, 4),
            ("sinks", dtype, 1),
        ],
        [("out", out_t), ("lse", "float")],
        [
            (n, k)
            for n, k in [
                ("T", "typename"),
                ("D", "int"),
                ("MW", "int"),
                ("MT", "int"),
                ("BC", "int"),
                ("CAUSAL", "bool"),
                ("MASK", "int"),
                ("SINKS", "bool"),
                ("SPLIT", "bool"),
            ]
        ],
    )
    args = (
        f"{dtype}, {D}, {tile.mw}, {tile.mt}, {tile.bc}, {str(flags.causal).lower()}, "
        f"{flags.mask}, {str(flags.sinks).lower()}, {str(flags.split).lower()}"
    )
    return body + f"auto* instance_{abs(hash(args))} = &fwd<{args}>;\n"


def combine_unit(D: int, dtype: str, sinks: bool, *, name: str = "combine") -> str:
    src = (KDIR / "flash_combine.metal").read_text()
    body = signature(
        name,
        src,
        [("opart", "float", 5), ("lpart", "float", 2), ("sinks", dtype, 1)],
        [("out", dtype), ("lse", "float")],
        [("O", "typename"), ("D", "int"), ("SINKS", "bool")],
    )
    return body + f"auto* {name}_instance = &{name}<{dtype}, {D}, {str(sinks).lower()}>;\n"


def compile_unit(
    tmp_path: Path, text: str, *, vector_loads: bool = True
) -> subprocess.CompletedProcess:
    header = flash._metal_header(vector_loads=vector_loads)  # what flash.py hands MLX
    header = re.sub(r"#include <metal_\w+>\n", "", header)
    unit = tmp_path / "unit.cpp"
    unit.write_text(f'#include "{SHIM}"\n' + header + text)
    return subprocess.run(
        [COMPILER, "-std=c++17", "-fsyntax-only", "-Wno-attributes", str(unit)],
        capture_output=True,
        text=True,
    )


def metal_tiles():
    out = set()
    for D in flash.SUPPORTED_HEAD_DIMS:
        for rows in (4, 64, 4096):
            out.add((flash.choose_tile(rows=rows, D=D, backend_name="metal"), D))
    return sorted(out, key=str)


@pytest.mark.skipif(COMPILER is None, reason="needs clang++ or g++")
@pytest.mark.parametrize("vector_loads", [True, False], ids=["vec", "scalar"])
def test_metal_forward_sources_type_check(tmp_path, vector_loads):
    units = []
    for tile, D in metal_tiles():
        for dtype in ("half", "bfloat16_t"):
            for flags in (
                flash.Flags(True, 0, False, False),
                flash.Flags(False, 1, True, True),
                flash.Flags(False, 2, False, False),
                flash.Flags(True, 0, True, True),
            ):
                units.append(
                    fwd_unit(tile, D, dtype, flags, out32=flags.mask == 2)
                    .replace("void fwd(", f"void fwd_{len(units)}(")
                    .replace("&fwd<", f"&fwd_{len(units)}<")
                )
    res = compile_unit(tmp_path, "\n".join(units), vector_loads=vector_loads)
    assert res.returncode == 0, res.stderr[-4000:]


VECTOR_CODE = (
    "alignas",
    "reinterpret_cast",
    "vector_ok",
    "load16",
    "store16",
    "uint4",
    "VEC",
    "CPR",
    "q_vec",
    "k_vec",
)


@pytest.mark.skipif(COMPILER is None, reason="needs clang++ or g++")
@pytest.mark.parametrize("vector_loads", [True, False], ids=["vec", "scalar"])
def test_element_wise_build_holds_no_vector_code(vector_loads):
    """After preprocessing, the header and forward body flash.py builds at NIAH_VECTOR_LOADS 0
    hold none of the vector path (the pointer cast to an integer, alignas tiles, uint4 chunks);
    at 1 they hold all of it."""
    text = flash._metal_header(vector_loads=vector_loads) + (KDIR / "flash_fwd.metal").read_text()
    text = re.sub(r"#include <metal_\w+>\n", "", text)
    res = subprocess.run(
        [COMPILER, "-E", "-P", "-x", "c++", "-"], input=text, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    found = {name for name in VECTOR_CODE if re.search(rf"\b{name}\b", res.stdout)}
    assert found == (set(VECTOR_CODE) if vector_loads else set()), found


@pytest.mark.skipif(COMPILER is None, reason="needs clang++ or g++")
def test_metal_combine_source_type_checks(tmp_path):
    res = compile_unit(
        tmp_path,
        combine_unit(128, "bfloat16_t", True) + combine_unit(64, "float", False, name="combine32"),
    )
    assert res.returncode == 0, res.stderr[-4000:]


@pytest.mark.skipif(COMPILER is None, reason="needs clang++ or g++")
def test_type_check_catches_a_broken_metal_source(tmp_path):
    tile, D = metal_tiles()[0]
    unit = fwd_unit(tile, D, "half", flash.Flags(True, 0, False, False))
    res = compile_unit(tmp_path, unit.replace("frag_row_max(mx_)", "frag_row_maxx(mx_)"))
    assert res.returncode != 0 and "frag_row_maxx" in res.stderr


def test_metal_tiles_fit_32k_threadgroup_memory():
    for tile, D in metal_tiles():
        lds = D + 8
        assert 2 * (tile.rows + 2 * tile.bc) * lds <= 32768, (tile, D)
