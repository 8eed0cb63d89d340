"""Run a sweep: grid -> prompts -> model -> score -> store, one trial at a time.

Orchestration only: open the session, name and claim the run folder (under its lock), pick
this call's trials the folder does not hold yet, warm up, run them group by group
(niah.run.trial) and collect the records. Finished trials are appended as they complete, so a
killed run loses only the trial in flight and a rerun of the same config (or --resume) does
only what is missing.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import store
from ..config import RunConfig, check_kv_group_size
from ..environment import check_repeatable_memory
from .checks import (
    check_contexts,
    check_grid_fits,
    check_kv_settings,
    check_session,
    check_task,
    prompt_builder,
)
from .events import Progress  # noqa: F401 - the protocol, re-exported for front ends
from .finished import sdpa_identity
from .grid import TrialSpec, assign_to_ranks, build_grid, prefix_groups
from .phases import Phases
from .reuse import reuse_mismatch
from .trial import Sweep, run_group
from .warmup import warm_up, warm_up_mode


@dataclass
class RunResult:
    folder: Path
    config: RunConfig
    records: list[dict]  # latest record per trial of this config, grid order
    ran: int = 0  # trials run by this call
    skipped_done: int = 0  # trials already on disk
    warnings: list[str] = field(default_factory=list)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; carries the run folder so the front end can say what to resume."""

    def __init__(self, folder: Path):
        super().__init__(str(folder))
        self.folder = folder


class _Discard:
    """The writer of a sharded run's ranks other than 0: they compute the same trials as rank
    0, which writes them."""

    def write(self, record: dict) -> None:
        pass


def run_sweep(
    config: RunConfig,
    *,
    session=None,
    folder: Path | None = None,
    progress: Progress | None = None,
    rank: int | None = None,
    world: int = 1,
    preflight: bool = True,
    warm_up: str | None = None,
    launch: str | None = None,
    estimate_context: int | None = None,
    startup_s: float | None = None,
    memory_set_first: bool = False,
) -> RunResult:
    """Run every unfinished trial of `config`; returns all records of the run.

    warm_up: what to run before the first timed trial (WARM_UP_MODES; None or "auto":
    warm_up_mode's choice for the backend): "once" one short generation, "shapes" every
    prefill block shape the trials will use, "off" nothing.
    launch: the id of this launch (niah.run.ranks.launch_id), logged with the start event;
    when the sweep fails after it, an "end" event with the failure is logged too (the caller
    logs the end of a sweep that returns).
    estimate_context: probe this device's speed once when a trial of this call has a context
    this long or longer, and hand each trial's time estimate to progress.trial_start (None:
    the backend's default, DEFAULT_ESTIMATE_CONTEXT; 0: always).
    startup_s: the seconds the process spent before this call (the CLI's startup), logged
    with the other phases (niah.run.phases) in runs.jsonl's "phases" event.
    memory_set_first: the caller set --repeatable-memory's variable (apply_repeatable_memory)
    before MLX first ran in this process, as `niah run` does, so MLX work since then (a
    multi-rank launch agreeing on its id) does not make the check refuse."""
    from ..sdpa import patched

    mode = warm_up_mode(warm_up, _backend_name())
    if config.repeatable_memory:
        check_repeatable_memory(_backend_name(), started=False if memory_set_first else None)
    progress = progress or Progress()
    sharded = config.shard == "tensor" and world > 1
    opened = session is None  # loaded by this call: its load goes in runs.jsonl
    phases = Phases()
    if startup_s is not None:
        phases.add("startup", startup_s)
    if session is None:
        where = dict(folder=folder, progress=progress, launch=launch, phases=phases)
        session, quick = _session_or_answer(config, preflight=preflight, world=world, **where)
        if quick is not None:  # a rerun with nothing to run, answered without a load
            return quick
    warnings = check_contexts(config, session.info.trained_context, max_tokens=config.max_tokens)
    with patched(
        config.sdpa, threshold=config.chunk_threshold, chunk_size=config.chunk_size
    ) as state:
        with phases.timed("prepare"):
            run = _prepare(
                config, session, folder=folder, progress=progress, rank=rank, state=state
            )
        run.phases = phases
        writes = not (sharded and rank)
        own_rank = rank if world > 1 and not sharded else None  # writes a file of its own
        lock = store.FolderLock(run.folder, rank=own_rank) if writes else contextlib.nullcontext()
        with lock:
            _claim(run, launch=launch)  # under the lock: a refused second run leaves no trace
            if opened:
                _log_load(run)
            with _logs_failure(run.folder, launch=launch, rank=run.rank):
                mine, todo = _run_mine(
                    run,
                    rank=rank,
                    world=world,
                    sharded=sharded,
                    writes=writes,
                    own_rank=own_rank,
                    mode=mode,
                    preflight=preflight,
                    estimate_context=estimate_context,
                )
    return _result(run, skipped_done=len(mine) - len(todo), warnings=warnings)


def _result(run: Sweep, *, skipped_done: int, warnings: list[str]) -> RunResult:
    """Every record of the config in the folder (the latest per trial, in grid order)."""
    config = run.config
    latest = store.latest_by_key(store.folder_records(run.folder))
    records = [latest[s.key] for s in build_grid(config) if s.key in latest]
    warnings = warnings + reuse_mismatch(
        records, prefix_reuse=config.prefix_reuse, folder=run.folder
    )
    return RunResult(
        folder=run.folder,
        config=config,
        records=records,
        ran=run.ran,
        skipped_done=skipped_done,
        warnings=warnings,
    )


DEFAULT_ESTIMATE_CONTEXT = {"cpu": 16384}  # by backend; others below
DEFAULT_ESTIMATE_CONTEXT_GPU = 131072


def _run_mine(
    run: Sweep, *, rank, world, sharded, writes, own_rank, mode, preflight, estimate_context
) -> tuple[list[TrialSpec], list[TrialSpec]]:
    """This call's share of the grid, what of it the folder lacks, run; (mine, todo)."""
    grid = build_grid(run.config)
    # Sharded: every rank runs every trial together (one model across the group); rank
    # 0 writes. Otherwise each rank takes its share of the grid.
    mine = assign_to_ranks(grid, world)[rank or 0] if world > 1 and not sharded else grid
    done = store.finished_keys(run.folder)
    todo = [s for s in mine if s.key not in done]
    writer = (
        store.TrialWriter(run.folder, rank=own_rank)
        if writes
        else contextlib.nullcontext(_Discard())
    )
    finished = False
    try:  # the device probe is a phase too: Ctrl-C there logs and names the folder as well
        _prepare_cuda_kernels(run, todo)
        run.throughput = _throughput(run, todo, estimate_context=estimate_context)
        run.progress.start(len(todo))
        with writer as run.writer:
            _run_all(run, todo, mode=mode, preflight=preflight)
        finished = True
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(run.folder) from None
    finally:
        if writes:
            _log_phases(run, finished=finished)
    return mine, todo


def _log_phases(run: Sweep, *, finished: bool) -> None:
    """runs.jsonl's "phases" event; a sweep stopped by Ctrl-C or an error logs what it spent
    so far ("finished": false), never letting that write hide the error in flight."""
    event = {**run.phases.event(), "finished": finished, "rank": run.rank, "config_hash": run.chash}
    if finished:
        store.append_run_log(run.folder, event)
        return
    with contextlib.suppress(Exception):
        store.append_run_log(run.folder, event)


def _prepare_cuda_kernels(run: Sweep, todo: list[TrialSpec]) -> None:
    """On CUDA, before the first model call: compile in parallel processes the kernels that
    call would compile one by one (niah.kernel_fill; NIAH_KERNEL_FILL=0 turns it off), and say
    what that did; or, with it off, say so when MLX will compile its kernels first."""
    from ..backend import cold_kernel_cache_note, mlx_kernel_cache
    from ..user_cache import enabled

    if not todo or _backend_name() != "cuda":
        return
    folder = mlx_kernel_cache()
    if not enabled("NIAH_KERNEL_FILL"):
        note = cold_kernel_cache_note("cuda", folder=folder)
        if note:
            run.progress.note(note)
        return
    from ..kernel_fill import fill, kernel_specs

    def starting(n: int) -> None:
        run.progress.note(
            f"CUDA kernels: compiling {n} kernel families in parallel processes into {folder} "
            "(a machine's first MLX run; later runs reuse them) ..."
        )

    t0 = time.perf_counter()

    def finished(done: int, total: int) -> None:
        run.progress.note(
            f"CUDA kernels: {done}/{total} families done ({time.perf_counter() - t0:.0f} s)"
        )

    with run.phases.timed("warm-up"):
        try:
            specs = kernel_specs(run.session.model)
            result = fill(specs, folder=folder, on_start=starting, on_done=finished)
        except Exception as exc:  # noqa: BLE001 - an optimisation: the model call compiles anyway
            run.progress.note(f"CUDA kernel fill skipped: {type(exc).__name__}: {exc}")
            return
    if result.started:
        failed = f", {result.failed} failed (the first model call compiles those)"
        run.progress.note(
            f"CUDA kernels: {result.started} families compiled in parallel processes in "
            f"{result.seconds:.1f} s{failed if result.failed else ''}"
        )


def _throughput(run: Sweep, todo: list[TrialSpec], *, estimate_context: int | None):
    """This device's speed (preflight.probe_throughput), probed once when a trial may be
    long enough to need a time estimate; None otherwise (small runs pay nothing)."""
    if estimate_context is None:
        estimate_context = DEFAULT_ESTIMATE_CONTEXT.get(
            _backend_name(), DEFAULT_ESTIMATE_CONTEXT_GPU
        )
    if not any(s.context >= estimate_context for s in todo):
        return None
    from ..preflight import probe_throughput

    run.progress.note("timing this device for trial estimates ...")
    with run.phases.timed("probe"):
        return probe_throughput(run.session)


@contextlib.contextmanager
def _logs_failure(folder: Path, *, launch: str | None, rank: int | None):
    """Log an "end" event when the sweep fails after its start event (a rank that dies
    without one is caught by its missing end)."""
    from .ranks import ERROR, INTERRUPTED, record_end

    try:
        yield
    except KeyboardInterrupt:
        if launch:
            record_end(folder, launch=launch, rank=rank, status=130, outcome=INTERRUPTED)
        raise
    except Exception as exc:
        if launch:
            record_end(
                folder, launch=launch, rank=rank, status=getattr(exc, "exit_code", 1), outcome=ERROR
            )
        raise


def _run_all(run: Sweep, todo: list[TrialSpec], *, mode: str, preflight: bool) -> None:
    try:
        if todo and mode != "off":
            with run.phases.timed("warm-up"):
                warm_up(run, todo, mode=mode, preflight=preflight)
        with run.phases.timed("trials"):
            for group in prefix_groups(todo).values():
                run_group(run, group, preflight=preflight)
    except KeyboardInterrupt:
        raise Interrupted(run.folder) from None


def _backend_name() -> str:
    from ..backend import backend

    return backend()


def _metadata(config: RunConfig):
    """The model's metadata (niah.model_meta.model_metadata): no weight is read."""
    from ..model_meta import model_metadata

    return model_metadata(config.model, rope_scaling=config.rope_scaling)


def _session_or_answer(config, *, folder, progress, launch, phases, preflight, world):
    """(session, None) for a sweep with trials to run, the model loaded after the checks made
    before any weight loads; (None, result) for a rerun with nothing left to run, answered
    from its folder (niah.run.finished) without a load."""
    meta = _checked_metadata(config, phases=phases)
    if world == 1:
        quick = _answer_from_folder(
            config, folder=folder, progress=progress, launch=launch, phases=phases, meta=meta
        )
        if quick is not None:
            return None, quick
    if preflight:  # only a sweep with trials to run needs memory for one
        with phases.timed("metadata"):
            check_grid_fits(config, meta)
    sharded = config.shard == "tensor" and world > 1
    return _load(config, sharded=sharded, progress=progress, phases=phases), None


def _checked_metadata(config: RunConfig, *, phases):
    """The model's metadata, which answers the context and KV group checks before any weight
    loads and the memory check after a finished rerun is answered (metadata phase)."""
    with phases.timed("metadata"):
        check_kv_settings(config)
        meta = _metadata(config)
        check_contexts(config, meta.trained_context, max_tokens=config.max_tokens)
        if any(config.kv_bits):  # the quantized cache groups along the head (check_session)
            check_kv_group_size(config.kv_group_size, head_dim=meta.head_dim)
    return meta


def _load(config: RunConfig, *, sharded: bool, progress: Progress, phases):
    """Import mlx-lm, check the task against the tokenizer alone (metadata phase: a context
    too short or a --max-tokens too small is refused before any weight loads), then load the
    model with that tokenizer (each timed as its own phase)."""
    from ..model import load_tokenizer

    with phases.timed("imports"):
        import mlx_lm.generate  # noqa: F401 - transformers (and torch, if installed) with it
    with phases.timed("metadata"):
        wrapper = load_tokenizer(config.model)
        if wrapper is not None:
            check_task(config, prompt_builder(config, wrapper._tokenizer))
    with phases.timed("load"):
        return _open_session(config, sharded=sharded, progress=progress, tokenizer=wrapper)


def _answer_from_folder(config: RunConfig, *, folder, progress, launch, phases, meta):
    """The result of a rerun whose folder already holds every asked cell finished
    (niah.run.finished), without loading the model; None when the sweep has work to do."""
    from ..model import device_description
    from .finished import finished_run

    with phases.timed("prepare"):
        found = finished_run(config, folder=folder)
    if found is None:
        return None
    run = Sweep(
        config=config,
        session=None,
        folder=found.folder,
        builder=None,
        chash=found.config_hash,
        identity=found.identity,
        device=device_description(),
        rank=None,
        progress=progress,
        route=config.sdpa,
        phases=phases,
    )
    with store.FolderLock(run.folder):
        _claim(run, launch=launch)
        _log_phases(run, finished=True)
    warnings = check_contexts(config, meta.trained_context, max_tokens=config.max_tokens)
    return _result(run, skipped_done=found.cells, warnings=warnings)


def _open_session(config: RunConfig, *, sharded: bool, progress: Progress, tokenizer=None):
    from ..model import ModelSession, progress_notes

    group = None
    if sharded:
        import mlx.core as mx

        group = mx.distributed.init()
    return ModelSession(
        config.model,
        shard_group=group,
        gguf_quant=config.gguf_quant,
        rope_scaling=config.rope_scaling,
        on_progress=progress_notes(progress.note),
        tokenizer=tokenizer,
    )


def _prepare(config: RunConfig, session, *, folder, progress, rank, state) -> Sweep:
    """Prompt builder, input checks, identity, config hash and run folder (named only: the
    folder is written by _claim, under its lock)."""
    from ..backend import backend
    from ..identity import run_identity
    from ..model import device_description

    check_session(config, session, progress)
    builder = prompt_builder(config, session.tokenizer)
    check_task(config, builder)
    sdpa = sdpa_identity(config, state.config)  # the settings niah.run.finished predicts
    info = session.info
    identity = run_identity(
        model_path=info.path,
        model_digest=getattr(info, "digest", None),
        haystack=config.haystack,
        backend=backend(),
        compute_dtype=str(getattr(session, "compute_dtype", "unknown")),
        sdpa=sdpa,
    )
    chash = config.hash(identity)
    folder = Path(folder) if folder else store.run_folder(config, info.name, config_hash=chash)
    return Sweep(
        config=config,
        session=session,
        folder=folder,
        builder=builder,
        chash=chash,
        identity=identity,
        device=device_description(),
        rank=rank,
        progress=progress,
        route=config.sdpa,
        state=state,
    )


def _log_load(run: Sweep) -> None:
    """runs.jsonl's "load" event: the model load this call paid (seconds, weight cache)."""
    info = run.session.info
    store.append_run_log(
        run.folder,
        {
            "event": "load",
            "seconds": getattr(info, "load_s", None),
            "weight_cache": getattr(info, "weight_cache", "") or None,
            "device": run.device,
            "rank": run.rank,
            "config_hash": run.chash,
        },
    )


def _claim(run: Sweep, *, launch: str | None = None) -> None:
    """Write config.json (checked against the folder's configuration, asked cells merged) and
    the run's start line."""
    store.prepare_folder(run.folder, run.config, config_hash=run.chash, identity=run.identity)
    store.append_run_log(
        run.folder,
        {
            "event": "start",
            "argv": list(sys.argv),
            "device": run.device,
            "rank": run.rank,
            "config_hash": run.chash,
            "niah_version": run.identity["niah_version"],
            **({"launch": launch} if launch else {}),
        },
    )
