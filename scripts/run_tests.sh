#!/usr/bin/env bash
# Everything CI checks, from a fresh machine: set-up, the C++ tests of the shared math
# and the CUDA compile check (CMake/ctest; CUDA when nvcc is found), then pytest.
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TKS_VENV:-$ROOT/.venv}"
bash "$ROOT/scripts/setup_env.sh"

if command -v cmake >/dev/null 2>&1; then
  BUILD="${TKS_CMAKE_BUILD:-$ROOT/build/cmake}"
  echo "[tests] CMake: C++ tests of csrc/ and the CUDA kernels' compile check"
  CUDA_FLAGS=()
  if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
    # nvcc is here: compiling every CUDA kernel for sm_80 and sm_90 is part of the test
    # (TKS_CUDA=ON makes a CUDA configure failure an error, not a silent skip).
    CUDA_FLAGS=(-DTKS_CUDA=ON "-DTKS_CUDA_ARCHITECTURES=80;90")
    [ -x /usr/local/cuda/bin/nvcc ] && CUDA_FLAGS+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  fi
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${CUDA_FLAGS[@]}" >/dev/null
  cmake --build "$BUILD" -j "$(nproc)"
  ctest --test-dir "$BUILD" --output-on-failure
else
  echo "[tests] cmake not found: skipping the C++ tests" >&2
fi

echo "[tests] pytest"
cd "$ROOT"
# TKS_REQUIRE_EXTENSION=1: a build that did not load fails the run instead of skipping.
TKS_REQUIRE_EXTENSION=1 "$VENV/bin/pytest" tests/ -q "$@"
