#!/usr/bin/env bash
# Everything CI checks, from a fresh machine: set-up (which builds the native library, its
# C++ tests and, when nvcc is found, the CUDA kernels: the compile check), ctest, then pytest.
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TKS_VENV:-$ROOT/.venv}"
export TKS_BUILD_DIR="${TKS_BUILD_DIR:-$ROOT/build/native}"
bash "$ROOT/scripts/setup_env.sh"

# The C++ tests of the shared math (and, when nvcc was found, of the CUDA kernels; skipped
# without a GPU) were built by setup_env.sh in the same CMake folder: nothing is rebuilt.
echo "[tests] ctest ($TKS_BUILD_DIR)"
if command -v ctest >/dev/null 2>&1; then CTEST=ctest; else CTEST="$VENV/bin/ctest"; fi
"$CTEST" --test-dir "$TKS_BUILD_DIR" --output-on-failure

# The GPU check script on the CPU (every step that can run here, GPU tests collected and
# skipped, benchmarks as a smoke run), so it cannot rot between GPU sessions.
echo "[tests] benchmarks/gpu_check.sh --dry-run"
PYTHON="$VENV/bin/python" bash "$ROOT/benchmarks/gpu_check.sh" --dry-run

echo "[tests] pytest"
cd "$ROOT"
# TKS_REQUIRE_EXTENSION=1: a build that did not load fails the run instead of skipping.
TKS_REQUIRE_EXTENSION=1 "$VENV/bin/pytest" tests/ -q "$@"
