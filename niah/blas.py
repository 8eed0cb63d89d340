"""A fast BLAS for MLX's Linux CPU build.

The mlx-cpu wheel links netlib's reference BLAS, far slower than OpenBLAS for the matmuls a
model runs (docs/sdpa.md has the measurement). The preload has to happen before the process
starts, so `ensure_fast_blas` re-executes the current command once with LD_PRELOAD set when a
system OpenBLAS exists (Debian/Ubuntu: apt-get install libopenblas0-pthread) and none is loaded.
NIAH_NO_BLAS_REEXEC=1 turns this off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
)
INSTALL_HINT = "apt-get install libopenblas0-pthread (Debian/Ubuntu) or dnf install openblas"


def find_openblas() -> str | None:
    for path in CANDIDATES:
        if Path(path).is_file():
            return path
    return None


def loaded_blas() -> str | None:
    """The BLAS library mapped into this process, if any (Linux only)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for name in ("libopenblas", "libmkl_rt", "libblis", "libblas.so"):
        for line in maps.splitlines():
            if name in line and "/" in line:
                return line[line.index("/") :]
    return None


def preload_active() -> bool:
    return "openblas" in os.environ.get("LD_PRELOAD", "")


def would_reexec() -> bool:
    """True when ensure_fast_blas would re-execute this process."""
    if not sys.platform.startswith("linux") or preload_active():
        return False
    if os.environ.get("NIAH_NO_BLAS_REEXEC") or os.environ.get("NIAH_BLAS_REEXECED"):
        return False
    return find_openblas() is not None


def ensure_fast_blas() -> None:
    """Re-exec this command with OpenBLAS preloaded when that would help (Linux CPU only)."""
    if not would_reexec():
        return
    lib = find_openblas()
    env = dict(os.environ)
    env["LD_PRELOAD"] = (lib + " " + env.get("LD_PRELOAD", "")).strip()
    env["NIAH_BLAS_REEXECED"] = "1"
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:
        return
