"""Running a sweep: the grid, the warm-up, prefix reuse, one trial and the record it makes.

    sweep.py    orchestration: session, run folder and lock, this call's trials, results
    checks.py   the checks before a run: trained length, memory, task against the tokenizer
    grid.py     the cells asked (kept as asked when grids share a folder) -> TrialSpecs, ranks
    trial.py    one trial: needles, prompt, memory preflight, generate, score -> TrialRecord
    warmup.py   one-time costs before the first timed trial (modes auto/off/once/shapes)
    reuse.py    prefix reuse and KV-buffer layout, asking mlx-lm's cache objects
    records.py  TrialRecord: the schema of a trials.jsonl line, its checks and its docs
    phases.py   where a sweep's wall time goes: the "phases" event of runs.jsonl
    finished.py a rerun with nothing left to run, answered from its folder without a load
    ranks.py    mlx.launch: rank and world, barrier, rank 0 gathers

The names below are loaded on first use, so niah.store can import niah.run.records without
loading the sweep (which imports the store).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_sweep": "sweep",
    "RunResult": "sweep",
    "Progress": "sweep",
    "Interrupted": "sweep",
    "check_contexts": "checks",
    "warm_up_mode": "warmup",
    "WARM_UP_MODES": "warmup",
    "prefill_block_lengths": "calls",
    "TrialSpec": "grid",
    "build_grid": "grid",
    "assign_to_ranks": "grid",
    "TrialRecord": "records",
    "group_info": "ranks",
    "gather_and_merge": "ranks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'niah.run' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
