"""The Progress protocol: the callbacks a front end (the CLI's progress bar) gets from a sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .grid import TrialSpec


class Progress:
    """Callbacks a front end can implement (all optional; this one does nothing)."""

    def start(self, total: int) -> None: ...
    def note(self, text: str) -> None: ...

    def trial_start(self, spec: TrialSpec, estimate) -> None:
        """A trial begins; estimate: its preflight.TimeEstimate here, or None (not probed)."""

    def prefill(self, done: int, total: int) -> None:
        """Prompt tokens of the trial in flight computed so far (mlx-lm's prompt progress)."""

    def trial_done(self, record: dict) -> None: ...
    def stop(self) -> None: ...
