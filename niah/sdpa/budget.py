"""Work per GPU command buffer, for the macOS watchdog: key chunks and query blocks sized by FLOPs.

macOS kills a process whose GPU command buffer runs for more than a few seconds. One attention
call over q rows and C keys costs 4 * B * Hq * q * C * D FLOPs (QK^T and PV), so a chunk bounded
by its key count alone is not bounded in time: a prefill step of 8192 rows at 64 heads does 64x
the work of 2048 rows at 16 heads over the same keys. `plan_work` picks the keys per chunk from
a FLOP budget per call and, when even MIN_CHUNK_KEYS keys would exceed it, splits the queries
into blocks too; each (block, chunk) call is evaluated on its own (niah.sdpa.dispatch), so no
command buffer holds more than one call's work. A call whose whole key range fits the budget runs
as one launch (the fused kernel then splits the keys on the device and combines them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# FLOPs per command buffer. 1e11 is 40 ms at a base M1 GPU's fp32 peak (~2.6 TFLOP/s) and
# under a second even at 5% of it: far inside the watchdog's few seconds.
DEFAULT_FLOP_BUDGET = 1e11
MIN_CHUNK_KEYS = 1024  # below this, split the queries instead of shrinking the key chunks
KEY_ALIGN = 256  # chunk lengths are multiples of this (whole key tiles, few shapes)


@dataclass(frozen=True)
class WorkPlan:
    q_block: int  # query rows per call (qL when the queries are not split)
    chunk: int  # keys per call (kL when the keys are not split)

    def call_flops(self, *, B: int, Hq: int, D: int) -> float:
        return attention_flops(B=B, Hq=Hq, qL=self.q_block, kL=self.chunk, D=D)

    def calls(self, *, qL: int, kL: int) -> int:
        return math.ceil(qL / self.q_block) * math.ceil(kL / self.chunk)


def attention_flops(*, B: int, Hq: int, qL: int, kL: int, D: int) -> float:
    """FLOPs of unmasked attention (a causal call does at most this)."""
    return 4.0 * B * Hq * qL * kL * D


def plan_work(
    *,
    B: int,
    Hq: int,
    qL: int,
    kL: int,
    D: int,
    budget: float = DEFAULT_FLOP_BUDGET,
    max_chunk: int | None = None,
) -> WorkPlan:
    """Query block and key chunk whose call stays within `budget` FLOPs.

    `max_chunk` caps the keys per call (e.g. the configured chunk size for the unfused
    reference, whose memory grows with it). Invariant: call_flops <= budget whenever one query
    row over min(kL, MIN_CHUNK_KEYS) keys fits it."""
    if budget <= 0:
        raise ValueError(f"FLOP budget must be positive, got {budget}")
    cap = min(kL, max_chunk or kL)
    per_key = attention_flops(B=B, Hq=Hq, qL=qL, kL=1, D=D)
    keys = int(budget // per_key)
    if keys >= cap:
        return WorkPlan(q_block=qL, chunk=cap)
    floor_keys = min(cap, MIN_CHUNK_KEYS)
    if keys >= floor_keys:
        aligned = keys // KEY_ALIGN * KEY_ALIGN
        return WorkPlan(q_block=qL, chunk=max(floor_keys, aligned))
    per_row = attention_flops(B=B, Hq=Hq, qL=1, kL=floor_keys, D=D)
    return WorkPlan(q_block=max(1, min(qL, int(budget // per_row))), chunk=floor_keys)


@dataclass(frozen=True)
class ChunkConfig:
    """The chunking settings as resolved (niah.sdpa.dispatch.resolve_config)."""

    threshold: int
    chunk_size: int
    q_block: int
    flop_budget: float = DEFAULT_FLOP_BUDGET  # per GPU command buffer on Metal
