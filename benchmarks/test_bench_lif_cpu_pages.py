"""CPU LIF forward+backward at PyTorch's default settings and with huge pages, in one run.

Issue 15's measurement: LIF forward+backward on [8, 32, 32768] (fp32, bf16, fp16; 2 threads)
for the fused CPU kernel, SpikingJelly 2.0's multi-step CPU LIFNode, the plain-PyTorch
reference, and a tensor copy of the same size, each page setting in its own process
(PyTorch reads ``THP_MEM_ALLOC_ENABLE`` at its first allocation):

- ``thp=0``: **the default** (4 KiB pages from PyTorch's default CPU allocator; a fresh
  large output faults in page by page). Our kernels ask for huge pages on their own large
  outputs (csrc/cpu/huge_pages.h), which works wherever the system's THP mode is
  ``madvise`` or ``always``;
- ``cpu``: our kernel as it runs by default, its large outputs on buffers reused from the
  CPU output cache (tks_kernels/ops/_cpu_cache.py), so no page is faulted in or zeroed
  after the first rounds; ``cpu_no_cache``: the same calls with that cache bypassed (every
  output fresh from PyTorch's allocator, as before the cache), alternating with the rest;
- ``cpu_saved_d``: the same kernel with the saved-distance path (forward writes d,
  backward reads it: the design before issue 15, still used at T > 4096);
- ``thp=1``: PyTorch backs every large tensor with huge pages (its documented CPU tuning),
  which speeds the peers' many temporaries too.

Implementations run round-robin inside each process (one timed call of each per round,
median of the rounds), so a change in the machine's load hits all of them alike; the
rows carry the 1-minute load average. ``GB/s``: what a perfect kernel moves, 20 bytes per
neuron and step in fp32 for forward+backward (forward reads x, writes spikes; backward
reads x and grad_spikes, writes grad_x), 10 in bf16, over the time. Three copies give the
rate it is compared with (read + write of one [T, *] tensor):

- ``copy_frac``: ``dst.copy_(src)`` into a prefaulted ``dst`` of the shape itself. In bf16
  its 16 + 16 MiB fit the 32 MiB L3 of the machine this was tuned on, so that rate is
  partly a cache's, not memory's;
- ``copy_frac_fresh``: ``src.clone()``, a fresh output every call from the allocator our
  outputs come from, as a training step allocates them (fp32's 32 MiB: fresh pages and
  their faults every call; bf16's 16 MiB: blocks glibc reuses from its heap);
- ``copy_frac_dram``: a prefaulted copy of 64 MiB whatever the dtype (bf16: twice the
  elements), above the L3: the memory's own copy rate;
- ``copy_frac_dram_cpu``: the same from CPU seconds (``cpu_ms``, all threads) instead of
  wall time, steadier on a loaded machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import tks_kernels

from conftest import DEVICE, SMOKE, THREADS, ROUNDS, has_module, write_row

pytestmark = [
    pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU benchmarks (TKS_BENCH_DEVICE is not cpu)"),
    pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0], reason="the native CPU library is not built"),
]

SHAPE = (2, 4, 512) if SMOKE else (8, 32, 32768)

_CHILD = textwrap.dedent(r"""
    import json, os, sys, time
    import torch
    torch.set_num_threads(int(sys.argv[1]))
    rounds, shape, with_sj = int(sys.argv[2]), tuple(json.loads(sys.argv[3])), sys.argv[4] == "1"
    from tks_kernels.functional import lif_multistep
    settings = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False)
    out = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(shape).to(dtype).requires_grad_()
        g = torch.randn(shape).to(dtype)
        def ours(backend):
            def f():
                s, _ = lif_multistep(x, backend=backend, surrogate="sigmoid", **settings)
                torch.autograd.grad(s, x, g)
            return f
        def saved_path():
            # the saved-d path (as at T > recompute_max_steps), for the before/after ratio
            from tks_kernels.ops.lif import cpu as lif_cpu
            steps, lif_cpu._MAX_STEPS = lif_cpu._MAX_STEPS, {}
            try:
                ours("cpu")()
            finally:
                lif_cpu._MAX_STEPS = steps
        def no_cache():
            # the output cache bypassed for these calls only (its buffers stay for "cpu")
            from tks_kernels.ops import _cpu_cache
            floor, _cpu_cache.MIN_BYTES = _cpu_cache.MIN_BYTES, 1 << 62
            try:
                ours("cpu")()
            finally:
                _cpu_cache.MIN_BYTES = floor
        impls = {"cpu": ours("cpu"), "cpu_no_cache": no_cache, "cpu_saved_d": saved_path, "torch": ours("torch")}
        if with_sj:
            from spikingjelly.activation_based import neuron, surrogate
            node = neuron.LIFNode(surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m", **settings)
            def sj():
                node.reset()
                torch.autograd.grad(node(x), x, g)
            impls["spikingjelly"] = sj
        src = torch.randn(shape).to(dtype)
        dst = torch.empty_like(src)
        impls["copy"] = lambda: dst.copy_(src)
        # A fresh output each call, from the allocator our outputs come from (as a training
        # step allocates them): 32 MiB is above glibc's largest mmap threshold, so fp32 gets
        # fresh pages (faults) every call, while 16 MiB blocks are reused from the heap.
        impls["copy_fresh"] = lambda: src.clone()
        # 64 MiB in and out whatever the dtype: above the 32 MiB L3, where the bf16 copy of
        # the shape itself (16 + 16 MiB) is partly cache-resident. Timed per shape's bytes.
        big = torch.randn((2 * shape[0],) + shape[1:]).to(dtype) if dtype != torch.float32 else src
        big_dst = torch.empty_like(big)
        impls["copy_dram"] = lambda: big_dst.copy_(big)
        times = {k: [] for k in impls}
        cpu_times = {k: [] for k in impls}
        for f in impls.values():
            f()
        for _ in range(rounds):
            for k, f in impls.items():
                c0, t0 = time.process_time(), time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
                cpu_times[k].append(time.process_time() - c0)
        for k, ts in times.items():
            ts.sort()
            cs = sorted(cpu_times[k])
            out.append({"dtype": str(dtype)[6:], "impl": k, "median_ms": ts[len(ts) // 2] * 1e3,
                        "min_ms": ts[0] * 1e3, "cpu_ms": cs[len(cs) // 2] * 1e3})
    print(json.dumps({"rows": out, "load": os.getloadavg()[0]}))
""")


def _measure(thp: str, rounds: int):
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE=thp)
    args = [sys.executable, "-c", _CHILD, str(THREADS), str(rounds), json.dumps(SHAPE),
            "1" if has_module("spikingjelly") else "0"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_lif_cpu_fwd_bwd_both_page_settings(record_property):
    n = torch.Size(SHAPE).numel()
    rounds = max(ROUNDS, 1 if SMOKE else 9)
    lines = []
    for thp in ("0", "1"):
        res = _measure(thp, rounds)
        rows = {(r["dtype"], r["impl"]): r for r in res["rows"]}
        for (dtype, impl), r in rows.items():
            esize = 4 if dtype == "float32" else 2
            copy_bytes = {"copy": 2 * n * esize, "copy_fresh": 2 * n * esize, "copy_dram": 2 * n * 4}
            copy_rate = {k: b / (rows[(dtype, k)]["median_ms"] / 1e3) for k, b in copy_bytes.items()}
            row = {"case": f"lif fwd+bwd {impl} {dtype} (pages)", "impl": impl, "dtype": dtype, "shape": str(SHAPE),
                   "thp": thp, "default_setting": thp == "0", "threads": THREADS, "load1": round(res["load"], 2),
                   "median_ms": round(r["median_ms"], 2), "min_ms": round(r["min_ms"], 2),
                   "cpu_ms": round(r["cpu_ms"], 2)}
            if impl in copy_bytes:
                row["GB/s"] = round(copy_rate[impl] / 1e9, 2)
            else:
                moved = 5 * n * esize  # the recomputing design's minimum, for every implementation
                rate = moved / (r["median_ms"] / 1e3)
                row["GB/s"] = round(rate / 1e9, 2)
                row["copy_frac"] = round(rate / copy_rate["copy"], 3)
                row["copy_frac_fresh"] = round(rate / copy_rate["copy_fresh"], 3)
                row["copy_frac_dram"] = round(rate / copy_rate["copy_dram"], 3)
                # The same from CPU time (all threads), steadier than wall time on a loaded
                # machine: a kernel's share of the copy's CPU seconds per byte.
                dram_cpu_rate = copy_bytes["copy_dram"] / rows[(dtype, "copy_dram")]["cpu_ms"]
                row["copy_frac_dram_cpu"] = round(moved / r["cpu_ms"] / dram_cpu_rate, 3)
                for peer in ("spikingjelly", "torch", "cpu_no_cache"):
                    if impl == "cpu" and (dtype, peer) in rows:
                        row[f"x_vs_{peer}"] = round(rows[(dtype, peer)]["median_ms"] / r["median_ms"], 2)
            write_row(row)
            lines.append(row)
    for row in lines:
        print(json.dumps(row))
    record_property("rows", lines)
