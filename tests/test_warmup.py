"""The warm-up builds only what the trials will run: the planned attention calls (route, rows,
keys) equal the calls the dispatcher makes, and a second sweep in the same process warms no
shape the first one warmed."""

import json
import sys
from types import SimpleNamespace

import pytest

from niah.config import RunConfig
from niah.run import run_sweep
from niah.run.calls import planned_kernel_calls, routed_calls, trial_calls
from niah.sdpa.dispatch import resolve_config


def test_trial_calls_follow_mlx_lm_generate_step():
    assert trial_calls(context=300, step=128, max_tokens=2) == [
        (128, 128),
        (128, 256),
        (43, 299),
        (1, 300),
        (1, 301),
        (1, 302),
    ]
    assert trial_calls(context=300, step=128, max_tokens=0, start=256) == [(43, 299), (1, 300)]
    assert trial_calls(context=257, step=128, max_tokens=0) == [(128, 128), (128, 256), (1, 257)]
    with pytest.raises(ValueError):
        trial_calls(context=10, step=4, max_tokens=1, start=10)


def test_kernel_plan_uses_each_calls_own_key_length():
    """CUDA, auto: only the 95-row tail (2 <= rows <= 128) over 4095 keys runs the kernel; the
    1000-row blocks and decode go to stock, and no call has the context's 4096 keys and 95
    rows."""
    specs = [SimpleNamespace(context=4096, prefill_step=1000)]
    config = resolve_config(threshold=2048)
    plan = dict(n_heads=8, head_dim=64, config=config, backend_name="cuda", max_tokens=2)
    assert planned_kernel_calls(specs, route="auto", **plan) == {(95, 4095, True, False)}
    chunked = planned_kernel_calls(specs, route="chunked", **plan)
    # blocks ending under the threshold (1000, 2000 keys) stay stock on every route
    assert {(c[0], c[1]) for c in chunked} == {
        (1000, 3000),
        (1000, 4000),
        (95, 4095),
        (1, 4096),
        (1, 4097),
        (1, 4098),
    }
    quantized = [SimpleNamespace(context=4096, prefill_step=1000, kv_bits=8)]
    assert planned_kernel_calls(quantized, route="chunked", **plan) == set()


def _called_routes(session, cfg, monkeypatch):
    """(route, rows, keys) of every SDPA call the trials of `cfg` make (no warm-up), with the
    end-of-sequence ids cleared so every trial decodes max_tokens tokens."""
    from collections import Counter

    import niah.sdpa.patch as patch_mod

    called, real = set(), patch_mod.dispatch

    def recording(q, k, v, *, log, **kw):
        before = Counter(log)
        out = real(q, k, v, log=log, **kw)
        for label in log - before:  # what ran: stock, or kv-chunks/<kernel or reference>
            called.add((label.split("/")[0], q.shape[2], k.shape[2]))
        return out

    monkeypatch.setattr(patch_mod, "dispatch", recording)
    monkeypatch.setattr(session.wrapper, "eos_token_ids", set())
    result = run_sweep(cfg, session=session, warm_up="off")
    monkeypatch.undo()
    return called, result


@pytest.mark.parametrize(
    "contexts,step,threshold",
    [
        ((200, 448, 300), 128, 256),  # reused trials start mid-prompt at multiples of 128
        ((333,), 100, 150),  # a partial block of 32 rows
        ((385, 257), 128, 200),  # no partial block: (C - 1) % step == 0
    ],
)
def test_planned_calls_equal_the_calls_trials_make(
    session, tmp_path, monkeypatch, contexts, step, threshold
):
    cfg = RunConfig(
        model="default",
        contexts=contexts,
        depths=(0.0, 1.0),
        max_tokens=8,
        prefill_steps=(step,),
        sdpa="chunked",
        chunk_threshold=threshold,
        chunk_size=64,
        out=str(tmp_path),
    )
    called, result = _called_routes(session, cfg, monkeypatch)
    assert len(result.records) == 2 * len(contexts)
    if len(contexts) > 1 and step == 128 and threshold == 256:
        assert "reused" in [r["prefix_reuse"] for r in result.records]
    from niah.run.grid import build_grid

    planned = routed_calls(
        build_grid(cfg),
        route="chunked",
        config=resolve_config(threshold=threshold, chunk_size=64),
        backend_name="cpu",
        max_tokens=cfg.max_tokens,
    )
    assert planned == called
    assert {r for r, _, _ in called} == {"stock", "kv-chunks"}


def _warm_generations(session, cfg, monkeypatch):
    from niah.model import ModelSession

    gens, real = [], ModelSession.generate

    def counting(self, ids, **kw):
        if kw["max_tokens"] == 3:
            gens.append((len(ids), kw.get("reuse", 0)))
        return real(self, ids, **kw)

    monkeypatch.setattr(ModelSession, "generate", counting)
    result = run_sweep(cfg, session=session, warm_up="shapes")
    monkeypatch.undo()
    log = [json.loads(line) for line in (result.folder / "runs.jsonl").read_text().splitlines()]
    return gens, [e for e in log if e["event"] == "warm-up"][-1]


@pytest.fixture
def fresh_record(session):
    """The session fixture is shared by every test: give this test a record of its own."""
    old = session.__dict__.pop("warmed_shapes", None)
    yield
    session.__dict__.pop("warmed_shapes", None)
    if old is not None:
        session.warmed_shapes = old


def test_a_second_sweep_warms_only_shapes_new_to_the_process(
    session, tmp_path, monkeypatch, fresh_record
):
    base = dict(model="default", depths=(0.5,), max_tokens=8, prefill_steps=(128,))
    first = RunConfig(**base, contexts=(448, 300), out=str(tmp_path / "a"))
    gens, event = _warm_generations(session, first, monkeypatch)
    assert gens == [(448, 0), (300, 256)]
    assert event["shapes_new"] == 5 and event["shapes_warm"] == 0  # 3 full blocks, 2 tails
    # the same shapes in a new folder: nothing runs
    again = RunConfig(**base, contexts=(448, 300), out=str(tmp_path / "b"))
    gens, event = _warm_generations(session, again, monkeypatch)
    assert gens == [] and event["shapes_new"] == 0 and event["shapes_warm"] == 5
    # one new context: only its last block, on placeholders (its full blocks have run)
    more = RunConfig(**base, contexts=(448, 200), out=str(tmp_path / "c"))
    gens, event = _warm_generations(session, more, monkeypatch)
    assert gens == [(200, 128)]
    assert event["shapes_new"] == 1 and event["shapes_warm"] == 4


@pytest.mark.slow
def test_wall_benchmark_prints_its_columns_for_a_fresh_process(capsys, monkeypatch):
    """benchmarks/wall.py --quick with one tiny row: header lines, then one row whose trial sum
    and phases come from the run folder (runs.jsonl's "phases" event) and add up to the wall."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "wall.py"
    spec = importlib.util.spec_from_file_location("wall", path)
    wall = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "wall", wall)  # dataclasses look their module up
    spec.loader.exec_module(wall)
    assert wall.main(["--quick", "--row", "tiny::--context 256 --depth 0.5 --max-tokens 12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "# command",
        "# commit",
        "# date",
        "# device",
    ]
    assert lines[4].split() == list(wall.COLUMNS)
    cells = dict(zip(wall.COLUMNS, lines[5].split(), strict=True))
    assert cells["row"] == "tiny" and cells["trials"] == "1" and cells["rc"] == "0"
    assert cells["warm_up"] == "-" and cells["probe"] == "-"  # CPU, 256 tokens: neither runs
    wall_s, trials_s = float(cells["wall_s"]), float(cells["trials_s"])
    assert float(cells["load"]) > 0 and 0 < trials_s < wall_s
    assert float(cells["startup"]) > 0 and float(cells["imports"]) >= 0
    assert float(cells["wall/trials"]) == pytest.approx(wall_s / trials_s, rel=0.05)
    # the columns add up to the wall time (each rounded to 0.01 s)
    parts = ("trials_s", "startup", "imports", "load", "loop", "other")
    assert sum(float(cells[k]) for k in parts) == pytest.approx(wall_s, abs=0.1)
    assert 0 <= float(cells["loop"]) < trials_s and float(cells["other"]) > 0
