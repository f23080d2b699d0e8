"""TKS loss: the fused kernel against the plain-PyTorch reference, forward+backward.

Shapes [T, B, C] in {4, 8} x {128, 256} x {10, 100, 1000}, fp32; fused: ``cpu`` on the
CPU, ``triton`` and ``cuda`` on the GPU. Each case records the
median time and ``peak_bytes``: the peak of tensor memory allocated during one
forward+backward above what existed before (the logits), from PyTorch's memory
profiler on the CPU and ``torch.cuda.max_memory_allocated`` on the GPU; ``peak_x``
is that peak in units of the logits' size. conftest.py adds the speedup of each
implementation over the others of its group (same shape) to the table.

Issue targets: fused at least 2x faster than the reference on the CPU (2 threads) and
3x on the GPU; peak memory no more than the gradient (peak_x <= 1: the logits and
their gradient are all that is held).
"""
from __future__ import annotations

import itertools

import pytest
import torch

import tks_kernels
from tks_kernels import functional

from conftest import DEVICE, SMOKE, TRITON_ON_CPU, run_case, sync

SHAPES = [(2, 8, 10)] if SMOKE else list(itertools.product((4, 8), (128, 256), (10, 100, 1000)))
FUSED = ("triton", "cuda") if DEVICE.type == "cuda" else ("cpu",) + (("triton",) if TRITON_ON_CPU else ())


def peak_extra_bytes(fn) -> int:
    """Peak tensor bytes allocated on DEVICE while fn() runs, above what existed before."""
    sync()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    cur = peak = 0
    for _, action, (key, _), size in prof._memory_profile().timeline:
        if key.device.type != "cpu":
            continue
        if action.name == "CREATE":
            cur += size
        elif action.name == "DESTROY":
            cur -= size
        peak = max(peak, cur)
    return peak


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", ("torch",) + FUSED)
def test_tks_loss_forward_backward(benchmark, shape, impl):
    ok, why = tks_kernels.available_backends()[impl]
    if not ok:
        pytest.skip(why)
    T, B, C = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(DEVICE).requires_grad_()
    y = torch.randint(0, C, (B,), generator=g).to(DEVICE)

    def step():
        x.grad = None
        functional.tks_loss(x, y, lam=0.5, temperature=3.0, backend=impl).backward()

    step()
    x.grad = None
    nbytes = x.numel() * x.element_size()
    peak = peak_extra_bytes(step)
    info = dict(group=f"tks-{DEVICE.type} {shape}", impl=impl, shape=str(shape), peak_bytes=peak,
                peak_x=round(peak / nbytes, 3))
    # A perfect fused kernel reads the logits once and writes their gradient once.
    run_case(benchmark, step, name=f"tks fwd+bwd {impl}", bytes_moved=2 * nbytes, **info)
