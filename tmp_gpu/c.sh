source tmp_gpu/common.sh
echo "device: $DEV"
timeout 120 "$PY" -m pytest -q tests/test_sdpa.py tests/test_model.py tests/test_kernel_fill.py -k "quantized or dequantized or kv or kernel_fill" > $OUT/quantized-tests.txt 2>&1; tail -3 $OUT/quantized-tests.txt
NIAH_DEFAULT_GGUF=$S logged wall-smollm2-fill-fresh-then-warm "$PY" benchmarks/wall.py --python "$PY" \
  --row "smollm2 128K d0.5, fresh::--context 128k --depth 0.5" --row "smollm2 128K d0.5, again::--context 128k --depth 0.5"
logged peak-repeat-default-timed "$PY" benchmarks/peak_repeat.py "$Q" --contexts 4k,16k,32k --repeats 4
MLX_MAX_OPS_PER_BUFFER=10 logged peak-repeat-ops10-timed "$PY" benchmarks/peak_repeat.py "$Q" --contexts 4k,16k,32k --repeats 4
logged vs-mlx-lm-default "$PY" benchmarks/vs_mlx_lm.py --model "$Q" --contexts 4k,32k --rounds 3 --max-tokens 64 --no-eos
MLX_MAX_OPS_PER_BUFFER=10 logged vs-mlx-lm-ops10 "$PY" benchmarks/vs_mlx_lm.py --model "$Q" --contexts 4k,32k --rounds 3 --max-tokens 64 --no-eos
