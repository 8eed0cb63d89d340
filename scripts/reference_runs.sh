#!/usr/bin/env bash
# The GPU reference runs and benchmarks whose outputs docs/measured.md shows, one section at a time:
#   bash scripts/reference_runs.sh SECTION [SECTION ...]
# Each run writes its run folder under $OUT/runs/<name>/ and each command's raw output, with a
# provenance header (command, commit, device, date), to $OUT/logs/<name>.txt. Models are read
# from $MODELS (default /root/models, where ../shared/gpu/stage puts them on the GPU host).
# NIAH_COMMIT names the commit the working tree was taken from (the host has no .git).
# BUNDLE=FILE: runs and logs go to a scratch folder instead, and after every section all of
# them are packed into FILE (one tar, rewritten section by section): the GPU host returns only
# a few files per command, and a command cut by its time limit still returns the sections done.
set -uo pipefail
OUT="${OUT:-$PWD/out}"
if [ -n "${BUNDLE:-}" ]; then
  OUT=$(mktemp -d /tmp/niah-ref.XXXXXX)
fi
MODELS="${MODELS:-/root/models}"
COMMIT="${NIAH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
mkdir -p "$OUT/runs" "$OUT/logs"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# On the GPU host every niah process runs on a Python like the README's venv (no torch, which
# transformers would import: 13 s more per process); elsewhere on python3.
if [ -z "${PY:-}" ]; then
  if [ -d /root/site ]; then source scripts/device_python.sh; else PY=python3; fi
fi
Q15="$MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
Q05="$MODELS/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GEMMA="$MODELS/gemma-3-270m-q4_k_m.gguf"
SMOL="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"

logged() {  # name command... : run it, keep its output with a provenance header
  local name=$1; shift
  local device
  device=$("$PY" -c 'from niah.model import device_description; print(device_description())' 2>/dev/null)
  {
    echo "# command: $*"
    env | grep '^MLX_\(MAX_OPS\|MAX_MB\|USE_CUDA\)' | sed 's/^/# env: /'
    echo "# commit: $COMMIT"
    echo "# device: $device"
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    "$@" 2>&1
    echo "# exit: $?"
  } | tee "$OUT/logs/$name.txt"
}

timed() {  # command... : run it, then print its wall seconds
  local t0 rc
  t0=$(date +%s.%N)
  "$@"
  rc=$?
  echo "wall_s $("$PY" -c "print(round($(date +%s.%N) - $t0, 2))")"
  return $rc
}

niah_run() {  # name niah-run-args...
  local name=$1; shift
  logged "$name" "$PY" -m niah run "$@" --out "$OUT/runs/$name" -q
}

for section in "$@"; do
  case "$section" in
    kernels)  # the kernel tests, then on into verify (;& falls through)
      logged kernel-tests "$PY" -m pytest -q -x -m "cuda or gpu" tests/test_kernels.py tests/test_sdpa.py ;&
    verify)  # alone: the kernels section without its tests (about 4 minutes on an H100)
      logged sdpa-verify "$PY" -m niah sdpa verify
      logged new-shapes "$PY" benchmarks/new_shapes.py ;;
    quantized-tests)  # the quantized-KV tests, which are not GPU-marked, on the GPU's stream
      NIAH_TEST_GGUF="$SMOL" logged quantized-tests "$PY" -m pytest -q tests/test_sdpa.py \
        tests/test_model.py tests/test_kernel_fill.py -k "quantized or dequantized or kv or kernel_fill" ;;
    sdpa-bench)
      logged sdpa-bench "$PY" benchmarks/sdpa.py --routes kv-chunks ;;
    qwen15)
      niah_run qwen15-curve --model "$Q15" --context 4k,8k,16k,32k,64k,128k --depth 0:1:0.1 \
        --allow-beyond-trained ;;
    qwen15-256k)
      niah_run qwen15-256k --model "$Q15" --context 256k --depth 0:1:0.25 --allow-beyond-trained ;;
    qwen15-routes)
      niah_run qwen15-128k-stock --model "$Q15" --context 128k --depth 0:1:0.1 --sdpa stock \
        --allow-beyond-trained
      niah_run qwen15-128k-chunked --model "$Q15" --context 128k --depth 0:1:0.1 --sdpa chunked \
        --allow-beyond-trained ;;
    qwen15-yarn)
      niah_run qwen15-128k-yarn4 --model "$Q15" --context 128k --depth 0:1:0.1 \
        --rope-scaling yarn:4 --allow-beyond-trained ;;
    small)
      niah_run gemma3-270m-curve --model "$GEMMA" --context 4k,8k,16k,32k --depth 0:1:0.25 \
        --allow-beyond-trained
      niah_run qwen05-curve --model "$Q05" --context 4k,8k,16k,32k,64k,128k --depth 0:1:0.25 \
        --allow-beyond-trained ;;
    tasks)
      for task in multi-needle multi-key multi-value multi-query; do
        niah_run "qwen15-task-$task" --model "$Q15" --task "$task" --context 4k,8k,16k,32k \
          --depth 0:1:0.25 --allow-beyond-trained
      done ;;
    warm-check)  # does the first trial of each context pay one-time costs? (issue #12)
      niah_run qwen15-warm-no-reuse --model "$Q15" --context 4k,8k,16k,32k,64k,128k \
        --depth 0:1:0.25 --no-prefix-reuse --allow-beyond-trained
      niah_run qwen15-warm-default --model "$Q15" --context 4k,8k,16k,32k,64k,128k \
        --depth 0:1:0.25 --allow-beyond-trained
      logged first-cell "$PY" benchmarks/first_cell.py "$OUT/runs/qwen15-warm-no-reuse"/* \
        "$OUT/runs/qwen15-warm-default"/* ;;
    smollm2-128k)
      niah_run smollm2-128k-auto --model "$SMOL" --context 128k --depth 0.5 --allow-beyond-trained
      niah_run smollm2-128k-chunked --model "$SMOL" --context 128k --depth 0.5 --sdpa chunked \
        --allow-beyond-trained ;;
    vs-mlx-lm)  # issue 24: a niah trial against mlx-lm's own generation, same process
      logged vs-mlx-lm "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" --contexts 32k,128k \
        --rounds 9 --max-tokens 256 --no-eos ;;
    vs-mlx-lm-self)  # the noise floor of those ratios: mlx-lm on both sides
      logged vs-mlx-lm-self "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" --contexts 32k,128k \
        --rounds 9 --max-tokens 256 --no-eos --self ;;
    smollm2-curve)  # the embedded model's accuracy curve past its 8K, 2 samples per cell
      niah_run smollm2-curve --model "$SMOL" --context 1k,2k,4k,8k,16k,32k --depth 0:1:0.25 \
        --samples 2 --allow-beyond-trained ;;
    refusal)  # issue 24: a past-trained refusal of the 1.5B GGUF, before any weight loads
      logged refusal timed "$PY" -m niah run --model "$Q15" --context 128k --depth 0.5 \
        --refuse-beyond-trained --out "$OUT/runs/refusal" ;;
    calibration)  # issue 24: measured peaks per route, context, prefill step and KV bits
      niah_run qwen15-calib-stock --model "$Q15" --context 1k,4k,16k,32k,64k,128k --depth 0.5 \
        --samples 2 --no-prefix-reuse --sdpa stock --allow-beyond-trained
      niah_run qwen15-calib-chunked --model "$Q15" --context 1k,4k,16k,32k,64k,128k --depth 0.5 \
        --samples 2 --no-prefix-reuse --sdpa chunked --allow-beyond-trained
      niah_run qwen15-calib-kv8 --model "$Q15" --context 4k,32k,128k --depth 0.5 --samples 2 \
        --no-prefix-reuse --kv-bits 8 --allow-beyond-trained
      niah_run qwen15-calib-step8k --model "$Q15" --context 32k,128k --depth 0.5 --samples 2 \
        --no-prefix-reuse --prefill-step 8192 --allow-beyond-trained ;;
    calibration-kv8)  # --kv-bits 8 alone (on CUDA: attention over the dequantized K/V)
      niah_run qwen15-calib-kv8 --model "$Q15" --context 1k,4k,16k,32k,64k,128k --depth 0.5 \
        --samples 2 --no-prefix-reuse --kv-bits 8 --allow-beyond-trained ;;
    ruler)  # issue 21: the new task families at 4K-128K
      for task in variable-tracking common-words frequent-words; do
        niah_run "qwen15-task-$task" --model "$Q15" --task "$task" --context 4k,16k,32k,64k,128k \
          --depth 0:1:0.25 --allow-beyond-trained
      done
      niah_run qwen15-task-non-literal --model "$Q15" --task non-literal \
        --context 1k,4k,16k,32k,64k,128k --depth 0:1:0.25 --allow-beyond-trained ;;
    wall)  # issue 22: what a user waits against what niah measures, fresh processes, run first
      # on a fresh host (no MLX PTX cache), with a Python like the README's venv (no torch)
      source scripts/device_python.sh
      NIAH_DEFAULT_GGUF="$SMOL" logged wall-fresh "$PY" benchmarks/wall.py --model "$Q15" --python "$PY"
      NIAH_DEFAULT_GGUF="$SMOL" logged wall-warm "$PY" benchmarks/wall.py --python "$PY" \
        --row "smollm2 128K d0.5::--context 128k --depth 0.5" \
        --row "qwen 128K x11::--model $Q15 --context 128k --depth 0:1:0.1"
      if [ -n "${WALL_TORCH:-}" ]; then  # the host's own Python, torch installed
        NIAH_DEFAULT_GGUF="$SMOL" PYTHONPATH=/root/site:$PWD PYTHONPYCACHEPREFIX= logged \
          wall-torch "$HOSTPY" benchmarks/wall.py --python "$HOSTPY" \
          --row "smollm2 128K d0.5, torch installed::--context 128k --depth 0.5"
      fi
      (cd /tmp/mlx && find . -type f -name '*.ptx' -printf '%TY-%Tm-%Td %TT %s %p\n' | sort) \
        > "$OUT/logs/ptx-modules.txt" ;;
    wall-qwen)  # issue 22: the Qwen rows alone, on a host that has run niah (run another first)
      logged wall-warm-qwen "$PY" benchmarks/wall.py --python "$PY" \
        --row "qwen 128K x11::--model $Q15 --context 128k --depth 0:1:0.1" \
        --row "qwen 4K/32K/128K x3::--model $Q15 --context 4k,32k,128k --depth 0,0.5,1" ;;
    memory)  # issue 24: the same cell repeated, and the peak traced per generation
      niah_run qwen15-peak-repeat --model "$Q15" --context 1k,4k,16k --depth 0.5 --samples 4
      logged peak-trace "$PY" benchmarks/peak_trace.py "$Q15"
      logged vs-mlx-lm-noeos "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" --contexts 32k,128k \
        --rounds 7 --max-tokens 128 --no-eos
      logged vs-mlx-lm-self "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" --contexts 32k,128k \
        --rounds 5 --max-tokens 128 --no-eos --self ;;
    kernel-fill | kernel-fill-only)  # issue 22: a fresh machine's headline row with and
      # without niah.kernel_fill, each in an empty MLX kernel folder and niah cache (run first
      # on a fresh host); kernel-fill-only: the row with the fill alone
      MLX_PTX_CACHE_DIR=/tmp/fresh-fill NIAH_CACHE_DIR=/tmp/nc-fill NIAH_DEFAULT_GGUF="$SMOL" \
        logged wall-fresh-fill "$PY" benchmarks/wall.py --python "$PY"
      if [ "$section" = kernel-fill ]; then
        MLX_PTX_CACHE_DIR=/tmp/fresh-nofill NIAH_CACHE_DIR=/tmp/nc-nofill NIAH_KERNEL_FILL=0 \
          NIAH_DEFAULT_GGUF="$SMOL" logged wall-fresh-nofill "$PY" benchmarks/wall.py --python "$PY"
      fi ;;
    memory-batch)  # issue 24: a repeated cell's peak under MLX's default CUDA graph batching and
      # with ten operations per graph, and what that costs against mlx-lm
      logged peak-repeat-default "$PY" benchmarks/peak_repeat.py "$Q15" --contexts 4k,16k,32k --repeats 4
      MLX_MAX_OPS_PER_BUFFER=10 logged peak-repeat-ops10 "$PY" benchmarks/peak_repeat.py "$Q15" \
        --contexts 4k,16k,32k --repeats 4
      logged vs-mlx-lm-default "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" --contexts 4k,32k \
        --rounds 3 --max-tokens 64 --no-eos
      MLX_MAX_OPS_PER_BUFFER=10 logged vs-mlx-lm-ops10 "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" \
        --contexts 4k,32k --rounds 3 --max-tokens 64 --no-eos ;;
    memory-repeat)  # issue 24: one cell repeated through `niah run`, under MLX's default CUDA
      # batching and with ten operations per graph (recorded as mlx_env in every trial)
      niah_run qwen15-peak-default --model "$Q15" --context 4k,16k,32k --depth 0.5 --samples 4 \
        --no-prefix-reuse
      MLX_MAX_OPS_PER_BUFFER=10 niah_run qwen15-peak-ops10 --model "$Q15" --context 4k,16k,32k \
        --depth 0.5 --samples 4 --no-prefix-reuse ;;
    memory-mb)  # issue 24: MLX's byte limit per CUDA graph (MLX_MAX_MB_PER_BUFFER, 1000 on
      # H100/H200) instead of its op limit: does the peak repeat, and what does decode pay
      for mb in 100 25; do
        MLX_MAX_MB_PER_BUFFER=$mb logged peak-repeat-mb$mb "$PY" benchmarks/peak_repeat.py "$Q15" \
          --contexts 4k,16k,32k --repeats 4
      done
      logged vs-mlx-lm-default "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" --contexts 4k,32k \
        --rounds 3 --max-tokens 64 --no-eos
      for mb in 100 25; do
        MLX_MAX_MB_PER_BUFFER=$mb logged vs-mlx-lm-mb$mb "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" \
          --contexts 4k,32k --rounds 3 --max-tokens 64 --no-eos
      done ;;
    warm-profile)  # issue 22: the warm 128K x 11 row, then the same run under cProfile
      logged wall-warm-qwen "$PY" benchmarks/wall.py --python "$PY" \
        --row "qwen 128K x11::--model $Q15 --context 128k --depth 0:1:0.1"
      "$PY" -m cProfile -o "$OUT/logs/warm.prof" -m niah run --model "$Q15" --context 128k \
        --depth 0:1:0.1 --out "$OUT/runs/warm-profile" -q
      logged warm-profile "$PY" -c "import pstats; s = pstats.Stats('$OUT/logs/warm.prof'); \
s.sort_stats('cumulative').print_stats(60); s.sort_stats('tottime').print_stats(25)" ;;
    memory-repeatable)  # issue 24: one cell repeated through `niah run`, under MLX's defaults
      # and with --repeatable-memory (MLX_MAX_MB_PER_BUFFER=100, recorded in every trial), then
      # mlx-lm's and niah's timings under each, in alternating processes
      for name in default repeatable; do
        flag=(); [ "$name" = repeatable ] && flag=(--repeatable-memory)
        niah_run "qwen15-peak-$name" --model "$Q15" --context 4k,16k,32k --depth 0.5 --samples 4 \
          --kv-bits none,8 --no-prefix-reuse "${flag[@]}"
      done
      for round in 1 2; do
        logged "vs-mlx-lm-default-$round" "$PY" benchmarks/vs_mlx_lm.py --model "$Q15" \
          --contexts 4k,32k --rounds 4 --max-tokens 128 --no-eos
        MLX_MAX_MB_PER_BUFFER=100 logged "vs-mlx-lm-mb100-$round" "$PY" benchmarks/vs_mlx_lm.py \
          --model "$Q15" --contexts 4k,32k --rounds 4 --max-tokens 128 --no-eos
      done ;;
    *) echo "unknown section '$section'" >&2; exit 2 ;;
  esac
  if [ -n "${BUNDLE:-}" ]; then
    tar cf "$BUNDLE.part" -C "$OUT" runs logs && mv "$BUNDLE.part" "$BUNDLE"
  fi
done
