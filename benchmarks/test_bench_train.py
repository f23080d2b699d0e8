"""Training throughput of ResNet-19 (tdBN, the paper's neuron) on 32x32 input: one AdamW
step (forward, CE on the mean logits, backward, update) with our LIF on the fused CPU
backend, on the reference backend, and with SpikingJelly 2.0's LIFNode (step_mode='m',
the same neuron: tau=2, decay_input, v_threshold=0.5, hard reset to 0, detached reset,
piecewise-quadratic surrogate alpha=2) swapped in for every LIF of the same model.

Reported: ``samples/s`` (images per second; each image runs T steps). ``bytes`` is what
a perfect LIF kernel moves over all the model's neurons in the step (forward+backward,
6 bytes x 4 per neuron-step), so ``GB/s`` and ``copy_frac`` measure the neurons' share
only loosely; the convolutions dominate at full width. ``width=0.25`` shrinks the
channels 4x (16x fewer conv FLOPs, 4x fewer neurons), where the neurons weigh more.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tks_kernels
from tks_kernels import models

from conftest import DEVICE, has_module, run_case, update_row

pytestmark = pytest.mark.skipif(DEVICE.type != "cpu", reason="the training-throughput benchmark runs on the CPU")

B, T, SIZE = 4, 2, 32
IMPLS = ["cpu", "torch", "spikingjelly"]


def swap_in_spikingjelly(model: torch.nn.Module) -> int:
    """Replace every tks_kernels.LIF of ``model`` by SpikingJelly's LIFNode with its settings."""
    from spikingjelly.activation_based import neuron, surrogate

    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, tks_kernels.LIF):
                assert child.surrogate == "piecewise_quadratic"
                # SpikingJelly's PiecewiseQuadratic: g'(x) = alpha - alpha^2 |x| on |x| <= 1/alpha, ours too.
                sj = neuron.LIFNode(tau=child.tau, decay_input=child.decay_input, v_threshold=child.v_threshold,
                                    v_reset=child.v_reset, detach_reset=child.detach_reset,
                                    surrogate_function=surrogate.PiecewiseQuadratic(alpha=child.alpha),
                                    step_mode="m")
                setattr(parent, name, sj)
                count += 1
    return count


def _neuron_elements(model, x) -> int:
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        total += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, tks_kernels.LIF)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("width", [1.0, 0.25], ids=lambda w: f"width{w}")
@pytest.mark.parametrize("impl", IMPLS)
def test_resnet19_train_step(benchmark, impl, width):
    if impl == "cpu" and not tks_kernels.available_backends()["cpu"][0]:
        pytest.skip("the native CPU library did not load")
    if impl == "spikingjelly" and not has_module("spikingjelly"):
        pytest.skip("spikingjelly is not installed")
    torch.manual_seed(0)
    model = models.create("resnet19", num_classes=10, in_channels=3, T=T, width=width,
                          backend="torch" if impl == "spikingjelly" else impl)
    x = torch.randn(B, 3, SIZE, SIZE)
    y = torch.randint(0, 10, (B,))
    neuron_steps = _neuron_elements(model, x)
    if impl == "spikingjelly":
        assert swap_in_spikingjelly(model) == 18
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step():
        loss = F.cross_entropy(model(x).mean(0), y)  # the model resets its neurons per call
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    row = run_case(benchmark, step, name=f"resnet19 w{width} train {impl}", bytes_moved=6 * 4 * neuron_steps,
                   group=f"resnet19-train width{width}", impl=impl, shape=f"B={B} T={T} {SIZE}x{SIZE}")
    # The best round too: on a shared machine it is the steadier number.
    update_row(benchmark, row, **{"samples/s": round(B / (row["median_ms"] / 1e3), 2),
                                  "best samples/s": round(B / benchmark.stats.stats.min, 2)})
