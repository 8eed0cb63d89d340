"""`niah convert MODEL.gguf DIR`: write an mlx-lm model folder from a GGUF file.

The folder holds what `mlx_lm.load` reads: model.safetensors (the weights as niah loads them,
in the chosen --gguf-quant mode), config.json (mlx-lm's model arguments plus a per-layer
quantization table, since one file can mix bit widths), and the tokenizer files written by
transformers (tokenizer.json, tokenizer_config.json, the chat template). The same weights then
run under stock mlx-lm: the baseline for benchmarks/long_context.py and a way out of niah.

Every file is written into a hidden temporary folder inside the target and moved into place
once all are complete: a failure (unwritable path, full disk) is one line and leaves no
partial file, and a folder this call created is removed again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import NiahError


@dataclass(frozen=True)
class Converted:
    folder: Path
    model_type: str
    weights: str  # the weight mode (niah.gguf.read)
    digest: str  # sha256 of the source GGUF
    files: tuple[str, ...]


def _quantization(model) -> dict | None:
    import mlx.nn as nn

    layers = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            layers[name] = {"group_size": mod.group_size, "bits": mod.bits}
    if not layers:
        return None
    first = next(iter(layers.values()))
    return {**first, **layers}


def _portable_tokenizer_config(path: Path, tokenizer) -> None:
    """Name the class every transformers version knows and inline the chat template (older
    versions do not read chat_template.jinja)."""
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if getattr(tokenizer, "chat_template", None):
        cfg["chat_template"] = tokenizer.chat_template
    cfg["add_bos_token"] = bool(getattr(tokenizer, "add_bos_token", False))
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _check_target(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NiahError(f"{str(out)!r} exists and is not a folder: give a new folder name")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NiahError(f"folder {str(out)!r} is not empty: give a new folder or pass --force")


def _model_config(model, tokenizer, info, gguf: Path) -> dict:
    """config.json: mlx-lm's model arguments, quantization table, EOS ids, niah's provenance."""
    config = dataclasses.asdict(model.args)
    quantization = _quantization(model)
    if quantization:
        config["quantization"] = quantization
    eos = {tokenizer.eos_token_id} - {None}
    for text in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if text in tokenizer.get_vocab():
            eos.add(tokenizer.convert_tokens_to_ids(text))
    config["eos_token_id"] = sorted(int(e) for e in eos)
    config["niah"] = {
        "source": gguf.name,
        "sha256": info.digest,
        "weights": info.weights,
        "gguf_types": info.quant_types,
    }
    return config


def _write_files(folder: Path, *, model, tokenizer, config: dict) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(folder))
    _portable_tokenizer_config(folder / "tokenizer_config.json", tokenizer)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what mkdir would create)."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _write_atomically(out: Path, write) -> tuple[str, ...]:
    """Run write(tmp) on a temporary folder inside `out`, then move its files into `out`.
    Any OS or MLX write error becomes one line; nothing this call wrote is left behind."""
    created = _first_missing(out)
    tmp = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".niah-convert-", dir=out))
        write(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        for name in names:
            os.replace(tmp / name, out / name)
        return tuple(names)
    except (OSError, RuntimeError) as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        text = str(exc).strip()
        reason = getattr(exc, "strerror", None) or (
            text.splitlines()[0] if text else type(exc).__name__
        )
        raise NiahError(
            f"cannot write the model folder {str(out)!r} ({reason}): choose a "
            "writable folder with free space"
        ) from exc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def convert(
    gguf: str | Path, out: str | Path, *, quant: str = "auto", force: bool = False
) -> Converted:
    """Write the mlx-lm folder for `gguf` into `out`."""
    from .load import load_gguf_model

    gguf, out = Path(gguf), Path(out)
    if gguf.suffix.lower() != ".gguf" or not gguf.is_file():
        raise NiahError(f"GGUF file {str(gguf)!r} not found: give an existing .gguf file")
    _check_target(out, force=force)
    model, tokenizer, info = load_gguf_model(gguf, quant=quant)
    config = _model_config(model, tokenizer, info, gguf)
    _write_atomically(
        out, lambda folder: _write_files(folder, model=model, tokenizer=tokenizer, config=config)
    )
    files = tuple(sorted(p.name for p in out.iterdir()))
    return Converted(
        folder=out,
        model_type=config["model_type"],
        weights=info.weights,
        digest=info.digest,
        files=files,
    )
