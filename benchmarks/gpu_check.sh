#!/usr/bin/env bash
# One-command check on a GPU machine, from the repository root:
#
#   bash benchmarks/gpu_check.sh
#
# 1. versions (nvidia-smi, nvcc, torch, triton);
# 2. builds tks_kernels._C in place with its CUDA kernels (for the GPU it finds);
# 3. checks that the cuda and triton backends are available;
# 4. the GPU tests: `pytest -m gpu` on tests/ (cuda and triton against the reference);
# 5. the GPU benchmarks: `pytest benchmarks/` with TKS_BENCH_DEVICE=cuda;
# 6. if cmake is there and time is left: the CUDA kernels against the host math (ctest);
# 7. last, a table: per backend, forward/backward GB/s and fraction of a device copy on
#    the 64M-element shapes (256 MiB in fp32).
#
# Needs a python with a CUDA build of torch, pytest and pytest-benchmark (the active
# one, or $PYTHON), and nvcc. No network. Each step has a time limit; a failed step
# does not stop the next ones, but the script exits 1 if any failed. The whole stays
# under GPU_CHECK_BUDGET seconds (default 540). The full log, the benchmark JSON and
# the build log go to GPU_CHECK_LOG_DIR (default: $OUT when set, else build/gpu_check).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUDGET="${GPU_CHECK_BUDGET:-540}"
DEADLINE=$((SECONDS + BUDGET))
LOG_DIR="${GPU_CHECK_LOG_DIR:-${OUT:-$ROOT/build/gpu_check}}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check.log"
START_STAMP="$(date +%Y-%m-%dT%H:%M:%S)"

if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"
elif command -v python >/dev/null 2>&1; then
  PY=python
else
  PY=python3
fi
# Triton must compile for the GPU, not run under its CPU interpreter.
unset TRITON_INTERPRET
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

FAILED=()
# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND under `timeout`, the limit cut to what
# is left of the budget; records a failure; never stops the script.
step() {
  local name="$1" limit="$2"
  shift 2
  local left=$((DEADLINE - SECONDS - 15))  # keep time for the table
  if [ "$left" -lt 20 ]; then
    echo "=== [$name] not run: the ${BUDGET}s budget is spent"
    FAILED+=("$name (not run: out of time)")
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo
  echo "=== [$name] (limit ${limit}s) $*"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "=== [$name] exit $rc after $((SECONDS - t0))s"
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      FAILED+=("$name (timed out after ${limit}s)")
    else
      FAILED+=("$name (exit $rc)")
    fi
    return 1
  fi
  return 0
}

main() {
# --- 1. versions ---------------------------------------------------------------------
echo "=== gpu_check $(date) in $ROOT, log $LOG"
nvidia-smi || FAILED+=("nvidia-smi")
NVCC="$(command -v nvcc || true)"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -n "$NVCC" ]; then "$NVCC" --version | tail -n 2; else echo "nvcc: not found"; fi
"$PY" - <<'EOF' || FAILED+=("versions")
import sys, torch
print(f"python {sys.version.split()[0]} ({sys.executable})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device 0: {torch.cuda.get_device_name(0)}, capability {torch.cuda.get_device_capability(0)}")
try:
    import triton
    print(f"triton {triton.__version__}")
except Exception as exc:  # noqa: BLE001
    print(f"triton: not importable ({exc})")
for name in ("pytest", "pytest_benchmark", "spikingjelly"):
    try:
        mod = __import__(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception:  # noqa: BLE001
        print(f"{name}: not installed")
EOF

# --- 2. build ------------------------------------------------------------------------
# CUDA_HOME: the toolkit folder holding bin/nvcc and include/cuda_runtime_api.h (nvcc
# on PATH may be a wrapper script elsewhere).
find_cuda_home() {
  local c
  for c in "${CUDA_HOME:-}" "${NVCC:+$(dirname "$(dirname "$(readlink -f "$NVCC")")")}" /usr/local/cuda /usr/local/cuda-*; do
    if [ -n "$c" ] && [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime_api.h" ]; then
      echo "$c"
      return 0
    fi
  done
  return 1
}
if CUDA_HOME="$(find_cuda_home)"; then
  export CUDA_HOME
  export PATH="$CUDA_HOME/bin:$PATH"
  echo "CUDA_HOME=$CUDA_HOME"
else
  echo "no CUDA toolkit found (nvcc with include/cuda_runtime_api.h): the CUDA build will fail"
fi
# Unset: setup.py then builds for the GPU torch sees (GPU_CHECK_ARCH overrides, e.g. 9.0).
unset TORCH_CUDA_ARCH_LIST
[ -n "${GPU_CHECK_ARCH:-}" ] && export TORCH_CUDA_ARCH_LIST="$GPU_CHECK_ARCH"
BUILD_OK=1
step build 240 env TKS_BUILD_CUDA=1 MAX_JOBS="${MAX_JOBS:-16}" "$PY" setup.py build_ext --inplace || BUILD_OK=0

# --- 3. backends ---------------------------------------------------------------------
step backends 60 "$PY" - <<'EOF'
import sys, torch, tks_kernels
backends = tks_kernels.available_backends()
for name, (ok, why) in backends.items():
    print(f"  {name:7s} {'yes' if ok else 'NO '}  {why}")
missing = [n for n in ("cuda", "triton") if not backends[n][0]]
sys.exit(f"backends not available: {missing}" if missing else 0)
EOF

# --- 4. GPU tests --------------------------------------------------------------------
# `pytest -m gpu` over the test files that hold GPU tests: the others may import
# packages (tqdm, hypothesis, ...) that a bare GPU machine lacks, and a collection
# error there would fail this step for nothing.
mapfile -t GPU_TEST_FILES < <(grep -l "mark\.gpu" tests/test_*.py 2>/dev/null)
[ "${#GPU_TEST_FILES[@]}" -eq 0 ] && GPU_TEST_FILES=(tests/)
step "gpu tests" 240 env TKS_REQUIRE_EXTENSION=1 "$PY" -m pytest -m gpu "${GPU_TEST_FILES[@]}" -q -p no:cacheprovider \
  --junitxml="$LOG_DIR/gpu_tests.xml"

# --- 5. benchmarks -------------------------------------------------------------------
BENCH_JSON="$LOG_DIR/benchmarks.json"
rm -f "$BENCH_JSON"
step benchmarks 240 env TKS_BENCH_DEVICE=cuda "$PY" -m pytest benchmarks/ -q -p no:cacheprovider \
  --benchmark-json="$BENCH_JSON"

# --- 6. CUDA kernels against the host math, without torch (optional) ----------------------
if command -v cmake >/dev/null 2>&1 && [ "$BUILD_OK" = 1 ]; then
  ARCH="$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability(0))' 2>/dev/null || echo 90)"
  if [ $((DEADLINE - SECONDS)) -gt 120 ]; then
    CM="$ROOT/build/gpu_check_cmake"
    step "ctest (cuda kernels vs host math)" 150 bash -c "
      cmake -S '$ROOT' -B '$CM' -DCMAKE_BUILD_TYPE=Release -DTKS_CUDA=ON -DTKS_CUDA_ARCHITECTURES=$ARCH >/dev/null &&
      cmake --build '$CM' -j '${MAX_JOBS:-16}' >/dev/null && ctest --test-dir '$CM' --output-on-failure"
  else
    echo "=== [ctest] skipped: not enough time left"
  fi
else
  echo "=== [ctest] skipped: cmake not found or the build failed"
fi

# --- 7. table ------------------------------------------------------------------------
echo
"$PY" - "$BENCH_JSON" "$ROOT/benchmarks/results.csv" "$START_STAMP" <<'EOF' || FAILED+=("table")
"""Per backend: GB/s and fraction of a device copy, on the 64M-element LIF shapes."""
import csv, json, os, re, sys

json_path, csv_path, since = sys.argv[1:4]
rows = []
if os.path.exists(json_path):
    with open(json_path) as f:
        rows = [b.get("extra_info", {}) for b in json.load(f).get("benchmarks", [])]
    source = json_path
elif os.path.exists(csv_path):  # the run did not finish its JSON: this run's CSV rows
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("time", "") >= since]
    source = csv_path + f" (rows since {since})"
if not rows:
    print("no benchmark results to tabulate")
    sys.exit(0)

BIG = 1 << 26  # elements: the 64M-element shapes (256 MiB in fp32)
LABEL = {"cuda": "cuda", "triton": "triton", "torch": "torch (reference)", "spikingjelly": "SpikingJelly"}
MODES = ("fwd", "bwd", "fwd+bwd", "infer")
table = {}
for r in rows:
    if str(r.get("device", "")).split(":")[0] != "cuda":
        continue
    words = str(r.get("case", "")).split()
    if len(words) < 3 or words[0] != "lif":
        continue
    mode = r.get("mode") or words[1]
    impl = r.get("impl") or words[2]
    dtype = r.get("dtype") or (words[3] if len(words) > 3 else "float32")
    dims = [int(d) for d in re.findall(r"\d+", str(r.get("shape", "")))]
    numel = 1
    for d in dims:
        numel *= d
    if not dims or numel < BIG or mode not in MODES or impl not in LABEL:
        continue
    try:
        gbs, frac = float(r["GB/s"]), float(r["copy_frac"])
    except (KeyError, ValueError):
        continue
    cell = table.setdefault((impl, dtype), {}).setdefault(mode, [])
    cell.append((gbs, frac, r.get("shape", "")))

print("LIF on CUDA, shapes of 64M elements (256 MiB in fp32): GB/s (fraction of a device copy), the lowest over those shapes")
print(f"from {source}")
head = f"{'backend':18s} {'dtype':9s}" + "".join(f" {m:>18s}" for m in MODES) + "  shapes"
print(head)
print("-" * len(head))
order = {k: i for i, k in enumerate(LABEL)}
for (impl, dtype) in sorted(table, key=lambda k: (order[k[0]], k[1])):
    cells = table[(impl, dtype)]
    line = f"{LABEL[impl]:18s} {dtype:9s}"
    for m in MODES:
        if m in cells:
            gbs, frac, _ = min(cells[m], key=lambda c: c[1])
            line += f" {gbs:9.1f} ({frac:4.2f})"
        else:
            line += f" {'-':>18s}"
    n = max(len(v) for v in cells.values())
    print(line + f"  {n}")
EOF

echo
if [ "${#FAILED[@]}" -eq 0 ]; then
  echo "gpu_check: all steps passed (log: $LOG)"
  return 0
fi
echo "gpu_check: FAILED steps: ${FAILED[*]} (log: $LOG)"
return 1
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
