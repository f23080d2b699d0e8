"""Per-call overhead of the native ops on a small input ([1, 1, 1024] fp32, CPU): the
public function (what a model calls: argument checks, backend choice, the eager call of
the kernel), the torch.library op through the dispatcher (what a compiled graph calls),
and forward+backward. The kernel itself is ~1 us here, so these times are overhead.

Issue (native core): the public call may not cost more than 10 us over the torch-extension
build it replaced. Compare with the previous build's numbers in the same run when both are
at hand (see the note of that issue for the before/after figures).
"""
from __future__ import annotations

import pytest
import torch

import tks_kernels
from tks_kernels import functional as F

pytestmark = pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0],
                                reason="the native CPU library did not load")

SHAPE = (1, 1, 1024)


@pytest.fixture
def x():
    return torch.randn(SHAPE)


def test_lif_public_call_no_grad(benchmark, x):
    benchmark.extra_info.update(shape=str(SHAPE), what="functional.lif_multistep, no grad")
    benchmark(lambda: F.lif_multistep(x, backend="cpu"))


def test_lif_op_through_dispatcher(benchmark, x):
    benchmark.extra_info.update(shape=str(SHAPE), what="torch.ops.tks_kernels.lif_forward")
    args = (x, None, 2.0, True, 1.0, 0.0, False, 0, 4.0, False, False, False)
    benchmark(lambda: torch.ops.tks_kernels.lif_forward(*args))


def test_lif_forward_backward(benchmark, x):
    benchmark.extra_info.update(shape=str(SHAPE), what="lif_multistep + backward")
    xg = x.clone().requires_grad_()

    def step():
        s, _ = F.lif_multistep(xg, backend="cpu")
        torch.autograd.grad(s.sum(), xg)

    benchmark(step)


def test_plif_forward_backward(benchmark, x):
    benchmark.extra_info.update(shape=str(SHAPE), what="ParametricLIF + backward")
    layer = tks_kernels.ParametricLIF(step_mode="m", backend="cpu")
    xg = x.clone().requires_grad_()

    def step():
        layer.reset()
        torch.autograd.grad(layer(xg).sum(), (xg, layer.w))

    benchmark(step)


def test_tks_loss_forward_backward(benchmark):
    benchmark.extra_info.update(shape="[4, 8, 10]", what="tks_loss + backward")
    logits = torch.randn(4, 8, 10, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    benchmark(lambda: torch.autograd.grad(F.tks_loss(logits, y, lam=0.5, backend="cpu"), logits))
