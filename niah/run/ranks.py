"""Spread a sweep across ranks with mx.distributed (mlx.launch).

Each rank runs its share of the trials (balanced by cost, whole prefix groups per rank, see
niah.run.grid.assign_to_ranks) and appends to its own trials.rank<N>.jsonl in the shared run folder.
After a barrier (an all_sum), rank 0 reads every rank's file and reports.

`mlx.launch` does not pass a rank's exit status on (it exits 0 when a rank exits 1 or 2, or is
killed), so each rank logs its life in the folder's runs.jsonl: a "start" event (written by the
sweep when it claims the folder) and an "end" event with its exit status, both carrying the
launch id all ranks of one launch share. A start without an end is a rank that died;
`niah report --fail-under` fails on it (unfinished_ranks) and re-checks accuracy from records.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# How a rank ended ("end" event's outcome). DONE, BELOW (--fail-under) and NO_VERDICT (every
# trial SKIP or ERROR) leave the verdict to the records; the others mean the rank's work is
# not all there.
DONE, BELOW, NO_VERDICT = "done", "below-threshold", "no-verdict"
ERROR, INTERRUPTED = "error", "interrupted"
FINISHED = (DONE, BELOW, NO_VERDICT)


def group_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not launched by mlx.launch."""
    if not any(
        k in os.environ
        for k in ("MLX_RANK", "MLX_HOSTFILE", "MLX_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE")
    ):
        return 0, 1
    import mlx.core as mx

    group = mx.distributed.init()
    return group.rank(), group.size()


def launch_id(world: int) -> str:
    """An id every rank of one launch shares (a random number per rank, summed across the
    group); a random one for a single process."""
    if world <= 1:
        return secrets.token_hex(6)
    import mlx.core as mx

    group = mx.distributed.init()
    mine = mx.array([secrets.randbelow(2**30) for _ in range(2)], dtype=mx.int32)
    total = mx.distributed.all_sum(mine, group=group, stream=mx.cpu)
    return "".join(f"{int(v) & 0xFFFFFFFF:08x}" for v in total.tolist())


def barrier() -> None:
    import mlx.core as mx

    group = mx.distributed.init()
    mx.eval(mx.distributed.all_sum(mx.array([1.0]), group=group, stream=mx.cpu))


def gather_and_merge(result, *, rank: int, world: int):
    """Wait for every rank; rank 0 returns the merged result, others return None."""
    from .. import store
    from .grid import build_grid

    barrier()
    if rank != 0:
        return None
    latest = store.latest_by_key(store.folder_records(result.folder))
    result.records = [latest[s.key] for s in build_grid(result.config) if s.key in latest]
    return result


def record_end(folder: Path, *, launch: str, rank: int | None, status: int, outcome: str) -> None:
    """Log how this rank ended (after its start event) in the run folder's runs.jsonl."""
    from .. import store

    store.append_run_log(
        folder,
        {"event": "end", "launch": launch, "rank": rank, "status": status, "outcome": outcome},
    )


def record_gate(
    folder: Path, *, launch: str, rank: int | None, accuracy: float, threshold: float, passed: bool
) -> None:
    """Log the --fail-under gate's outcome, as the reporting rank computed it."""
    from .. import store

    store.append_run_log(
        folder,
        {
            "event": "gate",
            "launch": launch,
            "rank": rank,
            "accuracy": accuracy,
            "threshold": threshold,
            "status": "pass" if passed else "fail",
        },
    )


def unfinished_ranks(events: list[dict]) -> list[str]:
    """What went wrong with the ranks of runs.jsonl's launches, one phrase each: a rank that
    started and never ended (killed), or ended in error or interrupted. A launch that failed
    is forgiven when a later launch finished every rank (a --resume ran what it left).
    Start events without a launch id (folders written before ranks logged their end) are not
    judged."""
    launches: dict[str, dict] = {}  # launch -> {rank: [started, ended outcome or None]}
    for event in events:
        launch = event.get("launch")
        if not launch or event.get("event") not in ("start", "end"):
            continue
        ranks = launches.setdefault(str(launch), {})
        if event["event"] == "start":
            ranks[event.get("rank")] = None
        elif event.get("rank") in ranks:
            ranks[event.get("rank")] = str(event.get("outcome"))
    problems: list[str] = []
    for launch, ranks in launches.items():
        if all(outcome in FINISHED for outcome in ranks.values()):
            problems = []  # a finished launch covers the failed ones before it
            continue
        for rank, outcome in ranks.items():
            who = "the run" if rank is None else f"rank {rank}"
            if outcome is None:
                problems.append(f"{who} of launch {launch} started and never ended (killed?)")
            elif outcome not in FINISHED:
                problems.append(f"{who} of launch {launch} ended with {outcome}")
    return problems
