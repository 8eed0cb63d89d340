"""The `niah` command line: the app, `niah run`, and the entry point (main). The other
commands (report, convert, doctor, sdpa, cache) live in niah.commands and are registered
on this app; what they share is in niah.cli_common.

Options are parsed into a RunConfig here and nothing else happens in this module; heavy
imports (mlx, mlx-lm, pandas) live inside the command bodies so `--help` is instant. Every
NiahError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import config as C
from . import options as O
from .cli_common import (
    Command,
    Group,
    StopSignal,
    check_fail_under,
    fail,
    gate,
    model_arg,
    print_summary,
    with_exports,
)
from .commands import register
from .errors import NiahError
from .outputs import check_out, existing_ancestor, listing, remove_unstarted
from .report.exports import EXPORTS

app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Needle-in-a-haystack long-context checks for MLX models.",
)


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"niah {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_show_version,
        help="Print niah's version and exit.",
    ),
):
    """Needle-in-a-haystack long-context checks for MLX models."""


RUN_EPILOG = (
    "Exit codes: 0 done; 1 accuracy below --fail-under, or no trial reached a verdict "
    "(every one SKIP or ERROR: the first reasons are printed); 2 bad input; "
    "130 interrupted (Ctrl-C), 143 stopped by SIGTERM: either keeps every finished trial."
)


@app.command(cls=Command, epilog=RUN_EPILOG)
@with_exports(panel=O.P_OUT)
def run(
    ctx: typer.Context,
    context: O.Context = O.DEFAULT_CONTEXT_TEXT,
    depth: O.Depth = O.DEFAULT_DEPTH_TEXT,
    model: O.Model = None,
    samples: O.Samples = C.DEFAULT_SAMPLES,
    seed: O.Seed = C.DEFAULT_SEED,
    needle: O.Needle = None,
    question: O.Question = None,
    answer_prefix: O.AnswerPrefix = None,
    value_kind: O.ValueKind = C.DEFAULT_VALUE_KIND,
    haystack: O.Haystack = C.DEFAULT_HAYSTACK,
    task: O.Task = C.DEFAULT_TASK,
    needles: O.Needles = None,
    task_param: O.TaskParam = None,
    thinking: O.Thinking = C.DEFAULT_THINKING,
    prefill_step: O.PrefillStep = O.DEFAULT_PREFILL_TEXT,
    max_tokens: O.MaxTokens = None,
    refuse_beyond_trained: O.RefuseBeyond = False,
    allow_beyond_trained: O.AllowBeyond = False,  # no-op alias kept for old scripts
    shard: O.Shard = C.DEFAULT_SHARD,
    gguf_quant: O.GgufQuant = C.DEFAULT_GGUF_QUANT,
    rope_scaling: O.RopeScaling = C.DEFAULT_ROPE_SCALING,
    sdpa: O.Sdpa = C.DEFAULT_SDPA_ROUTE,
    chunk_threshold: O.ChunkThreshold = None,
    chunk_size: O.ChunkSize = None,
    prefix_reuse: O.PrefixReuse = True,
    kv_bits: O.KvBits = None,
    kv_group_size: O.KvGroupSize = C.DEFAULT_KV_GROUP_SIZE,
    max_kv_size: O.MaxKvSize = None,
    out: O.Out = C.DEFAULT_OUT,
    resume: O.Resume = None,
    fail_under: O.FailUnder = None,
    quiet: O.Quiet = False,
    warm_up: O.WarmUp = C.DEFAULT_WARM_UP,
    repeatable_memory: O.RepeatableMemory = False,
    exports: Optional[dict] = None,  # --csv, --junit...: one option per export (with_exports)
):
    """Run a needle-in-a-haystack sweep and print the contexts x depths table."""
    try:
        _start(ctx, {**ctx.params, "exports": exports})
    except NiahError as exc:
        fail(exc)


def _start(ctx, p: dict) -> None:
    """Check every option, build the RunConfig (or take the resumed folder's), run."""
    from .run import warm_up_mode

    check_fail_under(p["fail_under"])
    warm_up_mode(p["warm_up"], "cpu")  # an unknown mode is one line before anything runs
    from .report import check_targets

    check_targets(p["exports"])
    if p["resume"] is not None:
        from .store import load_config

        _refuse_with_resume(ctx)
        cfg, folder = load_config(p["resume"]), p["resume"]
    else:
        cfg, folder = _config(p), None
        check_out(p["out"])
        from .model import check_gguf_options

        check_gguf_options(cfg.model, gguf_quant=cfg.gguf_quant)
        for name in ("chunk_threshold", "chunk_size"):
            if p[name] is not None and p[name] < 1:
                raise NiahError(
                    f"--{name.replace('_', '-')} {p[name]} is not allowed: use a "
                    "positive token count"
                )
    from .sdpa.dispatch import resolve_config

    # NIAH_SDPA_* are read here too, so a bad value is one line before the model loads
    resolve_config(threshold=cfg.chunk_threshold, chunk_size=cfg.chunk_size)
    if cfg.repeatable_memory:  # before any GPU work: MLX reads the variable once
        _apply_repeatable_memory(folder)
    _run(
        cfg,
        folder=folder,
        quiet=p["quiet"],
        fail_under=p["fail_under"],
        exports=p["exports"],
        warm_up=p["warm_up"],
    )


def _apply_repeatable_memory(folder) -> None:
    from .backend import backend
    from .environment import apply_repeatable_memory

    note = apply_repeatable_memory(backend(), folder=folder)
    if note:
        typer.echo(f"note: {note}", err=True)


def _config(p: dict) -> C.RunConfig:
    """The RunConfig of a new run's options; an empty value is refused, never a default."""
    from . import tasks

    contexts = C.parse_contexts(p["context"])
    tasks.check_contexts(task=p["task"], contexts=contexts)  # non-literal: one context <= 2K
    return C.RunConfig(
        model=model_arg(p["model"]),
        contexts=contexts,
        depths=C.parse_depths(p["depth"]),
        samples=p["samples"],
        seed=p["seed"],
        **tasks.resolve(
            task=p["task"],
            needles=p["needles"],
            needle=p["needle"],
            question=p["question"],
            answer_prefix=p["answer_prefix"],
            max_tokens=p["max_tokens"],
            value_kind=p["value_kind"],
            thinking=p["thinking"],
            task_param=p["task_param"],
            haystack=p["haystack"],
            contexts=contexts,
        ),
        thinking=p["thinking"],
        value_kind=p["value_kind"],
        haystack=_haystack_arg(p["haystack"]),
        prefill_steps=C.parse_int_list(
            p["prefill_step"], what="--prefill-step", example="1024,2048"
        ),
        sdpa=p["sdpa"],
        chunk_threshold=p["chunk_threshold"],
        chunk_size=p["chunk_size"],
        kv_bits=_optional_ints(p["kv_bits"], what="--kv-bits", allowed=C.KV_BITS, allow_none=True),
        kv_group_size=p["kv_group_size"],
        max_kv_size=_optional_ints(p["max_kv_size"], what="--max-kv-size", example="4096,8192"),
        refuse_beyond_trained=p["refuse_beyond_trained"],
        prefix_reuse=p["prefix_reuse"],
        repeatable_memory=p["repeatable_memory"],
        shard=p["shard"],
        gguf_quant=p["gguf_quant"],
        rope_scaling=p["rope_scaling"],
        out=p["out"],
    )


def _optional_ints(text: Optional[str], **kw) -> tuple:
    """An integer-list option left out is (None,); given, it is parsed (empty is an error)."""
    return (None,) if text is None else C.parse_int_list(text, **kw)


# Options --resume can take along: they change how the run reports, not what it measures.
RESUME_COMPATIBLE = {"resume", "fail_under", "quiet", "warm_up", *EXPORTS}


def _refuse_with_resume(ctx) -> None:
    """--resume takes every option from the run folder: one given too would be ignored."""
    given = [
        p
        for p in ctx.command.params
        if p.name not in RESUME_COMPATIBLE
        and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") != "DEFAULT"
    ]
    if given:
        p = given[0]
        flag = (
            p.secondary_opts[0]
            if p.secondary_opts and ctx.params.get(p.name) is False
            else p.opts[0]
        )
        raise NiahError(
            f"{flag} cannot be combined with --resume (the run folder's own "
            f"options are used): drop {flag}, or start a new run without --resume"
        )


def _haystack_arg(value: str) -> str:
    from .haystack import named_source
    from .haystack_files import GENERATED

    if not value.strip():
        raise NiahError(
            "--haystack is empty: give prose, noise, zh, ja, log, pg-essays, or a "
            ".txt file or folder"
        )
    if value in GENERATED:  # prose, noise, needles
        return value
    named = named_source(value)
    if named is not None:
        return named
    path = Path(value).expanduser()
    if not path.exists():
        raise NiahError(
            f"haystack path {value!r} does not exist: give a .txt file, a folder of them, prose or noise"
        )
    return str(path.resolve())


def _echo_warnings(caught) -> None:
    """Each distinct warning once, as one line `warning: ...` (no file:line, no source)."""
    for message in dict.fromkeys(str(w.message).splitlines()[0] for w in caught if str(w.message)):
        typer.echo(f"warning: {message}", err=True)


def _progress_bar(*, quiet: bool, rank: int, interval: float, long_s: float):
    """The terminal's progress on rank 0 (_progress_options' interval and long-trial
    seconds), nothing on the other ranks."""
    from rich.console import Console

    from . import run as runner
    from .progress import TerminalProgress

    if rank:
        return runner.Progress()
    console = Console(stderr=True)
    return TerminalProgress(
        quiet=quiet, console=console, line_interval_s=interval, long_trial_s=long_s
    )


def _run(cfg, *, folder, quiet: bool, fail_under, exports: dict, warm_up: str = "auto") -> None:
    import warnings as _w

    from . import run as runner
    from .run.phases import since_import
    from .run.ranks import group_info, launch_id

    interval, long_s, estimate_context = _progress_options()
    rank, world = group_info()
    launch = launch_id(world)
    bar = _progress_bar(quiet=quiet, rank=rank, interval=interval, long_s=long_s)
    out = Path(cfg.out)
    before, existed = listing(out), existing_ancestor(out)
    stop = StopSignal()
    try:
        with stop, _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            try:
                result = runner.run_sweep(
                    cfg,
                    folder=folder,
                    progress=bar,
                    rank=rank if world > 1 else None,
                    world=world,
                    warm_up=warm_up,
                    launch=launch,
                    estimate_context=estimate_context,
                    startup_s=since_import(),
                    memory_set_first=cfg.repeatable_memory,  # set (or refused) before MLX ran
                )
            finally:
                bar.stop()
                _echo_warnings(caught)
    except KeyboardInterrupt as exc:
        where = getattr(exc, "folder", None)
        typer.echo(
            f"{stop.word}: finished trials are saved; run the same command again or "
            f"niah run --resume {where if where else '<run folder>'} to finish the rest",
            err=True,
        )
        raise typer.Exit(code=stop.exit_code) from None
    except NiahError:
        if folder is None:
            remove_unstarted(out, before, existed=existed)
        raise
    _finish(
        result,
        model=cfg.model,
        rank=rank,
        world=world,
        launch=launch,
        warm_up=warm_up,
        exports=exports,
        fail_under=fail_under,
    )


def _finish(
    result,
    *,
    model: str,
    rank: int,
    world: int,
    launch: str,
    warm_up: str,
    exports: dict,
    fail_under,
) -> None:
    """Rank 0 (or the only process) reports and gates; every rank logs how it ended in the
    run folder, so `niah report --fail-under` can gate where mlx.launch drops exit codes."""
    from .run import ranks

    ends = dict(launch=launch, rank=rank if world > 1 else None)
    if world > 1:
        merged = ranks.gather_and_merge(result, rank=rank, world=world)
        if merged is None:  # rank 0 reports
            ranks.record_end(result.folder, status=0, outcome=ranks.DONE, **ends)
            return
        result = merged
    try:
        _report_run(result, model=model, world=world, warm_up=warm_up, exports=exports)
        outcome = ranks.NO_VERDICT
        _nothing_ran(result.records)
        outcome = ranks.BELOW
        gate(
            result.records,
            fail_under,
            log=lambda **logged: ranks.record_gate(result.folder, **logged, **ends),
        )
    except typer.Exit as exc:  # no verdict, or below --fail-under: the records tell
        ranks.record_end(result.folder, status=exc.exit_code, outcome=outcome, **ends)
        raise
    except NiahError as exc:
        ranks.record_end(result.folder, status=exc.exit_code, outcome=ranks.ERROR, **ends)
        raise
    ranks.record_end(result.folder, status=0, outcome=ranks.DONE, **ends)


def _report_run(result, *, model: str, world: int, warm_up: str, exports: dict) -> None:
    """Warnings, the summary table and the exports of a finished run."""
    from . import report

    for w in result.warnings + _warm_up_kept(result, warm_up):
        typer.echo(f"warning: {w}", err=True)
    header = report.run_header(
        result.records,
        folder=result.folder,
        model=model,
        ran=result.ran,
        done=result.skipped_done,
        world=world,
    )
    print_summary(report.summary(result.records, header=header))
    report.write_exports(result.records, exports, runs=[(result.folder, result.records)])


def _progress_options() -> tuple[float, float, int | None]:
    """(line interval s, long-trial s, estimate context) from NIAH_PROGRESS_INTERVAL_S (seconds
    between plain prefill lines off a TTY) and NIAH_LONG_TRIAL_S (announce trials expected to
    take this long; setting it times the device for every run, whatever its contexts)."""
    import os

    from .progress import DEFAULT_LINE_INTERVAL_S, DEFAULT_LONG_TRIAL_S

    values = []
    for name, default in (
        ("NIAH_PROGRESS_INTERVAL_S", DEFAULT_LINE_INTERVAL_S),
        ("NIAH_LONG_TRIAL_S", DEFAULT_LONG_TRIAL_S),
    ):
        text = os.environ.get(name, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:
            value = -1.0
        if not value >= 0 or value == float("inf"):
            raise NiahError(
                f"{name}={text!r} is not a number of seconds: set it to one like 10, or unset it"
            )
        values.append(value)
    explicit = bool(os.environ.get("NIAH_LONG_TRIAL_S", "").strip())
    return values[0], values[1], 0 if explicit else None


def _warm_up_kept(result, warm_up: str) -> list[str]:
    """--warm-up is not in the config hash (it changes no verdict), so trials kept from the
    folder keep the times of the warm-up they ran after: say so when that was another mode
    (runs.jsonl logs each warm-up; a run with warm-up off logs none)."""
    from .backend import backend
    from .run import warm_up_mode
    from .store import read_run_log

    if not result.skipped_done:
        return []
    mode = warm_up_mode(warm_up, backend())
    logged = {e.get("mode") for e in read_run_log(result.folder) if e.get("event") == "warm-up"}
    if logged == {mode} or (mode == "off" and not logged):
        return []
    was = ", ".join(sorted(str(m) for m in logged)) if logged else "off"
    n = result.skipped_done
    return [
        f"{n} trial{'s' if n > 1 else ''} kept from {result.folder} ran after warm-up {was}, "
        f"not {mode}: --warm-up does not rerun finished trials; use another --out to time "
        f"every trial with --warm-up {mode}"
    ]


def _nothing_ran(records) -> None:
    """A run none of whose trials reached a verdict (all SKIP or ERROR) is not a success:
    print the first distinct reasons and exit with O.EXIT_NOTHING_RAN."""
    from .scoring import ERROR, SKIP

    if not records or any(r["verdict"] not in (SKIP, ERROR) for r in records):
        return
    counts = ", ".join(
        f"{sum(r['verdict'] == v for r in records)} {v}"
        for v in (SKIP, ERROR)
        if any(r["verdict"] == v for r in records)
    )
    typer.echo(f"error: no trial reached a verdict ({counts}); the first reasons:", err=True)
    reasons = dict.fromkeys(str(r.get("error") or r["verdict"]) for r in records)
    for reason in list(reasons)[:3]:
        first = next(r for r in records if str(r.get("error") or r["verdict"]) == reason)
        typer.echo(
            f"  context {C.format_context(first['context'])} depth {first['depth']:g}: {reason}",
            err=True,
        )
    raise typer.Exit(code=O.EXIT_NOTHING_RAN)


register(app)  # report, convert, doctor, sdpa, cache (niah.commands), listed after run


def main() -> None:
    """Console entry point: make sure a fast BLAS is loaded on Linux CPU, then run the app."""
    from .blas import ensure_fast_blas

    ensure_fast_blas()
    app()


if __name__ == "__main__":
    main()
