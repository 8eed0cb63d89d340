"""What a result belongs to: content digests of the model, the haystack and the part of niah
that can change a result, and the runtime facts (backend, compute dtype, resolved SDPA
settings, versions) that together with the RunConfig decide a trial's verdict and timing.

`run_identity` gathers them into one flat dict of strings; `config_hash` (through
`RunConfig.hash(identity=...)`) folds it and the config into the run's config hash, so a result is never reused or pooled across a changed model
file, an edited haystack, another backend or another version (the backend, not the card: each
record names its device, and the report headers name every device a folder holds).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
from pathlib import Path

from .haystack_files import GENERATED, haystack_files_digest

# Files larger than this are fingerprinted (size + head + tail) instead of hashed whole, so
# a 40 GB model folder is identified in seconds; the identity says which was done.
FULL_HASH_LIMIT = 2 * 1024**3
SAMPLE_BYTES = 64 * 1024**2
_BLOCK = 4 * 1024**2


def _hash_file(path: str, size: int, *, whole: bool = False) -> str:
    """sha256 of a file (or of size + first and last SAMPLE_BYTES above FULL_HASH_LIMIT,
    unless `whole`)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if whole or size <= FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                h.update(block)
            return h.hexdigest()
        h.update(f"sampled:{size}:".encode())
        h.update(fh.read(SAMPLE_BYTES))
        fh.seek(size - SAMPLE_BYTES)
        h.update(fh.read(SAMPLE_BYTES))
        return "sampled-" + h.hexdigest()


def file_digest(path: str | Path) -> str:
    """Content digest of one file; an unchanged file is not hashed again (niah.digest_store
    keeps digests across processes by size, mtime, inode and ctime; its docstring says what
    that can and cannot detect)."""
    from .digest_store import cached_digest

    resolved = str(Path(path).resolve())
    st = os.stat(resolved)
    return cached_digest(resolved, st, lambda: _hash_file(resolved, st.st_size))


def full_file_digest(path: str | Path) -> str:
    """The sha256 of the whole file at any size, for what must never take one content for
    another (the weight cache's keys and entries): file_digest fingerprints a file over
    FULL_HASH_LIMIT by its size, head and tail. Remembered by niah.digest_store too (under
    the path + "#sha256" where file_digest's row holds the fingerprint)."""
    from .digest_store import cached_digest

    resolved = str(Path(path).resolve())
    st = os.stat(resolved)
    if st.st_size <= FULL_HASH_LIMIT:
        return file_digest(resolved)
    compute = lambda: _hash_file(resolved, st.st_size, whole=True)  # noqa: E731
    return cached_digest(_full_key(resolved, st.st_size), st, compute)


def _full_key(resolved: str, size: int) -> str:
    return resolved if size <= FULL_HASH_LIMIT else f"{resolved}#sha256"


def remember_full_digest(path: str | Path, digest: str) -> None:
    """Store `digest`, the whole sha256 of a file this process has just written and hashed,
    where full_file_digest looks for it."""
    from .digest_store import remember

    resolved = str(Path(path).resolve())
    st = os.stat(resolved)
    remember(_full_key(resolved, st.st_size), digest, st=st)


def tree_digest(path: str | Path, *, suffixes: tuple[str, ...] | None = None) -> str:
    """Digest of a file, or of every file under a folder (relative names and contents)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        if suffixes and f.suffix not in suffixes:
            continue
        if any(part.startswith(".") or part == "__pycache__" for part in f.relative_to(path).parts):
            continue
        h.update(str(f.relative_to(path)).encode() + b"\0" + file_digest(f).encode() + b"\0")
    return h.hexdigest()


# niah's code and data that can change a verdict or a timing, as globs relative to the package
# folder (old flat modules and the packages they move into both match): prompt building,
# tasks and their data, scoring, model loading, the sweep, attention and kernels. Not here:
# the CLI, reports, doctor, parsing (its results are in the config), storage, docs, help text.
SOURCE_GLOBS = (
    "haystack*.py",
    "haystack/*",
    "prose.py",
    "values.py",
    "trials.py",
    "tasks.py",
    "tasks/*",
    "datasets/*",
    "scoring.py",
    "model.py",
    "model_meta.py",
    "generation.py",
    "gguf*.py",
    "gguf/*",
    "preflight.py",
    "backend.py",
    "blas.py",
    "run/*",
    "sdpa/*",
    "kernels/*",
)
SOURCE_SUFFIXES = (".py", ".cu", ".cuh", ".metal", ".json", ".jsonl", ".txt")


def _covered(relative: str) -> bool:
    return any(fnmatch.fnmatchcase(relative, g) for g in SOURCE_GLOBS)


@functools.lru_cache(maxsize=4)
def niah_source_digest(root: Path | None = None) -> str:
    """Digest of the part of niah's code and data that can change a result (SOURCE_GLOBS,
    files with SOURCE_SUFFIXES; hidden and cache folders skipped), so fixing a help string
    or a report keeps run folders resumable. root: the package folder (default: this one)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root)
        if f.suffix not in SOURCE_SUFFIXES or not _covered(rel.as_posix()):
            continue
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0" + file_digest(f).encode() + b"\0")
    return h.hexdigest()[:12]


def niah_version() -> str:
    import importlib.metadata as md

    try:
        base = md.version("niah")
    except md.PackageNotFoundError:
        base = "0+unknown"
    return f"{base}+src.{niah_source_digest()}"


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    import mlx.core as mx

    try:
        lm = md.version("mlx-lm")
    except md.PackageNotFoundError:
        lm = "unknown"
    return {"mlx": mx.__version__, "mlx_lm": lm, "niah": niah_version()}


def model_content_digest(path: str) -> str:
    """Content digest of a GGUF file or an MLX model folder (weights, config, tokenizer)."""
    p = Path(path)
    if not p.exists():
        return f"unresolved:{path}"
    return tree_digest(p)


def haystack_digest(source: str) -> str:
    """Content digest of a file/folder haystack, over exactly the files the reader reads
    (niah.haystack_files); built-in generators are named (their code is covered by niah's
    source digest and their content by the seed), even where a path of that name exists."""
    if source not in GENERATED and Path(source).exists():
        return haystack_files_digest(source)
    return f"builtin:{source}"


# MLX settings read from the environment that change how MLX batches GPU work, and with it a
# trial's time and peak memory (docs/measured.md: the CUDA peak spread), not its answer
MLX_ENV = ("MLX_MAX_MB_PER_BUFFER", "MLX_MAX_OPS_PER_BUFFER", "MLX_USE_CUDA_GRAPHS")


def mlx_env(environ=None) -> str | None:
    """The MLX_ENV variables set here, as "NAME=VALUE" joined by spaces; None when none is.
    Set but empty counts: MLX reads these with atoi, so an empty value is 0 (a commit per op,
    CUDA graphs off), not MLX's default."""
    env = os.environ if environ is None else environ
    parts = [f"{k}={env[k]}" for k in MLX_ENV if k in env]
    return " ".join(parts) or None


def run_identity(
    *,
    model_path: str,
    haystack: str,
    backend: str,
    compute_dtype: str,
    sdpa: dict,
    model_digest: str | None = None,
) -> dict[str, str]:
    """Everything outside the RunConfig that can change a verdict or a timing (model_digest:
    the loader's own digest of the model file, when it computed one)."""
    ident = {
        "model_digest": model_digest or model_content_digest(model_path),
        "haystack_digest": haystack_digest(haystack),
        "backend": backend,
        "compute_dtype": compute_dtype,
    }
    ident.update({f"sdpa_{k}": str(v) for k, v in sorted(sdpa.items())})
    ident.update({f"{k}_version": v for k, v in library_versions().items()})
    if env := mlx_env():  # only when set: the hash of a run made without them stays as it was
        ident["mlx_env"] = env
    return ident


def config_hash(fields: dict, identity: dict | None = None) -> str:
    """The run's config hash: 12 hex digits of sha256 over the hashed config fields and the
    identity (sorted JSON), so a result is tied to both."""
    d = dict(fields)
    if identity:
        d["identity"] = dict(sorted(identity.items()))
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _shown(key: str, value) -> str:
    """A value as describe_difference shows it: cut to 16 characters (a digest's start), but
    mlx_env whole (its "NAME=VALUE" differ past the first 16)."""
    return str(value) if key == "mlx_env" else str(value)[:16]


def differing_keys(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two identities (absent counts as None), sorted."""
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def describe_difference(old: dict, new: dict) -> str:
    """'model_digest 1a2b.. -> 3c4d..' for the first keys that differ (for one-line errors)."""
    diffs = [
        f"{k} {_shown(k, old.get(k))} -> {_shown(k, new.get(k))}" for k in differing_keys(old, new)
    ]
    return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
