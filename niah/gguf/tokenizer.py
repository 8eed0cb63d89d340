"""A transformers fast tokenizer built from GGUF metadata, without torch or the hub.

Two vocabulary kinds, as llama.cpp names them in ``tokenizer.ggml.model``:

- ``gpt2``: byte-level BPE from ``tokens`` and ``merges``; the pre-tokenizer follows
  ``tokenizer.ggml.pre`` (digits isolated, or grouped by three, as the model was trained).
- ``llama``: SentencePiece BPE (Llama 2, Gemma) from ``tokens`` and ``scores``. SentencePiece
  merges the adjacent pair whose joined piece scores highest; a BPE whose merge ranks follow
  the joined piece's score makes the same choices, so the merges are derived from the scores.
  Spaces become U+2581, unknown characters fall back to ``<0xXX>`` byte pieces, and
  user-defined pieces (Gemma's runs of newlines, ...) are matched whole before the merges,
  as SentencePiece does.
"""

from __future__ import annotations

from ..errors import NiahError
from .header import scalar

SPACE = "\u2581"
_CONTROL, _USER_DEFINED = 3, 4


def _pre_tokenizer(pre: str | None):
    """The pre-tokenizer named by tokenizer.ggml.pre (digits isolated where the model did)."""
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("qwen2", "llama3", "llama-bpe", "deepseek-llm", "smaug-bpe"):
        # Numbers split into groups of at most three digits, as these models were trained.
        pattern = (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        )
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    return byte_level


def _bpe_tokenizer(meta: dict, tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models

    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(scalar(meta, "tokenizer.ggml.pre"))
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(tokens: list[str], scores, types) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's score-ordered pair merging."""
    vocab = {t: i for i, t in enumerate(tokens)}
    scores = scores.tolist() if hasattr(scores, "tolist") else list(scores)
    ranked = []
    for i, piece in enumerate(tokens):
        if types[i] != 1 or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left = vocab.get(piece[:cut])
            if left is not None and piece[cut:] in vocab:
                ranked.append((-scores[i], i, left, piece[:cut], piece[cut:]))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _spm_tokenizer(meta: dict, tokens: list[str], types: list[int]):
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = meta.get("tokenizer.ggml.scores")
    if scores is None:
        raise NiahError(
            "GGUF SentencePiece vocabulary has no tokenizer.ggml.scores: "
            "use an MLX model folder for this model"
        )
    unk_id = scalar(meta, "tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(
        vocab=vocab,
        merges=spm_merges(tokens, scores, types),
        fuse_unk=True,
        byte_fallback=True,
        unk_token=tokens[int(unk_id)] if unk_id is not None else None,
    )
    tok = Tokenizer(bpe)
    norm = [normalizers.Replace(" ", SPACE)]
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if scalar(meta, "tokenizer.ggml.add_space_prefix", True):
        norm.insert(0, normalizers.Prepend(SPACE))
        steps.append(decoders.Strip(" ", 1, 0))
    tok.normalizer = normalizers.Sequence(norm)
    tok.decoder = decoders.Sequence(steps)
    return tok


def _backend_tokenizer(meta: dict, kind, tokens: list[str], types: list[int]):
    """The `tokenizers` model for the vocabulary kind; inconsistent metadata is one line."""
    if kind not in ("gpt2", "llama"):
        raise NiahError(
            f"GGUF tokenizer type {kind!r} is not supported (gpt2 byte-level BPE "
            "or llama SentencePiece): use an MLX model folder for this model"
        )
    try:
        if kind == "gpt2":
            return _bpe_tokenizer(meta, tokens)
        return _spm_tokenizer(meta, tokens, types)
    except NiahError:
        raise
    except Exception as exc:  # tokenizers raises plain Exception for a bad vocabulary
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise NiahError(
            f"GGUF tokenizer metadata is inconsistent ({detail}): get an intact "
            "file, or use an MLX model folder"
        ) from exc


def build_tokenizer(meta: dict):
    """A transformers PreTrainedTokenizerFast for a GGUF's vocabulary (gpt2 or llama kind)."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    kind = scalar(meta, "tokenizer.ggml.model")
    tokens = list(meta["tokenizer.ggml.tokens"])
    raw_types = meta.get("tokenizer.ggml.token_type")
    types = list(
        raw_types.tolist() if hasattr(raw_types, "tolist") else raw_types or [1] * len(tokens)
    )
    tok = _backend_tokenizer(meta, kind, tokens, types)

    # Byte-level BPE files mark their chat markers user-defined too: special there.
    special_types = (_CONTROL,) if kind == "llama" else (_CONTROL, _USER_DEFINED)
    tok.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, t in enumerate(types)
            if t in special_types
        ]
    )
    tok.add_tokens(
        [
            AddedToken(tokens[i], normalized=False, special=False)
            for i, t in enumerate(types)
            if t == _USER_DEFINED and kind == "llama"
        ]
    )

    def tok_text(key):
        idx = scalar(meta, key)
        return tokens[int(idx)] if idx is not None and int(idx) < len(tokens) else None

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=tok_text("tokenizer.ggml.bos_token_id"),
        eos_token=tok_text("tokenizer.ggml.eos_token_id"),
        pad_token=tok_text("tokenizer.ggml.padding_token_id"),
        unk_token=tok_text("tokenizer.ggml.unknown_token_id") if kind == "llama" else None,
        chat_template=meta.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )
    hf.add_bos_token = bool(scalar(meta, "tokenizer.ggml.add_bos_token", False))
    if hf.add_bos_token and hf.bos_token is not None:
        _prepend_bos(hf)
    return hf


def _prepend_bos(hf) -> None:
    """encode(text) (special tokens on) starts with BOS, as llama.cpp does for this model."""
    from tokenizers.processors import TemplateProcessing

    bos, bos_id = hf.bos_token, hf.bos_token_id
    hf.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1", special_tokens=[(bos, bos_id)]
    )


def sentencepiece_reference(meta: dict):
    """A `sentencepiece` processor built from a llama-kind GGUF's pieces, scores and types:
    SentencePiece's own C++ BPE, the independent check of the tokenizer above (tests and
    scripts/check_gguf_tokenizer.py; needs the sentencepiece package)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    kinds = pb.ModelProto.SentencePiece
    by_type = {
        1: kinds.NORMAL,
        2: kinds.UNKNOWN,
        3: kinds.CONTROL,
        4: kinds.USER_DEFINED,
        5: kinds.UNUSED,
        6: kinds.BYTE,
    }
    m = pb.ModelProto()
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.byte_fallback = True
    for field, key in (
        ("unk_id", "unknown"),
        ("bos_id", "bos"),
        ("eos_id", "eos"),
        ("pad_id", "padding"),
    ):
        setattr(t, field, int(scalar(meta, f"tokenizer.ggml.{key}_token_id", -1)))
    n = m.normalizer_spec
    n.name, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", False, True
    n.add_dummy_prefix = bool(scalar(meta, "tokenizer.ggml.add_space_prefix", True))
    types = list(meta["tokenizer.ggml.token_type"].tolist())
    scores = meta["tokenizer.ggml.scores"].tolist()
    for i, piece in enumerate(meta["tokenizer.ggml.tokens"]):
        p = m.pieces.add()
        # llama.cpp writes user-defined pieces with real spaces; SentencePiece keeps U+2581.
        p.piece = piece.replace(" ", SPACE) if types[i] == _USER_DEFINED else piece
        p.score = scores[i]
        p.type = kinds.UNKNOWN if i == t.unk_id else by_type[types[i]]
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


# llama.cpp ends generation on a GGUF's end-of-sequence token and on the end-of-turn tokens
# named below, when the vocabulary has them (a GGUF carries no generation_config.json).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>")


def wrap_tokenizer(tokenizer):
    """mlx-lm's TokenizerWrapper around a tokenizer built from GGUF metadata, ending generation
    on its end-of-sequence and end-of-turn tokens."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    vocab = tokenizer.get_vocab()
    eos = {int(vocab[t]) for t in END_OF_TURN if t in vocab}
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    return TokenizerWrapper(tokenizer, eos_token_ids=sorted(eos))
