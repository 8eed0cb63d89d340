"""What every `niah` command shares: typer command classes that hide flag types, the
export options (one per registry entry), the one-line error exit, the --model check, the
summary printer, the --fail-under gate, and SIGTERM stopping a run the way Ctrl-C does."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
import typer.core

from .errors import NiahError
from .report.exports import EXPORTS


class Command(typer.core.TyperCommand):
    """A command whose on/off flags show no type (typer would print `<bool>` next to them)."""

    def format_help(self, ctx, formatter):
        _hide_flag_types(self.get_params(ctx))
        return super().format_help(ctx, formatter)


class Group(typer.core.TyperGroup):
    def format_help(self, ctx, formatter):
        _hide_flag_types(self.get_params(ctx))
        return super().format_help(ctx, formatter)


def _hide_flag_types(params) -> None:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def with_exports(panel: Optional[str] = None):
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


def fail(exc: NiahError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=exc.exit_code)


def model_arg(value: Optional[str]) -> str:
    if value is None:
        return "default"
    if not value.strip():
        raise NiahError(
            "--model is empty: give a hub id, a model folder or a .gguf file, or "
            "leave --model out for the embedded model"
        )
    return value


def print_summary(summary) -> None:
    """The one summary printer of `run` and `report` (niah.report.summary builds the lines)."""
    for line in summary.lines:
        typer.echo(line)
    for line in summary.warnings:
        typer.echo(line, err=True)


def check_fail_under(fail_under: Optional[float]) -> None:
    if fail_under is not None and not 0 <= fail_under <= 1:
        raise NiahError(f"--fail-under {fail_under:g} is outside [0, 1]: use a fraction like 0.9")


def gate(records, fail_under: Optional[float], *, log=None) -> None:
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


@dataclass
class StopSignal:
    """While entered, SIGTERM (`timeout`, a cancelled CI job, `kill`) raises KeyboardInterrupt
    in the main thread, so a run stops as on Ctrl-C: finished trials stay saved, the phases so
    far are logged and the folder to resume is named. Python's default would end the process
    with none of that. A second SIGTERM ends the process at once. `received` is the signal
    number once one came; `exit_code` is 128 + it (143), or 130 for Ctrl-C."""

    received: Optional[int] = None
    _previous: object = None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    @property
    def exit_code(self) -> int:
        return 128 + self.received if self.received else 130

    @property
    def word(self) -> str:
        return "stopped by SIGTERM" if self.received else "interrupted"
