"""torch.func transforms (grad, vmap, functional_call): inside them every op runs the
plain-PyTorch reference (the kernels take real tensors), and a kernel backend asked for by
name says so instead of failing on a wrapper tensor."""
from __future__ import annotations

import inspect

import pytest
import torch

import tks_kernels
from tks_kernels import functional as F
from tks_kernels import surrogate

SURROGATES = ["sigmoid", "atan", "piecewise_quadratic", "erf"]


def _x(shape, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 0.7 + 0.6).to(dtype)


@pytest.mark.parametrize("surrogate_name", SURROGATES)
@pytest.mark.parametrize("shape", [(1, 4), (5, 3, 7), (8, 2, 2, 3)])
@pytest.mark.parametrize("soft", [False, True])
def test_func_grad_of_lif_equals_autograd(surrogate_name, shape, soft):
    x = _x(shape, len(shape) + 7 * soft)
    w = _x(shape, 99)
    kw = dict(tau=2.0, surrogate=surrogate_name, v_reset=None if soft else 0.0)

    def loss(x, backend="auto"):
        s, v = F.lif_multistep(x, backend=backend, **kw)
        return (s * w).sum() + v.square().sum()

    got = torch.func.grad(loss)(x)
    xr = x.clone().requires_grad_()
    loss(xr, "torch").backward()
    assert torch.equal(got, xr.grad)  # both the reference
    if tks_kernels.available_backends()["cpu"][0]:
        xc = x.clone().requires_grad_()
        loss(xc, "cpu").backward()
        torch.testing.assert_close(got, xc.grad, rtol=1e-5, atol=1e-6)


def test_vmap_over_sequences_equals_a_loop():
    xs = _x((3, 6, 4, 5), 1)
    f = lambda x: F.lif_multistep(x, tau=3.0, surrogate="atan")[0]
    got = torch.func.vmap(f)(xs)
    want = torch.stack([F.lif_multistep(x, tau=3.0, surrogate="atan", backend="torch")[0] for x in xs])
    assert torch.equal(got, want)


def test_per_sample_gradients_with_vmap_of_grad():
    xs = _x((4, 6, 5), 2)
    f = lambda x: F.lif_multistep(x, tau=2.0)[0].sum()
    got = torch.func.vmap(torch.func.grad(f))(xs)
    for i, x in enumerate(xs):
        xr = x.clone().requires_grad_()
        F.lif_multistep(xr, tau=2.0, backend="torch")[0].sum().backward()
        # the batched reference computes with other vector loops: equal to rounding
        torch.testing.assert_close(got[i], xr.grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [tks_kernels.LIF, tks_kernels.ParametricLIF])
def test_modules_under_functional_call_and_grad(cls):
    node = cls(step_mode="m")
    x = _x((6, 3, 4), 3)
    params = {k: v.detach() for k, v in node.named_parameters()}

    def loss(params, x):
        node.reset()
        return torch.func.functional_call(node, params, (x,)).square().sum()

    gp, gx = torch.func.grad(loss, argnums=(0, 1))(params, x)
    xr = x.clone().requires_grad_()
    node.reset()
    node.backend = "torch"
    node(xr).square().sum().backward()
    assert torch.equal(gx, xr.grad)
    for k, p in node.named_parameters():
        assert torch.equal(gp[k], p.grad)


def test_tks_loss_under_func_grad():
    logits = _x((4, 6, 10), 4)
    y = torch.tensor([0, 3, 9, 1, 1, 5])
    got = torch.func.grad(lambda l: F.tks_loss(l, y, lam=0.5))(logits)
    lr = logits.clone().requires_grad_()
    F.tks_loss(lr, y, lam=0.5, backend="torch").backward()
    torch.testing.assert_close(got, lr.grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogate_modules_under_func_grad(name):
    sg = surrogate.from_name(name, 2.5)
    x = torch.linspace(-2, 2, 41)
    got = torch.func.grad(lambda x: (sg(x) * torch.arange(41.0)).sum())(x)
    xr = x.clone().requires_grad_()
    (sg(xr) * torch.arange(41.0)).sum().backward()
    assert torch.equal(got, xr.grad)
    assert torch.equal(torch.func.vmap(sg)(x.view(41, 1)).view(41), sg(x))


@pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0], reason="the native CPU library is not built")
def test_a_kernel_backend_asked_for_by_name_says_it_cannot_run_inside():
    x = _x((4, 5), 5)
    with pytest.raises(RuntimeError, match=r"backend='cpu' does not run under torch.func transforms"):
        torch.func.grad(lambda x: F.lif_multistep(x, backend="cpu")[0].sum())(x)
    with pytest.raises(ValueError, match="backend must be"):
        torch.func.grad(lambda x: F.lif_multistep(x, backend="gpu")[0].sum())(x)


def test_reference_spike_function_binds_no_signature(monkeypatch):
    """The reference's and the surrogates' Functions use the same C++ apply as the native
    ops outside the transforms (torch's Python apply calls inspect.signature every call)."""
    x = _x((4, 8), 6).requires_grad_()

    def refuse(*args, **kwargs):
        raise AssertionError("inspect.signature called")

    monkeypatch.setattr(inspect, "signature", refuse)
    s, _ = F.lif_multistep(x, backend="torch")
    (g,) = torch.autograd.grad(s.sum() + surrogate.Sigmoid()(x).sum(), x)
    assert g.shape == x.shape
