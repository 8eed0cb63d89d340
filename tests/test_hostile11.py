"""Hostile review of niah.kernel_fill and niah.identity.mlx_env (the kernel fill and MLX's
batching settings): what a model, the cache folder or the environment can do to them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.nn as nn
import pytest

from niah import kernel_fill
from niah.kernel_fill import KernelSpec, fill, kernel_specs, run_spec
from niah.user_cache import KERNEL_FILL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NIAH_CACHE_DIR", str(tmp_path / "niah"))
    return tmp_path / "niah"


class _Layers(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers


@pytest.mark.parametrize(
    "bits,group,mode",
    [(3, 64, "affine"), (5, 64, "affine"), (6, 64, "affine"), (4, 32, "mxfp4"), (4, 16, "nvfp4")],
)
def test_a_child_can_call_the_kernel_of_every_bits_and_mode(bits, group, mode):
    # 6-bit models are common; MLX packs k * bits / 32 words per row, not k // (32 // bits),
    # and the floating-point modes keep uint8 scales and no biases
    layer = nn.QuantizedLinear(2048, 256, bias=False, group_size=group, bits=bits, mode=mode)
    (spec,) = [s for s in kernel_specs(_Layers([layer])) if s.kind == "qmm"]
    run_spec(spec)


def test_embeddings_not_named_embed_tokens_get_their_gathers():
    class Gpt2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(512, 128)

    families = [s.family() for s in kernel_specs(Gpt2())]
    assert families == ["gather-float32-int32", "gather-float32-uint32"]


def test_a_child_that_cannot_start_is_a_failed_family_not_a_crashed_run(
    cache_dir, tmp_path, monkeypatch
):
    def refuse(spec):
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork at its limit

    monkeypatch.setattr(kernel_fill, "_start", refuse)
    result = fill([KernelSpec("gather", "float32")], folder=tmp_path)
    assert (result.started, result.failed) == (1, 1)


def test_a_deeply_nested_record_is_ignored(cache_dir, tmp_path):
    cache_dir.mkdir(parents=True)
    (cache_dir / KERNEL_FILL).write_text("[" * 200_000)
    assert fill([KernelSpec("gather", "float32")], folder=tmp_path).started == 1


def test_a_record_that_cannot_be_replaced_leaves_no_temporary_file(cache_dir, tmp_path):
    (cache_dir / KERNEL_FILL).mkdir(parents=True)  # a folder where the record goes
    for _ in range(2):
        fill([KernelSpec("gather", "float32")], folder=tmp_path / "ptx")
    assert sorted(os.listdir(cache_dir)) == [KERNEL_FILL]


SAVER = """
import sys
from niah import kernel_fill
for j in range(40):
    kernel_fill._save_marker("k", [f"{sys.argv[1]}-{j}"], set())
"""


def test_processes_recording_at_once_keep_each_others_families(cache_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(i)], env=env) for i in range(4)]
    assert [p.wait() for p in savers] == [0] * 4
    assert len(json.loads((cache_dir / KERNEL_FILL).read_text())["k"]) == 160


def test_families_whose_files_were_there_already_are_filled_again_once_those_go(
    cache_dir, tmp_path
):
    # kernels MLX compiled before this niah (or another process) leave no new file: the
    # record must still notice the folder being cleared
    folder = tmp_path / "ptx"
    folder.mkdir()
    (folder / "gather_float32.ptx").write_text("compiled by an earlier run")
    spec = KernelSpec("gather", "float32")
    assert fill([spec], folder=folder).started == 1
    assert fill([spec], folder=folder).started == 0
    (folder / "gather_float32.ptx").unlink()  # a reboot emptied /tmp
    assert fill([spec], folder=folder).started == 1


@pytest.mark.parametrize("name", ["MLX_MAX_OPS_PER_BUFFER", "MLX_USE_CUDA_GRAPHS"])
def test_a_batching_variable_set_empty_is_recorded(name):
    # MLX reads these with atoi: set but empty is 0 (a commit per op; CUDA graphs off),
    # not MLX's default, so such a run must not pool with one made without it
    from niah.identity import mlx_env

    assert mlx_env({name: ""}) == f"{name}="


def test_resume_under_other_batching_names_the_values_that_differ(tmp_path, monkeypatch):
    # the refusal cut every value to 16 characters: "mlx_env MLX_MAX_OPS_PER_ ->
    # MLX_MAX_OPS_PER_" named no value at all
    from conftest import invoke

    out = tmp_path / "out"
    monkeypatch.setenv("MLX_MAX_OPS_PER_BUFFER", "10")
    small = ["run", "-c", "256", "-d", "0.5", "--max-tokens", "8", "-o", out, "-q"]
    assert invoke(small).exit_code == 0
    (folder,) = out.iterdir()
    monkeypatch.setenv("MLX_MAX_OPS_PER_BUFFER", "20")
    result = invoke(["run", "--resume", folder, "-q"])
    assert result.exit_code == 2
    assert result.stderr == (  # both values, and the one fix: the environment it was made under
        f"error: {str(folder)!r} was made under MLX_MAX_OPS_PER_BUFFER=10, but this process has "
        "MLX_MAX_OPS_PER_BUFFER=20: resume under the environment the folder was made under, "
        "or start a new run without --resume into another --out\n"
    )
    monkeypatch.delenv("MLX_MAX_OPS_PER_BUFFER")  # exported by hand, then forgotten
    result = invoke(["run", "--resume", folder, "-q"])
    assert result.exit_code == 2 and result.stderr == (
        f"error: {str(folder)!r} was made under MLX_MAX_OPS_PER_BUFFER=10, but this process has "
        "none of MLX's batching variables set: resume under the environment the folder was "
        "made under, or start a new run without --resume into another --out\n"
    )
