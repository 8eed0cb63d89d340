"""Calibration of the memory preflight: the CURRENT niah.preflight.estimate against the peaks
measured in committed run folders, cell by cell.

For each run folder (trials.jsonl + config.json) every trial that generated is grouped into its
cell (context, prefill step, KV bits); the estimate is recomputed from the record's model
dimensions and the run's settings, and printed beside the measured peaks (lowest and highest
of the cell's trials) with the ratio estimate / measured for both. Records made before the
width fields existed lack hidden/intermediate/vocab/weight bytes: give them with --dims
(a value a record carries wins over --dims).

    python benchmarks/calibration.py results/reference/qwen15-calib-stock-h200-2026-12-04 \\
        --dims hidden=1536,intermediate=8960,vocab=151936,weight_bytes=1888291840

Exit code 1 when a ratio falls outside [--low, --high] (default 0.75..1.25).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from niah.model import ModelInfo  # noqa: E402
from niah.preflight import estimate  # noqa: E402
from niah.sdpa.dispatch import choose_route, resolve_config  # noqa: E402

GIB = 1024**3
DIM_KEYS = ("hidden_size", "intermediate_size", "vocab_size", "weight_bytes")
ALIASES = {"hidden": "hidden_size", "intermediate": "intermediate_size", "vocab": "vocab_size"}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Cell:
    folder: str
    context: int
    prefill_step: int
    kv_bits: int | None
    route: str
    measured_low: int
    measured_high: int
    estimated: int
    recorded: int | None  # the estimate the trial's own preflight recorded when it ran

    @property
    def ratios(self) -> tuple[float, float]:
        """estimate / measured for the highest and the lowest measured trial."""
        return self.estimated / self.measured_high, self.estimated / self.measured_low


def parse_dims(text: str | None) -> dict:
    """'hidden=1536,intermediate=8960,...' -> {'hidden_size': 1536, ...}."""
    dims = {}
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if key not in DIM_KEYS:
            raise SystemExit(f"--dims: unknown key {key!r}; use {', '.join(DIM_KEYS)}")
        dims[key] = int(value)
    return dims


def model_info(record: dict, dims: dict) -> ModelInfo:
    """The ModelInfo the estimate needs, from a record and the --dims overrides."""
    given = {k: record.get(k) or dims.get(k, 0) for k in DIM_KEYS}  # records win
    if not given["weight_bytes"]:
        raise SystemExit(f"{record.get('model')}: the records lack weight_bytes: give --dims")
    return ModelInfo(
        name=record["model"],
        source="gguf",
        path=record.get("model_path", ""),
        trained_context=record.get("trained_context"),
        n_layers=record["n_layers"],
        n_heads=record["n_heads"],
        n_kv_heads=record["n_kv_heads"],
        head_dim=record["head_dim"],
        dtype_bytes=DTYPE_BYTES.get(record.get("compute_dtype"), 2),
        **given,
    )


def cell_estimate(record: dict, config: dict, info: ModelInfo) -> tuple[str, int]:
    """(route, estimated bytes) of a record's trial, as the trial's preflight computes it."""
    backend = str(record.get("device", "cpu")).split()[0]
    ident = config.get("identity", {})
    chunking = resolve_config(
        threshold=config.get("chunk_threshold") or int(ident.get("sdpa_threshold") or 0) or None,
        chunk_size=config.get("chunk_size") or int(ident.get("sdpa_chunk_size") or 0) or None,
    )
    step = min(record["prefill_step"], record["context"])
    route = choose_route(
        qL=step,
        kL=record["context"],
        route=config.get("sdpa", "auto"),
        config=chunking,
        backend_name=backend,
    )
    est = estimate(
        info,
        context=record["context"],
        route=route,
        prefill_step=step,
        kv_bits=record.get("kv_bits"),
        kv_group_size=record.get("kv_group_size") or config.get("kv_group_size") or 64,
        chunk_size=chunking.chunk_size,
        backend=backend,
        working_set=1,
    )
    return route, est.total


def calibrate(folder: Path, *, dims: dict | None = None) -> list[Cell]:
    """Every measured cell of one run folder, estimate beside measurement."""
    config = json.loads((folder / "config.json").read_text())
    groups: dict[tuple, list[dict]] = {}
    for line in (folder / "trials.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("verdict") in ("PASS", "FAIL", "NULL") and r.get("peak_memory_bytes"):
            groups.setdefault((r["context"], r["prefill_step"], r.get("kv_bits")), []).append(r)
    cells = []
    for (context, step, bits), records in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)
    ):
        info = model_info(records[0], dims or {})
        route, est = cell_estimate(records[0], config, info)
        peaks = [r["peak_memory_bytes"] for r in records]
        cells.append(
            Cell(
                folder=folder.name,
                context=context,
                prefill_step=step,
                kv_bits=bits,
                route=route,
                measured_low=min(peaks),
                measured_high=max(peaks),
                estimated=est,
                recorded=records[0].get("estimated_memory_bytes"),
            )
        )
    return cells


def table(cells: list[Cell]) -> str:
    """A markdown table, one row per cell."""
    lines = [
        "| run | context | prefill step | KV bits | route | measured GiB | estimate GiB "
        "| estimate / measured | recorded estimate GiB |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for c in cells:
        lo, hi = sorted(c.ratios)
        low, high = f"{c.measured_low / GIB:.2f}", f"{c.measured_high / GIB:.2f}"
        measured = low if low == high else f"{low}-{high}"
        ratio = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}"
        recorded = f"{c.recorded / GIB:.2f}" if c.recorded else "-"
        lines.append(
            f"| {c.folder} | {c.context} | {c.prefill_step} | {c.kv_bits or 'fp'} "
            f"| {c.route} | {measured} | {c.estimated / GIB:.2f} | {ratio} "
            f"| {recorded} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="run folders with trials.jsonl")
    ap.add_argument(
        "--dims", help="hidden=,intermediate=,vocab=,weight_bytes= for records that lack them"
    )
    ap.add_argument("--low", type=float, default=0.75)
    ap.add_argument("--high", type=float, default=1.25)
    args = ap.parse_args(argv)
    cells = [c for f in args.folders for c in calibrate(f, dims=parse_dims(args.dims))]
    print(table(cells))
    ratios = [r for c in cells for r in c.ratios]
    outside = [r for r in ratios if not args.low <= r <= args.high]
    print(
        f"\n{len(cells)} cells; estimate / measured from {min(ratios):.2f} to "
        f"{max(ratios):.2f}; {len(outside)} outside [{args.low}, {args.high}]"
    )
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
