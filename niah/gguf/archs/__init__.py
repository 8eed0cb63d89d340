"""The GGUF architectures niah loads: one table from llama.cpp's ``general.architecture`` to
the module here that describes it (as mlx-lm's MODEL_REMAPPING / _get_classes pick a model
module by name). Adding an architecture is one module plus one row: docs/add-architecture.md.
"""

from __future__ import annotations

import importlib

from .base import Architecture

# general.architecture -> module of this package holding its ARCHITECTURE
ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
}
SUPPORTED_ARCHS = tuple(ARCHITECTURES)


def get_architecture(name: str | None) -> Architecture | None:
    """The description of GGUF architecture `name`, or None when niah has none."""
    module = ARCHITECTURES.get(str(name))
    if module is None:
        return None
    return importlib.import_module(f"{__name__}.{module}").ARCHITECTURE
