#!/usr/bin/env bash
# On the GPU host (after ../shared/gpu/stage smollm2): eight checks of `niah run --repeatable-memory`
# on CUDA, printed for docs/bench/repeatable-memory-probe-*.txt: MLX's allocation indicator, a
# fresh run recording mlx_env, a resume under another MLX_MAX_MB_PER_BUFFER refused, a clean
# resume, a run without the option (a folder of its own), two runs in one process (the second
# refused), run_sweep called directly (refused), the variable set by hand after MLX ran
# (refused) or given at the process's start (runs), and the option's tests on this backend.
export PYTHONPATH=/root/site:$PWD HF_HUB_OFFLINE=1 NIAH_DEFAULT_GGUF=/root/models/SmolLM2-135M-Instruct.Q4_1.gguf
source scripts/device_python.sh
echo PY=$PY
M=/root/models/SmolLM2-135M-Instruct.Q4_1.gguf
echo "== 1 allocation indicator"
$PY -c "
import mlx.core as mx
from niah.environment import mlx_has_allocated as m
from niah.backend import backend
print('backend', backend(), 'start', m())
mx.eval(mx.ones(4, stream=mx.cpu)); print('after cpu op', m())
mx.eval(mx.ones(4)); print('after gpu op', m())"
echo "== 2 fresh run"
$PY -m niah run --model $M --context 1k --depth 0.5 --repeatable-memory --out $OUT/r -q; echo rc=$?
F=$(ls -d $OUT/r/*/ | head -1); echo folder $F
grep -o '"mlx_env": "[^"]*"' $F/trials.jsonl; grep -o '"mlx_env": "[^"]*"' $F/config.json
echo "== 3 resume, conflicting env"
MLX_MAX_MB_PER_BUFFER=1000 $PY -m niah run --resume $F -q; echo rc=$?
echo "== 4 resume clean"
$PY -m niah run --resume $F -q; echo rc=$?
echo "== 5 add a depth without the option"
$PY -m niah run --model $M --context 1k --depth 0.5,1 --out $OUT/r -q; echo rc=$?
grep repeatable $F/config.json; grep -o '"mlx_env": "[^"]*"' $F/trials.jsonl
echo "== 6 two runs in one process"
$PY - <<EOF2
from typer.testing import CliRunner
from niah.cli import app
r = CliRunner()
a = r.invoke(app, ["run","--model","$M","--context","1k","--depth","0","--out","$OUT/p1","-q"])
print("first", a.exit_code)
b = r.invoke(app, ["run","--model","$M","--context","1k","--depth","0","--repeatable-memory","--out","$OUT/p2","-q"])
print("second", b.exit_code, repr(b.output))
EOF2
echo "== 7 run_sweep direct"
$PY -c "
from niah.config import RunConfig
from niah.run import run_sweep
run_sweep(RunConfig(model='$M', contexts=(1024,), depths=(0.5,), repeatable_memory=True, out='$OUT/d'))" 2>&1 | tail -1
echo "== 7b set by hand in a process that already ran MLX: refused"
$PY -c "
import os, mlx.core as mx
mx.eval(mx.ones(4) + 1)
os.environ['MLX_MAX_MB_PER_BUFFER'] = '100'
from niah.config import RunConfig
from niah.run import run_sweep
run_sweep(RunConfig(model='$M', contexts=(1024,), depths=(0.5,), repeatable_memory=True, out='$OUT/d2'))" 2>&1 | tail -1
echo "== 7c started with the value, MLX ran first: runs"
MLX_MAX_MB_PER_BUFFER=100 $PY -c "
import mlx.core as mx
mx.eval(mx.ones(4) + 1)
from niah.config import RunConfig
from niah.run import run_sweep
r = run_sweep(RunConfig(model='$M', contexts=(1024,), depths=(0.5,), repeatable_memory=True, out='$OUT/d3'))
print('ran', [(x['verdict'], x.get('mlx_env')) for x in r.records])" 2>&1 | tail -1
echo "== 8 tests"
$PY -m pytest -q -p no:cacheprovider tests/test_records.py tests/test_results_integrity.py -k "repeatable or allocated" 2>&1 | tail -3
$PY -m pytest -q -p no:cacheprovider tests/test_results_integrity.py::test_repeatable_memory_is_kept_for_resume_and_said_to_change_nothing_on_the_cpu 2>&1 | tail -3
