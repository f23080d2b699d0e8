#!/usr/bin/env bash
# One-command check on a GPU machine, from the repository root:
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # here, on the CPU (CI): every step that can run
#
# Steps, most important first, each under `timeout` with a limit cut to what is left of
# the budget (GPU_CHECK_BUDGET seconds, default 420: with the machine's start, a rerun
# still fits in 15 minutes); a failed or timed-out step does not stop the next ones, and
# the table is printed whatever happened (also on SIGINT/SIGTERM):
#
#  1. preflight: python3 found, its bin/ put first on PATH (ninja, cmake, pytest of that
#     python); Python.h, gcc, ninja, nvcc, nvidia-smi checked; the versions printed;
#  2. build: `pip install --no-build-isolation --no-deps -e .` with every core
#     (MAX_JOBS, CMAKE_BUILD_PARALLEL_LEVEL), then `tks_kernels.available_backends()`;
#  3. correctness: `pytest -m gpu` of every test file holding GPU tests, all files at
#     once as parallel processes sharing Triton's cache (build/triton-cache, kept for a
#     rerun), every GPU backend against the reference;
#  4. bandwidth: LIF (triton, cuda), PLIF, TKS and the fused BN+LIF pair against a device
#     copy, LIF's recomputing backward against the saved-distance one (Triton, CUDA), each
#     row written to $GPU_CHECK_LOG_DIR/benchmarks.jsonl the moment it is measured;
#  5. the rest: the Triton launch-configuration sweep; the CUDA kernels against the host
#     math (ctest) when cmake is there and time is left;
#  6. the table: LIF GB/s and fraction of a copy per backend, dtype and mode on the
#     64M-element shapes; PLIF/LIF; TKS speedups; each step's outcome.
#
# --dry-run (CI, no GPU): the same steps on the CPU with the same commands: the build
# only when tks_kernels does not import yet (or GPU_CHECK_BUILD=1); the GPU tests
# collected and skipped; the benchmarks as a smoke run (TKS_BENCH_SMOKE=1: tiny shapes,
# one round, Triton under its interpreter), so the benchmark code, the result file and
# the table are exercised; no ctest.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (420; 1260 in a dry run, whose
# step limits are three times the GPU's), GPU_CHECK_LOG_DIR
# (default $OUT when set, else build/gpu_check), GPU_CHECK_JOBS (default: every core),
# GPU_CHECK_BUILD (1 build, 0 skip; default 1 on the GPU, auto in a dry run),
# GPU_CHECK_ARCH (TKS_CUDA_ARCHITECTURES for the build, default native),
# GPU_CHECK_BUILD_CMD (replaces the pip command, e.g. for an offline build),
# GPU_CHECK_SHARDS (processes per `-m gpu` file; default: about one process per core),
# GPU_CHECK_EXTRA_TESTS (test files run whole beside the `-m gpu` ones; default
# tests/test_sg_contract.py, which runs every available backend on the GPU unmarked).
# Exit status: 0 when every step passed, else 1.
set -u -o pipefail

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# a dry run gets three times the time: the CPU interprets the Triton kernels, and CI's
# machine may be shared
if [ "$DRY_RUN" = 1 ]; then CAP_SCALE=3; else CAP_SCALE=1; fi
BUDGET="${GPU_CHECK_BUDGET:-$((420 * CAP_SCALE))}"
DEADLINE=$((SECONDS + BUDGET))
TABLE_RESERVE=12
LOG_DIR="${GPU_CHECK_LOG_DIR:-${OUT:-$ROOT/build/gpu_check}}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/gpu_check.log"
RESULTS="$LOG_DIR/benchmarks.jsonl"
JOBS="${GPU_CHECK_JOBS:-$(nproc 2>/dev/null || echo 4)}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$ROOT/build/triton-cache}"
mkdir -p "$TRITON_CACHE_DIR"
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"  # 3.9's default, stated (our kernels set theirs)
export TKS_BENCH_RESULTS="$RESULTS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY_RUN" = 1 ]; then
  export TRITON_INTERPRET=1 TKS_BENCH_DEVICE=cpu TKS_BENCH_SMOKE=1
  MODE="dry run (CPU)"
else
  unset TRITON_INTERPRET  # Triton must compile for the GPU, not run under its CPU interpreter
  export TKS_BENCH_DEVICE=cuda
  MODE="GPU"
fi

STEPS=()   # "name|status|seconds"
FAILED=0

# step NAME CAP COMMAND...: COMMAND under `timeout`, its limit min(CAP, what is left of the
# budget less the table's reserve); records the outcome; never stops the script.
step() {
  local name="$1" cap="$2"
  shift 2
  local left=$((DEADLINE - SECONDS - TABLE_RESERVE)) limit=$((cap * CAP_SCALE))
  if [ "$left" -lt 5 ]; then
    echo "=== [$name] not run: the ${BUDGET}s budget is spent"
    STEPS+=("$name|not run (out of time)|0"); FAILED=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  echo
  echo "=== [$name] (limit ${limit}s) $*"
  local t0=$SECONDS rc
  # through bash: the command may be one of the (exported) functions below
  timeout --kill-after=5 "$limit" bash -c '"$@"' _ "$@"
  rc=$?
  local took=$((SECONDS - t0)) status
  case "$rc" in
    0) status="ok" ;;
    124|137) status="TIMED OUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  echo "=== [$name] $status, ${took}s"
  STEPS+=("$name|$status|$took")
  [ "$rc" -eq 0 ] || FAILED=1
  return "$rc"
}

skip_step() {  # skip_step NAME REASON
  echo "=== [$1] skipped: $2"
  STEPS+=("$1|skipped: $2|0")
}

# --- 1. preflight ----------------------------------------------------------------------
find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  command -v python3 || command -v python || echo python3
}
PY="$(find_python)"
# The interpreter's own bin/ (a venv's, not the resolved system one) and its scripts
# folder first on PATH: ninja, cmake and pytest installed for it are found, so the build
# runs in parallel (without ninja, setuptools compiles one file at a time).
PY_BINS="$("$PY" -c 'import os, sys, sysconfig; print(os.path.dirname(sys.executable) + os.pathsep + sysconfig.get_path("scripts"))' 2>/dev/null || true)"
[ -n "$PY_BINS" ] && export PATH="$PY_BINS:$PATH"

preflight() {
  local bad=0
  echo "mode: $MODE; python: $PY; budget ${BUDGET}s; jobs $JOBS; log dir $LOG_DIR"
  "$PY" - "$DRY_RUN" <<'EOF' || bad=1
import os, sys, sysconfig
inc = os.path.join(sysconfig.get_paths()["include"], "Python.h")
print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"Python.h: {inc if os.path.exists(inc) else 'MISSING (' + inc + '): the build and Triton launchers need it'}")
required = {"torch", "pytest", "pytest_benchmark", "triton"}
missing = []
for name in ("torch", "triton", "numpy", "pytest", "pytest_benchmark", "hypothesis", "ninja", "cmake",
             "scikit_build_core", "setuptools", "spikingjelly"):
    try:
        mod = __import__(name)
        extra = ""
        if name == "torch":
            extra = f", CUDA {mod.version.cuda}, device available: {mod.cuda.is_available()}"
            if mod.cuda.is_available():
                extra += f", {mod.cuda.get_device_name(0)} capability {mod.cuda.get_device_capability(0)}"
        print(f"{name} {getattr(mod, '__version__', '?')}{extra}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: not importable ({type(exc).__name__})" + (": REQUIRED" if name in required else ""))
        missing += [name] if name in required else []
sys.exit(0 if os.path.exists(inc) and not missing else 1)
EOF
  for tool in gcc g++ ninja cmake nvcc nvidia-smi; do
    if command -v "$tool" >/dev/null 2>&1; then
      echo "$tool: $(command -v "$tool") ($("$tool" --version 2>/dev/null | grep -m1 -iE 'version|gcc|ninja|[0-9]+\.[0-9]+' | head -c 100))"
    else
      echo "$tool: not found"
      case "$tool" in
        gcc|ninja) bad=1 ;;  # (cmake: the build step installs it from build/wheels if need be)
        nvcc|nvidia-smi) [ "$DRY_RUN" = 0 ] && bad=1 ;;
      esac
    fi
  done
  [ "$DRY_RUN" = 0 ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  return "$bad"
}

backends_check() {
  "$PY" - "$DRY_RUN" <<'EOF'
import sys
import tks_kernels
backends = tks_kernels.available_backends()
for name, (ok, why) in backends.items():
    print(f"  {name:7s} {'yes' if ok else 'NO '}  {why}")
need = ("torch",) if sys.argv[1] == "1" else ("cuda", "triton")
missing = [n for n in need if not backends[n][0]]
sys.exit(f"backends not available: {missing}" if missing else 0)
EOF
}

# The build needs setuptools and cmake (pyproject's build-system, used as installed:
# --no-build-isolation, no network). Missing ones are installed from wheels in
# GPU_CHECK_WHEELS (default build/wheels), made beforehand on a machine with an index:
#   pip download cmake setuptools --no-deps -d build/wheels   # ~31 MB, carried along
build_tools() {
  local dir="${GPU_CHECK_WHEELS:-$ROOT/build/wheels}" want=() m
  for m in setuptools cmake; do
    "$PY" -c "import $m" 2>/dev/null || want+=("$m")
  done
  if [ "${#want[@]}" -eq 0 ]; then echo "setuptools and cmake: installed"; return 0; fi
  echo "missing for the build: ${want[*]}; looking in $dir"
  local wheels=()
  for m in "${want[@]}"; do
    local w; w="$(ls "$dir"/"$m"-*.whl 2>/dev/null | head -n 1)"
    if [ -z "$w" ]; then echo "no $m wheel in $dir (pip download $m --no-deps -d $dir)"; return 1; fi
    wheels+=("$w")
  done
  "$PY" -m pip install --no-index --no-deps "${wheels[@]}" 2>&1 | tail -n 3
  hash -r
}

build() {
  set -o pipefail
  if [ -n "${GPU_CHECK_BUILD_CMD:-}" ]; then
    bash -c "$GPU_CHECK_BUILD_CMD"
  else
    "$PY" -m pip install --no-build-isolation --no-deps -e . 2>&1 | tail -n 40
  fi
}

# Every test file with GPU tests as its own pytest process, all at once: Triton compiles
# in the processes in parallel, sharing TRITON_CACHE_DIR. Fails when any file fails.
gpu_tests() {
  local files=() extra=() f pids=() rc=0 i
  files_run=()
  mapfile -t files < <(grep -lE "mark\.gpu|marks=pytest\.mark\.gpu" tests/test_*.py 2>/dev/null)
  if [ "${#files[@]}" -eq 0 ]; then echo "no test file has GPU tests"; return 1; fi
  # files that run every available backend on the GPU without the marker (all their cases;
  # a dry run only collects them: CI runs them in the suite)
  read -r -a extra <<<"${GPU_CHECK_EXTRA_TESTS-tests/test_sg_contract.py}"
  # each marked file as SHARDS processes (tests/conftest.py's TKS_TEST_SHARD), about one
  # process per core in all
  local n_all=$(( ${#files[@]} + ${#extra[@]} ))
  local shards="${GPU_CHECK_SHARDS:-$(( (JOBS + n_all - 1) / n_all ))}"
  [ "$shards" -gt 4 ] && shards=4
  [ "$shards" -lt 1 ] && shards=1
  echo "  $n_all files, marked ones in $shards shard(s) each"
  local f s
  for f in "${files[@]}" "${extra[@]}"; do
    [ -f "$f" ] || continue
    local name sel=(-m gpu) n=$shards; name="$(basename "$f" .py)"
    if printf '%s\n' "${extra[@]}" | grep -qx "$f"; then
      sel=(); n=1; [ "$DRY_RUN" = 1 ] && sel=(--collect-only)
    fi
    for ((s = 0; s < n; s++)); do
      local tag="$name"; [ "$n" -gt 1 ] && tag="$name.$s"
      env TKS_REQUIRE_EXTENSION=1 TKS_TEST_SHARD="$s/$n" "$PY" -m pytest "${sel[@]}" "$f" -q -p no:cacheprovider -x \
        --tb=short --junitxml="$LOG_DIR/$tag.xml" > "$LOG_DIR/$tag.log" 2>&1 &
      pids+=("$!")
      files_run+=("$tag")
    done
  done
  # stop the children too when this step's timeout ends it
  trap 'kill "${pids[@]}" 2>/dev/null; exit 124' TERM
  for i in "${!files_run[@]}"; do
    local frc=0 flog
    wait "${pids[$i]}" || frc=$?
    # pytest's 5: no test collected (a file whose GPU tests were all deselected) is fine
    [ "$frc" -eq 5 ] && frc=0
    flog="$LOG_DIR/${files_run[$i]}.log"
    echo "  ${files_run[$i]}: exit $frc, $(tail -n 1 "$flog")"
    if [ "$frc" -ne 0 ]; then
      rc=1
      tail -n 30 "$flog" | sed 's/^/    /'
    fi
  done
  return "$rc"
}

bench() {  # bench PYTEST_ARGS...: one sequential pytest process (timings need the GPU alone)
  "$PY" -m pytest "$@" -q -p no:cacheprovider --benchmark-columns=median --tb=short
}

table() {
  "$PY" - "$RESULTS" "$DRY_RUN" <<'EOF' || echo "(table failed)"
"""GB/s and fraction of a device copy from the rows written so far (benchmarks.jsonl)."""
import json, os, re, sys

path, dry = sys.argv[1], sys.argv[2] == "1"
rows = {}
if os.path.exists(path):
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short by a timeout
            rows[(r.get("case"), r.get("shape"), r.get("group"), r.get("time"))] = r  # the last update wins
rows = list(rows.values())
print(f"benchmark rows: {len(rows)} in {path}")
if not rows:
    sys.exit(0)

def numel(shape):
    n = 1
    for d in re.findall(r"\d+", str(shape)):
        n *= int(d)
    return n

BIG = 1 << 26  # the 64M-element shapes (256 MiB in fp32); a dry run shows every shape
MODES = ("fwd", "bwd", "fwd+bwd", "infer")
lif = {}
for r in rows:
    words = str(r.get("case", "")).split()
    if len(words) != 4 or words[0] != "lif" or words[1] not in MODES or "(" in r.get("case", ""):
        continue
    if not dry and (not str(r.get("device", "")).startswith("cuda") or numel(r.get("shape")) < BIG):
        continue
    key = (words[2], words[3])
    lif.setdefault(key, {}).setdefault(words[1], []).append((float(r["copy_frac"]), float(r["GB/s"])))
if lif:
    print("\nLIF: GB/s (fraction of a device copy), the lowest over the "
          + ("smoke shapes (numbers mean nothing in a dry run)" if dry else "64M-element shapes"))
    print(f"{'backend':14s} {'dtype':9s}" + "".join(f" {m:>17s}" for m in MODES))
    for (impl, dtype), cells in sorted(lif.items()):
        line = f"{impl:14s} {dtype:9s}"
        for m in MODES:
            if m in cells:
                frac, gbs = min(cells[m])
                line += f" {gbs:8.1f} ({frac:4.2f})"
            else:
                line += f" {'-':>17s}"
        print(line)
def fraction_rows(title, selected):
    if selected:
        print(f"\n{title}: median ms, GB/s (fraction of a device copy)")
        for r in selected:
            print(f"  {r['case']:44s} {str(r.get('shape', '')):18s} {float(r.get('median_ms', 'nan')):9.3f} ms"
                  f" {float(r.get('GB/s', 'nan')):8.1f} ({float(r.get('copy_frac', 'nan')):4.2f})")

fraction_rows("LIF Triton backward, recomputing from x against the saved distance",
              [r for r in rows if str(r.get("group", "")).startswith("lif-triton-recompute")])
fraction_rows("Fused BN+LIF pair forward+backward (unfused: BN layer + Triton LIF)",
              [r for r in rows if str(r.get("case", "")).startswith(("bn+lif pair", "bn+plif pair"))])
plif = [r for r in rows if "plif/lif" in r]
if plif:
    print("\nPLIF / LIF forward+backward time (interleaved, median of rounds):")
    for r in plif:
        print(f"  {r['case']:28s} {r.get('shape', ''):22s} {r['plif/lif']}")
tks = [r for r in rows if str(r.get("case", "")).startswith("tks ")]
if tks:
    ref = {r.get("shape"): r["median_ms"] for r in tks if r.get("impl") == "torch"}
    print("\nTKS loss forward+backward: median ms, speed-up over the reference, peak memory / logits")
    for r in tks:
        up = f"{ref[r.get('shape')] / r['median_ms']:6.1f}x" if r.get("shape") in ref else "     -"
        print(f"  {r.get('impl', ''):7s} {r.get('shape', ''):16s} {r['median_ms']:9.3f} ms {up}  peak_x {r.get('peak_x', '')}")
EOF
}

export PY LOG_DIR DRY_RUN RESULTS JOBS MODE BUDGET
export ROOT
export -f preflight backends_check build_tools build gpu_tests bench

summary_printed=0
summary() {
  [ "$summary_printed" = 1 ] && return
  summary_printed=1
  echo
  echo "=== table ($MODE, $((SECONDS))s of ${BUDGET}s)"
  table
  echo
  echo "steps:"
  local s
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n st t <<<"$s"
    printf "  %-28s %-34s %4ss\n" "$n" "$st" "$t"
  done
  echo "log: $LOG; rows: $RESULTS"
  if [ "$FAILED" = 0 ]; then echo "gpu_check: all steps passed"; else echo "gpu_check: some steps FAILED"; fi
}

main() {
  echo "=== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $ROOT ($MODE)"
  trap 'echo; echo "=== interrupted"; FAILED=1; summary; exit 1' INT TERM
  step preflight 30 preflight

  # --- 2. build ------------------------------------------------------------------------
  local do_build="${GPU_CHECK_BUILD:-}"
  if [ -z "$do_build" ]; then
    if [ "$DRY_RUN" = 1 ] && "$PY" -c "import tks_kernels" 2>/dev/null; then do_build=0; else do_build=1; fi
  fi
  if [ "$do_build" = 1 ]; then
    # setup.py's knobs: CUDA kernels on the GPU (for its architecture), none in a dry run
    export MAX_JOBS="$JOBS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" TKS_CUDA=$((1 - DRY_RUN))
    [ "$DRY_RUN" = 0 ] && export TKS_CUDA_ARCHITECTURES="${GPU_CHECK_ARCH:-native}"
    step "build tools" 30 build_tools
    step build 180 build
  else
    skip_step build "tks_kernels imports already (GPU_CHECK_BUILD=1 to build)"
  fi
  step backends 30 backends_check

  # --- 3. correctness of every GPU backend -----------------------------------------------
  step "gpu tests (parallel)" 150 gpu_tests

  # --- 4. bandwidth against a device copy ------------------------------------------------
  rm -f "$RESULTS"
  step "bench lif/plif/tks" 100 bench benchmarks/test_bench_lif_triton.py::test_lif_triton \
    benchmarks/test_bench_lif_cuda.py::test_lif_cuda benchmarks/test_bench_plif.py benchmarks/test_bench_tks.py
  step "bench bn+lif pair" 40 bench benchmarks/test_bench_bn_lif_gpu.py
  step "bench recompute vs saved" 40 bench benchmarks/test_bench_lif_triton.py::test_lif_triton_recompute_vs_saved \
    benchmarks/test_bench_lif_cuda.py::test_lif_cuda_recompute_vs_saved

  # --- 5. the rest -----------------------------------------------------------------------
  step "bench launch configs" 60 bench benchmarks/test_bench_lif_triton.py::test_lif_triton_launch_configs \
    benchmarks/test_bench_lif_triton.py::test_lif_triton_backward_x_configs
  if [ "$DRY_RUN" = 1 ]; then
    skip_step ctest "dry run (CI runs ctest itself)"
  elif ! command -v cmake >/dev/null 2>&1; then
    skip_step ctest "cmake not found"
  elif [ $((DEADLINE - SECONDS)) -lt 90 ]; then
    skip_step ctest "less than 90s left"
  else
    local arch cm="$ROOT/build/gpu_check_cmake"
    arch="$("$PY" -c 'import torch; print("%d%d" % torch.cuda.get_device_capability(0))' 2>/dev/null || echo 90)"
    step "ctest (cuda vs host math)" 120 bash -c "
      cmake -S '$ROOT' -B '$cm' -DCMAKE_BUILD_TYPE=Release -DTKS_CUDA=ON -DTKS_CUDA_ARCHITECTURES=$arch >/dev/null &&
      cmake --build '$cm' -j '$JOBS' >/dev/null && ctest --test-dir '$cm' --output-on-failure"
  fi
  summary
  [ "$FAILED" = 0 ]
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
