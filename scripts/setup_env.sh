#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv at the repository root and installs
# tks_kernels into it with its test and benchmark dependencies. Idempotent.
#   TKS_VENV=path        another venv location
#   TKS_TORCH="torch==2.13.0"   the torch requirement (default: a CPU build when no GPU)
#   TKS_PEERS=0          skip SpikingJelly/snnTorch (comparison tests then skip)
#   TKS_CUDA=0|1|auto    the CUDA kernels (default auto: when nvcc is found)
#   TKS_BUILD_DIR=path   the CMake build folder (default build/native)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TKS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  TORCH_REQ="${TKS_TORCH:-}"
  if [ -z "$TORCH_REQ" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then TORCH_REQ="torch"; else TORCH_REQ="torch==2.13.0"; fi
  fi
  echo "[setup] installing $TORCH_REQ"
  "${PIP[@]}" install "$TORCH_REQ"
fi
"${PIP[@]}" install "setuptools>=64" wheel "cmake>=3.18" ninja numpy tqdm scikit-learn matplotlib pytest hypothesis \
  pytest-benchmark "triton>=3.0"
if [ "${TKS_PEERS:-1}" = "1" ]; then
  # --no-deps: their declared dependencies would pull a CUDA build of torch.
  "${PIP[@]}" install --no-deps spikingjelly==2.0.0 snntorch==1.0.0 loguru || echo "[setup] peers not installed; their comparisons will be skipped"
fi
# The native library (no torch inside) is built by CMake in one kept folder, with the
# C++ tests, and the CUDA kernels when nvcc is found: run_main.sh and run_tests.sh share
# it, and a second run compiles nothing that did not change.
export TKS_BUILD_DIR="${TKS_BUILD_DIR:-$ROOT/build/native}"
export TKS_BUILD_TESTS="${TKS_BUILD_TESTS:-1}"
echo "[setup] building the native library in $TKS_BUILD_DIR and installing tks_kernels (editable, so"
echo "        \`python -m tks_kernels\` from the repository root and the installed commands agree)"
MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"
(cd / && "$VENV/bin/python" -c "import tks_kernels, pprint; print('tks_kernels', tks_kernels.__version__); pprint.pprint(tks_kernels.available_backends())")
