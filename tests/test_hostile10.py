"""Hostile pass ten: attention over a quantized KV cache (--kv-bits) and the marks of contexts
past the model's trained length (every report, the gate, doctor)."""

from __future__ import annotations

import pytest
from conftest import invoke, read_records
from test_beyond_trained import _no_weights

from niah.sdpa.quantized import quantized_dispatch


@pytest.mark.parametrize("kv,window", [("4", "512"), ("none,8", "1024"), ("2", "256,4096")])
def test_kv_bits_with_max_kv_size_is_refused_before_any_weight_loads(
    tmp_path, monkeypatch, gguf_path, kv, window
):
    """The grid crosses --kv-bits with --max-kv-size, and no trial can have both (mlx-lm has
    no quantized rotating cache): it was refused by the first such trial's make_cache, after
    the whole model load (and after the other pairs' trials had run)."""
    _no_weights(monkeypatch)
    out = tmp_path / "out"
    result = invoke(
        ["run", "-c", "1k", "-d", "0.5", "--kv-bits", kv, "--max-kv-size", window, "-o", str(out)]
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: --kv-bits and --max-kv-size cannot be combined (mlx-lm has no quantized "
        "rotating cache): sweep them separately\n"
    )
    assert not out.exists()


def _tiny_gemma3_vlm_folder(folder, tokenizer, *, trained: int):
    """An MLX folder of mlx-lm's gemma3 (the Gemma 3 VLMs' model type: the text model's
    settings under text_config), one tiny layer of random weights, SmolLM2's tokenizer."""
    import json

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import gemma3

    config = {
        "model_type": "gemma3",
        "vocab_size": len(tokenizer),
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 32,
            "sliding_window": 64,
            "sliding_window_pattern": 1,
            "max_position_embeddings": trained,
        },
    }
    folder.mkdir()
    model = gemma3.Model(gemma3.ModelArgs.from_dict(json.loads(json.dumps(config))))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_a_vlm_folders_trials_mark_the_trained_length_the_checks_read(tmp_path, gguf_tokenizer):
    """Gemma 3 VLM folders keep max_position_embeddings under text_config: the checks before the
    load read it there (--refuse-beyond-trained refused by it), but every trial's
    trained_context and beyond_trained came from the loaded model's top-level args, which
    have none: no trial of such a model was marked past its trained length, in any report."""
    folder = _tiny_gemma3_vlm_folder(tmp_path / "g3", gguf_tokenizer, trained=256)
    args = ["run", "-m", str(folder), "-c", "300", "-d", "0.5", "--max-tokens", "10", "-q"]
    refused = invoke([*args, "--refuse-beyond-trained", "-o", str(tmp_path / "no")])
    assert refused.exit_code == 2 and "trained length of 256 tokens" in refused.stderr
    result = invoke([*args, "-o", str(tmp_path / "out")])
    (rec,) = read_records(next((tmp_path / "out").iterdir()))
    assert (rec["trained_context"], rec["beyond_trained"]) == (256, True), result.output
    assert "300†" in result.stdout


def test_doctor_counts_the_answer_tokens_past_the_trained_length():
    """`niah run -c 8k` on SmolLM2 (trained 8192) marks every trial (8192 + 32 answer tokens),
    and doctor, sizing the same run with the same 32 answer tokens, said nothing of it."""
    result = invoke(["doctor", "--model", "default", "--context", "8k"])
    assert result.exit_code == 0
    assert (
        "  context: 8K = 8192 tokens (plus 32 answer tokens, beyond trained length: runs "
        "marked; --refuse-beyond-trained refuses it)"
    ) in result.stdout.splitlines()
    assert (
        "  context: 8160 = 8160 tokens"
        in invoke(["doctor", "--model", "default", "--context", "8160"]).stdout.splitlines()
    )


@pytest.mark.parametrize("bits", ["7", "1", "0", "-4"])
def test_doctor_refuses_the_kv_bits_run_refuses_before_any_weight_loads(
    monkeypatch, gguf_path, bits
):
    """doctor --kv-bits 7 sized a 7-bit KV cache mlx-lm cannot make ("fits"), and -4 came
    back as an error only after the model load."""
    _no_weights(monkeypatch)
    result = invoke(["doctor", "--model", "default", "--context", "1k", "--kv-bits", bits])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: bad --kv-bits value '{bits}': use 2, 3, 4, 5, 6, 8\n"


def _forged_run(folder, *, beyond_from: int | None = None, fail_at: int | None = None):
    """The committed SmolLM2 CPU run (1K-4K, trained 8192) copied to `folder`, its trials from
    `beyond_from` on recorded as a model trained to `beyond_from` would record them, and those
    at `fail_at` (depth 50%) failed."""
    import json
    import shutil

    from test_beyond_trained import REF

    shutil.copytree(REF, folder)
    lines = []
    for line in (folder / "trials.jsonl").read_text().splitlines():
        r = json.loads(line)
        if beyond_from is not None and r["context"] >= beyond_from:
            r.update(trained_context=beyond_from, beyond_trained=True)
        if r["context"] == fail_at and r["depth"] == 0.5:
            r.update(verdict="FAIL", score=0.0)
        lines.append(json.dumps(r))
    (folder / "trials.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_compare_marks_each_runs_cells_past_its_trained_length(tmp_path):
    """--compare printed no mark at all: a run whose 4K trials were past its model's trained
    length read like one within it, side by side with a run that was not."""
    a = _forged_run(tmp_path / "a", beyond_from=4096, fail_at=4096)
    b = _forged_run(tmp_path / "b")
    result = invoke(["report", "--compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[7:] == [
        "4K       0%     PASS/PASS†  PASS/PASS  +0%",
        "4K       50%    FAIL/FAIL†  PASS/PASS  +100%  yes",
        "4K       100%   PASS/PASS†  PASS/PASS  +0%",
        "a: † past the model's trained length (4096 tokens, with --max-tokens): 6 of 18 "
        "trials, measured as asked",
        "",
        "a: accuracy 89%; b: accuracy 100%; 1 cell(s) changed verdict",
    ]
    unmarked = invoke(["report", "--compare", str(b), str(b)]).stdout
    assert "†" not in unmarked


def test_a_record_without_beyond_trained_is_marked_alike_in_every_report(tmp_path):
    """Trials whose records lack beyond_trained (another tool's, or edited) but say their
    trained length: the HTML page marked 4K from trained_context while the table, the gate
    line and JUnit left every row unmarked. Every report now judges them alike, with the
    answer tokens where the record has them."""
    import json
    import xml.etree.ElementTree as ET

    folder = _forged_run(tmp_path / "old")
    rows = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    for r in rows:
        del r["beyond_trained"]
        r["trained_context"] = 2048 if r["context"] != 1024 else 1040
        r["max_tokens"] = 32 if r["context"] == 2048 else r.pop("max_tokens", None)
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    junit, html = tmp_path / "j.xml", tmp_path / "r.html"
    result = invoke(["report", str(folder), "--junit", str(junit), "--html", str(html)])
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.stdout.splitlines()[3:6]]
    assert names == ["1K", "2K†", "4K†"]  # 1024 + no answer budget known: within 1040
    assert "† past the model's trained length (2048 tokens, with --max-tokens): 12 of 18" in (
        result.stdout
    )
    cases = ET.parse(junit).getroot().iter("testcase")
    marked = [any(p.get("name") == "beyond_trained" for p in c.iter("property")) for c in cases]
    assert sum(marked) == 12
    page = html.read_text()
    data = json.loads(page.split('id="niah-data">')[1].split("</script>")[0])
    trials = [t for g in data["runs"][0]["groups"] for t in g["trials"]]
    assert sorted({t["context"] for t in trials if t["beyond_trained"]}) == [2048, 4096]


@pytest.mark.parametrize("raw", ["-1", "0", "1e400"])
def test_an_absurd_trained_length_in_config_json_is_no_trained_length(
    tmp_path, gguf_tokenizer, raw
):
    """max_position_embeddings -1 was taken as a trained length (every context refused as
    'beyond the model's trained length of -1 tokens', or run marked), and 1e400 (JSON's
    infinity) raised an OverflowError traceback before the load."""
    import re

    from niah.model_meta import model_metadata

    folder = _tiny_gemma3_vlm_folder(tmp_path / "g3", gguf_tokenizer, trained=256)
    config = folder / "config.json"
    text = re.sub(
        r'"max_position_embeddings": \d+', f'"max_position_embeddings": {raw}', config.read_text()
    )
    config.write_text(text)
    assert model_metadata(str(folder)).trained_context is None
    result = invoke(
        [
            "run",
            "-m",
            str(folder),
            "-c",
            "300",
            "--refuse-beyond-trained",
            "-o",
            str(tmp_path / "out"),
            "-q",
            "--max-tokens",
            "10",
            "-d",
            "0.5",
        ]
    )
    assert "Traceback" not in result.output and "trained length" not in result.stderr
    assert result.exit_code in (0, 2) and len(result.stderr.splitlines()) <= 1, result.stderr


def test_preflight_covers_the_quantized_key_chunks_of_one_call():
    """On Metal and the CPU a --kv-bits trial past the threshold runs mlx-lm's quantized
    attention per key chunk, with no query blocks: one call held about 8.3 bytes per (head,
    query, key) of a chunk, and the estimate counted the reference route's 6 (SmolLM2's
    heads, a 2048-row prefill block, 4096-key chunks: 630 MB measured, 453 MB estimated)."""
    from types import SimpleNamespace

    import mlx.core as mx

    from niah.preflight import estimate
    from niah.sdpa.budget import ChunkConfig

    info = SimpleNamespace(
        n_layers=1, n_heads=9, n_kv_heads=3, head_dim=64, weight_bytes=0, vocab_size=0
    )
    qL, kL, chunk = 2048, 8192, 4096
    mx.random.seed(0)
    q = mx.random.normal((1, 9, qL, 64))
    qk = mx.quantize(mx.random.normal((1, 3, kL, 64)), group_size=64, bits=4)
    qv = mx.quantize(mx.random.normal((1, 3, kL, 64)), group_size=64, bits=4)
    mx.eval(q, qk, qv)
    config = ChunkConfig(threshold=1024, chunk_size=chunk, q_block=1024, flop_budget=1e11)
    with mx.stream(mx.cpu):
        mx.synchronize()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        out = quantized_dispatch(
            q, qk, qv, scale=0.125, mask="causal", group_size=64, bits=4, config=config
        )
        mx.eval(out)
        measured = mx.get_peak_memory() - base
    est = estimate(
        info,
        context=kL,
        route="kv-chunks",
        prefill_step=qL,
        kv_bits=4,
        kv_group_size=64,
        chunk_size=chunk,
        backend="cpu",
        working_set=1 << 40,
    )
    assert measured <= est.attention <= 1.25 * measured, (measured, est.attention)


def test_rope_scaling_reaches_a_vlm_folders_text_model(tmp_path, gguf_tokenizer):
    """--rope-scaling yarn:4 on a Gemma 3 VLM folder went into the top-level config, which its
    text model is not built from: the trials ran unscaled while recording rope_scaling
    'yarn:4' (and a null rope_scaling_config, without a word)."""
    from niah.model import ModelSession

    folder = _tiny_gemma3_vlm_folder(tmp_path / "g3", gguf_tokenizer, trained=256)
    session = ModelSession(str(folder), rope_scaling="yarn:4")
    expected = {"factor": 4.0, "original_max_position_embeddings": 256, "type": "yarn"}
    assert session.model.language_model.args.rope_scaling == expected
    args = ["run", "-m", str(folder), "-c", "200", "-d", "0.5", "--max-tokens", "10", "-q"]
    invoke([*args, "--rope-scaling", "yarn:4", "-o", str(tmp_path / "out")])
    (rec,) = read_records(next((tmp_path / "out").iterdir()))
    assert (rec["rope_scaling"], rec["rope_scaling_config"]) == ("yarn:4", expected)
