"""What a result belongs to: content digests of the model, the haystack and niah itself, and
the runtime facts (backend, compute dtype, resolved SDPA settings, versions) that together with
the RunConfig decide a trial's verdict and timing.

`run_identity` gathers them into one flat dict of strings; `RunConfig.hash(identity=...)` folds
it into the run's config hash, so a result is never reused or pooled across a changed model
file, an edited haystack, another device or another version.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

# Files larger than this are fingerprinted (size + head + tail) instead of hashed whole, so
# a 40 GB model folder is identified in seconds; the identity says which was done.
FULL_HASH_LIMIT = 2 * 1024 ** 3
SAMPLE_BYTES = 64 * 1024 ** 2
_BLOCK = 4 * 1024 ** 2


def _hash_file(path: str, size: int) -> str:
    """sha256 of a file (or of size + first and last SAMPLE_BYTES above FULL_HASH_LIMIT)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= FULL_HASH_LIMIT:
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


@functools.lru_cache(maxsize=1)
def niah_source_digest() -> str:
    """Digest of niah's own code and data (Python, kernel sources), so any change to what
    builds prompts, scores or computes attention makes a new configuration."""
    root = Path(__file__).resolve().parent
    return tree_digest(root, suffixes=(".py", ".cu", ".cuh", ".metal", ".json", ".jsonl", ".txt"))[:12]


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
    """Content digest of a file/folder haystack; built-in generators are named (their code
    is covered by niah's source digest and their content by the seed)."""
    p = Path(source)
    if p.exists():
        return tree_digest(p)
    return f"builtin:{source}"


def run_identity(*, model_path: str, haystack: str, backend: str, compute_dtype: str,
                 sdpa: dict, model_digest: str | None = None) -> dict[str, str]:
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
    return ident


def describe_difference(old: dict, new: dict) -> str:
    """'model_digest 1a2b.. -> 3c4d..' for the first keys that differ (for one-line errors)."""
    keys = sorted(set(old) | set(new))
    diffs = [f"{k} {str(old.get(k))[:16]} -> {str(new.get(k))[:16]}"
             for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
