"""The fused BN + LIF pair on the GPU (issue 16): forward + backward of tdBN + LIF on a
ResNet-19 layer's activation (T=4, B=64, C=128, 32x32: 33.5M elements), fused with the
Triton and the CUDA kernels against the unfused layers (``nn.BatchNorm2d`` + the Triton
LIF), fp32 and bf16, NCHW and channels_last, in one run; the same with the parametric LIF
(``learnable_tau``, NCHW; a backend without a fused BN + PLIF kernel is skipped).

Bytes a perfect fused kernel moves (n = bytes of y): the statistics read y (n), the
forward reads y and writes the spikes (2n), the backward reads y and dL/dspikes and
writes dL/dx (3n; its membrane scratch stays on chip or in L2), and BN's input gradient
reads dL/dx and y and writes dL/dy (3n): 9n, against a device copy of the same size
(``copy_frac``). The unfused layers move more (BN writes its output, LIF saves it, BN's
backward reads dL/dx twice); their row uses the same 9n, so ``copy_frac`` compares time.
``saved_bytes``: what autograd keeps for backward.

Runs where the benchmarks' DEVICE is cuda; a smoke run on the CPU with Triton's
interpreter (``gpu_check.sh --dry-run``) runs the Triton cases on a tiny shape.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import tks_kernels
from tks_kernels import models
from tks_kernels.ops import bn_lif as bn_lif_ops
from tks_kernels.models.layers import SeqToANN, bn_lif_forward, make_lif

from conftest import DEVICE, SMOKE, TRITON_ON_CPU, run_case, saved_bytes, update_row

pytestmark = pytest.mark.skipif(DEVICE.type != "cuda" and not TRITON_ON_CPU,
                                reason="the GPU BN + LIF benchmarks run on CUDA (or as a smoke run under TRITON_INTERPRET)")

SHAPE = (2, 2, 8, 8, 8) if SMOKE else (4, 64, 128, 32, 32)
IMPLS = ["unfused", "triton", "cuda"]


def _available(backend: str) -> bool:
    ok = tks_kernels.available_backends()[backend][0]
    return ok and (backend != "cuda" or DEVICE.type == "cuda")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_bn_lif_pair_gpu(benchmark, impl, dtype, layout):
    _bench_pair(benchmark, impl, dtype, layout, plif=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_bn_plif_pair_gpu(benchmark, impl, dtype):
    _bench_pair(benchmark, impl, dtype, "nchw", plif=True)


def _bench_pair(benchmark, impl, dtype, layout, plif):
    lif_backend = "triton" if impl == "unfused" else impl
    if not _available(lif_backend):
        pytest.skip(f"backend {lif_backend} unavailable: {tks_kernels.available_backends()[lif_backend][1]}")
    if plif and impl != "unfused" and bn_lif_ops.fused_backend(impl, DEVICE, plif=True) != impl:
        pytest.skip(f"backend {impl} has no fused BN + PLIF kernel")
    torch.manual_seed(0)
    T, B, C, H, W = SHAPE
    bn = SeqToANN(nn.BatchNorm2d(C)).to(DEVICE)
    neuron = make_lif(dict(models.PAPER_NEURON, learnable_tau=True) if plif else models.PAPER_NEURON,
                      lif_backend).to(DEVICE)
    y = torch.randn(T * B, C, H, W, device=DEVICE).mul_(0.5).add_(0.3).to(dtype)
    if layout == "channels_last":
        y = y.contiguous(memory_format=torch.channels_last)
    y = y.unflatten(0, (T, B)).requires_grad_()
    gs = torch.randn(y.shape, device=DEVICE).to(dtype)
    fuse = impl != "unfused"

    def forward():
        s = _pair(bn, neuron, y, fuse)
        neuron.reset()
        return s

    def run():
        s = forward()
        s.backward(gs)
        y.grad = None
        bn[0].weight.grad = bn[0].bias.grad = None
        if plif:
            neuron.w.grad = None

    saved = saved_bytes(forward)
    n = y.numel() * y.element_size()
    dt = "fp32" if dtype == torch.float32 else "bf16"
    what = "bn+plif" if plif else "bn+lif"
    row = run_case(benchmark, run, name=f"{what} pair fwd+bwd {impl} {dt} {layout}", bytes_moved=9 * n, saved=saved,
                   group=f"{what.replace('+', '_')} gpu {dt} {layout}", impl=impl, dtype=dt, layout=layout,
                   shape="x".join(map(str, SHAPE)))
    update_row(benchmark, row, best_ms=round(benchmark.stats.stats.min * 1e3, 3))


def _pair(bn, neuron, y, fuse):
    """BN + LIF of y [T, B, C, H, W]: fused (the neuron's backend's fused op) or the
    separate layers (BN in y's dtype: BatchNorm2d's parameters stay fp32, as under autocast)."""
    if fuse:
        return bn_lif_forward(bn, neuron, y, fuse=True)
    return neuron(bn(y))
