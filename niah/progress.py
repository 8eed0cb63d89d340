"""The run's progress on the terminal: a bar on a TTY; elsewhere (CI logs) one plain line per
trial on stderr; nothing with --quiet. It implements the sweep's Progress callbacks (start,
note, trial_done, stop)."""

from __future__ import annotations

import typer

from .parse import format_context


class TerminalProgress:
    """Progress callbacks drawn with rich on `console` (a stderr Console)."""

    def __init__(self, *, quiet: bool, console):
        self.quiet, self.console = quiet, console
        self.bar, self.task, self.total, self.done = None, None, 0, 0

    def start(self, total: int) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.total = total
        if self.quiet or total == 0 or not self.console.is_terminal:
            return
        self.bar = Progress(TextColumn("[bold]niah"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.description}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
                            transient=True)
        self.bar.start()
        self.task = self.bar.add_task("", total=total)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{text}[/dim]")

    def trial_done(self, record: dict) -> None:
        self.done += 1
        if self.bar is not None:
            desc = f"{record['context']} @ {record['depth']:g}: {record['verdict']}"
            self.bar.update(self.task, advance=1, description=desc)
        elif not self.quiet:
            secs = record.get("elapsed_s")
            typer.echo(f"niah: trial {self.done}/{self.total}: context "
                       f"{format_context(record['context'])} depth {record['depth']:g} "
                       f"sample {record['sample']}: {record['verdict']}"
                       + (f" ({secs:.1f} s)" if secs is not None else ""), err=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
