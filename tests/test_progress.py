"""Progress inside a trial: prefill blocks done of total (rate-limited plain lines off a TTY,
the bar's description on one) and a time estimate before a trial predicted long."""

from types import SimpleNamespace

import pytest
from conftest import invoke
from rich.console import Console

from niah.preflight import TimeEstimate
from niah.progress import TerminalProgress

SPEC = SimpleNamespace(context=131072, depth=0.5, sample=0)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _plain(capsys, **kw):
    clock = Clock()
    progress = TerminalProgress(
        quiet=False, console=Console(stderr=True, force_terminal=False), clock=clock, **kw
    )
    progress.start(2)
    return progress, clock


def test_plain_prefill_lines_at_most_one_per_interval(capsys):
    progress, clock = _plain(capsys, line_interval_s=10)
    progress.trial_start(SPEC, None)
    for done in range(2048, 131072, 2048):  # one block every 2 s
        clock.now += 2
        progress.prefill(done, 131072)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 12  # 126 s of prefill: one line per 10 s
    assert lines[0] == (
        "niah: trial 1/2: context 128K depth 0.5: prefill 10240/131072 tokens (8%, 10.0 s)"
    )


def test_a_short_trial_prints_no_prefill_line(capsys):
    progress, clock = _plain(capsys)
    progress.trial_start(SPEC, None)
    clock.now += 3
    progress.prefill(512, 1024)
    assert capsys.readouterr().err == ""


def test_estimate_line_only_before_a_long_trial(capsys):
    progress, _ = _plain(capsys, long_trial_s=10)
    progress.trial_start(SPEC, TimeEstimate(prefill_s=2, decode_s=1, basis="probe"))
    assert capsys.readouterr().err == ""
    progress.trial_start(SPEC, TimeEstimate(prefill_s=7500, decode_s=40, basis="probe"))
    assert capsys.readouterr().err == (
        "niah: trial 1/2: context 128K depth 0.5: estimated about "
        "2 h 05 min (prefill 2 h 05 min, decode 40 s; probe)\n"
    )


def test_bar_shows_prefill_in_its_description():
    progress = TerminalProgress(quiet=True, console=Console(stderr=True, force_terminal=True))
    progress.quiet = False  # start with a bar, without drawing: the description is what counts
    progress.start(1)
    progress.trial_start(SPEC, None)
    progress.prefill(4096, 131072)
    (task,) = progress.bar.tasks
    assert task.description == "context 128K depth 0.5: prefill 4096/131072"
    progress.stop()


@pytest.mark.slow
def test_run_prints_estimate_and_prefill_lines_off_a_tty(tmp_path):
    """A real 1K trial in 256-token blocks, with the line interval and the long-trial
    threshold forced to 0: the estimate comes first, then one line per prefill block."""
    result = invoke(
        [
            "run",
            "-c",
            "1k",
            "-d",
            "0.5",
            "--prefill-step",
            "256",
            "--max-tokens",
            "12",
            "--warm-up",
            "off",
            "--out",
            str(tmp_path),
        ],
        env={"NIAH_PROGRESS_INTERVAL_S": "0", "NIAH_LONG_TRIAL_S": "0"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("niah: trial 1/1")]
    assert lines[0].startswith("niah: trial 1/1: context 1K depth 0.5: estimated about ")
    prefill = [line for line in lines if ": prefill " in line]
    assert [line.split(": prefill ")[1].split(" ")[0] for line in prefill] == [
        "256/1024",
        "512/1024",
        "768/1024",
        "1023/1024",
    ]
    assert ": PASS" in lines[-1] or ": FAIL" in lines[-1]
    assert result.stderr.index("estimated about") < result.stderr.index("prefill 256/")
