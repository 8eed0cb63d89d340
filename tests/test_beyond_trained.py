"""Contexts past the model's trained length (issue 24): they run by default and are marked in
every report; --refuse-beyond-trained refuses them from the model's metadata, before any weight
loads; --fail-under says how many of the trials it counted were past the trained length."""

import json
import re
from pathlib import Path

import pytest
from conftest import invoke

from niah.config import RunConfig

REF = Path(__file__).resolve().parent.parent / "results" / "reference" / "smollm2-cpu-2026-11-27"


def _no_weights(monkeypatch):
    """Any weight load fails the test: what follows must be answered from metadata alone."""
    import niah.gguf
    import niah.gguf.load
    from niah.model import ModelSession

    def fail(*a, **kw):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(niah.gguf.load, "read_gguf", fail)
    monkeypatch.setattr(niah.gguf, "load_gguf_model", fail)
    monkeypatch.setattr(ModelSession, "__init__", fail)


@pytest.mark.parametrize(
    "args,context,answer",
    [
        (["-c", "16k"], 16384, 32),
        (["-c", "8k"], 8192, 32),
        (["-c", "8100", "--max-tokens", "93"], 8100, 93),
    ],
)
def test_refusal_asked_for_answers_before_any_weight_loads(
    tmp_path, monkeypatch, gguf_path, args, context, answer
):
    _no_weights(monkeypatch)
    out = tmp_path / "out"
    result = invoke(["run", *args, "--refuse-beyond-trained", "-o", str(out), "-q"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: context {context} plus up to {answer} answer tokens is beyond the model's trained "
        "length of 8192 tokens (--refuse-beyond-trained): use a shorter --context, or drop "
        "--refuse-beyond-trained to run it marked\n"
    )
    assert not out.exists()


def test_grid_that_fits_nowhere_is_refused_before_any_weight_loads(
    tmp_path, monkeypatch, gguf_path
):
    from niah import preflight

    _no_weights(monkeypatch)
    monkeypatch.setattr(preflight, "working_set_bytes", lambda: 64 * 1024**2)
    out = tmp_path / "out"
    result = invoke(["run", "-c", "1k,2k", "-d", "0", "-o", str(out), "-q"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert re.fullmatch(
        r"error: no trial of this grid fits in memory: the smallest needs about "
        r"[\d.]+ GiB \(weights [\d.]+ \+ KV [\d.]+ \+ attention [\d.]+ \+ "
        r"activations [\d.]+\) of a 0\.1 GiB working set: use shorter contexts, "
        r"--kv-bits 4, or a smaller model\n",
        result.stderr,
    ), result.stderr
    assert not out.exists()


@pytest.mark.parametrize("extra", [[], ["--allow-beyond-trained"]])
def test_headline_command_passes_the_checks_and_goes_on_to_load(
    tmp_path, monkeypatch, gguf_path, extra
):
    """`niah run --context 128k --depth 0.5` on the embedded model (trained 8192) is no longer
    refused, before or after the load: it reaches the trials (the load and the run stubbed here:
    the real run takes long on a CPU). The old --allow-beyond-trained is still accepted."""
    from types import SimpleNamespace

    import niah.run.sweep as sweep
    from niah.errors import NiahError

    def running(*a, **kw):
        raise NiahError("reached the trials")

    loaded = SimpleNamespace(info=SimpleNamespace(trained_context=8192))
    monkeypatch.setattr(sweep, "_open_session", lambda *a, **kw: loaded)
    monkeypatch.setattr(sweep, "_prepare", running)
    result = invoke(
        ["run", "--context", "128k", "--depth", "0.5", *extra, "-o", str(tmp_path / "out"), "-q"]
    )
    assert (result.exit_code, result.stderr) == (2, "error: reached the trials\n")


def test_model_metadata_without_weights(gguf_path, tmp_path, monkeypatch):
    from niah.model_meta import model_metadata

    _no_weights(monkeypatch)
    meta = model_metadata(gguf_path)
    assert (
        meta.trained_context,
        meta.n_layers,
        meta.n_heads,
        meta.n_kv_heads,
        meta.head_dim,
        meta.vocab_size,
    ) == (8192, 30, 9, 3, 64, 49152)
    assert meta.weight_bytes and meta.weight_bytes < Path(gguf_path).stat().st_size
    folder = tmp_path / "mlx"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "gemma3",
                "text_config": {
                    "max_position_embeddings": 32768,
                    "num_hidden_layers": 4,
                    "num_attention_heads": 8,
                    "num_key_value_heads": 2,
                    "hidden_size": 256,
                    "vocab_size": 1000,
                },
            }
        )
    )
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    meta = model_metadata(str(folder))
    assert (
        meta.source,
        meta.trained_context,
        meta.n_layers,
        meta.n_heads,
        meta.n_kv_heads,
        meta.head_dim,
        meta.vocab_size,
        meta.weight_bytes,
    ) == ("mlx", 32768, 4, 8, 2, 32, 1000, 100)


def test_an_old_folders_allow_beyond_trained_keeps_its_hash():
    old = RunConfig.from_dict(
        {"model": "default", "contexts": [16384], "allow_beyond_trained": True}
    )
    assert old.hash() == RunConfig(model="default", contexts=(16384,)).hash()
    assert not old.refuse_beyond_trained


# ---- the marks, with the sweep faked ---------------------------------------------------------


def _records() -> list[dict]:
    ref = json.loads((REF / "trials.jsonl").read_text().splitlines()[0])
    base = dict(ref, depth=0.5, trained_context=8192, max_tokens=32, elapsed_s=1.0)
    return [
        dict(base, context=1024, beyond_trained=False, verdict="PASS", score=1.0),
        dict(base, context=16384, beyond_trained=True, verdict="FAIL", score=0.0),
        dict(base, context=131072, beyond_trained=True, verdict="FAIL", score=0.0),
    ]


def _fake_sweep(monkeypatch, tmp_path, records):
    import niah.run
    from niah.run import RunResult

    folder = tmp_path / "out" / "run"
    folder.mkdir(parents=True)
    (folder / "runs.jsonl").write_text("")

    def sweep(cfg, **kw):
        return RunResult(folder=folder, config=cfg, records=records, ran=len(records))

    monkeypatch.setattr(niah.run, "run_sweep", sweep)


def test_terminal_table_marks_rows_past_the_trained_length_and_the_gate_counts_them(
    tmp_path, monkeypatch
):
    _fake_sweep(monkeypatch, tmp_path, _records())
    result = invoke(
        [
            "run",
            "-c",
            "1k,16k,128k",
            "-d",
            "0.5",
            "-o",
            str(tmp_path / "out"),
            "-q",
            "--fail-under",
            "0.5",
        ]
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("Context"))) :]
    assert table[:6] == [
        "Context  Depth 50%      Accuracy",
        "1K       PASS (1.00 s)  100%",
        "16K†     FAIL (1.00 s)  0%",
        "128K†    FAIL (1.00 s)  0%",
        "† past the model's trained length (8192 tokens, with --max-tokens): 2 of 3 trials, "
        "measured as asked",
        "",
    ]
    assert lines[-1] == (
        "accuracy 33.3% over 3 trials (2 beyond the trained length) is below --fail-under 50.0%"
    )


def test_gate_line_without_beyond_trials():
    from niah.report import fail_under_line

    recs = [dict(r, beyond_trained=False) for r in _records()]
    assert fail_under_line(recs, 0.5) == "accuracy 33.3% over 3 trials is below --fail-under 50.0%"
    assert fail_under_line(recs, 0.3) is None


def test_exports_mark_trials_past_the_trained_length(tmp_path):
    import xml.etree.ElementTree as ET

    from niah.report import format_markdown, to_frame
    from niah.report.heatmap import heatmap
    from niah.report.junit import junit

    recs = _records()
    md = format_markdown(recs)
    assert "| 16K† | FAIL (1.00 s) | 0% |" in md and "| 1K | PASS (1.00 s) | 100% |" in md
    assert "† past the model's trained length (8192 tokens, with --max-tokens)" in md
    assert list(to_frame(recs)["beyond_trained"]) == [False, True, True]  # CSV, JSON, Parquet
    junit(recs, tmp_path / "j.xml")
    cases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    marked = [{p.get("name"): p.get("value") for p in c.iter("property")} for c in cases]
    assert marked == [
        {},
        {"beyond_trained": "true", "trained_context": "8192"},
        {"beyond_trained": "true", "trained_context": "8192"},
    ]
    assert "past the model's trained length of 8192 tokens" in (tmp_path / "j.xml").read_text()
    heatmap(recs, tmp_path / "h.svg")
    assert "<pattern" in (tmp_path / "h.svg").read_text()  # the hatch of the beyond rows
    heatmap([recs[0]], tmp_path / "plain.svg")
    assert "<pattern" not in (tmp_path / "plain.svg").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["-c", "50"],
            "error: context 50 is too short for the template, needle and question (93 tokens "
            "at least): use a longer --context\n",
        ),
        (
            ["-c", "256", "--max-tokens", "2"],
            "error: --max-tokens 2 cannot hold the answer (8 tokens for the number value "
            "asked): use --max-tokens 8 or more, with room to spare\n",
        ),
    ],
)
def test_task_that_cannot_fit_is_refused_from_the_tokenizer_before_any_weight_loads(
    tmp_path, monkeypatch, gguf_path, args, message
):
    """A context too short for the prompt's template or a --max-tokens too small for the answer
    needs the tokenizer, not the weights: it is refused before the load (it cost a whole load)."""
    _no_weights(monkeypatch)
    out = tmp_path / "out"
    result = invoke(["run", *args, "-d", "0.5", "-o", str(out), "-q"])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)
    assert not out.exists()


def test_the_load_reuses_the_tokenizer_built_for_the_checks(monkeypatch, gguf_path):
    """The tokenizer built before the load for the task's checks is the session's: the GGUF's
    vocabulary is not turned into a tokenizer twice."""
    import niah.gguf.load
    import niah.model
    from niah.config import RunConfig
    from niah.run.phases import Phases
    from niah.run.sweep import _load

    built = []
    real = niah.gguf.load.build_tokenizer

    def counting(meta):
        built.append(1)
        return real(meta)

    monkeypatch.setattr(niah.gguf.load, "build_tokenizer", counting)
    monkeypatch.setattr("niah.gguf.tokenizer.build_tokenizer", counting)
    phases = Phases()
    config = RunConfig(model=str(gguf_path), contexts=(1024,), depths=(0.5,))
    from niah.run.events import Progress

    session = _load(config, sharded=False, progress=Progress(), phases=phases)
    assert len(built) == 1
    assert session.wrapper is not None and session.tokenizer is session.wrapper._tokenizer
    assert {"imports", "metadata", "load"} <= set(phases.seconds)
