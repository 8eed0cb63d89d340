"""niah's fused attention-with-logsumexp kernels (CUDA and Metal): sources, builders, launches.

This package is the bottom layer of niah's attention: it builds the kernels from the sources
next to it and launches them (`flash.flash_attention_with_lse`), and says which calls it can
serve (`supported`, `compatible`). It imports nothing from niah but niah.backend. Checking a
kernel against the plain-ops reference (the first-use self-test, the fallback, warm-up) is
niah.sdpa.fused's job, one layer up.
"""

from __future__ import annotations

from . import flash
from .flash import Flags, Tile, flash_attention_with_lse, supported


def compatible(q, k, v=None) -> bool:
    """The fused kernel needs q, k and v to share head dim and dtype (else the reference)."""
    arrays = [a for a in (q, k, v) if a is not None]
    return len({a.shape[-1] for a in arrays}) == 1 and len({a.dtype for a in arrays}) == 1


def forget_builds() -> None:
    """Drop every built kernel, so the next call builds afresh (tests)."""
    flash._KERNELS.clear()


__all__ = [
    "flash",
    "Flags",
    "Tile",
    "flash_attention_with_lse",
    "supported",
    "compatible",
    "forget_builds",
]
