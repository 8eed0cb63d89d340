"""`niah convert`: the folder it writes opens with mlx_lm.load, and mlx-lm's own greedy
generation on it equals niah's on the GGUF (SmolLM2, CPU, short)."""

import json

import pytest
from conftest import invoke


def _niah_greedy(session, ids, n):
    out = session.generate(ids, cache=session.make_cache(), max_tokens=n)
    return out.response


@pytest.mark.slow
def test_converted_folder_generates_what_niah_generates(gguf_path, tmp_path):
    import mlx.core as mx
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    from niah.model import ModelSession

    out = tmp_path / "smollm2-mlx"
    res = invoke(["convert", gguf_path, str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"wrote {out} (llama, weights native): ")
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["rope_traditional"] is True and cfg["quantization"]["model.embed_tokens"]["bits"] == 8
    )
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    model, wrapper = load(str(out))
    session = ModelSession(gguf_path, dequantize=False)
    if session.compute_dtype == "float16":  # on a GPU niah runs float16 activations
        from niah.model import cast_floats

        cast_floats(model, "float16")
    messages = [{"role": "user", "content": "List three colours of the rainbow."}]
    ids = session.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert wrapper.apply_chat_template(messages, add_generation_prompt=True) == ids
    theirs = generate(model, wrapper, ids, max_tokens=12, sampler=make_sampler(temp=0.0))
    ours = _niah_greedy(session, ids, 12)
    assert theirs.strip() and theirs == ours
    assert mx.array_equal(
        model.model.layers[0].self_attn.q_proj.weight,
        session.model.model.layers[0].self_attn.q_proj.weight,
    ).item()


def test_convert_refuses_a_non_empty_folder(gguf_path, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    res = invoke(["convert", gguf_path, str(tmp_path)])
    assert res.exit_code == 2
    assert res.output == (
        f"error: folder {str(tmp_path)!r} is not empty: give a new folder or pass --force\n"
    )
    res = invoke(["convert", str(tmp_path / "none.gguf"), str(tmp_path / "o")])
    assert res.exit_code == 2 and "not found" in res.output and not (tmp_path / "o").exists()
