"""Spread a sweep across ranks with mx.distributed (mlx.launch).

Each rank runs its share of the trials (balanced by cost, whole prefix groups per rank, see
niah.run.grid.assign_to_ranks) and appends to its own trials.rank<N>.jsonl in the shared run folder.
After a barrier (an all_sum), rank 0 reads every rank's file and reports.
"""

from __future__ import annotations

import os


def group_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not launched by mlx.launch."""
    if not any(k in os.environ for k in ("MLX_RANK", "MLX_HOSTFILE", "MLX_WORLD_SIZE",
                                          "OMPI_COMM_WORLD_SIZE")):
        return 0, 1
    import mlx.core as mx

    group = mx.distributed.init()
    return group.rank(), group.size()


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
