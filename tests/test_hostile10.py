"""Hostile pass ten: attention over a quantized KV cache (--kv-bits) and the marks of contexts
past the model's trained length (every report, the gate, doctor)."""

from __future__ import annotations

import pytest
from conftest import invoke
from test_beyond_trained import _no_weights


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

