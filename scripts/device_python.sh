# Sourced on the GPU host before the wall benchmark: sets PY to a Python like the README's
# virtual environment (the host's packages minus torch, which transformers imports whenever it
# is installed: 17 s on the H200 host, docs/bench/wall-warm-h200-2026-12-04.txt) with its
# bytecode written under /tmp/pyc (pip byte-compiles at install time; the host's site-packages
# are not), and HOSTPY to the host's own Python. Falls back to the host's Python when the
# torch-free one cannot import mlx, transformers and mlx-lm.
HOSTPY=$(command -v python3)
if [ ! -e /tmp/notorch/.ok ]; then
  SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p /tmp/notorch
  for e in "$SP"/*; do
    b=$(basename "$e")
    case "$b" in torch|torch-*|functorch|torchgen|triton|triton-*) ;; *) ln -sfn "$e" "/tmp/notorch/$b" ;; esac
  done
  touch /tmp/notorch/.ok
fi
BASE=$(python3 -c 'import sys; print(sys._base_executable)')
export PYTHONPATH=/root/site:/tmp/notorch:$PWD PYTHONPYCACHEPREFIX=/tmp/pyc
if $BASE -c "import sys, mlx.core as mx, transformers, mlx_lm.generate; mx.eval(mx.ones(3)); assert 'torch' not in sys.modules" 2>/tmp/notorch.err; then
  PY=$BASE
else
  echo "torch-free python unusable: $(tail -1 /tmp/notorch.err)" >&2
  PY=$HOSTPY
  export PYTHONPATH=/root/site:$PWD
  unset PYTHONPYCACHEPREFIX
fi
# byte-compile what a run imports, as pip would have at install time
$PY -c "import niah.cli, niah.model, niah.gguf.load, niah.run.sweep, niah.report, mlx_lm.generate, mlx_lm.models.llama, mlx_lm.models.qwen2"
