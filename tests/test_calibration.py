"""The memory preflight against the peaks measured in the committed calibration runs: every
cell's estimate within [0.75, 1.25] of its measured peak (a change to niah.preflight that
breaks the calibration fails here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "results" / "reference"
# Records made before they carried the model's widths and weight bytes: given here, as on the
# command lines of docs/bench/calibration-*.txt.
QWEN15 = "hidden=1536,intermediate=8960,vocab=151936,weight_bytes=1888291840"
SMOLLM2 = "hidden=576,intermediate=1536,vocab=49152,weight_bytes=538060032"
FOLDERS = [
    (f"qwen15-calib-{kind}-h200-2026-12-04", QWEN15) for kind in ("stock", "chunked", "step8k")
]
FOLDERS += [
    (f"smollm2-calib-cpu-2026-12-04-{kind}", SMOLLM2) for kind in ("stock", "chunked", "kv8")
]
FOLDERS += [("qwen15-calib-kv8-h100-2026-12-05", QWEN15)]  # CUDA: the dequantized route


def _calibration():
    spec = importlib.util.spec_from_file_location(
        "calibration", ROOT / "benchmarks" / "calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder,dims", FOLDERS, ids=[f for f, _ in FOLDERS])
def test_every_measured_cell_is_within_a_quarter(folder, dims):
    cal = _calibration()
    cells = cal.calibrate(REF / folder, dims=cal.parse_dims(dims))
    assert cells, f"{folder}: no measured cell"
    off = [
        (c.context, c.prefill_step, c.kv_bits, c.route, [round(r, 2) for r in c.ratios])
        for c in cells
        if not all(0.75 <= r <= 1.25 for r in c.ratios)
    ]
    assert not off, f"{folder}: estimate / measured outside [0.75, 1.25]: {off}"
