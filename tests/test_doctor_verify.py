"""niah doctor prints every section and what the GPU is; niah sdpa verify passes, and fails on a
broken route. Expected output follows the backend the suite runs on (CPU, CUDA or Metal)."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke

from niah.backend import apple_family, backend, describe_gpu

BACKEND = backend()


def test_doctor_prints_every_section():
    result = invoke(["doctor", "--model", "default", "--context", "4k"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for section in ("[MLX]", "[BLAS]", "[mlx-lm]", "[embedded model]", "[planned run]"):
        assert section in out
    for field in (
        "version: ",
        "backend: ",
        "recommended working set: ",
        "metal available: ",
        "cuda available: ",
        "in use: ",
        "SmolLM2-135M-Instruct GGUF: /",
        "context: 4K = 4096 tokens",
        "estimated peak: ",
        "-> fits",
        "sdpa route (auto): prefill step stock, decode stock",
        "estimated time of one trial: about ",
        "  CUDA kernels: ",
    ):
        assert field in out, field
    if BACKEND == "cpu" and sys.platform.startswith("linux"):
        assert "(fast)" in out  # OpenBLAS is preloaded in the test process
        assert "  gpu: none (MLX runs on the CPU)" in out.splitlines()
        assert "  CUDA kernels: not used on this backend (cpu)" in out.splitlines()
    else:
        assert "not used on this backend" in out
        assert "  gpu architecture: " in out


def test_doctor_beyond_trained_and_bad_context():
    result = invoke(["doctor", "--model", "default", "--context", "128k"])
    assert result.exit_code == 0
    assert "beyond trained length: runs marked; --refuse-beyond-trained refuses it" in result.stdout
    route = "stock" if BACKEND == "cuda" else "kv-chunks"  # CUDA: cuDNN at qL 2048 and decode
    assert f"sdpa route (auto): prefill step {route}, decode {route}" in result.stdout
    bad = invoke(["doctor", "--model", "default", "--context", "12q"])
    assert (
        bad.exit_code == 2
        and bad.stderr
        == "error: bad context '12q': use a positive token count like 8000, 4k or 1m\n"
    )


def test_sdpa_verify_quick_passes():
    result = invoke(["sdpa", "verify", "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"niah sdpa verify on {BACKEND}")
    n = int(re.fullmatch(r"(\d+) checks: all PASS", lines[-1]).group(1))
    assert sum(line.endswith("PASS") for line in lines[2:-1]) == n
    kv_rows = [line for line in lines if " kv-chunks/" in line]
    assert len(kv_rows) == 42  # 14 cases x 3 dtypes, each labelled by what its chunks ran
    if BACKEND == "cpu":
        assert n == 84 and all(" kv-chunks/reference " in line for line in kv_rows)


def test_sdpa_verify_fails_on_a_broken_route(monkeypatch):
    from niah.sdpa import dispatch

    real = dispatch.kv_chunks

    def broken(*args, **kwargs):
        out, lse = real(*args, **kwargs)
        return out + 0.1, lse  # an error of 0.1: above every tolerance

    monkeypatch.setattr(dispatch, "kv_chunks", broken)
    result = invoke(["sdpa", "verify", "--quick"], catch_exceptions=False)
    assert result.exit_code == 1
    assert re.fullmatch(r"\d+ checks: FAILURES above", result.stdout.splitlines()[-1])
    fails = [line for line in result.stdout.splitlines() if line.endswith("FAIL")]
    assert len(fails) == 42 and all("kv-chunks" in line for line in fails)


@pytest.mark.parametrize(
    "name,arch,family,paravirtual,valid",
    [
        ("Apple M1", "applegpu_g13g", 7, False, True),
        ("Apple M2 Max", "applegpu_g14s", 8, False, True),
        ("Apple M3 Pro", "applegpu_g15s", 9, False, True),
        ("Apple M4", "applegpu_g16p", 9, False, True),
        ("Apple Paravirtual device", "applegpu_g13g", 7, True, False),
        ("Apple Paravirtual device", "", None, True, False),
        ("Apple A13 GPU", "applegpu_g12p", None, False, False),
    ],
)
def test_gpu_family_and_paravirtual(name, arch, family, paravirtual, valid):
    from niah.doctor import _gpu_lines

    g = describe_gpu(info={"device_name": name, "architecture": arch}, backend_name="metal")
    assert (g.family, g.paravirtual, g.can_validate_kernels()) == (family, paravirtual, valid)
    lines = _gpu_lines(g)
    assert lines[0] == f"  gpu architecture: {arch or '?'}, family {g.family_label()}"
    if paravirtual:
        assert lines[1:] == [
            "  paravirtual GPU (a virtual machine): hardware validation is not meaningful here"
        ]
    elif not valid:
        assert "need Apple7 or newer" in lines[1]
    else:
        assert lines[1:] == []


def test_gpu_description_on_cpu_and_cuda():
    assert describe_gpu(info={"device_name": "x"}, backend_name="cpu").name == ""
    g = describe_gpu(
        info={"device_name": "NVIDIA H100", "architecture": "sm_90"}, backend_name="cuda"
    )
    assert (g.family, g.paravirtual, g.can_validate_kernels(), g.family_label()) == (
        None,
        False,
        True,
        "-",
    )
    assert apple_family("applegpu_g99x") == 9 and apple_family("sm_90") is None


def test_verify_error_refuses_an_empty_comparison():
    """A check with nothing to compare cannot fail: it must raise, not report error 0."""
    import mlx.core as mx

    from niah.verify import _err

    assert _err(mx.ones((2, 3)), np.zeros((2, 3))) == 1.0
    with pytest.raises(ValueError, match="nothing to compare"):
        _err(mx.ones((2, 3)), np.zeros((2, 3)), rows_ok=np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="nothing to compare"):
        _err(mx.ones((0, 3)), np.zeros((0, 3)))


def test_memory_estimate_caps_the_step_and_its_parts_add_up():
    """A 256-token prompt with a huge prefill step fits; the reason lists every part and the
    printed parts sum to the printed total (issue 20)."""
    from niah.model import ModelInfo
    from niah.preflight import estimate

    info = ModelInfo(
        name="m",
        source="gguf",
        path="m",
        trained_context=8192,
        n_layers=30,
        n_kv_heads=3,
        head_dim=64,
        n_heads=9,
        weight_bytes=512 * 1024**2,
    )
    est = estimate(
        info, context=256, route="stock", prefill_step=1_000_000_000, working_set=8 * 1024**3
    )
    assert est.fits and est == estimate(
        info, context=256, route="stock", prefill_step=256, working_set=8 * 1024**3
    )
    for ws, step in ((8 * 1024**3, 256), (64 * 1024**2, 2048)):
        reason = estimate(
            info, context=300_000, route="kv-chunks", prefill_step=step, working_set=ws
        ).reason()
        m = re.fullmatch(
            r"needs about ([\d.]+) GiB \(weights ([\d.]+) \+ KV ([\d.]+) \+ "
            r"attention ([\d.]+) \+ activations ([\d.]+)\) of a [\d.]+ GiB "
            r"working set",
            reason,
        )
        assert m, reason
        total, *parts = (round(float(x) * 10) for x in m.groups())
        assert sum(parts) == total, reason


def test_kv_bytes_refuses_a_zero_group_size():
    from niah.errors import NiahError
    from niah.model import ModelInfo
    from niah.preflight import kv_bytes

    info = ModelInfo(
        name="m",
        source="gguf",
        path="m",
        trained_context=None,
        n_layers=2,
        n_kv_heads=1,
        head_dim=64,
        n_heads=2,
        weight_bytes=1,
    )
    assert (
        kv_bytes(info, tokens=64, kv_bits=4, kv_group_size=64)
        == 2 * 2 * 64 * 64 // 2 + 2 * 2 * 64 * 4
    )
    with pytest.raises(NiahError, match="--kv-group-size 0 must be positive"):
        kv_bytes(info, tokens=64, kv_bits=4, kv_group_size=0)


def test_time_estimate_scales_with_the_context_squared():
    from niah.preflight import Throughput, estimate_seconds

    tp = Throughput(token_s=1e-3, pair_s=1e-8, decode_s=0.01, basis="given")
    short = estimate_seconds(context=1000, max_tokens=0, throughput=tp)
    assert short.prefill_s == pytest.approx(1.0 + 1e-8 * 1000 * 1001 / 2)
    long = estimate_seconds(context=128 * 1024, max_tokens=32, throughput=tp)
    assert long.prefill_s > 80 and long.decode_s == pytest.approx(
        32 * (0.01 + 1e-8 * (128 * 1024 + 16))
    )
    assert estimate_seconds(context=1000, reused=999, max_tokens=0, throughput=tp).prefill_s < 0.01
    assert long.describe().startswith("about 3 min 37 s") and "given" in long.describe()


def test_compute_units_come_from_the_device_when_it_says(monkeypatch):
    """The fused kernel's split sizing reads the GPU's SM count instead of assuming an H100."""
    import niah.backend as backend_mod
    from niah.kernels import flash

    said = backend_mod.compute_units("cuda", read=lambda: 78)
    assert (said.count, said.source) == (78, "device") and "from the device" in said.label()
    fallback = backend_mod.compute_units("cuda", read=lambda: None)
    assert (fallback.count, fallback.source) == (
        backend_mod.DEFAULT_COMPUTE_UNITS["cuda"],
        "default",
    )
    assert "does not say" in fallback.label()
    assert backend_mod.compute_units("metal").source == "default"
    real = backend_mod.compute_units
    tile = flash.choose_tile(rows=8, D=128)
    splits = {}
    for n in (16, 264):
        monkeypatch.setattr(
            backend_mod, "compute_units", lambda name, n=n: real(name, read=lambda: n)
        )
        splits[n] = flash.choose_splits(blocks=8, kL=1 << 20, tile=tile, D=128)
    assert splits[264] > splits[16]  # more SMs: more key splits to fill them


def test_sdpa_bench_runs_from_the_package(monkeypatch, tmp_path):
    """`niah sdpa bench` runs packaged code (no benchmarks/ folder needed, no sys.argv games):
    a tiny shape set on the command's own code path prints the table."""
    from niah.sdpa import bench

    tiny = bench.ShapeSet(
        Hq=2,
        Hkv=1,
        D=16,
        max_chunk=64,
        shapes=(bench.Shape("decode", 1, 200, False), bench.Shape("prefill", 8, 150, True)),
    )
    monkeypatch.setattr(bench, "QUICK", tiny)
    monkeypatch.setattr(bench, "FULL", tiny)
    monkeypatch.chdir(tmp_path)
    argv = list(sys.argv)
    result = invoke(["sdpa", "bench", "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sys.argv == argv
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"# niah sdpa bench on {BACKEND}") and "chunk 64" in lines[0]
    rows = [line for line in lines[3:] if line.startswith("| ")]
    labels = [r.split(" | ")[3] for r in rows]
    assert labels[0::3] == ["stock", "stock"] and labels[1::3] == ["q-split", "q-split"]
    if BACKEND == "cpu":
        assert labels[2::3] == ["kv-chunks/reference"] * 2
    assert all("failed" not in r for r in rows) and len(rows) == 6


def test_mlx_kernel_cache_is_where_mlx_cuda_keeps_compiled_kernels(tmp_path):
    """The folder MLX's CUDA backend compiles into (jit_module.cpp): MLX_PTX_CACHE_DIR, else
    <temp dir>/mlx/<version>/ptx with the temp dir found as C++ finds it."""
    import mlx.core as mx

    from niah.backend import mlx_kernel_cache

    assert mlx_kernel_cache(environ={"MLX_PTX_CACHE_DIR": "/x/ptx", "TMPDIR": "/t"}) == Path(
        "/x/ptx"
    )
    assert mlx_kernel_cache(environ={"TMP": "/t2", "TEMP": "/t3"}) == Path(
        f"/t2/mlx/{mx.__version__}/ptx"
    )
    assert mlx_kernel_cache(environ={}) == Path(f"/tmp/mlx/{mx.__version__}/ptx")


def test_cold_kernel_cache_note_only_on_cuda_with_nothing_compiled(tmp_path):
    """A machine's first CUDA run compiles MLX's kernels (minutes, docs/measured.md): say so
    then, and only then (not on the CPU or Metal, not once a compiled module is there)."""
    from niah.backend import cold_kernel_cache_note

    folder = tmp_path / "ptx"
    note = cold_kernel_cache_note("cuda", folder=folder)  # missing folder: cold
    assert note == (
        f"MLX compiles its CUDA kernels for this model on first use (none in {folder} yet): "
        "the first model call may take minutes; later runs on this machine reuse them"
    )
    folder.mkdir()
    assert cold_kernel_cache_note("cuda", folder=folder) == note  # empty folder: cold
    (folder / "gather_float16_int32_1.ptx").write_text("")
    assert cold_kernel_cache_note("cuda", folder=folder) is None
    assert cold_kernel_cache_note("cpu", folder=tmp_path / "none") is None
    assert cold_kernel_cache_note("metal", folder=tmp_path / "none") is None


def test_quantized_cache_on_cuda_is_estimated_as_dequantized_attention():
    """On CUDA a --kv-bits trial attends over dequantized K/V (niah.sdpa.quantized):
    fused attention, plus one layer's dequantized K and V per layer alive; elsewhere mlx-lm's
    quantized attention holds unfused scores."""
    from niah.model import ModelInfo
    from niah.preflight import UNFUSED_SCORE_BYTES, estimate

    info = ModelInfo(
        name="m",
        source="gguf",
        path="m",
        trained_context=32768,
        n_layers=28,
        n_kv_heads=2,
        head_dim=128,
        n_heads=12,
        weight_bytes=1024**3,
    )
    kw = dict(context=32768, route="stock", prefill_step=2048, kv_bits=8, working_set=1 << 40)
    cuda = estimate(info, backend="cuda", **kw)
    assert cuda.attention == 2 * 32768 * 2 * 128 * 2 * 28  # float16 K and V, 28 layers alive
    assert estimate(info, backend="cuda", **{**kw, "kv_bits": None}).attention == 0
    cpu = estimate(info, backend="cpu", **kw)
    assert cpu.attention == UNFUSED_SCORE_BYTES * 12 * 2048 * 32768  # a full block
