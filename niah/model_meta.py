"""What a model is, read before any weight loads: trained length, layers, heads, KV heads,
head dim and vocabulary from a GGUF header or an MLX folder's config.json (a hub id downloads
config.json alone), so refusals and the memory preflight answer before a long load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import NiahError
from .model import _hub_folder, config_text_settings, config_trained_context, resolve_model


@dataclass(frozen=True)
class ModelMeta:
    """What a model is, read before any weight loads (GGUF header or config.json)."""

    name: str
    source: str  # "gguf" | "mlx" | "hub"
    path: str
    trained_context: int | None
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    weight_bytes: int | None = None  # stored tensor bytes (GGUF, local safetensors), if known


def model_metadata(spec: str | None, *, rope_scaling: str = "model") -> ModelMeta:
    """The trained length, layers, heads, KV heads, head dim and vocabulary of --model `spec`
    without loading weights: from a GGUF's header, or an MLX folder's config.json (a hub id
    downloads config.json alone). `rope_scaling` is checked against the trained length as the
    load will check it, so a bad override is refused before the load too."""
    from .config import parse_rope_scaling, rope_scaling_config

    kind, location = resolve_model(spec)
    if kind == "gguf":
        meta = _gguf_meta(location)
    else:
        folder = _hub_folder(location, patterns=("config.json",)) if kind == "hub" else location
        meta = _config_meta(
            Path(folder),
            name=location if kind == "hub" else Path(folder).name,
            source=kind,
            path=location,
            weights=kind == "mlx",
        )
    rope = parse_rope_scaling(rope_scaling)
    if rope != "model":
        rope_scaling_config(rope, trained_context=meta.trained_context)
    return meta


def _gguf_meta(path: str) -> ModelMeta:
    """ModelMeta from a GGUF header, with the same ModelArgs the load builds (gguf.load)."""
    from .gguf.header import parse_header
    from .gguf.load import model_args

    header = parse_header(path)
    args = model_args(header.meta)
    sizes = [t.nbytes for t in header.tensors]
    return ModelMeta(
        name=Path(path).name,
        source="gguf",
        path=path,
        trained_context=int(args["max_position_embeddings"]) or None,
        n_layers=int(args["num_hidden_layers"]),
        n_heads=int(args["num_attention_heads"]),
        n_kv_heads=int(args["num_key_value_heads"]),
        head_dim=int(args["head_dim"]),
        vocab_size=int(args["vocab_size"]),
        weight_bytes=None if None in sizes else int(sum(sizes)),
    )


def _config_meta(folder: Path, *, name: str, source: str, path: str, weights: bool) -> ModelMeta:
    """ModelMeta from an MLX model folder's config.json (a VLM's text_config where the text
    model's settings live there)."""
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise NiahError(
            f"cannot read {str(folder / 'config.json')!r} ({exc}): give an MLX "
            "model folder made by mlx_lm.convert"
        ) from None
    trained = config_trained_context(cfg)
    cfg = config_text_settings(cfg)

    def whole(key, default=0):
        value = cfg.get(key, default)
        whole_number = isinstance(value, (int, float)) and 0 < value < float("inf")
        return int(value) if whole_number else default

    heads = whole("num_attention_heads")
    hidden = whole("hidden_size")
    stored = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if weights else 0
    return ModelMeta(
        name=name,
        source=source,
        path=path,
        trained_context=trained,
        n_layers=whole("num_hidden_layers"),
        n_heads=heads,
        n_kv_heads=whole("num_key_value_heads", heads),
        head_dim=whole("head_dim", hidden // heads if heads else 0),
        vocab_size=whole("vocab_size"),
        weight_bytes=stored or None,
    )
