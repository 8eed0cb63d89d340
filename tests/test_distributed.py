"""A sweep spread over two ranks with `mlx.launch --backend ring` on localhost."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import read_records

from niah.run.grid import TrialSpec, assign_to_ranks


def _spec(context, depth):
    return TrialSpec(
        context=context, depth=depth, sample=0, kv_bits=None, max_kv_size=None, prefill_step=2048
    )


def test_assignment_is_balanced_disjoint_and_keeps_prefix_groups():
    specs = [_spec(c, d) for c in (1024, 2048, 4096, 8192) for d in (0.0, 0.5, 1.0)]
    parts = assign_to_ranks(specs, 2)
    keys = [s.key for part in parts for s in part]
    assert sorted(keys) == sorted(s.key for s in specs)  # every trial once
    for part in parts:  # a context's trials stay together
        for c in {s.context for s in part}:
            assert sum(s.context == c for s in part) == 3
    assert {s.context for s in parts[0]} == {8192}  # longest first, to the least loaded rank
    (whole,) = assign_to_ranks(specs, 1)  # one rank takes every trial, once
    assert sorted(s.key for s in whole) == sorted(keys)


def _launcher() -> str:
    exe = shutil.which("mlx.launch")
    if exe is None:
        pytest.fail("mlx.launch is missing: it ships with mlx")
    return exe


@pytest.mark.slow
def test_two_ranks_match_single_process_and_resume(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    args = ["run", "--context", "512,1k", "--depth", "0,1", "--max-tokens", "10", "-q"]
    multi = subprocess.run(
        [
            _launcher(),
            "-n",
            "2",
            "--backend",
            "ring",
            "--",
            sys.executable,
            "-m",
            "niah",
            *args,
            "--out",
            str(tmp_path / "multi"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stdout + multi.stderr
    folder = next((tmp_path / "multi").iterdir())
    rank_files = sorted(p.name for p in folder.glob("trials.rank*.jsonl"))
    assert rank_files == ["trials.rank0.jsonl", "trials.rank1.jsonl"]
    by_rank = {name: read_records(folder / name) for name in rank_files}
    assert all(len(recs) == 2 for recs in by_rank.values())  # one context (2 depths) per rank
    assert "Total: 4 trials" in multi.stdout  # rank 0 reports the merged run

    single = subprocess.run(
        [sys.executable, "-m", "niah", *args, "--out", str(tmp_path / "single")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr
    sfolder = next((tmp_path / "single").iterdir())
    srecs = {r["key"]: r for r in read_records(sfolder)}
    mrecs = {r["key"]: r for recs in by_rank.values() for r in recs}
    assert {k: r["verdict"] for k, r in mrecs.items()} == {
        k: r["verdict"] for k, r in srecs.items()
    }

    # A rank that died mid-run: its unfinished trial is missing from its file (simulated by
    # dropping its last record). Resume re-runs exactly that one, here on a single process.
    rank1 = folder / "trials.rank1.jsonl"
    lines = rank1.read_text().splitlines()
    lost = json.loads(lines[-1])["key"]
    rank1.write_text("\n".join(lines[:-1]) + "\n")
    resumed = subprocess.run(
        [sys.executable, "-m", "niah", "run", "--resume", str(folder), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "1 run, 3 already done" in resumed.stdout
    all_keys = [r["key"] for p in folder.glob("trials*.jsonl") for r in read_records(p)]
    assert sorted(all_keys) == sorted(mrecs) and len(all_keys) == 4  # nothing lost or duplicated
    assert lost in read_records(folder)[0]["key"]


@pytest.mark.slow
def test_tensor_sharded_model_across_three_ranks(tmp_path):
    """One model split across ranks (mlx-lm's Model.shard): SmolLM2's 9 heads and 3 KV heads
    divide by 3. Every rank computes every trial; rank 0 alone writes and reports."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = ["run", "--context", "512", "--depth", "0,1", "--max-tokens", "10", "-q"]
    sharded = subprocess.run(
        [
            _launcher(),
            "-n",
            "3",
            "--backend",
            "ring",
            "--",
            sys.executable,
            "-m",
            "niah",
            *args,
            "--shard",
            "tensor",
            "--out",
            str(tmp_path / "tp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert sharded.returncode == 0, sharded.stdout + sharded.stderr
    folder = next((tmp_path / "tp").iterdir())
    assert [p.name for p in folder.glob("trials*.jsonl")] == ["trials.jsonl"]
    recs = read_records(folder)
    single = subprocess.run(
        [sys.executable, "-m", "niah", *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr
    srecs = read_records(next((tmp_path / "one").iterdir()))
    assert [r["verdict"] for r in recs] == [r["verdict"] for r in srecs] == ["PASS", "PASS"]
    assert sharded.stdout.count("Total: 2 trials") == 1  # one report, from rank 0

    two = subprocess.run(
        [
            _launcher(),
            "-n",
            "2",
            "--backend",
            "ring",
            "--",
            sys.executable,
            "-m",
            "niah",
            *args,
            "--shard",
            "tensor",
            "--out",
            str(tmp_path / "bad"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    # mlx.launch itself exits 0 here; it reports each rank's code
    assert "exited with code 2" in two.stderr
    assert (
        "error: SmolLM2-135M-Instruct.Q4_1.gguf has 9 heads and 3 KV heads, which 2 ranks "
        "cannot split evenly: launch a number of ranks that divides both"
    ) in two.stderr


@pytest.mark.slow
def test_every_rank_logs_start_and_end_so_report_can_gate(tmp_path):
    """mlx.launch exits 0 whatever its ranks did: each rank logs start and end events with
    one launch id in runs.jsonl, and `niah report --fail-under` fails on a rank without end."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = [
        "run",
        "--context",
        "256,512",
        "--depth",
        "0",
        "--max-tokens",
        "10",
        "-q",
        "--fail-under",
        "0",
        "--out",
        str(tmp_path / "gate"),
    ]
    launched = subprocess.run(
        [_launcher(), "-n", "2", "--backend", "ring", "--", sys.executable, "-m", "niah", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    folder = next((tmp_path / "gate").iterdir())
    events = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]
    starts = {e["rank"]: e["launch"] for e in events if e["event"] == "start"}
    ends = {e["rank"]: (e["launch"], e["outcome"]) for e in events if e["event"] == "end"}
    assert set(starts) == {0, 1} and len(set(starts.values())) == 1  # one launch id
    assert ends == {r: (starts[r], "done") for r in (0, 1)}
    assert [e["status"] for e in events if e["event"] == "gate"] == ["pass"]  # rank 0 gates
    gate = [sys.executable, "-m", "niah", "report", str(folder), "--fail-under", "0"]
    assert subprocess.run(gate, capture_output=True, text=True, env=env).returncode == 0
    # rank 1 killed before its end: the report's gate fails with one line
    kept = [json.dumps(e) for e in events if not (e["event"] == "end" and e["rank"] == 1)]
    (folder / "runs.jsonl").write_text("\n".join(kept) + "\n")
    dead = subprocess.run(gate, capture_output=True, text=True, env=env)
    assert dead.returncode == 1 and dead.stderr.count("\n") == 1, dead.stderr
    assert "rank 1 of launch" in dead.stderr and "never ended" in dead.stderr
