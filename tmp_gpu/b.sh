source tmp_gpu/common.sh
logged peak-repeat-cache0 "$PY" benchmarks/peak_repeat.py "$Q" --contexts 4k,16k --repeats 6 --cache-limit-zero
MLX_MAX_OPS_PER_BUFFER=10 logged peak-repeat-ops10 "$PY" benchmarks/peak_repeat.py "$Q" --contexts 4k,16k --repeats 6
MLX_USE_CUDA_GRAPHS=0 logged peak-repeat-nographs "$PY" benchmarks/peak_repeat.py "$Q" --contexts 4k,16k --repeats 6
timeout 240 "$PY" -m pytest -q tests/test_sdpa.py tests/test_model.py -k "quantized or dequantized or kv" > $OUT/quantized-tests.txt 2>&1; tail -3 $OUT/quantized-tests.txt
