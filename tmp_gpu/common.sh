# sourced on the GPU host: python, models, and `logged NAME CMD...` writing $OUT/NAME.txt with provenance
export PYTHONPATH=/root/site:$PWD
source scripts/device_python.sh
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
Q=/root/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
S=/root/models/SmolLM2-135M-Instruct.Q4_1.gguf
C=${NIAH_COMMIT:-unknown}
DEV=$("$PY" -c 'from niah.model import device_description; print(device_description())' 2>/dev/null)
logged() {
  local name=$1; shift
  { echo "# command: $*"; echo "# commit: $C"; echo "# device: $DEV"; echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    "$@" 2>&1; echo "# exit: $?"; } > "$OUT/$name.txt"
  tail -5 "$OUT/$name.txt"
}
