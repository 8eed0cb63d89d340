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
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "niah-models"
    )
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
    from niah.run import run_sweep

    session = ModelSession(qwen_path)
    info = session.info
    assert info.digest == QWEN_SHA
    assert info.weights == "q8/g64" and {"Q4_K", "Q6_K", "Q5_0"} <= set(info.quant_types.split(","))
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.trained_context) == (
        24,
        14,
        2,
        32768,
    )
    cfg = RunConfig(
        model=qwen_path, contexts=(1024,), depths=(0.5,), max_tokens=12, out=str(tmp_path)
    )
    (rec,) = run_sweep(cfg, session=session).records
    assert rec["verdict"] == PASS, rec["response"]
    assert rec["model_digest"] == QWEN_SHA and rec["weights"] == "q8/g64"


@pytest.mark.slow
def test_gemma_tokenizer_matches_sentencepiece(gemma_path):
    from niah.gguf.header import parse_header
    from niah.gguf.tokenizer import build_tokenizer, sentencepiece_reference
    from niah.haystack import Haystack

    pytest.importorskip("sentencepiece")
    meta = parse_header(gemma_path).meta
    ours = build_tokenizer(meta)
    ref = sentencepiece_reference(meta)
    texts = [
        "Hello world",
        "The secret passkey is 4829173.",
        "  two  spaces\n\nnewlines\n\n\n end",
        "naïve café 東京 🤖 x\u2581y \t tab",
        "What is the secret passkey mentioned in the text above?\n\nThe secret passkey is",
        "a" * 50 + " " * 7 + "\n" * 3,
    ]
    hay = Haystack(ours, source="prose", seed=3)
    hay.ensure(3000)
    texts.append(ours.decode(hay.ids.tolist()))
    for text in texts:
        assert ours.encode(text, add_special_tokens=False) == ref.encode(text), text[:40]
    assert ours.encode("Hi")[0] == ours.bos_token_id == 2  # add_bos_token in the metadata
    ids = ref.encode(texts[-1])
    assert ours.decode(ids) == ref.decode(ids)
    # No chat template: a plain prompt that starts with BOS (once) and ends with the answer prefix.
    from niah.haystack import PromptBuilder

    assert not ours.chat_template
    prompt = PromptBuilder(ours).build(context=600, depth=0.5, value="1234567").ids
    assert prompt[0] == 2 and int((prompt == 2).sum()) == 1
    assert ours.decode(prompt[-8:].tolist()).endswith("\n\nThe secret passkey is")


@pytest.fixture(scope="module")
def gemma(gemma_path):
    from niah.model import ModelSession

    return ModelSession(gemma_path)


@pytest.mark.slow
def test_gemma_loads_and_answers(gemma, tmp_path):
    from niah.run import run_sweep

    info = gemma.info
    assert info.digest == GEMMA_SHA and info.weights == "q8/g64"
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.head_dim) == (18, 4, 1, 256)
    args = gemma.model.args
    assert (
        args.sliding_window,
        args.sliding_window_pattern,
        args.query_pre_attn_scalar,
        args.rope_local_base_freq,
    ) == (512, 6, 256, 10000.0)
    # Norms were stored as 1 + w: the loaded ones are w (output_norm's first is 7.125 in the file).
    assert abs(gemma.model.model.norm.weight[0].item() - 6.125) < 1e-6
    ids = gemma.tokenizer.encode("The capital of France is")
    out = gemma.generate(ids, cache=gemma.make_cache(), max_tokens=6)
    assert "Paris" in out.response or "capital" in out.response, out.response
    cfg = RunConfig(
        model="gemma", contexts=(1024,), depths=(0.0, 1.0), max_tokens=12, out=str(tmp_path)
    )
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
    assert (
        sum(n for r, n in state.routes.items() if r.startswith("kv-chunks/")) == gemma.info.n_layers
    )
    rel = 1e-2 if gemma.compute_dtype == "float16" else 2e-3
    assert mx.abs(out - ref).max().item() < rel * max(1.0, mx.abs(ref).max().item())
    assert mx.argmax(out[0, -1]).item() == mx.argmax(ref[0, -1]).item()


@pytest.mark.slow
def test_converted_gemma_folder_generates_what_niah_generates(gemma_path, tmp_path):
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    from niah.gguf.convert import convert
    from niah.model import ModelSession, cast_floats

    gemma = ModelSession(gemma_path, dequantize=False)  # the same quantized matmuls as mlx-lm
    done = convert(gemma_path, tmp_path / "gemma", quant="auto")
    assert done.model_type == "gemma3_text" and done.weights == "q8/g64"
    model, wrapper = load(str(done.folder))
    if gemma.compute_dtype == "float16":  # on a GPU niah runs float16 activations
        cast_floats(model, "float16")
    ids = wrapper.encode("The capital of France is")
    assert ids == gemma.tokenizer.encode("The capital of France is") and ids[0] == 2
    theirs = generate(model, wrapper, ids, max_tokens=8, sampler=make_sampler(temp=0.0))
    ours = gemma.generate(ids, cache=gemma.make_cache(), max_tokens=8).response
    assert theirs.strip() and theirs == ours
