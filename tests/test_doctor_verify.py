"""niah doctor prints every section; niah sdpa verify passes, and fails on a broken route."""

import numpy as np
from typer.testing import CliRunner

from niah.cli import app

runner = CliRunner()


def test_doctor_prints_every_section():
    result = runner.invoke(app, ["doctor", "--model", "default", "--context", "4k"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for section in ("[MLX]", "[BLAS]", "[mlx-lm]", "[embedded model]", "[planned run]"):
        assert section in out
    for field in ("version: ", "backend: ", "recommended working set: ", "metal available: ",
                  "cuda available: ", "in use: ", "SmolLM2-135M-Instruct GGUF: /",
                  "context: 4K = 4096 tokens", "estimated peak: ", "-> fits",
                  "sdpa route (auto): prefill step stock, decode stock"):
        assert field in out, field
    assert "(fast)" in out  # OpenBLAS is preloaded in the test process


def test_doctor_beyond_trained_and_bad_context():
    result = runner.invoke(app, ["doctor", "--model", "default", "--context", "128k"])
    assert result.exit_code == 0
    assert "beyond trained length: needs --allow-beyond-trained" in result.stdout
    assert "sdpa route (auto): prefill step kv-chunks, decode kv-chunks" in result.stdout
    bad = runner.invoke(app, ["doctor", "--model", "default", "--context", "12q"])
    assert bad.exit_code == 2 and bad.stderr == "error: bad context '12q': use a positive token count like 8000, 4k or 1m\n"


def test_sdpa_verify_quick_passes():
    result = runner.invoke(app, ["sdpa", "verify", "--quick"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("niah sdpa verify on cpu")
    assert lines[-1] == "84 checks: all PASS"
    assert sum(line.endswith("PASS") for line in lines[2:-1]) == 84


def test_sdpa_verify_fails_on_a_broken_route(monkeypatch):
    from niah.sdpa import dispatch

    real = dispatch.kv_chunks

    def broken(*args, **kwargs):
        out, lse = real(*args, **kwargs)
        return out + 0.1, lse  # an error of 0.1: above every tolerance

    monkeypatch.setattr(dispatch, "kv_chunks", broken)
    result = runner.invoke(app, ["sdpa", "verify", "--quick"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "84 checks: FAILURES above"
    fails = [line for line in result.stdout.splitlines() if line.endswith("FAIL")]
    assert len(fails) == 42 and all("kv-chunks" in line for line in fails)
