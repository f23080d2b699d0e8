"""ParametricLIF against LIF: forward+backward on the same shape and backend.

Issue target: the learnable time constant costs at most 15% more than LIF (PLIF's
backward also sums dL/dk over every neuron and step, in the same pass; forward saves
the same bytes). CPU: [8, 32, 32768] fp32 with the benchmarks' threads (2); triton and
cuda on the GPU shapes when the benchmarks' DEVICE is cuda.

Each pair is timed as two cases of one group (the summary's ``speedup`` column), and
once more interleaved (``ratio`` case: LIF and PLIF alternate for ROUNDS rounds, the
median of the per-round ratios PLIF/LIF is ``plif/lif``), which is steadier on a
shared, noisy machine.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

import tks_kernels
from tks_kernels.functional import lif_multistep
from tks_kernels.ops import plif as plif_ops

from conftest import (
    CPU_LIF_SHAPES, DEVICE, GPU_LIF_SHAPES, ROUNDS, TRITON_ON_CPU, run_case, saved_bytes, sync, update_row,
)

SETTINGS = dict(v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False)
BACKENDS = (["cpu"] + (["triton"] if TRITON_ON_CPU else [])) if DEVICE.type == "cpu" else ["triton", "cuda"]
SHAPES = CPU_LIF_SHAPES if DEVICE.type == "cpu" else GPU_LIF_SHAPES[:2]


def _nbytes(shape, dtype, backend="cpu"):
    """Bytes a perfect forward+backward moves: forward reads x, writes spikes and the
    saved value; backward reads grad and saved value, writes grad_x (as LIF). Triton
    with T <= its RECOMPUTE_MAX_STEPS recomputes instead: nothing saved but x, backward
    reads x once per chunk on average (ops/lif/triton.py)."""
    n = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
    if backend == "triton":
        from tks_kernels.ops.lif import triton as lif_triton

        T = shape[0]
        if T <= lif_triton.RECOMPUTE_MAX_STEPS:
            chunks = -(-T // lif_triton.recompute_chunk(T))
            return int((4 + (chunks + 1) / 2) * n)
    return 6 * n


def _skip_unavailable(backend):
    ok, reason = tks_kernels.available_backends()[backend]
    if not ok:
        pytest.skip(reason)


def _lif_step(x, g, backend):
    def step():
        s, _ = lif_multistep(x, backend=backend, tau=2.0, surrogate="sigmoid", **SETTINGS)
        torch.autograd.grad(s, x, g)
    return step


def _plif_step(x, g, backend):
    w = torch.nn.Parameter(torch.tensor(0.0, device=x.device))  # tau = 2
    cfg = plif_ops.make_config(surrogate="sigmoid", **SETTINGS)

    def step():
        s, _ = plif_ops.plif_multistep(x, None, w, cfg, backend=backend)
        torch.autograd.grad(s, (x, w), g)
    return step


def _inputs(shape, dtype=torch.float32):
    x = torch.randn(shape, device=DEVICE, dtype=dtype).requires_grad_()
    return x, torch.randn(shape, device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("impl", ["lif", "plif"])
def test_plif_vs_lif_forward_backward(benchmark, impl, backend, shape):
    _skip_unavailable(backend)
    x, g = _inputs(shape)
    fn = (_lif_step if impl == "lif" else _plif_step)(x, g, backend)
    if impl == "lif":
        saved = saved_bytes(lambda: lif_multistep(x, backend=backend, **SETTINGS))
    else:
        w = torch.zeros((), device=DEVICE, requires_grad=True)
        saved = saved_bytes(lambda: plif_ops.plif_multistep(x, None, w, plif_ops.make_config(**SETTINGS), backend=backend))
    run_case(benchmark, fn, name=f"{impl} fwd+bwd {backend}", bytes_moved=_nbytes(shape, x.dtype, backend), saved=saved,
             group=f"plif-vs-lif {backend} {shape}", impl=impl, shape=str(shape))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_plif_over_lif_ratio(benchmark, backend, shape):
    _skip_unavailable(backend)
    x, g = _inputs(shape)
    lif, plif = _lif_step(x, g, backend), _plif_step(x, g, backend)
    ratios = []

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    def pair():
        a = timed(lif)
        b = timed(plif)
        ratios.append(b / a)

    lif(), plif()
    sync()
    row = run_case(benchmark, pair, name=f"plif/lif pair {backend}", bytes_moved=2 * _nbytes(shape, x.dtype, backend),
                   impl="lif+plif", shape=str(shape))
    rounds = ratios[-ROUNDS:]  # the timed rounds (run_case runs pair() before timing too)
    update_row(benchmark, row, **{"plif/lif": round(statistics.median(rounds), 3),
                                  "plif/lif rounds": " ".join(f"{r:.2f}" for r in rounds)})
