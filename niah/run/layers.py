"""Running a model through its first few decoder layers: the warm-up's stand-in for the whole
model where only attention's per-key-length set-up is new.

MLX's CUDA attention builds a plan per key length (and buffer layout), once per process, and
every layer of one kind asks for the same plans. So once one block has run through every
layer (every kernel variant of every layer built), the remaining prefill blocks of a long
prompt need to run only through the fewest leading layers that hold one layer of each kind
(leading_layers) for every plan the trials will ask for to be built. A layer's kind is its
cache's kind (plain, rotating and its window) and its modules' types, flag and float
attributes (a sliding-window flag, a RoPE base) and parameter shapes and dtypes (quantization
bits and groups show there): layers whose kinds match run the same operations on the same
shapes.
"""

from __future__ import annotations

import contextlib


def layer_list(model):
    """(owner module, key, list) of the list holding the model's decoder layers, the ones
    `model.layers` gives (mlx-lm models may give a new list each time, a slice for pipeline
    ranks), or None when no stored list holds exactly those layers."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, list) or not layers:
        return None
    for _, module in model.named_modules():
        for key, value in module.items():
            if _same_items(value, layers):
                return module, key, value
    return None


def _same_items(value, layers: list) -> bool:
    return (
        isinstance(value, list)
        and len(value) == len(layers)
        and all(a is b for a, b in zip(value, layers))
    )


def _attributes(module) -> tuple:
    """A module's public bool, float and str attributes (not ints: a layer's index is one)."""
    return tuple(
        sorted(
            (k, v)
            for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, (bool, float, str))
        )
    )


def layer_kind(layer, cache) -> tuple:
    """What decides the operations and shapes a layer runs (see the module docstring)."""
    from mlx.utils import tree_flatten

    modules = tuple(
        (name, type(m).__name__, _attributes(m)) for name, m in sorted(layer.named_modules())
    )
    params = tuple(
        (name, tuple(a.shape), str(a.dtype)) for name, a in tree_flatten(layer.parameters())
    )
    window = (getattr(cache, "max_size", None), getattr(cache, "keep", None))
    return type(cache).__name__, window, modules, params


def leading_layers(model, caches) -> int | None:
    """The fewest leading layers holding one layer of every kind the model has; None when that
    is every layer (nothing to save) or the model's layers cannot be told apart from its
    caches."""
    found = layer_list(model)
    if found is None or len(found[2]) != len(caches):
        return None
    first: dict = {}
    for i, (layer, cache) in enumerate(zip(found[2], caches)):
        first.setdefault(layer_kind(layer, cache), i)
    n = max(first.values()) + 1
    return n if n < len(caches) else None


@contextlib.contextmanager
def first_layers(model, n: int):
    """Run `model` through its first `n` decoder layers inside the block (pass it caches for
    those layers only); the full list is back when the block ends, also when it raises."""
    found = layer_list(model)
    if found is None:
        raise ValueError("the model has no list of decoder layers")
    owner, key, layers = found
    owner[key] = layers[:n]
    try:
        yield
    finally:
        owner[key] = layers
