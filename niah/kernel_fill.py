"""Filling MLX's CUDA kernel cache in parallel before a model's first forward pass.

MLX's CUDA backend compiles some kernels with NVRTC the first time a process calls them (the
quantized matmuls of quantized layers, the gathers of an embedding lookup) and keeps what it
compiled in a folder later processes read (niah.backend.mlx_kernel_cache). Inside one process
those compiles run one after another, under one lock, in the model's first forward pass.
Separate processes compile in parallel: `fill` starts one child process per kernel family the
model's quantized layers and embedding will call (a family: the inputs that pick MLX's kernel
and name its module: dtype, bits, group size, mode and the shape alignments that choose the
kernel), each calling that kernel once on random inputs of the layer's shape, and waits for
them; the first forward pass then reads the folder. What a child cannot do (it fails, or the
family guess misses a variant) the forward pass compiles itself, as it would have anyway.

A fill is remembered in niah's cache folder (kernel-fill.json: per kernel folder and MLX
version, the families filled and the files they left, or the folder's files where they left
none because MLX had compiled them before), so a later run starts no child while those files
are still there; a folder cleared (a reboot emptying /tmp) is filled again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .user_cache import KERNEL_FILL as MARKER  # in niah's cache folder

QMM_ROWS = 64  # a prefill block's row count as MLX tiles it (64 rows and more: one variant)


@dataclass(frozen=True)
class KernelSpec:
    """One kernel call to compile: a quantized matmul (kind "qmm") of an (n, k) weight, or a
    gather (kind "gather") from a table of `dtype` with indices of `index`."""

    kind: str
    dtype: str
    bits: int = 0
    group_size: int = 0
    mode: str = "affine"
    n: int = 0
    k: int = 0
    index: str = "int32"

    def family(self) -> str:
        """The key of the kernel module this call compiles (calls with one key share it)."""
        if self.kind == "gather":
            return f"gather-{self.dtype}-{self.index}"
        wide = self.n % 128 == 0
        aligned = self.k % max(64, self.group_size) == 0
        return (
            f"qmm-{self.dtype}-b{self.bits}-g{self.group_size}-{self.mode}"
            f"-n{'128' if wide else 'odd'}-k{'aligned' if aligned else 'residue'}"
        )


@dataclass(frozen=True)
class FillResult:
    """What a fill did: families compiled by children (and how many of those failed), families
    already filled by an earlier run, the wall time and the kernel folder."""

    started: int
    failed: int
    remembered: int
    seconds: float
    folder: str


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _layer_spec(module, compute: str) -> KernelSpec | None:
    """The quantized matmul a QuantizedLinear or QuantizedEmbedding (as a tied output layer)
    runs, or None for other modules."""
    scales = getattr(module, "scales", None)
    bits, group = getattr(module, "bits", None), getattr(module, "group_size", None)
    if scales is None or bits is None or group is None or scales.ndim != 2:
        return None
    n, k = int(module.weight.shape[0]), int(scales.shape[1]) * int(group)
    mode = str(getattr(module, "mode", "affine"))
    return KernelSpec("qmm", compute, bits=int(bits), group_size=int(group), mode=mode, n=n, k=k)


def _compute_dtype(model) -> str:
    """The dtype activations run in: a quantized layer's scales', else the first floating
    parameter's."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    floats = (mx.float16, mx.bfloat16, mx.float32)
    for _, module in model.named_modules():
        scales = getattr(module, "scales", None)
        if scales is not None and scales.dtype in floats:
            return _dtype_name(scales.dtype)
    for _, a in tree_flatten(model.parameters()):
        if a.dtype in floats:
            return _dtype_name(a.dtype)
    return "float16"


def kernel_specs(model) -> list[KernelSpec]:
    """One call per kernel family the model's forward passes will compile: its quantized
    matmuls, and the gathers of its embedding lookups (int32 prompt ids, uint32 sampled ids):
    any Embedding or QuantizedEmbedding, whatever its name (wte, tok_embeddings), and any
    module named embed_tokens."""
    import mlx.nn as nn

    compute, tables = _compute_dtype(model), set()
    embeddings = (nn.Embedding, nn.QuantizedEmbedding)
    specs: dict[str, KernelSpec] = {}
    for name, module in model.named_modules():
        spec = _layer_spec(module, compute)
        if spec is not None:
            specs.setdefault(spec.family(), spec)
        if name.endswith("embed_tokens") or isinstance(module, embeddings):
            tables.add("uint32" if getattr(module, "scales", None) is not None else compute)
            tables.add(compute)
    for table in sorted(tables):
        for index in ("int32", "uint32"):
            spec = KernelSpec("gather", table, index=index)
            specs.setdefault(spec.family(), spec)
    return [specs[key] for key in sorted(specs)]


def _child_rows(n: int) -> int:
    """Output rows for a child's weight: fewer than a large layer's (an output layer of a
    150K vocabulary would cost the child a gigabyte), with the same remainder mod 128, which is
    all of n that chooses MLX's kernel."""
    if n < 512:
        return n
    return 256 if n % 128 == 0 else 384 + n % 128


def run_spec(spec: KernelSpec) -> None:
    """Call the kernel once on random inputs (what a child process does)."""
    import mlx.core as mx

    dtype = getattr(mx, spec.dtype)
    if spec.kind == "gather":
        table = mx.zeros((256, 64), dtype=dtype)
        ids = (mx.arange(QMM_ROWS) % 256).astype(getattr(mx, spec.index))[None]
        mx.eval(table[ids])
        return
    # MLX packs a row's k values of `bits` bits into k * bits / 32 words (3, 5 and 6 bits
    # straddle words); the floating-point modes (mxfp4, nvfp4, ...) keep uint8 scales, no biases
    n = _child_rows(spec.n)
    w = mx.random.randint(0, 2**31 - 1, (n, spec.k * spec.bits // 32)).astype(mx.uint32)
    groups = (n, spec.k // spec.group_size)
    affine = spec.mode == "affine"
    scales = (mx.random.uniform(shape=groups) * 0.01).astype(dtype if affine else mx.uint8)
    biases = mx.zeros(groups, dtype=dtype) if affine else None
    x = mx.random.normal((QMM_ROWS, spec.k)).astype(dtype)
    out = mx.quantized_matmul(
        x,
        w,
        scales,
        biases,
        transpose=True,
        group_size=spec.group_size,
        bits=spec.bits,
        mode=spec.mode,
    )
    mx.eval(out)


def _marker_path() -> Path:
    from .user_cache import cache_root

    return cache_root() / MARKER


def _marker_key(folder: Path) -> str:
    import mlx.core as mx

    return f"{folder}|{mx.__version__}"


def _read_marker() -> dict:
    try:
        data = json.loads(_marker_path().read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return {}
    return data if isinstance(data, dict) else {}


def _entry(data: dict, key: str) -> dict:
    """The record's entry for one kernel folder and MLX version; empty where it is none or
    not a mapping (a hand-edited or foreign file)."""
    entry = data.get(key)
    return entry if isinstance(entry, dict) else {}


def _remembered(entry: dict, family: str, folder: Path) -> bool:
    """True when an earlier fill did this family and every file it left is still there."""
    files = entry.get(family)
    return isinstance(files, list) and all((folder / str(f)).is_file() for f in files)


def _listing(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir() if p.is_file()}
    except OSError:
        return set()


def _start(spec: KernelSpec) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "niah.kernel_fill", json.dumps(asdict(spec))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _run_children(
    specs: list[KernelSpec],
    *,
    jobs: int,
    timeout: float,
    on_done: Callable[[int, int], None] | None = None,
) -> list[KernelSpec]:
    """Run one child per spec, at most `jobs` at once; the specs whose child succeeded (a
    child that cannot start, no process to spare, is one that failed; one still running at
    the timeout is killed). on_done(finished, total) as each child ends, in the order they end."""
    pending, running, done, finished = list(specs), [], [], 0
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < jobs:
            spec = pending.pop(0)
            try:
                running.append((spec, _start(spec)))
            except OSError:
                finished += 1
                if on_done is not None:
                    on_done(finished, len(specs))
        still = []
        for spec, child in running:
            code = child.poll()
            if code is None and time.monotonic() > deadline:
                child.kill()
                code = child.wait()
            if code is None:
                still.append((spec, child))
                continue
            done += [spec] if code == 0 else []
            finished += 1
            if on_done is not None:
                on_done(finished, len(specs))
        running = still
        if running:
            time.sleep(0.05)
    return done


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive flock on `folder` itself (no lock file to leave); held by nothing
    where the folder cannot be opened or locked (no fcntl, a file system without flock)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _save_marker(key: str, families: list[str], new_files: set[str]) -> None:
    """Add `families` to the record under `key`; read and replaced under a lock on the cache
    folder, so processes filling at once (ranks, parallel runs) keep each other's families."""
    from .store import write_then_rename  # not at the top: a child process needs none of it

    path = _marker_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        data = _read_marker()
        entry = _entry(data, key)
        for family in families:
            entry[family] = sorted(new_files)
        data[key] = entry
        text = json.dumps(data, indent=1, sort_keys=True)
        # remembering is an optimisation: where the write fails the next run fills again
        with contextlib.suppress(OSError):
            write_then_rename(path.with_name(f".{MARKER}.{os.getpid()}"), text, path)


def fill(
    specs: list[KernelSpec],
    *,
    folder: Path,
    jobs: int | None = None,
    timeout: float = 900.0,
    on_start: Callable[[int], None] | None = None,
    on_done: Callable[[int, int], None] | None = None,
) -> FillResult:
    """Compile, in parallel child processes, the families of `specs` no earlier fill left in
    `folder` (MLX's kernel folder, niah.backend.mlx_kernel_cache), and remember them.
    on_start(n): called before n children start (not called when none has to);
    on_done(finished, n): as each of them ends."""
    t0 = time.perf_counter()
    key = _marker_key(folder)
    entry = _entry(_read_marker(), key)
    todo = [s for s in specs if not _remembered(entry, s.family(), folder)]
    if not todo:
        return FillResult(0, 0, len(specs), 0.0, str(folder))
    if on_start is not None:
        on_start(len(todo))
    before = _listing(folder)
    jobs = jobs or max(1, min(len(todo), os.cpu_count() or 1, 8))
    done = _run_children(todo, jobs=jobs, timeout=timeout, on_done=on_done)
    if done:  # files they left; none when MLX had them already: then the files there
        after = _listing(folder)
        _save_marker(key, [s.family() for s in done], (after - before) or after)
    seconds = time.perf_counter() - t0
    return FillResult(
        len(todo), len(todo) - len(done), len(specs) - len(todo), seconds, str(folder)
    )


def describe(folder: Path) -> str:
    """One line for niah doctor: how many compiled modules MLX's kernel folder holds and how many
    kernel families niah's fills left there (for this MLX version)."""
    try:
        modules = sum(1 for p in folder.glob("*.ptx"))
    except OSError:
        modules = 0
    entry = _entry(_read_marker(), _marker_key(folder))
    filled = sum(1 for family in entry if _remembered(entry, family, folder))
    return f"{modules} compiled modules in {folder}; {filled} kernel families filled by niah"


if __name__ == "__main__":  # a child: python -m niah.kernel_fill '<KernelSpec as JSON>'
    run_spec(KernelSpec(**json.loads(sys.argv[1])))
