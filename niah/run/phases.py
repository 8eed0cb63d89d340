"""Where a sweep's wall time goes: named phases, each timed where it happens, logged as one
runs.jsonl "phases" event at the end of the sweep.

Phases (seconds, a phase that did not happen is absent):
    startup   from the import of the niah package to the start of the sweep (imports, CLI)
    metadata  the model's metadata and the checks made before any weight loads
    imports   mlx-lm and what it imports (transformers, and torch where it is installed)
    load      the model load (niah.model.ModelSession), imports above excluded
    prepare   prompt builder, input checks, identity, run folder
    probe     timing the device for trial estimates (niah.preflight.probe_throughput)
    warm-up   the warm-up before the first timed trial
    trials    the trial loop: prompts, trials (their elapsed_s), scoring, records
The process's remaining wall time (interpreter start, the report and the exports, exit) is
what benchmarks/wall.py shows as "other". A sweep stopped by Ctrl-C or an error logs the phases
it went through, marked "finished": false. `startup` is measured from the import of niah, so
it means what it says for a `niah` process; a caller that imported niah long before (a test
invoking the CLI in-process) passes its own figure or none.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

PHASES = ("startup", "metadata", "imports", "load", "prepare", "probe", "warm-up", "trials")


@dataclass
class Phases:
    """Seconds per phase of one sweep, in the order the phases ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str):
        """Add the time of the enclosed block to phase `name` (also when it raises)."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}: one of {', '.join(PHASES)}")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    def event(self) -> dict:
        """runs.jsonl's "phases" event (seconds rounded to the millisecond)."""
        return {
            "event": "phases",
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def since_import() -> float:
    """Seconds since the niah package was imported (the startup phase's start)."""
    from .. import IMPORTED_AT

    return time.perf_counter() - IMPORTED_AT
