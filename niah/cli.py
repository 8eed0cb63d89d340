"""The `niah` command line: run, report, convert, doctor, sdpa verify, sdpa bench.

Options are parsed into a RunConfig here and nothing else happens in this module; heavy
imports (mlx, mlx-lm, pandas) live inside the command bodies so `--help` is instant. Every
NiahError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import typer.core

from . import config as C
from . import options as O
from .errors import NiahError
from .outputs import check_out, existing_ancestor, listing, remove_unstarted
from .report.exports import EXPORTS


class _Command(typer.core.TyperCommand):
    """A command whose on/off flags show no type (typer would print `<bool>` next to them)."""

    def format_help(self, ctx, formatter):
        _hide_flag_types(self.get_params(ctx))
        return super().format_help(ctx, formatter)


class _Group(typer.core.TyperGroup):
    def format_help(self, ctx, formatter):
        _hide_flag_types(self.get_params(ctx))
        return super().format_help(ctx, formatter)


def _hide_flag_types(params) -> None:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _with_exports(panel: Optional[str] = None):
    """Give a command one option per entry of the export registry (niah.report.exports:
    --csv, --junit, --heatmap...); the command receives them as `exports`, a dict
    name -> Path or None. A new registry entry is an option of `run` and `report` at once."""
    import functools
    import inspect

    names = tuple(EXPORTS)
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[Path],
            default=typer.Option(None, e.option, help=e.help, rich_help_panel=panel),
        )
        for name, e in EXPORTS.items()
    ]

    def wrap(fn):
        sig = inspect.signature(fn, eval_str=True)  # typer reads __signature__ as given

        @functools.wraps(fn)
        def command(*args, **kwargs):
            return fn(*args, exports={name: kwargs.pop(name) for name in names}, **kwargs)

        command.__signature__ = sig.replace(
            parameters=[p for p in sig.parameters.values() if p.name != "exports"] + added
        )
        command.__annotations__ = {
            p.name: p.annotation for p in command.__signature__.parameters.values()
        }
        return command

    return wrap


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Needle-in-a-haystack long-context checks for MLX models.",
)
sdpa_app = typer.Typer(
    cls=_Group, no_args_is_help=True, help="niah's chunked SDPA: verify and benchmark."
)
app.add_typer(sdpa_app, name="sdpa")
cache_app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    help="niah's cache folder: converted GGUF weights, file digests.",
)
app.add_typer(cache_app, name="cache")


def _fail(exc: NiahError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=exc.exit_code)


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
    "130 interrupted."
)


@app.command(cls=_Command, epilog=RUN_EPILOG)
@_with_exports(panel=O.P_OUT)
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
    exports: Optional[dict] = None,  # --csv, --junit...: one option per export (_with_exports)
):
    """Run a needle-in-a-haystack sweep and print the contexts x depths table."""
    try:
        _start(ctx, {**ctx.params, "exports": exports})
    except NiahError as exc:
        _fail(exc)


def _start(ctx, p: dict) -> None:
    """Check every option, build the RunConfig (or take the resumed folder's), run."""
    from .run import warm_up_mode

    _check_fail_under(p["fail_under"])
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
    _run(
        cfg,
        folder=folder,
        quiet=p["quiet"],
        fail_under=p["fail_under"],
        exports=p["exports"],
        warm_up=p["warm_up"],
    )


def _config(p: dict) -> C.RunConfig:
    """The RunConfig of a new run's options; an empty value is refused, never a default."""
    from . import tasks

    contexts = C.parse_contexts(p["context"])
    tasks.check_contexts(task=p["task"], contexts=contexts)  # non-literal: one context <= 2K
    return C.RunConfig(
        model=_model_arg(p["model"]),
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


def _model_arg(value: Optional[str]) -> str:
    if value is None:
        return "default"
    if not value.strip():
        raise NiahError(
            "--model is empty: give a hub id, a model folder or a .gguf file, or "
            "leave --model out for the embedded model"
        )
    return value


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


def _run(cfg, *, folder, quiet: bool, fail_under, exports: dict, warm_up: str = "auto") -> None:
    import warnings as _w

    from rich.console import Console

    from . import run as runner
    from .progress import TerminalProgress
    from .run.ranks import group_info, launch_id

    interval, long_s, estimate_context = _progress_options()
    rank, world = group_info()
    launch = launch_id(world)
    bar = (
        TerminalProgress(
            quiet=quiet, console=Console(stderr=True), line_interval_s=interval, long_trial_s=long_s
        )
        if not rank
        else runner.Progress()
    )
    out = Path(cfg.out)
    before, existed = listing(out), existing_ancestor(out)
    try:
        with _w.catch_warnings(record=True) as caught:
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
                )
            finally:
                bar.stop()
                _echo_warnings(caught)
    except KeyboardInterrupt as exc:
        where = getattr(exc, "folder", None)
        typer.echo(
            "interrupted: finished trials are saved; run the same command again or "
            f"niah run --resume {where if where else '<run folder>'} to finish the rest",
            err=True,
        )
        raise typer.Exit(code=130) from None
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
        _gate(
            result.records,
            fail_under,
            log=lambda **gate: ranks.record_gate(result.folder, **gate, **ends),
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
    _print_summary(report.summary(result.records, header=header))
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


def _print_summary(summary) -> None:
    """The one summary printer of `run` and `report` (niah.report.summary builds the lines)."""
    for line in summary.lines:
        typer.echo(line)
    for line in summary.warnings:
        typer.echo(line, err=True)


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


def _check_fail_under(fail_under: Optional[float]) -> None:
    if fail_under is not None and not 0 <= fail_under <= 1:
        raise NiahError(f"--fail-under {fail_under:g} is outside [0, 1]: use a fraction like 0.9")


def _gate(records, fail_under: Optional[float], *, log=None) -> None:
    """Exit 1 below --fail-under; log(accuracy=, threshold=, passed=) records the outcome."""
    from . import report

    if fail_under is not None:
        acc = report.accuracy(records) or 0.0
        if log is not None:
            log(accuracy=acc, threshold=fail_under, passed=acc >= fail_under)
        line = report.fail_under_line(records, fail_under)
        if line:
            typer.echo(line)
            raise typer.Exit(code=1)


@app.command("report", cls=_Command)
@_with_exports()
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders made by niah run."),
    compare: bool = typer.Option(
        False, "--compare", help="Compare runs cell by cell (first is the baseline)."
    ),
    effective_threshold: float = typer.Option(
        0.85,
        "--effective-threshold",
        help="Effective context: accuracy >= this x the shortest context's.",
    ),
    fail_under: Optional[float] = typer.Option(
        None, "--fail-under", help="Exit 1 when accuracy is below this (0..1)."
    ),
    exports: Optional[dict] = None,  # --markdown, --csv...: one option per export (_with_exports)
):
    """Print and export reports of one or more run folders."""
    try:
        _check_fail_under(fail_under)
        if not 0 < effective_threshold <= 1:
            raise NiahError(
                f"--effective-threshold {effective_threshold:g} is outside (0, 1]: "
                "use a fraction like 0.85"
            )
        from .report import check_targets

        check_targets(exports)
        _report(
            runs,
            exports=exports,
            compare=compare,
            effective_threshold=effective_threshold,
            fail_under=fail_under,
        )
    except NiahError as exc:
        _fail(exc)


def _report(
    folders, *, exports: dict, compare: bool, effective_threshold: float, fail_under
) -> None:
    from . import report
    from .report import pool

    runs = pool.load_runs(folders, warn=lambda text: typer.echo(f"warning: {text}", err=True))
    pool.check_poolable(runs, compare=compare)
    if compare:
        typer.echo(report.compare([(Path(run.name).name, run.records) for run in runs]))
        records = pool.all_records(runs)
    else:
        records = pool.pooled(runs)
        header = report.pooled_header([(run.name, run.records) for run in runs])
        _print_summary(
            report.summary(records, header=header, effective_threshold=effective_threshold)
        )
    report.write_exports(
        records,
        exports,
        runs=[(run.name, run.records) for run in runs],
        compare=compare,
        effective_threshold=effective_threshold,
    )
    _check_ranks(runs, fail_under)
    _gate(records, fail_under)


def _check_ranks(runs, fail_under) -> None:
    """A rank that died or failed (runs.jsonl: a start without an end, or an error end) fails
    the --fail-under gate with one line; without the gate it is a warning."""
    from .report import pool

    for run in runs:
        problems = pool.rank_problems(run)
        if not problems:
            continue
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        line = (
            f"run folder {run.name!r}: {problems[0]}{more}: its trials may be missing; "
            f"finish them with niah run --resume {run.name}"
        )
        if fail_under is not None:
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(code=1)
        typer.echo(f"warning: {line}", err=True)


@app.command(cls=_Command)
def convert(
    gguf: Path = typer.Argument(..., help="The .gguf file to convert."),
    out: Path = typer.Argument(..., help="New folder for the mlx-lm model."),
    gguf_quant: str = typer.Option(
        "auto",
        "--gguf-quant",
        help="Weights: auto (as stored where MLX reads the type, else q8), q8, q4 or f16.",
    ),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
):
    """Write an mlx-lm model folder (safetensors, config.json, tokenizer) from a GGUF file."""
    from .gguf.convert import convert as do_convert

    try:
        done = do_convert(gguf, out, quant=gguf_quant, force=force)
    except NiahError as exc:
        _fail(exc)
    typer.echo(
        f"wrote {done.folder} ({done.model_type}, weights {done.weights}): {', '.join(done.files)}"
    )


@app.command(cls=_Command)
def doctor(
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Also size a run of this model."
    ),
    context: Optional[str] = typer.Option(
        None, "--context", "-c", help="Context to size (with --model)."
    ),
    kv_bits: Optional[int] = typer.Option(None, "--kv-bits", help="Quantized KV bits for sizing."),
):
    """Check the installation: MLX, device, BLAS, mlx-lm, the embedded model; size a run."""
    from .doctor import doctor_report

    try:
        if model is not None:
            _model_arg(model)  # an empty --model is refused, not taken as no model
        if context is not None and not context.strip():
            raise NiahError("--context is empty: give a context to size, like --context 128k")
        typer.echo(doctor_report(model=model, context=context, kv_bits=kv_bits))
    except NiahError as exc:
        _fail(exc)


@sdpa_app.command("verify", cls=_Command)
def sdpa_verify(
    quick: bool = typer.Option(False, "--quick", help="Small sizes only (CPU-friendly)."),
    long: bool = typer.Option(
        True, "--long/--no-long", help="Include 128K/256K-key cases where memory allows."
    ),
):
    """Check every route against the reference over the upstream proposal's test plan."""
    from .verify import run_verify

    ok = run_verify(quick=quick, long=long, echo=typer.echo)
    raise typer.Exit(code=0 if ok else 1)


@sdpa_app.command("bench", cls=_Command)
def sdpa_bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes only (CPU-friendly)."),
):
    """Time stock against each route (niah.sdpa.bench; benchmarks/sdpa.py takes options)."""
    from .sdpa.bench import run_bench

    run_bench(quick=quick, echo=typer.echo)


@cache_app.command("info", cls=_Command)
def cache_info():
    """Print the cache folder and its size (NIAH_CACHE_DIR moves it)."""
    from .user_cache import describe

    typer.echo(f"cache: {describe()}")


@cache_app.command("clear", cls=_Command)
def cache_clear():
    """Delete everything in the cache folder (converted weights are rebuilt when needed)."""
    from .user_cache import cache_root, clear

    freed = clear()
    typer.echo(f"cleared {cache_root()} ({freed / 1024**2:.1f} MiB freed)")


def main() -> None:
    """Console entry point: make sure a fast BLAS is loaded on Linux CPU, then run the app."""
    from .blas import ensure_fast_blas

    ensure_fast_blas()
    app()


if __name__ == "__main__":
    main()
