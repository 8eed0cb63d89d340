"""GGUF files (llama.cpp's format) as mlx-lm models, without torch or the hub.

header: the metadata and tensor table, checked against the file. read: the tensors as MLX
arrays in a weight mode (QUANT_MODES), and the file digest. dequant: GGML blocks to float32
with MLX ops. cache: converted weights kept on disk, so a file is converted once. tokenizer:
a transformers fast tokenizer from the metadata. archs: one module per architecture, picked
from one table. load: GGUF -> (mlx-lm model, tokenizer, GGUFInfo). convert: `niah convert`,
an mlx-lm folder.
"""

from .archs import SUPPORTED_ARCHS
from .header import parse_header, scalar
from .load import GGUFInfo, load_gguf_model, map_tensor_name, model_args
from .read import DEFAULT_QUANT, QUANT_MODES, file_digest, read_gguf
from .tokenizer import build_tokenizer

__all__ = [
    "DEFAULT_QUANT",
    "GGUFInfo",
    "QUANT_MODES",
    "SUPPORTED_ARCHS",
    "build_tokenizer",
    "file_digest",
    "load_gguf_model",
    "map_tensor_name",
    "model_args",
    "parse_header",
    "read_gguf",
    "scalar",
]
