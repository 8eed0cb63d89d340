"""The commands of `niah` other than `run`: report, convert, doctor, sdpa verify/bench and
cache info/clear. niah.cli builds the app and calls register(app) to add them to it; heavy
imports stay inside the command bodies so `--help` is instant."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import (
    Command,
    Group,
    check_fail_under,
    fail,
    gate,
    model_arg,
    print_summary,
    with_exports,
)
from .errors import NiahError


def register(app: typer.Typer) -> None:
    """Add report, convert, doctor and the sdpa and cache groups to `app`; the export options
    of `report` are read from the registry now (a reloaded niah.cli picks up new entries)."""
    app.command("report", cls=Command)(with_exports()(report_cmd))
    app.command(cls=Command)(convert)
    app.command(cls=Command)(doctor)
    sdpa_app = typer.Typer(
        cls=Group, no_args_is_help=True, help="niah's chunked SDPA: verify and benchmark."
    )
    sdpa_app.command("verify", cls=Command)(sdpa_verify)
    sdpa_app.command("bench", cls=Command)(sdpa_bench)
    app.add_typer(sdpa_app, name="sdpa")
    cache_app = typer.Typer(
        cls=Group,
        no_args_is_help=True,
        help="niah's cache folder: converted GGUF weights, file digests.",
    )
    cache_app.command("info", cls=Command)(cache_info)
    cache_app.command("clear", cls=Command)(cache_clear)
    app.add_typer(cache_app, name="cache")


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
    exports: Optional[dict] = None,  # --markdown, --csv...: one option per export (with_exports)
):
    """Print and export reports of one or more run folders."""
    try:
        check_fail_under(fail_under)
        if not 0 < effective_threshold <= 1:
            raise NiahError(
                f"--effective-threshold {effective_threshold:g} is outside (0, 1]: "
                "use a fraction like 0.85"
            )
        from .report import check_targets

        check_targets(exports)
        if compare and exports.get("heatmap") is not None:
            raise NiahError(
                "--heatmap draws one run, and --compare sets runs side by side: use --html "
                "for the comparison, or report each folder on its own for its heatmap"
            )
        _report(
            runs,
            exports=exports,
            compare=compare,
            effective_threshold=effective_threshold,
            fail_under=fail_under,
        )
    except NiahError as exc:
        fail(exc)


def _report(
    folders, *, exports: dict, compare: bool, effective_threshold: float, fail_under
) -> None:
    from . import report
    from .report import pool

    runs = pool.load_runs(folders, warn=lambda text: typer.echo(f"warning: {text}", err=True))
    pool.check_poolable(runs, compare=compare)
    if compare:
        for text in pool.compare_warnings(runs):
            typer.echo(f"warning: {text}", err=True)
        typer.echo(report.compare([(Path(run.name).name, run.records) for run in runs]))
        records = pool.all_records(runs)
    else:
        records = pool.pooled(runs)
        header = report.pooled_header([(run.name, run.records) for run in runs])
        print_summary(
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
    if compare:  # each run gated on its own trials: pooled, a baseline would carry a candidate
        _gate_each(runs, fail_under)
    else:
        gate(records, fail_under)


def _gate_each(runs, fail_under) -> None:
    """--fail-under with --compare: one line per run below it (named), then exit 1."""
    from .report import fail_under_line

    if fail_under is None:
        return
    lines = [(Path(run.name).name, fail_under_line(run.records, fail_under)) for run in runs]
    for name, line in lines:
        if line:
            typer.echo(f"{name}: {line}")
    if any(line for _, line in lines):
        raise typer.Exit(code=1)


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
        fail(exc)
    typer.echo(
        f"wrote {done.folder} ({done.model_type}, weights {done.weights}): {', '.join(done.files)}"
    )


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
            model_arg(model)  # an empty --model is refused, not taken as no model
        if context is not None and not context.strip():
            raise NiahError("--context is empty: give a context to size, like --context 128k")
        if kv_bits is not None:  # refused as `niah run` refuses it, before the model loads
            from .config import KV_BITS, parse_int_list

            parse_int_list(str(kv_bits), what="--kv-bits", allowed=KV_BITS)
        typer.echo(doctor_report(model=model, context=context, kv_bits=kv_bits))
    except NiahError as exc:
        fail(exc)


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


def sdpa_bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes only (CPU-friendly)."),
):
    """Time stock against each route (niah.sdpa.bench; benchmarks/sdpa.py takes options)."""
    from .sdpa.bench import run_bench

    run_bench(quick=quick, echo=typer.echo)


def cache_info():
    """Print the cache folder and its size (NIAH_CACHE_DIR moves it)."""
    from .user_cache import describe

    try:
        typer.echo(f"cache: {describe()}")
    except NiahError as exc:
        fail(exc)


def cache_clear():
    """Delete niah's own entries in the cache folder, nothing else (rebuilt when needed)."""
    from .user_cache import cache_root, clear

    try:
        freed = clear()
    except NiahError as exc:
        fail(exc)
    typer.echo(f"cleared {cache_root()} ({freed / 1024**2:.1f} MiB freed)")
