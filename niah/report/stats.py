"""Numbers computed from trial records: a trial's score and time, accuracy, the Wilson
interval of a pass rate, and the effective context length."""

from __future__ import annotations

import math

from ..scoring import PASS, SKIP


def trial_score(r: dict) -> float:
    """A trial's score in [0, 1]: the record's `score` (fraction of needles retrieved), else
    1 for PASS and 0 otherwise (records written before scores existed)."""
    value = r.get("score")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return 1.0 if r.get("verdict") == PASS else 0.0


def trial_seconds(r: dict) -> float:
    """Wall time of a trial: its `elapsed_s`, else time to first token plus decode."""
    if r.get("elapsed_s") is not None:
        return float(r["elapsed_s"])
    return float((r.get("ttft_s") or 0) + (r.get("decode_s") or 0))


def accuracy(records: list[dict]) -> float | None:
    """Mean score of the scored (not SKIP) trials; None when there are none."""
    scored = [r for r in records if r["verdict"] != SKIP]
    if not scored:
        return None
    return sum(map(trial_score, scored)) / len(scored)


def wilson(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a pass rate (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def effective_context(records: list[dict], *, threshold: float = 0.85) -> int | None:
    """Longest context whose accuracy stays >= threshold x the shortest context's accuracy.

    Contexts are walked in increasing order and the walk stops at the first that falls below.
    """
    by_ctx: dict[int, list[dict]] = {}
    for r in records:
        by_ctx.setdefault(r["context"], []).append(r)
    ctxs = sorted(by_ctx)
    if not ctxs:
        return None
    base = accuracy(by_ctx[ctxs[0]])
    if not base:
        return None
    best = None
    for c in ctxs:
        acc = accuracy(by_ctx[c])
        if acc is None or acc < threshold * base:
            break
        best = c
    return best


BASE_CONTEXT = 2048  # contexts up to this give a normalised task's base score
NORMALISED_TASKS = ("non-literal",)  # tasks scored against the model's own short-context score


def accuracy_by_context(records: list[dict]) -> dict[int, float | None]:
    """Accuracy of each context, in increasing order."""
    by_ctx: dict[int, list[dict]] = {}
    for r in records:
        by_ctx.setdefault(r["context"], []).append(r)
    return {c: accuracy(by_ctx[c]) for c in sorted(by_ctx)}


def base_score(records: list[dict], *, base_context: int = BASE_CONTEXT) -> float | None:
    """NoLiMa's base score: the mean score of the trials at contexts <= base_context (where a
    model either knows the link or not); None without such trials."""
    return accuracy([r for r in records if r["context"] <= base_context])


def normalised_by_context(
    records: list[dict], *, base_context: int = BASE_CONTEXT
) -> dict[int, float | None]:
    """Each context's accuracy over the base score (None where either is missing or the base
    is 0: a model that never answers at the short context has nothing to normalise by)."""
    base = base_score(records, base_context=base_context)
    return {
        c: None if acc is None or not base else acc / base
        for c, acc in accuracy_by_context(records).items()
    }


def effective_normalised(
    records: list[dict], *, threshold: float = 0.85, base_context: int = BASE_CONTEXT
) -> int | None:
    """Longest context whose normalised score stays >= threshold, walking contexts in
    increasing order and stopping at the first that falls below."""
    best = None
    for c, norm in normalised_by_context(records, base_context=base_context).items():
        if norm is None or norm < threshold:
            break
        best = c
    return best
