"""CPU LIF: the fused C++ kernel against the reference and the peers, forward+backward.

Issue target: on [T=8, 32, 32768] fp32 with 2 threads, the fused CPU forward+backward is
at least 8x faster than the reference and than SpikingJelly 2.0's CPU LIFNode.
"""
from __future__ import annotations

import pytest
import torch

import tks_kernels
from tks_kernels.functional import lif_multistep

from conftest import CPU_LIF_SHAPES, DEVICE, has_module, run_case, saved_bytes

pytestmark = [
    pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU benchmarks (TKS_BENCH_DEVICE is not cpu)"),
    pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0], reason="the native CPU library did not load"),
]

SETTINGS = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False)


def _nbytes(shape, dtype, mode):
    """Bytes a perfect kernel moves: forward reads x, writes spikes and the saved state
    (+ v_last); backward reads grad and saved state, writes grad_x."""
    n = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
    return {"fwd": 3 * n, "bwd": 3 * n, "fwd+bwd": 6 * n, "infer": 2 * n}[mode]


def _ours(x, g, backend):
    def step():
        s, v = lif_multistep(x, backend=backend, surrogate="sigmoid", **SETTINGS)
        torch.autograd.grad(s, x, g)
    return step


def _spikingjelly(x, g):
    from spikingjelly.activation_based import neuron, surrogate

    lif = neuron.LIFNode(surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m", **SETTINGS)

    def step():
        lif.reset()
        s = lif(x)
        torch.autograd.grad(s, x, g)
    return step


def _snntorch(x, g):
    import snntorch

    # snnTorch's Leaky with beta = 1 - 1/tau and subtractive reset: the same neuron
    # without the input decay (decay_input=False, soft reset); one Python call per step.
    lif = snntorch.Leaky(beta=1 - 1 / SETTINGS["tau"], threshold=SETTINGS["v_threshold"], reset_mechanism="subtract")

    def step():
        mem = lif.init_leaky()
        spikes = []
        for t in range(x.shape[0]):
            spk, mem = lif(x[t], mem)
            spikes.append(spk)
        torch.autograd.grad(torch.stack(spikes), x, g)
    return step


@pytest.mark.parametrize("shape", CPU_LIF_SHAPES, ids=str)
@pytest.mark.parametrize("impl", ["cpu", "torch", "spikingjelly", "snntorch"])
def test_lif_cpu_forward_backward(benchmark, shape, impl):
    if impl in ("spikingjelly", "snntorch") and not has_module(impl):
        pytest.skip(f"{impl} is not installed")
    x = torch.randn(shape).requires_grad_()
    g = torch.randn(shape)
    fn = {"cpu": lambda: _ours(x, g, "cpu"), "torch": lambda: _ours(x, g, "torch"),
          "spikingjelly": lambda: _spikingjelly(x, g), "snntorch": lambda: _snntorch(x, g)}[impl]()
    saved = saved_bytes(lambda: lif_multistep(x, backend=impl, **SETTINGS)) if impl in ("cpu", "torch") else None
    run_case(benchmark, fn, name=f"lif fwd+bwd {impl}", bytes_moved=_nbytes(shape, x.dtype, "fwd+bwd"), saved=saved,
             group=f"lif-cpu-fwdbwd {shape}", impl=impl, shape=str(shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["infer", "fwd", "bwd"])
def test_lif_cpu_directions(benchmark, mode, dtype):
    shape = CPU_LIF_SHAPES[0]
    x = torch.randn(shape, dtype=dtype).requires_grad_(mode != "infer")
    g = torch.randn(shape, dtype=dtype)
    if mode == "bwd":
        s, _ = lif_multistep(x, backend="cpu", **SETTINGS)
        fn = lambda: torch.autograd.grad(s, x, g, retain_graph=True)  # noqa: E731
    else:
        fn = lambda: lif_multistep(x, backend="cpu", **SETTINGS)  # noqa: E731
    saved = saved_bytes(lambda: lif_multistep(x, backend="cpu", **SETTINGS))
    run_case(benchmark, fn, name=f"lif {mode} cpu {str(dtype)[6:]}", bytes_moved=_nbytes(shape, dtype, mode), saved=saved,
             saved_per_neuron_step=round(saved / torch.Size(shape).numel(), 2), impl="cpu", shape=str(shape))
