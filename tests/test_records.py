"""The trial record (niah.run.records), the grid kept as asked and the store's JSON: the
schema's one home, its generated docs, the committed folders read back through it."""

import json
import math
import os
from pathlib import Path

import pytest
from conftest import read_records

from niah.config import RunConfig
from niah.errors import NiahError
from niah.run.records import TrialRecord, fields_markdown, problem

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"


def test_records_doc_is_generated_from_the_dataclass():
    """docs/records.md is fields_markdown()'s output: a field added, renamed or documented
    differently in TrialRecord fails here until the doc is regenerated."""
    doc = (ROOT / "docs" / "records.md").read_text()
    assert doc == fields_markdown(), (
        "docs/records.md is stale: regenerate it with python -c "
        '"from niah.run.records import fields_markdown; '
        "open('docs/records.md','w').write(fields_markdown())\""
    )
    for name in TrialRecord.__dataclass_fields__:
        assert f"| `{name}` |" in doc


def _reference_lines():
    for path in sorted(REFERENCE.glob("*/trials*.jsonl")):
        for record in read_records(path):
            yield path, record


def test_every_committed_record_reads_back_and_writes_the_same_json():
    lines = list(_reference_lines())
    assert len(lines) > 100
    for path, data in lines:
        rec = TrialRecord.from_json(data)
        assert rec.to_json() == data, path


def test_problem_names_the_bad_field():
    _, good = next(_reference_lines())
    assert problem(good) is None
    assert problem({**good, "prefill_s": "fast"}) == "prefill_s is not a finite number"
    assert problem({**good, "device": 3}) == "device is not text"
    assert problem({**good, "verdict": "MAYBE"}) == "no valid verdict"
    with pytest.raises(ValueError, match="unknown field 'colour'"):
        TrialRecord.from_json({**good, "colour": "red"})


def test_store_never_writes_nan_or_infinity(tmp_path):
    """json.dumps wrote the non-standard token Infinity (a --rope-scaling factor of inf
    reached the record): the writer refuses with one line and writes nothing."""
    from niah.store import TrialWriter, append_run_log

    with TrialWriter(tmp_path) as w:
        with pytest.raises(NiahError, match="holds a number JSON cannot store"):
            w.write({"key": "k", "rope_scaling_config": {"factor": math.inf}})
    assert (tmp_path / "trials.jsonl").read_text() == ""
    with pytest.raises(ValueError):
        append_run_log(tmp_path, {"event": "warm-up", "seconds": math.nan})


def _cells_of(folder):
    from niah.run.grid import build_grid
    from niah.store import load_config

    return [(s.context, s.depth, s.sample) for s in build_grid(load_config(folder))]


def test_grids_sharing_a_folder_keep_the_asked_cells(tmp_path):
    """-c 256 -d 0, then -c 512 -d 1: the folder asked for two cells, not the four of the
    cross product of its axes."""
    from niah.store import prepare_folder

    prepare_folder(tmp_path, RunConfig(model="m", contexts=(256,), depths=(0.0,)))
    prepare_folder(tmp_path, RunConfig(model="m", contexts=(512,), depths=(1.0,)))
    assert _cells_of(tmp_path) == [(256, 0.0, 0), (512, 1.0, 0)]
    # a third grid filling the cross product: config.json holds axes only again
    prepare_folder(tmp_path, RunConfig(model="m", contexts=(256, 512), depths=(0.0, 1.0)))
    assert json.loads((tmp_path / "config.json").read_text())["cells"] is None
    assert len(_cells_of(tmp_path)) == 4


def test_folders_written_with_axes_only_resume_as_their_cross_product(tmp_path):
    from niah.store import prepare_folder

    data = RunConfig(model="m", contexts=(256, 512), depths=(0.0, 1.0)).to_dict()
    del data["cells"]  # as niah wrote config.json before cells existed
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert len(_cells_of(tmp_path)) == 4
    prepare_folder(tmp_path, RunConfig(model="m", contexts=(1024,), depths=(0.5,)))
    assert _cells_of(tmp_path) == [
        (256, 0.0, 0),
        (256, 1.0, 0),
        (512, 0.0, 0),
        (512, 1.0, 0),
        (1024, 0.5, 0),
    ]


def test_memory_reason_parts_add_up_to_its_total():
    """The SKIP reason said 'needs about 17166.9 GiB (weights 0.5, KV 0.0, attention 0.0)':
    the other temporaries were left out of the listed parts."""
    from niah.model import ModelInfo
    from niah.preflight import estimate

    info = ModelInfo(
        name="m",
        source="gguf",
        path="m",
        trained_context=8192,
        n_layers=30,
        n_kv_heads=3,
        head_dim=64,
        n_heads=9,
        weight_bytes=500 * 2**20,
    )
    est = estimate(info, context=256, route="stock", prefill_step=10**9, working_set=2**30)
    import re

    head = est.reason().split(") of a ")[0]
    total = float(re.search(r"needs about (\d+\.\d) GiB", head).group(1))
    parts = [float(p) for p in re.findall(r"(?:weights|KV|attention|activations) (\d+\.\d)", head)]
    assert len(parts) == 4 and math.isclose(sum(parts), total, abs_tol=1e-9), est.reason()


def test_mlx_env_names_the_batching_variables_set_and_nothing_else():
    from niah.identity import mlx_env

    assert mlx_env({}) is None
    assert mlx_env({"MLX_METAL_DEBUG": "1"}) is None
    env = {"MLX_USE_CUDA_GRAPHS": "0", "MLX_MAX_OPS_PER_BUFFER": "10", "HOME": "/root"}
    assert mlx_env(env) == "MLX_MAX_OPS_PER_BUFFER=10 MLX_USE_CUDA_GRAPHS=0"


def test_repeatable_memory_sets_mlx_graph_limit_on_cuda_only_and_the_records_name_it():
    import pytest

    from niah.environment import apply_repeatable_memory
    from niah.errors import NiahError
    from niah.identity import mlx_env

    env = {"HOME": "/root"}
    with pytest.raises(NiahError) as err:  # MLX already worked here: setting it is too late
        apply_repeatable_memory("cuda", environ=env, started=True)
    assert str(err.value) == (
        "--repeatable-memory sets MLX_MAX_MB_PER_BUFFER before MLX's first GPU work, but MLX "
        "has already run in this process: start a new process for this run"
    )
    assert env == {"HOME": "/root"}
    with pytest.raises(NiahError):  # started with it, then it was taken away before MLX ran
        apply_repeatable_memory("cuda", environ=env, started=True, inherited=True)
    assert apply_repeatable_memory("cuda", environ=env, started=False) is None
    assert env == {"HOME": "/root", "MLX_MAX_MB_PER_BUFFER": "100"}
    assert mlx_env(env) == "MLX_MAX_MB_PER_BUFFER=100"  # what the identity and trials record
    # already 100: kept where MLX has not run yet, or the process started with it ...
    assert apply_repeatable_memory("cuda", environ=env, started=False, inherited=False) is None
    assert apply_repeatable_memory("cuda", environ=env, started=True, inherited=True) is None
    with pytest.raises(NiahError) as err:  # ... not when set by hand after MLX ran
        apply_repeatable_memory("cuda", environ=env, started=True, inherited=False)
    assert "but MLX has already run in this process: start a new process" in str(err.value)
    for other in ("cpu", "metal"):
        assert apply_repeatable_memory(other, environ={}) == (
            f"--repeatable-memory changes nothing on the {other} backend (it bounds MLX's "
            "CUDA graphs); peaks here are MLX's defaults"
        )
        untouched = {"MLX_MAX_MB_PER_BUFFER": "7"}  # Metal batches by it too: said, not "defaults"
        assert apply_repeatable_memory(other, environ=untouched) == (
            f"--repeatable-memory changes nothing on the {other} backend (it bounds MLX's "
            "CUDA graphs); peaks here are under the environment's MLX_MAX_MB_PER_BUFFER=7"
        )
        assert untouched == {"MLX_MAX_MB_PER_BUFFER": "7"}
    for have in ("1000", ""):  # another value, or empty (MLX reads 0): not silently replaced
        with pytest.raises(NiahError) as err:
            apply_repeatable_memory("cuda", environ={"MLX_MAX_MB_PER_BUFFER": have})
        assert str(err.value) == (
            "--repeatable-memory sets MLX_MAX_MB_PER_BUFFER=100, but the environment has "
            f"MLX_MAX_MB_PER_BUFFER={have!r}: unset it, or drop --repeatable-memory"
        )
        with pytest.raises(NiahError) as err:  # a resumed folder: its name, and the one fix
            apply_repeatable_memory(
                "cuda", environ={"MLX_MAX_MB_PER_BUFFER": have}, folder="results/run-ab12"
            )
        assert str(err.value) == (
            "run folder 'results/run-ab12' was made with --repeatable-memory "
            "(MLX_MAX_MB_PER_BUFFER=100), but the environment has "
            f"MLX_MAX_MB_PER_BUFFER={have!r}: unset MLX_MAX_MB_PER_BUFFER and resume again"
        )
    # a sweep started without `niah run` (run_sweep directly) under another value: refused
    from niah.environment import check_repeatable_memory

    hundred = {"MLX_MAX_MB_PER_BUFFER": "100"}
    check_repeatable_memory("cuda", environ=hundred, started=False, inherited=False)
    check_repeatable_memory("cuda", environ=hundred, started=True, inherited=True)
    check_repeatable_memory("cpu", environ={}, started=True, inherited=False)
    with pytest.raises(NiahError) as err:  # set in a notebook after MLX ran: MLX kept its own
        check_repeatable_memory("cuda", environ=hundred, started=True, inherited=False)
    assert str(err.value) == (
        "this run asks for --repeatable-memory, but MLX_MAX_MB_PER_BUFFER=100 was set after MLX "
        "had run in this process, so MLX may not use it: start the process with "
        "MLX_MAX_MB_PER_BUFFER=100 set, or run it through `niah run`"
    )
    for env in ({}, {"MLX_MAX_MB_PER_BUFFER": "1000"}):
        with pytest.raises(NiahError) as err:
            check_repeatable_memory("cuda", environ=env)
        assert str(err.value) == (
            "this run asks for --repeatable-memory, but MLX_MAX_MB_PER_BUFFER is not 100 here: "
            "start the process with MLX_MAX_MB_PER_BUFFER=100 set, or run it through `niah run`"
        )


def test_mlx_has_allocated_and_started_with_see_what_mlx_and_the_process_started_with():
    # what --repeatable-memory's refusals rest on, in fresh processes (this one has run MLX)
    import subprocess
    import sys

    code = (
        "import os, mlx.core as mx\n"
        "from niah.environment import mlx_has_allocated, started_with\n"
        "os.environ['MLX_X'] = '1'\n"  # set after the start: not what the process started with
        "print(mlx_has_allocated(), started_with('MLX_Y', '100'), started_with('MLX_X', '1'))\n"
        "mx.eval(mx.ones(8) + 1)\n"
        "print(mlx_has_allocated())\n"
    )
    env = {**os.environ, "MLX_Y": "100"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True", "False", "True"]


def test_repeatable_memory_check_with_its_defaults_reads_mlx_and_the_starting_environment():
    # check_repeatable_memory with no injected answers, as run_sweep calls it, in fresh
    # processes: a value set by hand after MLX ran is refused; one the process started with
    # (the first entry of its name, which getenv reads) is accepted
    import subprocess
    import sys

    code = (
        "import os, mlx.core as mx\n"
        "from niah.environment import check_repeatable_memory\n"
        "mx.eval(mx.ones(8) + 1)\n"
        "os.environ['MLX_MAX_MB_PER_BUFFER'] = '100'\n"
        "try:\n"
        "    check_repeatable_memory('cuda')\n"
        "    print('accepted')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    for start, expected in [(None, "NiahError"), ("100", "accepted"), ("1000", "NiahError")]:
        env = base if start is None else {**base, "MLX_MAX_MB_PER_BUFFER": start}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == expected, start
