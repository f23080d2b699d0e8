"""Any surrogate, fused (CPU): a surrogate without a built-in derivative against the
built-in-surrogate kernels and against SpikingJelly 2.0's multi-step LIFNode with that
same surrogate, forward+backward of one multi-step LIF layer (module API, as SpikingJelly
code calls it).

impl:
- ``builtin``: SpikingJelly's ATan, recognised: the kernels' own derivative;
- ``generic``: the same ATan math as an unrecognised class (a subclass), or SpikingJelly's
  Rect: fused forward, g' from one vectorised autograd call of the surrogate, fused
  backward with it (``backward_sg``, contracts.md section 3);
- ``reference``: our step-by-step autograd loop with the surrogate (backend="torch");
- ``spikingjelly``: SpikingJelly's ``neuron.LIFNode(step_mode="m")`` with the surrogate.

The ``generic`` rows need the cpu backend's forward_saved/backward_sg and are skipped,
saying so, until it has them. Ratios are within one run (the ``speedup`` column).
"""
from __future__ import annotations

import pytest
import torch

import tks_kernels
from tks_kernels.ops import lif as lif_ops

from conftest import CPU_LIF_SHAPES, DEVICE, has_module, run_case, saved_bytes

pytestmark = [
    pytest.mark.skipif(DEVICE.type != "cpu", reason="CPU benchmarks (TKS_BENCH_DEVICE is not cpu)"),
    pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0], reason="the native CPU library did not load"),
    pytest.mark.skipif(not has_module("spikingjelly"), reason="SpikingJelly is not installed"),
]

SETTINGS = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False)


def _surrogate(name):
    from spikingjelly.activation_based import surrogate

    class UnrecognisedATan(surrogate.ATan):  # ATan's math, but not a class the kernels know
        pass

    return {"atan": surrogate.ATan(alpha=2.0), "atan-unknown": UnrecognisedATan(alpha=2.0),
            "rect": surrogate.Rect(alpha=1.0)}[name]


def _node(impl, fn):
    if impl == "spikingjelly":
        from spikingjelly.activation_based import neuron

        return neuron.LIFNode(surrogate_function=fn, step_mode="m", **SETTINGS)
    return tks_kernels.LIF(surrogate_function=fn, step_mode="m", backend="torch" if impl == "reference" else "cpu",
                           **SETTINGS)


CASES = [("atan", "builtin"), ("atan-unknown", "generic"), ("atan-unknown", "reference"), ("atan", "spikingjelly"),
         ("rect", "generic"), ("rect", "reference"), ("rect", "spikingjelly")]


@pytest.mark.parametrize("shape", CPU_LIF_SHAPES, ids=str)
@pytest.mark.parametrize("surrogate,impl", CASES, ids=[f"{s}-{i}" for s, i in CASES])
def test_any_surrogate_forward_backward(benchmark, shape, surrogate, impl):
    fn = _surrogate(surrogate)
    if impl == "generic":
        try:
            lif_ops.sg_backend("cpu")
        except NotImplementedError as exc:
            pytest.skip(str(exc).split(",")[0])
    node = _node(impl, fn)
    x = torch.randn(shape).requires_grad_()
    g = torch.randn(shape)

    def step():
        node.reset()
        s = node(x)
        torch.autograd.grad(s, x, g)

    n = x.numel() * x.element_size()
    saved = saved_bytes(lambda: (node.reset(), node(x)))
    group = "atan" if surrogate.startswith("atan") else surrogate
    run_case(benchmark, step, name=f"lif-any-surrogate-{surrogate}-{impl}", bytes_moved=6 * n, saved=saved,
             impl=impl, group=f"surrogate-{group}-{shape}", shape=str(shape))
