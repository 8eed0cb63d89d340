"""Defects found by a hostile pass over the CLI (bad environment, damaged run folders, answers
crafted to fool the scorer): each case is one line and exit 2, or a true verdict."""

import pytest
from typer.testing import CliRunner

from niah.cli import app

runner = CliRunner()


@pytest.mark.parametrize("name,value,message", [
    ("NIAH_SDPA_CHUNK_THRESHOLD", "abc",
     "NIAH_SDPA_CHUNK_THRESHOLD='abc' is not a whole number: set it like NIAH_SDPA_CHUNK_THRESHOLD=65536"),
    ("NIAH_SDPA_CHUNK_SIZE", "0",
     "NIAH_SDPA_CHUNK_SIZE='0' must be positive: set it like NIAH_SDPA_CHUNK_SIZE=65536"),
    ("NIAH_SDPA_FLOP_BUDGET", "-1",
     "NIAH_SDPA_FLOP_BUDGET='-1' must be positive: set it like NIAH_SDPA_FLOP_BUDGET=1e11"),
])
def test_bad_sdpa_environment_is_one_line(tmp_path, monkeypatch, name, value, message):
    """A bad NIAH_SDPA_* value was a ValueError traceback from inside the sweep."""
    monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["run", "--context", "256", "--out", str(tmp_path / "o"), "-q"])
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {message}\n", "")
    assert not (tmp_path / "o").exists()
