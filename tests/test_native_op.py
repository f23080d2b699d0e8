"""The eager route of the native ops (tks_kernels/ops/_native_op.py): an autograd.Function
whose apply skips torch's per-call argument binding, against the dispatcher route
(torch.ops.tks_kernels.* with the autograd registered through torch.library)."""
from __future__ import annotations

import inspect

import pytest
import torch

import tks_kernels
from tks_kernels import functional as F
from tks_kernels._autograd import fast_apply
from tks_kernels.ops import _native_op
from tks_kernels.ops.bn_lif import cpu as bn_lif_cpu
from tks_kernels.ops.lif import cpu as lif_cpu
from tks_kernels.ops.plif import cpu as plif_cpu
from tks_kernels.ops.tks import cpu as tks_cpu

pytestmark = pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0],
                                reason="the native CPU library is not built")

SETTINGS = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False)


def _grads(fn, x, g, v0):
    x = x.detach().requires_grad_()
    v0 = v0.detach().requires_grad_()
    s, v = fn(x, v0)
    return (s, v) + torch.autograd.grad((s, v), (x, v0), (g, g[0]))


def _eager(x, v0):
    return F.lif_multistep(x, v0, backend="cpu", surrogate="atan", **SETTINGS)


def _dispatcher(x, v0):
    s, v, _ = torch.ops.tks_kernels.lif_forward_x(x, v0, 2.0, True, 1.0, 0.0, False, 1, 2.0, False, False, True)
    return s, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3), (4, 5, 7), (8, 129)])
def test_eager_route_equals_dispatcher_route(dtype, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) + 0.8).to(dtype)
    v0 = (torch.rand(shape[1:], generator=gen) * 0.5).to(dtype)
    g = torch.randn(shape, generator=gen).to(dtype)
    eager = _grads(_eager, x, g, v0)
    disp = _grads(_dispatcher, x, g, v0)
    for a, b in zip(eager, disp):
        assert torch.equal(a, b)


def test_eager_apply_binds_no_signature(monkeypatch):
    """torch's Function.apply calls inspect.signature on every call (about 25 us); ours not."""
    x = (torch.randn(4, 16) + 0.8).requires_grad_()

    def refuse(*args, **kwargs):
        raise AssertionError("inspect.signature called on the eager route")

    monkeypatch.setattr(inspect, "signature", refuse)
    s, _ = F.lif_multistep(x, backend="cpu", **SETTINGS)
    (gx,) = torch.autograd.grad(s.sum(), x)
    assert gx.shape == x.shape and s.grad_fn is not None
    plif = tks_kernels.ParametricLIF(step_mode="m", backend="cpu")
    p = plif(x)
    gx, gw = torch.autograd.grad(p.sum(), (x, plif.w))
    assert gx.shape == x.shape and gw.shape == plif.w.shape


def test_eager_route_keeps_saved_tensor_checks():
    """setup_context still runs: x is saved, so changing it in place refuses the backward."""
    x = (torch.randn(4, 16) + 0.8).requires_grad_()
    y = x * 1.0
    s, _ = F.lif_multistep(y, backend="cpu", **SETTINGS)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


def test_every_native_function_uses_the_fast_apply():
    ops = [v for mod in (lif_cpu, plif_cpu, bn_lif_cpu, tks_cpu) for v in vars(mod).values() if isinstance(v, _native_op.NativeOp)]
    functions = [op.function for op in ops if op.function is not None]
    assert len(functions) >= 5
    for fn in functions:
        assert fn.__dict__["apply"].__func__ is fast_apply
