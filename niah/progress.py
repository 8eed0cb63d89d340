"""The run's progress on the terminal: a bar on a TTY; elsewhere (CI logs) one plain line per
trial on stderr; nothing with --quiet. It implements the sweep's Progress callbacks (start,
note, trial_start, prefill, trial_done, stop).

Inside a long trial the prefill shows as blocks done of total: in the bar's description on a
TTY, and off a TTY as a plain line at most every `line_interval_s` seconds (so trials shorter
than that print none). A trial whose time estimate is `long_trial_s` or more is announced
with the estimate before it starts.
"""

from __future__ import annotations

import time

import typer

from .parse import format_context

DEFAULT_LINE_INTERVAL_S = 10.0  # off a TTY: at most one prefill line per this many seconds
DEFAULT_LONG_TRIAL_S = 10.0  # trials expected to take this long get their estimate printed


class TerminalProgress:
    """Progress callbacks drawn with rich on `console` (a stderr Console)."""

    def __init__(
        self,
        *,
        quiet: bool,
        console,
        line_interval_s: float = DEFAULT_LINE_INTERVAL_S,
        long_trial_s: float = DEFAULT_LONG_TRIAL_S,
        clock=time.monotonic,
    ):
        self.quiet, self.console = quiet, console
        self.line_interval_s, self.long_trial_s, self.clock = line_interval_s, long_trial_s, clock
        self.bar, self.task, self.total, self.done = None, None, 0, 0
        self.trial, self.trial_t0, self.last_line = "", 0.0, 0.0

    def start(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.total = total
        if self.quiet or total == 0 or not self.console.is_terminal:
            return
        self.bar = Progress(
            TextColumn("[bold]niah"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("", total=total)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{text}[/dim]")

    def trial_start(self, spec, estimate) -> None:
        self.trial = f"context {format_context(spec.context)} depth {spec.depth:g}"
        self.trial_t0 = self.last_line = self.clock()
        if self.quiet or estimate is None or estimate.total_s < self.long_trial_s:
            return
        line = f"trial {self.done + 1}/{self.total}: {self.trial}: estimated {estimate.describe()}"
        if self.bar is not None:
            self.console.print(f"[dim]{line}[/dim]")
        else:
            typer.echo(f"niah: {line}", err=True)

    def prefill(self, done: int, total: int) -> None:
        if self.quiet or not 0 < done < total:
            return
        if self.bar is not None:
            self.bar.update(self.task, description=f"{self.trial}: prefill {done}/{total}")
            return
        now = self.clock()
        if now - self.last_line < self.line_interval_s:
            return
        self.last_line = now
        typer.echo(
            f"niah: trial {self.done + 1}/{self.total}: {self.trial}: prefill "
            f"{done}/{total} tokens ({done / total:.0%}, {now - self.trial_t0:.1f} s)",
            err=True,
        )

    def trial_done(self, record: dict) -> None:
        self.done += 1
        if self.bar is not None:
            desc = f"{record['context']} @ {record['depth']:g}: {record['verdict']}"
            self.bar.update(self.task, advance=1, description=desc)
        elif not self.quiet:
            secs = record.get("elapsed_s")
            typer.echo(
                f"niah: trial {self.done}/{self.total}: context "
                f"{format_context(record['context'])} depth {record['depth']:g} "
                f"sample {record['sample']}: {record['verdict']}"
                + (f" ({secs:.1f} s)" if secs is not None else ""),
                err=True,
            )

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
