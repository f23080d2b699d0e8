"""Shared benchmark harness (``pytest benchmarks/``).

Every case reports, besides pytest-benchmark's times, in ``benchmark.extra_info``:
``bytes``: the bytes a perfect kernel must move; ``GB/s``: bytes / median time;
``copy_frac``: that rate as a fraction of a tensor copy of the same size measured
in the same run on the same device; ``saved_bytes``: bytes saved for backward.
Each row is appended to a JSON-lines file the moment it is measured (a run cut short
keeps every number so far): ``TKS_BENCH_RESULTS``, default ``$OUT/benchmarks.jsonl``
when ``OUT`` is set (the GPU machine), else ``build/benchmarks/results.jsonl``; never
the source tree. A table of the run's rows is printed at the end.

Environment: ``TKS_BENCH_DEVICE`` (cpu|cuda, default cuda when available),
``TKS_BENCH_THREADS`` (CPU threads, default 2), ``TKS_BENCH_ROUNDS`` (default 5),
``TKS_BENCH_SMOKE=1`` (tiny shapes, one round: checks that every case and the result
file work, as ``gpu_check.sh --dry-run`` does in CI; its numbers mean nothing),
``THP_MEM_ALLOC_ENABLE`` (1: PyTorch's CPU allocator backs large tensors with transparent
huge pages, its documented CPU tuning; default 0 here, PyTorch's own default: 4 KiB pages,
which is what users get). Fresh 4 KiB pages fault in on first touch, which on a VM can
cost more than a kernel itself; our CPU kernels advise huge pages on their own large
outputs (csrc/cpu/huge_pages.h), the peers' temporaries get none. The setting applies to
every implementation in a run alike and each row records it (``thp``);
``test_bench_lif_cpu_pages.py`` measures both settings in one run.
"""
from __future__ import annotations

import os

# Read by PyTorch at its first allocation: set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "0")

import functools
import importlib.util
import json
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest
import torch

DEVICE = torch.device(os.environ.get("TKS_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
THREADS = int(os.environ.get("TKS_BENCH_THREADS", "2"))
SMOKE = os.environ.get("TKS_BENCH_SMOKE", "0") not in ("", "0")
ROUNDS = int(os.environ.get("TKS_BENCH_ROUNDS", "1" if SMOKE else "5"))
RESULTS: List[Dict] = []
RESULTS_PATH = Path(os.environ.get("TKS_BENCH_RESULTS") or (
    Path(os.environ["OUT"]) / "benchmarks.jsonl" if os.environ.get("OUT")
    else Path(__file__).resolve().parents[1] / "build" / "benchmarks" / "results.jsonl"))

# The headline CPU shape, and GPU shapes up to 64M elements (smoke: tiny ones).
CPU_LIF_SHAPES = [(2, 4, 512)] if SMOKE else [(8, 32, 32768)]
GPU_LIF_SHAPES = [(2, 4, 512)] if SMOKE else [(4, 64, 65536), (8, 32, 262144), (32, 16, 131072),
                                                           (8, 64, 131072)]
LIF_SHAPES = GPU_LIF_SHAPES if DEVICE.type == "cuda" else CPU_LIF_SHAPES
# Smoke runs on the CPU also run the Triton cases, under the interpreter (when
# TRITON_INTERPRET=1 was set before the run), so the GPU-only benchmark code is exercised.
TRITON_ON_CPU = SMOKE and DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def pytest_configure(config):
    if DEVICE.type == "cpu":
        torch.set_num_threads(THREADS)


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def median_seconds(fn: Callable[[], object], rounds: int = ROUNDS, warmup: int = 1) -> float:
    """Median wall time of fn() over `rounds` runs (device-synchronised)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


@functools.lru_cache(maxsize=None)
def copy_bytes_per_second(nbytes: int, device: str = str(DEVICE)) -> float:
    """Rate of a device copy of an nbytes tensor (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = median_seconds(lambda: dst.copy_(src), rounds=max(ROUNDS, 5))
    return 2 * nbytes / t


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of distinct storages autograd saves for backward while running fn()."""
    seen = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def run_case(benchmark, fn: Callable[[], object], *, name: str, bytes_moved: int, saved: int | None = None, **info):
    """Time fn with pytest-benchmark and record throughput against a copy."""
    fn()
    sync()

    def timed():
        fn()
        sync()

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    copy = copy_bytes_per_second(max(bytes_moved // 2, 4096))
    row = {
        "case": name,
        "device": str(DEVICE),
        "median_ms": round(median * 1e3, 3),
        "GB/s": round(bytes_moved / median / 1e9, 2),
        "copy_frac": round(bytes_moved / median / copy, 3),
        "saved_bytes": saved if saved is not None else "",
        "thp": os.environ.get("THP_MEM_ALLOC_ENABLE", "0") if DEVICE.type == "cpu" else "",
        **info,
    }
    benchmark.extra_info.update(row)
    RESULTS.append(row)
    write_row(row)
    return row


def update_row(benchmark, row: Dict, **fields) -> None:
    """Add fields to a row already written (a target verdict, a ratio): into the row,
    pytest-benchmark's extra_info, and the result file (the row again, whole; readers
    keep the last line of each case and time)."""
    row.update(fields)
    benchmark.extra_info.update(fields)
    write_row(row)


def write_row(row: Dict) -> None:
    """Append one measured row to RESULTS_PATH now (JSON lines, flushed), with the time
    and the pytest case; later additions to the row (targets, ratios) come as an update
    line with the same ``case`` and ``time``."""
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    row.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
    with open(RESULTS_PATH, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()


def _add_speedups():
    """Within a group, each row's speed relative to the reference and to the peers."""
    groups: Dict[str, Dict[str, float]] = {}
    for r in RESULTS:
        if "group" in r and "impl" in r:
            groups.setdefault(r["group"], {})[r["impl"]] = r["median_ms"]
    for r in RESULTS:
        times = groups.get(r.get("group"), {})
        if r.get("impl") in times and len(times) > 1:
            r["speedup"] = ", ".join(
                f"{times[other] / r['median_ms']:.1f}x vs {other}" for other in times if other != r["impl"]
            )


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    _add_speedups()
    keys = []
    for r in RESULTS:
        keys += [k for k in r if k not in keys]
    tr = terminalreporter
    tr.section("tks_kernels benchmarks (GB/s = bytes a perfect kernel moves / median time)")
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in RESULTS)) for k in keys}
    tr.write_line("  ".join(k.ljust(widths[k]) for k in keys))
    for r in RESULTS:
        tr.write_line("  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys))
    tr.write_line(f"rows also in {RESULTS_PATH}")


@pytest.fixture
def device():
    return DEVICE
