"""niah.kernel_fill: which kernel families a model needs, the child processes that compile them
(real processes calling real MLX ops; on the CPU they compile nothing but run the same code) and
the record that lets a later run skip them while their files are still there."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import pytest

from niah import kernel_fill
from niah.kernel_fill import KernelSpec, fill, kernel_specs, run_spec
from niah.user_cache import KERNEL_FILL, owned


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(512, 128)
        self.wide = nn.Linear(128, 256)  # n a multiple of 128
        self.odd = nn.Linear(256, 200)  # n not a multiple of 128
        self.eight = nn.Linear(128, 384)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NIAH_CACHE_DIR", str(tmp_path / "niah"))
    return tmp_path / "niah"


def _quantized():
    model = _Tiny()
    nn.quantize(model, group_size=32, bits=4, class_predicate=lambda p, m: p != "eight")
    nn.quantize(model, group_size=64, bits=8, class_predicate=lambda p, m: p == "eight")
    mx.eval(model.parameters())
    return model


def test_specs_are_one_call_per_family_of_the_quantized_layers_and_embedding_gathers():
    families = [s.family() for s in kernel_specs(_quantized())]
    assert families == [
        "gather-float32-int32",
        "gather-float32-uint32",
        "gather-uint32-int32",
        "gather-uint32-uint32",
        "qmm-float32-b4-g32-affine-n128-kaligned",  # wide, and the embedding as a linear
        "qmm-float32-b4-g32-affine-nodd-kaligned",
        "qmm-float32-b8-g64-affine-n128-kaligned",
    ]
    shapes = {(s.n, s.k, s.bits) for s in kernel_specs(_quantized()) if s.kind == "qmm"}
    assert (200, 256, 4) in shapes and (384, 128, 8) in shapes


def test_an_unquantized_model_needs_only_its_embedding_gathers():
    families = [s.family() for s in kernel_specs(_Tiny())]
    assert families == ["gather-float32-int32", "gather-float32-uint32"]


@pytest.mark.parametrize("spec", kernel_specs(_quantized()), ids=lambda s: s.family())
def test_each_spec_runs_its_kernel(spec):
    run_spec(spec)  # raises on a shape the kernel refuses


def test_fill_runs_children_once_then_remembers_until_a_file_goes(cache_dir, tmp_path):
    folder = tmp_path / "ptx"
    folder.mkdir()
    specs = kernel_specs(_quantized())[:3]
    started = []
    first = fill(specs, folder=folder, on_start=started.append)
    assert (first.started, first.failed, first.remembered) == (3, 0, 0) and started == [3]
    again = fill(specs, folder=folder, on_start=started.append)
    assert (again.started, again.remembered) == (0, 3) and started == [3]
    assert cache_dir / KERNEL_FILL in owned(cache_dir)  # niah cache clear removes it
    # a file the fill left is gone (a reboot cleared the folder): filled again
    record = json.loads((cache_dir / KERNEL_FILL).read_text())
    key = next(iter(record))
    for family in record[key]:
        record[key][family] = ["module.ptx"]
    (cache_dir / KERNEL_FILL).write_text(json.dumps(record))
    assert fill(specs, folder=folder).started == 3
    # another folder or MLX version is another key
    assert fill(specs, folder=tmp_path / "other").started == 3


def test_a_failing_child_is_counted_and_not_remembered(cache_dir, tmp_path):
    bad = KernelSpec("qmm", "float32", bits=7, group_size=32, n=128, k=96)  # MLX has no 7 bits
    good = KernelSpec("gather", "float32", index="int32")
    result = fill([bad, good], folder=tmp_path)
    assert (result.started, result.failed) == (2, 1)
    assert fill([bad, good], folder=tmp_path).started == 1  # only the failed one again


def test_a_corrupt_record_is_ignored_and_replaced(cache_dir, tmp_path):
    cache_dir.mkdir(parents=True)
    (cache_dir / KERNEL_FILL).write_text("{not json")
    spec = KernelSpec("gather", "float32", index="uint32")
    assert fill([spec], folder=tmp_path).started == 1
    assert fill([spec], folder=tmp_path).started == 0


def test_children_that_outlive_the_timeout_are_killed_and_counted(cache_dir, tmp_path, monkeypatch):
    import subprocess
    import sys

    def slow(spec):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    monkeypatch.setattr(kernel_fill, "_start", slow)
    spec = KernelSpec("gather", "float32", index="int32")
    result = fill([spec], folder=tmp_path, timeout=0.5)
    assert (result.started, result.failed) == (1, 1) and result.seconds < 10


def test_describe_counts_modules_and_the_families_still_filled(cache_dir, tmp_path):
    from niah.kernel_fill import describe

    folder = tmp_path / "ptx"
    assert describe(folder) == f"0 compiled modules in {folder}; 0 kernel families filled by niah"
    folder.mkdir()
    (folder / "a.ptx").write_text("x")
    specs = kernel_specs(_quantized())[:2]
    fill(specs, folder=folder)
    assert describe(folder) == f"1 compiled modules in {folder}; 2 kernel families filled by niah"


@pytest.mark.parametrize("n", [1, 200, 511, 512, 640, 151936, 49153, 50257])
def test_a_child_weight_keeps_the_kernel_choosing_remainder_and_stays_small(n):
    from niah.kernel_fill import _child_rows

    rows = _child_rows(n)
    assert rows % 128 == n % 128 and (rows % 128 == 0) == (n % 128 == 0)
    assert rows <= max(n, 1) and rows < 512 + 128


class _Notes:
    def __init__(self):
        self.lines = []

    def note(self, line):
        self.lines.append(line)


def _run_on_cuda(monkeypatch, tmp_path):
    """The sweep's step before the first model call, with the backend named CUDA (the children
    then run their kernels on the CPU) and MLX's kernel folder in tmp_path."""
    from types import SimpleNamespace

    from niah.run import sweep
    from niah.run.phases import Phases

    monkeypatch.setattr(sweep, "_backend_name", lambda: "cuda")
    monkeypatch.setenv("MLX_PTX_CACHE_DIR", str(tmp_path / "ptx"))
    session = SimpleNamespace(model=_quantized())
    return SimpleNamespace(session=session, progress=_Notes(), phases=Phases())


def test_the_sweep_fills_once_and_says_so(cache_dir, tmp_path, monkeypatch):
    from niah.run.sweep import _prepare_cuda_kernels

    run = _run_on_cuda(monkeypatch, tmp_path)
    _prepare_cuda_kernels(run, ["a trial"])
    first, *steps, done = run.progress.lines
    assert [line.split(" (")[0] for line in steps] == [
        f"CUDA kernels: {i}/7 families done" for i in range(1, 8)
    ]
    assert first == (
        f"CUDA kernels: compiling 7 kernel families in parallel processes into {tmp_path / 'ptx'} "
        "(a machine's first MLX run; later runs reuse them) ..."
    )
    assert done.startswith("CUDA kernels: 7 families compiled in parallel processes in ")
    assert "warm-up" in run.phases.seconds
    _prepare_cuda_kernels(run, ["a trial"])  # remembered: no child, no line
    assert len(run.progress.lines) == 9
    _prepare_cuda_kernels(run, [])  # nothing to run: nothing done
    assert len(run.progress.lines) == 9


def test_with_the_fill_off_the_sweep_only_warns_of_a_cold_folder(cache_dir, tmp_path, monkeypatch):
    from niah.run.sweep import _prepare_cuda_kernels

    monkeypatch.setenv("NIAH_KERNEL_FILL", "0")
    run = _run_on_cuda(monkeypatch, tmp_path)
    _prepare_cuda_kernels(run, ["a trial"])
    (line,) = run.progress.lines
    assert line.startswith("MLX compiles its CUDA kernels for this model on first use")
    assert not (cache_dir / "kernel-fill.json").exists()


def test_a_fill_that_raises_is_one_line_and_the_run_goes_on(cache_dir, tmp_path, monkeypatch):
    from niah.run import sweep

    run = _run_on_cuda(monkeypatch, tmp_path)

    def broken(model):
        raise ValueError("a module of a shape nobody foresaw")

    monkeypatch.setattr(kernel_fill, "kernel_specs", broken)
    sweep._prepare_cuda_kernels(run, ["a trial"])
    assert run.progress.lines == [
        "CUDA kernel fill skipped: ValueError: a module of a shape nobody foresaw"
    ]


def test_children_are_reported_as_they_end_not_as_they_started(cache_dir, tmp_path, monkeypatch):
    import subprocess
    import sys

    slow = KernelSpec("gather", "float32", index="int32")
    quick = KernelSpec("gather", "float32", index="uint32")

    def start(spec):
        pause = 3 if spec == slow else 0
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({pause})"])

    monkeypatch.setattr(kernel_fill, "_start", start)
    import time

    ended, t0 = [], time.monotonic()
    result = fill(
        [slow, quick], folder=tmp_path, on_done=lambda n, total: ended.append(time.monotonic() - t0)
    )
    # the quick child is reported when it ends, not after the slow one started before it
    assert len(ended) == 2 and ended[0] < 2.0 <= 2.5 <= ended[1]
    assert (result.started, result.failed) == (2, 0)
    record = json.loads((cache_dir / KERNEL_FILL).read_text())
    assert set(next(iter(record.values()))) == {slow.family(), quick.family()}
