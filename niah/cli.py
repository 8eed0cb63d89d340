"""The `niah` command line: run, report, convert, doctor, sdpa verify, sdpa bench.

Options are parsed into a RunConfig here and nothing else happens in this module; heavy
imports (mlx, mlx-lm, pandas) live inside the command bodies so `--help` is instant. Every
NiahError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
import typer.core

from .errors import NiahError


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


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Needle-in-a-haystack long-context checks for MLX models.")
sdpa_app = typer.Typer(cls=_Group, no_args_is_help=True,
                       help="niah's chunked SDPA: verify and benchmark.")
app.add_typer(sdpa_app, name="sdpa")
cache_app = typer.Typer(cls=_Group, no_args_is_help=True,
                        help="niah's cache folder: converted GGUF weights, file digests.")
app.add_typer(cache_app, name="cache")

P_PROMPT, P_RUN, P_SDPA, P_KV, P_OUT = "Prompt", "Running", "Attention", "KV cache", "Output and gating"


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
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print niah's version and exit."),
):
    """Needle-in-a-haystack long-context checks for MLX models."""


@app.command(cls=_Command)
def run(
    ctx: typer.Context,
    context: str = typer.Option("1k,2k", "--context", "-c", help="Context lengths: 8000, 4k, 128k, 1m; comma list.", rich_help_panel=P_PROMPT),
    depth: str = typer.Option("0,0.5,1", "--depth", "-d", help="Needle depths 0..1: list 0,0.5,1 or range 0:1:0.1.", rich_help_panel=P_PROMPT),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="mlx-lm hub id, MLX model folder, or .gguf file (default: embedded SmolLM2-135M-Instruct).", rich_help_panel=P_RUN),
    samples: int = typer.Option(1, "--samples", "-n", help="Trials per cell (different needle values).", rich_help_panel=P_PROMPT),
    seed: int = typer.Option(0, "--seed", help="Seed for haystack and needle values.", rich_help_panel=P_PROMPT),
    needle: Optional[str] = typer.Option(None, "--needle", help="Needle template with {value}.", rich_help_panel=P_PROMPT),
    question: Optional[str] = typer.Option(None, "--question", help="Question asked after the haystack.", rich_help_panel=P_PROMPT),
    answer_prefix: Optional[str] = typer.Option(None, "--answer-prefix", help="Text the answer starts with.", rich_help_panel=P_PROMPT),
    value_kind: str = typer.Option("number", "--value-kind", help="Needle value: number (7 digits), uuid, words.", rich_help_panel=P_PROMPT),
    haystack: str = typer.Option("prose", "--haystack", help="prose, noise, zh, ja, log, pg-essays, or a .txt file / folder.", rich_help_panel=P_PROMPT),
    task: str = typer.Option("single", "--task", help="single, multi-needle, multi-key, multi-value, multi-query.", rich_help_panel=P_PROMPT),
    needles: Optional[int] = typer.Option(None, "--needles", help="Needles per trial for multi-* tasks (default 4).", rich_help_panel=P_PROMPT),
    prefill_step: str = typer.Option("2048", "--prefill-step", help="Prefill step in tokens (comma list sweeps).", rich_help_panel=P_RUN),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Most tokens to decode (default 32; more for UUIDs and tasks asking for several values).", rich_help_panel=P_RUN),
    allow_beyond_trained: bool = typer.Option(False, "--allow-beyond-trained", help="Allow contexts past the model's trained length (recorded per trial).", rich_help_panel=P_RUN),
    prefix_reuse: bool = typer.Option(True, "--prefix-reuse/--no-prefix-reuse", help="Reuse the prefilled shared prefix between trials.", rich_help_panel=P_RUN),
    shard: str = typer.Option("none", "--shard", help="Under mlx.launch: none (split the trials across ranks) or tensor (one model sharded across ranks).", rich_help_panel=P_RUN),
    gguf_quant: str = typer.Option("auto", "--gguf-quant", help="GGUF weights: auto (as stored where MLX reads the type, else q8), q8, q4 or f16.", rich_help_panel=P_RUN),
    rope_scaling: str = typer.Option("model", "--rope-scaling", help="RoPE override: yarn:4, linear:2, none, or model (as shipped).", rich_help_panel=P_RUN),
    sdpa: str = typer.Option("auto", "--sdpa", help="Attention route: auto, stock, chunked.", rich_help_panel=P_SDPA),
    chunk_threshold: Optional[int] = typer.Option(None, "--chunk-threshold", help="Key length from which chunking applies (default 65536).", rich_help_panel=P_SDPA),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="Keys per chunk (default 32768).", rich_help_panel=P_SDPA),
    kv_bits: Optional[str] = typer.Option(None, "--kv-bits", help="Quantized KV cache bits: 4, 8 or a list 4,8 (none = float).", rich_help_panel=P_KV),
    kv_group_size: int = typer.Option(64, "--kv-group-size", help="Group size of the quantized KV cache.", rich_help_panel=P_KV),
    max_kv_size: Optional[str] = typer.Option(None, "--max-kv-size", help="Rotating KV cache size(s), comma list.", rich_help_panel=P_KV),
    out: str = typer.Option("results", "--out", "-o", help="Folder for run folders.", rich_help_panel=P_OUT),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume this run folder (its config is reused).", rich_help_panel=P_OUT),
    fail_under: Optional[float] = typer.Option(None, "--fail-under", help="Exit 1 when accuracy is below this (0..1).", rich_help_panel=P_OUT),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML, one testcase per trial.", rich_help_panel=P_OUT),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write every trial as CSV.", rich_help_panel=P_OUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.", rich_help_panel=P_OUT),
    warm_up: str = typer.Option("auto", "--warm-up", help="Before the first timed trial: auto (shapes on CUDA, once on Metal, off on CPU), shapes (every prefill block shape), once (one short generation) or off.", rich_help_panel=P_RUN),
):
    """Run a needle-in-a-haystack sweep and print the contexts x depths table."""
    from . import config as C
    from . import tasks

    try:
        _check_fail_under(fail_under)
        from .runner import warm_up_mode

        warm_up_mode(warm_up, "cpu")  # an unknown mode is one line before anything runs
        _check_file_option(junit, option="--junit")
        _check_file_option(csv, option="--csv")
        if resume is not None:
            from .store import load_config

            _refuse_with_resume(ctx)
            cfg = load_config(resume)
            folder = resume
        else:
            cfg = C.RunConfig(
                model=model or "default",
                contexts=C.parse_contexts(context),
                depths=C.parse_depths(depth),
                samples=samples,
                seed=seed,
                **tasks.resolve(task=task, needles=needles, needle=needle, question=question,
                                answer_prefix=answer_prefix, max_tokens=max_tokens,
                                value_kind=value_kind),
                value_kind=value_kind,
                haystack=_haystack_arg(haystack),
                prefill_steps=tuple(C.parse_int_list(prefill_step, what="--prefill-step")),
                sdpa=sdpa,
                chunk_threshold=chunk_threshold,
                chunk_size=chunk_size,
                kv_bits=C.parse_int_list(kv_bits, what="--kv-bits", allowed=(2, 3, 4, 5, 6, 8),
                                         allow_none=True) if kv_bits else (None,),
                kv_group_size=kv_group_size,
                max_kv_size=C.parse_int_list(max_kv_size, what="--max-kv-size") if max_kv_size else (None,),
                allow_beyond_trained=allow_beyond_trained,
                prefix_reuse=prefix_reuse,
                shard=shard,
                gguf_quant=gguf_quant,
                rope_scaling=rope_scaling,
                out=out,
            )
            _check_out(out)
            from .model import check_gguf_options

            check_gguf_options(cfg.model, gguf_quant=cfg.gguf_quant)
            for name, v in (("--chunk-threshold", chunk_threshold), ("--chunk-size", chunk_size)):
                if v is not None and v < 1:
                    raise NiahError(f"{name} {v} is not allowed: use a positive token count")
            folder = None
        from .sdpa.dispatch import resolve_config

        # NIAH_SDPA_* are read here too, so a bad value is one line before the model loads
        resolve_config(threshold=cfg.chunk_threshold, chunk_size=cfg.chunk_size)
        _run(cfg, folder=folder, quiet=quiet, fail_under=fail_under, junit=junit, csv=csv,
             warm_up=warm_up)
    except NiahError as exc:
        _fail(exc)


# Options --resume can take along: they change how the run reports, not what it measures.
RESUME_COMPATIBLE = {"resume", "fail_under", "junit", "csv", "quiet", "warm_up"}


def _refuse_with_resume(ctx) -> None:
    """--resume takes every option from the run folder: one given too would be ignored."""
    given = [p for p in ctx.command.params
             if p.name not in RESUME_COMPATIBLE
             and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") != "DEFAULT"]
    if given:
        p = given[0]
        flag = p.secondary_opts[0] if p.secondary_opts and ctx.params.get(p.name) is False \
            else p.opts[0]
        raise NiahError(f"{flag} cannot be combined with --resume (the run folder's own "
                        f"options are used): drop {flag}, or start a new run without --resume")


def _haystack_arg(value: str) -> str:
    from .haystack import named_source

    if value in ("prose", "noise"):
        return value
    named = named_source(value)
    if named is not None:
        return named
    path = Path(value).expanduser()
    if not path.exists():
        raise NiahError(f"haystack path {value!r} does not exist: give a .txt file, a folder of them, prose or noise")
    return str(path.resolve())


def _check_file_option(path: Optional[Path], *, option: str) -> None:
    """Refuse, before the sweep, a report path that could not be written after it."""
    if path is None:
        return
    if path.is_dir():
        example = {"--junit": "niah.xml", "--csv": "niah.csv"}.get(option, "niah.out")
        raise NiahError(f"{option} {str(path)!r} is a folder: give a file name like {example}")
    parent = path.parent
    if not parent.is_dir():
        raise NiahError(f"cannot write {option} {str(path)!r}: folder {str(parent)!r} does not exist; "
                        "create it first")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise NiahError(f"cannot write {option} {str(path)!r} (permission denied): choose a writable path")


def _check_out(out: str) -> None:
    """Refuse, before the model loads, an --out that cannot hold run folders."""
    if not out.strip():
        raise NiahError("--out is empty: give a folder for run folders, like --out results")
    probe = _existing_ancestor(Path(out))
    if not probe.is_dir():
        raise NiahError(f"cannot write to output folder {out!r} ({str(probe)!r} is a file): "
                        "choose a writable --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise NiahError(f"cannot write to output folder {out!r} (permission denied): "
                        "choose a writable --out")


def _listing(folder: Path) -> Optional[set]:
    return set(os.listdir(folder)) if folder.is_dir() else None


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _remove_unstarted(out: Path, before: Optional[set], *, existed: Path) -> None:
    """After a run refused its input: remove the run folders this call created that hold no
    trial, and the folders of --out it created, so bad input leaves nothing behind."""
    import shutil

    after = _listing(out)
    if after is None:
        return
    for name in after - (before or set()):
        folder = out / name
        if folder.is_dir() and not any(folder.glob("trials*.jsonl")):
            shutil.rmtree(folder, ignore_errors=True)
    folder = out
    while folder != existed and folder != folder.parent:  # --out and parents made by this call
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            break
        folder = folder.parent


def _progress(*, quiet: bool, console):
    """The run's progress: a bar on a terminal; elsewhere (CI logs) one plain line per trial
    on stderr; nothing with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from . import runner
    from .config import format_context

    class Bar(runner.Progress):
        def __init__(self):
            self.bar, self.total, self.done = None, 0, 0

        def start(self, total):
            self.total = total
            if quiet or total == 0 or not console.is_terminal:
                return
            self.bar = Progress(TextColumn("[bold]niah"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.description}"), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=total)

        def note(self, text):
            if not quiet:
                console.print(f"[dim]{text}[/dim]")

        def trial_done(self, record):
            self.done += 1
            if self.bar is not None:
                desc = f"{record['context']} @ {record['depth']:g}: {record['verdict']}"
                self.bar.update(self.task, advance=1, description=desc)
            elif not quiet:
                secs = record.get("elapsed_s")
                typer.echo(f"niah: trial {self.done}/{self.total}: context "
                           f"{format_context(record['context'])} depth {record['depth']:g} "
                           f"sample {record['sample']}: {record['verdict']}"
                           + (f" ({secs:.1f} s)" if secs is not None else ""), err=True)

        def stop(self):
            if self.bar is not None:
                self.bar.stop()

    return Bar()


def _echo_warnings(caught) -> None:
    """Each distinct warning once, as one line `warning: ...` (no file:line, no source)."""
    for message in dict.fromkeys(str(w.message).splitlines()[0] for w in caught if str(w.message)):
        typer.echo(f"warning: {message}", err=True)


def _run(cfg, *, folder, quiet: bool, fail_under, junit, csv, warm_up: str = "auto") -> None:
    import warnings as _w

    from rich.console import Console

    from . import report, runner
    from .distributed import group_info

    rank, world = group_info()
    bar = _progress(quiet=quiet, console=Console(stderr=True)) if not rank else runner.Progress()
    out = Path(cfg.out)
    before, existed = _listing(out), _existing_ancestor(out)
    try:
        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            try:
                result = runner.run_sweep(cfg, folder=folder, progress=bar,
                                          rank=rank if world > 1 else None, world=world,
                                          warm_up=warm_up)
            finally:
                bar.stop()
                _echo_warnings(caught)
    except KeyboardInterrupt as exc:
        where = getattr(exc, "folder", None)
        typer.echo("interrupted: finished trials are saved; run the same command again or "
                   f"niah run --resume {where if where else '<run folder>'} to finish the rest",
                   err=True)
        raise typer.Exit(code=130)
    except NiahError:
        if folder is None:
            _remove_unstarted(out, before, existed=existed)
        raise
    if world > 1:
        from .distributed import gather_and_merge

        result = gather_and_merge(result, rank=rank, world=world)
        if result is None:
            return  # rank 0 reports
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    _print_run(result, cfg)
    if junit:
        report.junit(result.records, junit)
    if csv:
        report.export(result.records, csv=csv)
    _gate(result.records, fail_under)


def _print_run(result, cfg) -> None:
    from . import report

    records = result.records
    typer.echo(f"Run folder: {result.folder}")
    typer.echo(f"Model: {records[0]['model'] if records else cfg.model} · device "
               f"{records[0]['device'] if records else '?'} · {result.ran} run, "
               f"{result.skipped_done} already done")
    typer.echo("")
    typer.echo(report.format_table(records))
    typer.echo("")
    typer.echo(report.totals_line(records))
    if report.cut_answers_line(records):
        typer.echo(report.cut_answers_line(records), err=True)
    for r in records:
        if report.suspect(r):
            typer.echo(f"SUSPECT: context {r['context']} depth {r['depth']:g}: {report.suspect(r)}")


def _check_fail_under(fail_under: Optional[float]) -> None:
    if fail_under is not None and not 0 <= fail_under <= 1:
        raise NiahError(f"--fail-under {fail_under:g} is outside [0, 1]: use a fraction like 0.9")


def _gate(records, fail_under: Optional[float]) -> None:
    from . import report

    if fail_under is not None:
        acc = report.accuracy(records) or 0.0
        if acc < fail_under:
            typer.echo(f"accuracy {acc:.1%} is below --fail-under {fail_under:.1%}")
            raise typer.Exit(code=1)


@app.command("report", cls=_Command)
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders made by niah run."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Write the table as Markdown."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="One row per trial, every field."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="One object per trial."),
    parquet: Optional[Path] = typer.Option(None, "--parquet", help="One row per trial (needs pyarrow)."),
    heatmap: Optional[Path] = typer.Option(None, "--heatmap", help="PNG heatmap of accuracy."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="JUnit XML, one testcase per trial."),
    compare: bool = typer.Option(False, "--compare", help="Compare runs cell by cell (first is the baseline)."),
    effective_threshold: float = typer.Option(0.85, "--effective-threshold", help="Effective context: accuracy >= this x the shortest context's."),
    fail_under: Optional[float] = typer.Option(None, "--fail-under", help="Exit 1 when accuracy is below this (0..1)."),
):
    """Print and export reports of one or more run folders."""
    try:
        _check_fail_under(fail_under)
        if not 0 < effective_threshold <= 1:
            raise NiahError(f"--effective-threshold {effective_threshold:g} is outside (0, 1]: "
                            "use a fraction like 0.85")
        if heatmap and heatmap.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise NiahError(f"--heatmap {str(heatmap)!r} is not a .png, .svg or .pdf file: "
                            "give a name like heatmap.png")
        _report(runs, markdown=markdown, csv=csv, json_path=json_path, parquet=parquet,
                heatmap_path=heatmap, junit=junit, compare=compare,
                effective_threshold=effective_threshold, fail_under=fail_under)
    except NiahError as exc:
        _fail(exc)


def _report(runs, *, markdown, csv, json_path, parquet, heatmap_path, junit, compare,
            effective_threshold, fail_under) -> None:
    import warnings as _w

    from . import report, store

    loaded = []
    for folder in runs:
        if not Path(folder).is_dir():
            raise NiahError(f"run folder {str(folder)!r} does not exist: give a folder made by niah run")
        stored = store.load_run(folder)
        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            recs = list(store.latest_by_key(
                store.read_trials(folder, config_hash=stored.config_hash)).values())
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        if not recs:
            raise NiahError(f"run folder {str(folder)!r} has no finished trials: run niah run first")
        loaded.append((str(folder), stored, recs))
    for folder, stored, _ in loaded:
        if stored.config_hash and stored.recomputed_hash() != stored.config_hash:
            typer.echo(f"warning: {str(Path(folder) / 'config.json')!r} no longer matches the "
                       f"config {stored.config_hash} its trials were run with (edited after the "
                       "run?): the table shows the trials as recorded", err=True)
    experiments = {_experiment(stored, recs) for _, stored, recs in loaded}
    if len(experiments) > 1 and not compare:
        raise NiahError("these runs are different experiments (" +
                        "; ".join(f"config {h} on {', '.join(d)}" for h, d in sorted(experiments)) +
                        "): pass --compare to see them side by side, or report them one at a time")
    if compare and len(loaded) < 2:
        raise NiahError("--compare needs two or more run folders")
    if compare:
        typer.echo(report.compare([(Path(n).name, r) for n, _, r in loaded]))
        records = [r for _, _, recs in loaded for r in recs]
    else:
        # One experiment in several folders: a trial key is one needle, counted once.
        records = list(store.latest_by_key(
            sorted((r for _, _, recs in loaded for r in recs),
                   key=lambda r: store.written_at(r))).values())
        for name, _, recs in loaded:
            typer.echo(f"Run: {name} · model {recs[0]['model']} · device {recs[0]['device']}")
        typer.echo("")
        typer.echo(report.format_table(records))
        typer.echo("")
        typer.echo(report.totals_line(records))
        if report.cut_answers_line(records):
            typer.echo(report.cut_answers_line(records), err=True)
        eff = report.effective_context(records, threshold=effective_threshold)
        from .config import format_context

        typer.echo(f"Effective context (>= {effective_threshold:.0%} of the shortest context's "
                   f"accuracy): {format_context(eff) if eff else 'none'}")
        for r in records:
            why = report.suspect(r)
            if why:
                typer.echo(f"SUSPECT: context {r['context']} depth {r['depth']:g} sample {r['sample']}: {why}")
    if markdown:
        title = ", ".join(Path(n).name for n, _, _ in loaded)
        report._writable(markdown).write_text(report.format_markdown(records, title=title))
    report.export(records, csv=csv, json_path=json_path, parquet=parquet)
    if heatmap_path:
        report.heatmap(records, heatmap_path, title=f"{records[0]['model']}")
    if junit:
        report.junit(records, junit)
    _gate(records, fail_under)


def _experiment(stored, records) -> tuple[str, tuple[str, ...]]:
    """What makes two run folders the same experiment: the hash of their config and identity
    (model, haystack, backend, versions...: recomputed, so an edited config.json counts as
    another experiment) and, for folders written before the hash covered the device, the
    devices their records name."""
    devices = tuple(sorted({str(r.get("device")) for r in records}))
    return (stored.recomputed_hash(), devices)


@app.command(cls=_Command)
def convert(
    gguf: Path = typer.Argument(..., help="The .gguf file to convert."),
    out: Path = typer.Argument(..., help="New folder for the mlx-lm model."),
    gguf_quant: str = typer.Option("auto", "--gguf-quant", help="Weights: auto (as stored where MLX reads the type, else q8), q8, q4 or f16."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
):
    """Write an mlx-lm model folder (safetensors, config.json, tokenizer) from a GGUF file."""
    from .gguf.convert import convert as do_convert

    try:
        done = do_convert(gguf, out, quant=gguf_quant, force=force)
    except NiahError as exc:
        _fail(exc)
    typer.echo(f"wrote {done.folder} ({done.model_type}, weights {done.weights}): "
               f"{', '.join(done.files)}")


@app.command(cls=_Command)
def doctor(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Also size a run of this model."),
    context: Optional[str] = typer.Option(None, "--context", "-c", help="Context to size (with --model)."),
    kv_bits: Optional[int] = typer.Option(None, "--kv-bits", help="Quantized KV bits for sizing."),
):
    """Check the installation: MLX, device, BLAS, mlx-lm, the embedded model; size a run."""
    from .doctor import doctor_report

    try:
        typer.echo(doctor_report(model=model, context=context, kv_bits=kv_bits))
    except NiahError as exc:
        _fail(exc)


@sdpa_app.command("verify", cls=_Command)
def sdpa_verify(
    quick: bool = typer.Option(False, "--quick", help="Small sizes only (CPU-friendly)."),
    long: bool = typer.Option(True, "--long/--no-long", help="Include 128K/256K-key cases where memory allows."),
):
    """Check every route against the reference over the upstream proposal's test plan."""
    from .verify import run_verify

    ok = run_verify(quick=quick, long=long, echo=typer.echo)
    raise typer.Exit(code=0 if ok else 1)


@sdpa_app.command("bench", cls=_Command)
def sdpa_bench(
    quick: bool = typer.Option(False, "--quick", help="Small sizes only (CPU-friendly)."),
):
    """Time stock against each route (see benchmarks/sdpa.py for the full table)."""
    import runpy

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "sdpa.py"
    if not script.is_file():
        _fail(NiahError("benchmarks/sdpa.py is not installed with this package: run it from a source checkout"))
    sys.argv = [str(script)] + (["--quick"] if quick else [])
    runpy.run_path(str(script), run_name="__main__")


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
    typer.echo(f"cleared {cache_root()} ({freed / 1024 ** 2:.1f} MiB freed)")


def main() -> None:
    """Console entry point: make sure a fast BLAS is loaded on Linux CPU, then run the app."""
    from .blas import ensure_fast_blas

    ensure_fast_blas()
    app()


if __name__ == "__main__":
    main()
