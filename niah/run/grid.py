"""The trial grid: the cells asked (context, depth, sample) x KV settings -> ordered TrialSpecs.

A run asks for the cross product of its contexts, depths and samples. Grids that share a run
folder are kept as asked: the folder holds the union of the asked cells (RunConfig.cells),
never the cross product of the merged axes. Each spec has a stable key (used by the results
store to resume); the needle values are drawn by niah.tasks from the run seed and value_key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import RunConfig

Cell = tuple[int, float, int]  # (context, depth, sample)


@dataclass(frozen=True)
class TrialSpec:
    context: int
    depth: float
    sample: int
    kv_bits: int | None
    max_kv_size: int | None
    prefill_step: int

    @property
    def key(self) -> str:
        return trial_key(
            context=self.context,
            depth=self.depth,
            sample=self.sample,
            kv_bits=self.kv_bits,
            max_kv_size=self.max_kv_size,
            prefill_step=self.prefill_step,
        )


def trial_key(
    *,
    context: int,
    depth: float,
    sample: int,
    kv_bits=None,
    max_kv_size=None,
    prefill_step: int = 2048,
) -> str:
    return (
        f"c{context}-d{depth:.6g}-s{sample}-kv{kv_bits or 'fp'}-m{max_kv_size or 'all'}"
        f"-p{prefill_step}"
    )


def value_key(spec: TrialSpec) -> str:
    """The key a trial's needle values are drawn with (KV settings and prefill step are not
    in it: the same cell gets the same needles under every setting)."""
    return f"c{spec.context}-d{spec.depth:.6g}-s{spec.sample}"


def asked_cells(config: RunConfig) -> list[Cell]:
    """The cells of a config in reporting order: its own cells when it holds merged grids,
    else contexts x depths x samples."""
    if config.cells is not None:
        return [tuple(c) for c in config.cells]
    return [
        (c, d, s) for c in config.contexts for d in config.depths for s in range(config.samples)
    ]


def _cell_key(cell: Cell) -> tuple:
    # one depth per trial key (6 significant digits): folders made before depths were
    # rounded so must not gain a second depth of the same key
    return cell[0], f"{cell[1]:.6g}", cell[2]


def merge_grids(old: RunConfig, new: RunConfig) -> RunConfig:
    """`new` carrying the union of both configs' asked cells (the old one's kept where a cell
    is in both); cells stays None while the union is the cross product of the merged axes."""
    cells = {_cell_key(c): c for c in asked_cells(new)}
    cells.update({_cell_key(c): c for c in asked_cells(old)})
    merged = sorted(cells.values(), key=lambda c: (c[0], c[1], c[2]))
    contexts = tuple(dict.fromkeys(old.contexts + new.contexts))
    depths = tuple(sorted({f"{d:.6g}": d for d in new.depths + old.depths}.values()))
    samples = max(old.samples, new.samples)
    # a folder once made with --repeatable-memory keeps it, so a resume measures under it too
    repeatable = old.repeatable_memory or new.repeatable_memory
    axes = dataclasses.replace(
        new,
        contexts=contexts,
        depths=depths,
        samples=samples,
        cells=None,
        repeatable_memory=repeatable,
    )
    full = sorted(asked_cells(axes), key=_cell_key) == sorted(merged, key=_cell_key)
    return dataclasses.replace(axes, cells=None if full else tuple(merged))


def build_grid(config: RunConfig) -> list[TrialSpec]:
    """Every trial of a run, in reporting order (contexts, then depths, then KV settings,
    then samples)."""
    samples: dict[tuple, list[int]] = {}
    for context, depth, sample in asked_cells(config):
        samples.setdefault((context, depth), []).append(sample)
    specs = []
    for (context, depth), drawn in samples.items():
        for kv_bits in config.kv_bits:
            for max_kv in config.max_kv_size:
                for step in config.prefill_steps:
                    specs.extend(
                        TrialSpec(
                            context=context,
                            depth=depth,
                            sample=sample,
                            kv_bits=kv_bits,
                            max_kv_size=max_kv,
                            prefill_step=step,
                        )
                        for sample in drawn
                    )
    return specs


def estimated_cost(spec: TrialSpec) -> float:
    """Relative cost of a trial (prefill is about linear plus quadratic attention)."""
    return spec.context + spec.context**2 / 65536


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
