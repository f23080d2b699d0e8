"""The any-surrogate functions of every fused backend (contracts.md, section 3), checked
directly: ``forward_saved`` / ``saved_distance`` / ``backward_sg`` of the LIF and PLIF
ops against the plain-torch stand-in (tests/sg_contract_backend.py) with an arbitrary
per-step g', and against the backend's own autograd when g' is its built-in derivative.
A backend that does not provide them yet is skipped, saying so."""
from __future__ import annotations

import itertools

import pytest
import torch

import tks_kernels
from tks_kernels.ops import lif as lif_ops
from tks_kernels.ops import plif as plif_ops
from tks_kernels.ops.lif.reference import surrogate_grad

import sg_contract_backend as stand_in
from lif_cases import rel_err

STATUS = tks_kernels.available_backends()
FUSED = [b for b in ("cpu", "triton", "cuda") if STATUS[b][0]]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OPTIONS = [dict(v_reset=r, decay_input=d, detach_reset=dr, fire_at_threshold=f)
           for r, d, dr, f in itertools.product((0.0, -0.25, None), (True, False), (True, False), (True, False))]


def _module(op: str, backend: str):
    loader = lif_ops.backend_module if op == "LIF" else plif_ops.backend_module
    try:
        return lif_ops.sg_backend(backend, op=op, loader=loader)
    except NotImplementedError as exc:
        pytest.skip(str(exc).split(",")[0])


def _device(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def _tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 1e-5}.get(dtype, 8 * torch.finfo(dtype).eps)


def _inputs(dtype, device, seed, shape=(5, 3, 17)):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.8 + 0.45).to(dtype).to(device)
    v0 = (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.4).to(dtype).to(device)
    grads = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device) for s in (shape, shape[1:], shape)]
    sg = torch.rand(shape, generator=g, dtype=torch.float64).to(device)  # an arbitrary g' >= 0 per step
    return x, v0, grads, sg


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", ["LIF", "PLIF"])
def test_forward_saved_and_saved_distance(op, backend, dtype):
    module = _module(op, backend)
    device = _device(backend)
    for i, opts in enumerate(OPTIONS):
        x, v0, _, _ = _inputs(dtype, device, seed=i)
        if op == "LIF":
            cfg = lif_ops.make_config(tau=2.5, v_threshold=0.6, **opts)
            got = module.forward_saved(x, v0, cfg, True)
            ref = lif_ops.reference_any_surrogate(x, v0, cfg, _heaviside(cfg), True)
            d_ref = stand_in.LIF.forward_saved(x.cpu(), v0.cpu(), cfg, False)[3]
        else:
            cfg = plif_ops.make_config(v_threshold=0.6, **opts)
            k = plif_ops.decay_factor(torch.tensor(0.3, device=device), dtype)
            got = module.forward_saved(x, v0, k, cfg, True)
            ref = plif_ops.reference_any_surrogate(x, v0, k, cfg, _heaviside(cfg), True)
            d_ref = stand_in.PLIF.forward_saved(x.cpu(), v0.cpu(), k.cpu(), cfg, False)[3]
        spikes, v_last, v_seq, saved = got
        assert torch.equal(spikes, ref[0]), opts
        assert spikes.dtype == v_last.dtype == v_seq.dtype == dtype and saved.shape == x.shape
        assert rel_err(v_last, ref[1]) <= _tol(dtype) and rel_err(v_seq, ref[2]) <= _tol(dtype)
        d = module.saved_distance(saved, cfg)
        assert d.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and d.shape == x.shape
        fired = (d >= 0) if cfg.fire_at_threshold else (d > 0)
        assert torch.equal(fired.to(dtype), spikes), "backward's spikes from the saved distance differ from forward's"
        assert rel_err(d.cpu().double(), d_ref.double()) <= max(_tol(dtype), 1e-6)


def _heaviside(cfg):
    return (lambda d: (d >= 0).to(d.dtype)) if cfg.fire_at_threshold else (lambda d: (d > 0).to(d.dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", ["LIF", "PLIF"])
def test_backward_sg_with_any_derivative_equals_the_stand_in(op, backend, dtype):
    module = _module(op, backend)
    device = _device(backend)
    for i, opts in enumerate(OPTIONS):
        x, v0, (gs, gv, gvs), sg = _inputs(dtype, device, seed=100 + i)
        for with_v, with_seq in ((True, True), (False, False)):
            if op == "LIF":
                cfg = lif_ops.make_config(tau=2.5, v_threshold=0.6, **opts)
                saved = module.forward_saved(x, v0, cfg, False)[3]
                d = module.saved_distance(saved, cfg)
                args = (gs, gv if with_v else None, gvs if with_seq else None)
                got = module.backward_sg(*args, saved, sg.to(d.dtype), cfg)
                ref = stand_in.LIF.backward_sg(*(a.cpu() if a is not None else None for a in args), d.cpu(),
                                               sg.cpu().to(d.dtype), cfg)
            else:
                cfg = plif_ops.make_config(v_threshold=0.6, **opts)
                k = plif_ops.decay_factor(torch.tensor(0.3, device=device), dtype)
                saved = module.forward_saved(x, v0, k, cfg, False)[3]
                d = module.saved_distance(saved, cfg)
                args = (gs, gv if with_v else None, gvs if with_seq else None)
                got = module.backward_sg(*args, saved, v0, k, sg.to(d.dtype), cfg)
                ref = stand_in.PLIF.backward_sg(*(a.cpu() if a is not None else None for a in args), d.cpu(),
                                                v0.cpu(), k.cpu(), sg.cpu().to(d.dtype), cfg)
            assert got[0].dtype == dtype and got[0].shape == x.shape and got[1].shape == x.shape[1:]
            for name, a, b in zip(("grad_x", "grad_v_init", "grad_k"), got, ref):
                assert rel_err(a.cpu().double(), b.double()) <= 4 * _tol(dtype), (name, opts, with_v, with_seq)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("op", ["LIF", "PLIF"])
def test_backward_sg_with_the_builtin_derivative_equals_the_backends_own_autograd(op, backend):
    module = _module(op, backend)
    device = _device(backend)
    for i, (surrogate, opts) in enumerate(itertools.product(lif_ops.SURROGATES, OPTIONS[::5])):
        x, v0, (gs, gv, _), _ = _inputs(torch.float32, device, seed=200 + i)
        xr, vr = x.clone().requires_grad_(), v0.clone().requires_grad_()
        if op == "LIF":
            cfg = lif_ops.make_config(tau=2.5, v_threshold=0.6, surrogate=surrogate, **opts)
            s, v = lif_ops.lif_multistep(xr, vr, cfg, backend=backend)
            saved = module.forward_saved(x, v0, cfg, False)[3]
            d = module.saved_distance(saved, cfg)
            got = module.backward_sg(gs, gv, None, saved, surrogate_grad(d, cfg.surrogate, cfg.alpha), cfg)
            ref = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), (xr, vr))
        else:
            cfg = plif_ops.make_config(v_threshold=0.6, surrogate=surrogate, **opts)
            w = torch.tensor(0.3, device=device, requires_grad=True)
            s, v = plif_ops.plif_multistep(xr, vr, w, cfg, backend=backend)
            k = plif_ops.decay_factor(w.detach(), torch.float32)
            saved = module.forward_saved(x, v0, k, cfg, False)[3]
            d = module.saved_distance(saved, cfg)
            got = module.backward_sg(gs, gv, None, saved, v0, k, surrogate_grad(d, cfg.surrogate, cfg.alpha), cfg)
            ref = torch.autograd.grad((s * gs).sum() + (v * gv).sum(), (xr, vr, w))
            got = got[:2] + (got[2] * k * (1 - k),)  # dL/dw = dL/dk k (1 - k)
        for name, a, b in zip(("grad_x", "grad_v_init", "grad_w"), got, ref):
            # dL/dw is one fp32 sum over every neuron and step that may cancel: the two paths
            # may add it in another order
            assert rel_err(a, b) <= (1e-4 if name == "grad_w" else 1e-5), (name, surrogate, opts)
