"""Load a GGUF file into an mlx-lm model, with its tokenizer and chat template.

Reading (any quant type, the weight mode, the file digest) is `read`; the tokenizer is
`tokenizer`; what differs between architectures (mlx-lm module, tensor names, settings
llama.cpp does not store) is one module per architecture in `archs`. This module maps the
common settings and tensor names and loads the weights, quantizing exactly the layers that
arrive quantized, with their group size and bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import NiahError
from .archs import SUPPORTED_ARCHS, get_architecture
from .header import scalar
from .read import DEFAULT_QUANT, read_gguf
from .tokenizer import build_tokenizer


@dataclass(frozen=True)
class GGUFInfo:
    """What the loader learned from the file."""

    architecture: str
    trained_context: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    name: str
    digest: str = ""  # sha256 of the file
    weights: str = ""  # "native", "q8/g64", "q4/g64" or "f16"
    quant_types: str = ""  # the file's tensor types, e.g. "F32,Q4_K,Q5_0,Q6_K,Q8_0"
    rope_scaling: dict | None = None
    weight_cache: str = ""  # niah.gguf.read.RawGGUF.cache: "hit", "stored", ... or ""


def _architecture(arch):
    found = get_architecture(arch)
    if found is None:
        raise NiahError(
            f"GGUF architecture {arch!r} is not supported: use a {'/'.join(SUPPORTED_ARCHS)} "
            "GGUF, or an MLX model folder or hub id"
        )
    return found


def map_tensor_name(name: str, arch: str = "llama") -> str | None:
    """llama.cpp tensor name -> mlx-lm parameter path (None for tensors mlx-lm does not use)."""
    spec = _architecture(arch)
    m = re.match(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias|scales|biases)$", name)
    if m:
        layer, part, kind = m.groups()
        target = spec.layer_map.get(part)
        return None if target is None else f"model.layers.{layer}.{target}.{kind}"
    m = re.match(r"^([a-z_]+)\.(weight|bias|scales|biases)$", name)
    if m and m.group(1) in spec.top_map:
        return f"{spec.top_map[m.group(1)]}.{m.group(2)}"
    return None


def rope_scaling_from_meta(meta: dict, arch: str) -> dict | None:
    """The model's own RoPE scaling (rope.scaling.*) as mlx-lm's rope_scaling dict."""
    kind = scalar(meta, f"{arch}.rope.scaling.type")
    factor = scalar(meta, f"{arch}.rope.scaling.factor")
    if kind in (None, "none") or not factor or float(factor) == 1.0:
        return None
    out = {"type": str(kind), "factor": float(factor)}
    orig = scalar(meta, f"{arch}.rope.scaling.original_context_length")
    if orig:
        out["original_max_position_embeddings"] = int(orig)
    return out


def model_args(meta: dict) -> dict:
    """Build mlx-lm ModelArgs keyword arguments from GGUF metadata."""
    arch = scalar(meta, "general.architecture")
    spec = _architecture(arch)

    def g(key, default=None):
        return scalar(meta, f"{arch}.{key}", default)

    def need(key):
        value = g(key)
        if value is None:
            raise NiahError(
                f"GGUF metadata has no {arch}.{key}: the file is incomplete; "
                "get an intact file or use an MLX model folder"
            )
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    head_dim = int(g("attention.key_length", hidden // heads))
    args = {
        "model_type": spec.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": int(need("block_count")),
        "intermediate_size": int(need("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(g("context_length", 4096)),
        "head_dim": head_dim,
        "rope_scaling": rope_scaling_from_meta(meta, arch),
    }
    args.update(spec.extra_args(g, args))
    return args


def _map_weights(raw, arch: str) -> dict:
    """GGUF tensors -> mlx-lm parameter paths, values as the architecture wants them."""
    spec = _architecture(arch)
    mapped = {}
    for name, value in raw.tensors.items():
        target = map_tensor_name(name, arch)
        if target is not None:
            mapped[target] = spec.tensor_value(name, value)
    return mapped


def _build_model(raw, args: dict, arch: str):
    """The mlx-lm model of `args`, quantized where `raw` is, and its mapped weights."""
    import importlib

    import mlx.nn as nn

    module = importlib.import_module(f"mlx_lm.models.{args['model_type']}")
    model = module.Model(module.ModelArgs.from_dict(args))
    mapped = _map_weights(raw, arch)
    if hasattr(model, "sanitize"):
        mapped = model.sanitize(mapped)
    qparams = {}
    for base, (group, bits) in raw.quantized.items():
        target = map_tensor_name(f"{base}.weight", arch)
        if target is not None:
            qparams[target[: -len(".weight")]] = {"group_size": group, "bits": bits}
    nn.quantize(
        model,
        class_predicate=lambda p, layer: hasattr(layer, "to_quantized") and qparams.get(p, False),
    )
    return model, mapped


def _mismatch(model, mapped: dict) -> str:
    """What keeps `mapped` from loading into `model`, in a few words (first names only)."""
    from mlx.utils import tree_flatten

    want = dict(tree_flatten(model.parameters()))
    parts = []
    for what, names in (
        ("missing", sorted(set(want) - set(mapped))),
        ("unexpected", sorted(set(mapped) - set(want))),
        (
            "of another shape",
            sorted(
                n for n in set(want) & set(mapped) if tuple(want[n].shape) != tuple(mapped[n].shape)
            ),
        ),
    ):
        if names:
            parts.append(f"{len(names)} {what}, e.g. {names[0]}")
    return "; ".join(parts) or "the weights do not load"


def _load_weights(model, mapped: dict, *, path: Path, model_type: str) -> None:
    try:
        model.load_weights(list(mapped.items()), strict=True)
    except ValueError as exc:  # the full list stays in the cause
        raise NiahError(
            f"GGUF {path.name!r} does not map cleanly onto mlx-lm's {model_type} model "
            f"({_mismatch(model, mapped)}): check its general.architecture, or use an MLX "
            "model folder instead"
        ) from exc


def load_gguf_model(
    path: str | Path,
    *,
    quant: str = DEFAULT_QUANT,
    rope_scaling: dict | None | str = "model",
    on_progress=None,
    tokenizer=None,
):
    """Load (model, hf_tokenizer, info) from a GGUF file.

    quant: see niah.gguf.read.QUANT_MODES. rope_scaling: "model" keeps the file's own
    setting; None removes it; a dict (mlx-lm's rope_scaling) replaces it.
    on_progress(done, total, what): called while tensors are converted (read_gguf).
    tokenizer: the file's tokenizer, built before (build_tokenizer); None builds it here.
    """
    import mlx.core as mx

    path = Path(path)
    raw = read_gguf(path, quant=quant, on_progress=on_progress)
    arch = scalar(raw.meta, "general.architecture")
    args = model_args(raw.meta)
    if rope_scaling != "model":
        args["rope_scaling"] = rope_scaling
    args["tie_word_embeddings"] = "output.weight" not in raw.tensors
    model, mapped = _build_model(raw, args, arch)
    _load_weights(model, mapped, path=path, model_type=args["model_type"])
    mx.eval(model.parameters())
    model.eval()
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(raw.meta)
    info = GGUFInfo(
        architecture=arch,
        trained_context=int(args["max_position_embeddings"]),
        n_layers=int(args["num_hidden_layers"]),
        n_heads=int(args["num_attention_heads"]),
        n_kv_heads=int(args["num_key_value_heads"]),
        head_dim=int(args["head_dim"]),
        name=str(scalar(raw.meta, "general.name", path.stem)),
        digest=raw.digest,
        weights=raw.weights,
        quant_types=",".join(sorted(raw.types)),
        rope_scaling=args["rope_scaling"],
        weight_cache=raw.cache,
    )
    return model, tokenizer, info
