"""The trial grid: contexts x depths x KV settings x samples -> ordered, seeded TrialSpecs.

Each spec has a stable key (used by the results store to resume) and the needle value drawn
from the run seed and that key, so the same seed gives the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from .haystack import needle_value


@dataclass(frozen=True)
class TrialSpec:
    context: int
    depth: float
    sample: int
    kv_bits: int | None
    max_kv_size: int | None
    prefill_step: int
    value: str    # first draw for the cell; the trial's needles (haystack-checked) come from
                  # niah.tasks via runner.task_trial, which records what was really asked

    @property
    def key(self) -> str:
        return trial_key(context=self.context, depth=self.depth, sample=self.sample,
                         kv_bits=self.kv_bits, max_kv_size=self.max_kv_size,
                         prefill_step=self.prefill_step)


def trial_key(*, context: int, depth: float, sample: int, kv_bits=None, max_kv_size=None,
              prefill_step: int = 2048) -> str:
    return (f"c{context}-d{depth:.6g}-s{sample}-kv{kv_bits or 'fp'}-m{max_kv_size or 'all'}"
            f"-p{prefill_step}")


def _value_key(context: int, depth: float, sample: int) -> str:
    return f"c{context}-d{depth:.6g}-s{sample}"


def value_key(spec: TrialSpec) -> str:
    """The key a trial's needle values are drawn with (KV settings and prefill step are not
    in it: the same cell gets the same needles under every setting)."""
    return _value_key(spec.context, spec.depth, spec.sample)


def build_grid(config: RunConfig) -> list[TrialSpec]:
    """Every trial of a run, in reporting order (contexts, then depths, then samples)."""
    specs = []
    for context in config.contexts:
        for depth in config.depths:
            for kv_bits in config.kv_bits:
                for max_kv in config.max_kv_size:
                    for step in config.prefill_steps:
                        for sample in range(config.samples):
                            value = needle_value(kind=config.value_kind, seed=config.seed,
                                                 key=_value_key(context, depth, sample))
                            specs.append(TrialSpec(context=context, depth=depth, sample=sample,
                                                   kv_bits=kv_bits, max_kv_size=max_kv,
                                                   prefill_step=step, value=value))
    return specs


def estimated_cost(spec: TrialSpec) -> float:
    """Relative cost of a trial (prefill is about linear plus quadratic attention)."""
    return spec.context + spec.context ** 2 / 65536


def prefix_groups(specs: list[TrialSpec]) -> dict[tuple, list[TrialSpec]]:
    """Trials that can share one prefilled cache: same KV settings and prefill step."""
    groups: dict[tuple, list[TrialSpec]] = {}
    for s in specs:
        groups.setdefault((s.kv_bits, s.max_kv_size, s.prefill_step), []).append(s)
    return groups


def assign_to_ranks(specs: list[TrialSpec], world: int) -> list[list[TrialSpec]]:
    """Split trials across ranks balanced by estimated cost, longest first.

    The unit of work is a (KV settings, context) group, so trials that share a prefix stay on
    one rank and prefix reuse keeps working there.
    """
    units: dict[tuple, list[TrialSpec]] = {}
    for s in specs:
        units.setdefault((s.kv_bits, s.max_kv_size, s.prefill_step, s.context), []).append(s)
    ordered = sorted(units.values(), key=lambda u: (-sum(map(estimated_cost, u)), u[0].key))
    loads = [0.0] * world
    out: list[list[TrialSpec]] = [[] for _ in range(world)]
    for unit in ordered:
        r = min(range(world), key=lambda i: (loads[i], i))
        out[r].extend(unit)
        loads[r] += sum(map(estimated_cost, unit))
    return out
