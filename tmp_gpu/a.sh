source tmp_gpu/common.sh
echo "device: $DEV"
MLX_PTX_CACHE_DIR=/tmp/fresh-fill NIAH_CACHE_DIR=/tmp/nc-fill NIAH_DEFAULT_GGUF=$S \
  logged wall-fresh-smollm2-fill "$PY" benchmarks/wall.py --python "$PY"
MLX_PTX_CACHE_DIR=/tmp/fresh-nofill NIAH_CACHE_DIR=/tmp/nc-nofill NIAH_KERNEL_FILL=0 NIAH_DEFAULT_GGUF=$S \
  logged wall-fresh-smollm2-nofill "$PY" benchmarks/wall.py --python "$PY"
logged peak-repeat-default "$PY" benchmarks/peak_repeat.py "$Q" --contexts 4k,16k --repeats 6
ls /tmp/fresh-fill /tmp/fresh-nofill > $OUT/ptx-lists.txt 2>&1
cat ~/.cache/niah/kernel-fill.json /tmp/nc-fill/kernel-fill.json >> $OUT/ptx-lists.txt 2>&1
