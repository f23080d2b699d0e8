"""Shared helpers for the LIF tests of every backend: run a backend and the reference
on the same input and compare spikes (exactly), membranes and every gradient."""
from __future__ import annotations

import itertools
from typing import Dict, Optional

import torch

from tks_kernels.functional import lif_multistep
from tks_kernels.ops.lif import DEFAULT_ALPHA, SURROGATES

RESETS = (0.0, -0.25, None)  # hard reset to 0, hard reset to -0.25, soft reset

# Every option combination: 7 surrogates x 3 resets x decay_input x detach_reset.
OPTION_GRID = [
    dict(surrogate=s, v_reset=r, decay_input=d, detach_reset=dr)
    for s, r, d, dr in itertools.product(SURROGATES, RESETS, (True, False), (True, False))
]


def rounding_step(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def lif_run(x, v_init, backend, *, grads=True, seed=1, **opts):
    """Forward with every output, then backward from random weights on each output.

    Returns (spikes, v_last, v_seq, grad_x, grad_v_init)."""
    x = x.detach().clone().requires_grad_(grads)
    v0 = None if v_init is None else v_init.detach().clone().requires_grad_(grads)
    s, v, vs = lif_multistep(x, v0, backend=backend, return_v_seq=True, **opts)
    if not grads:
        return s, v, vs, None, None
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def w(t):
        return torch.randn(t.shape, generator=gen, dtype=torch.float32).to(device=t.device, dtype=t.dtype)

    loss = (s * w(s)).sum() + (v * w(v)).sum() + (vs * w(vs)).sum()
    inputs = (x,) if v0 is None else (x, v0)
    g = torch.autograd.grad(loss, inputs)
    return s, v, vs, g[0], (g[1] if v0 is not None else None)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| in fp64 (0 for empty tensors)."""
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def assert_matches_reference(x, v_init, backend, *, tol: Optional[float] = None, grads=True, **opts) -> Dict[str, float]:
    """Spikes equal the reference's exactly; everything else within tol (relative to
    the largest magnitude): 1e-5 for fp32/fp64, a few rounding steps for fp16/bf16."""
    got = lif_run(x, v_init, backend, grads=grads, **opts)
    ref = lif_run(x.cpu() if backend == "cpu" else x, None if v_init is None else v_init, "torch", grads=grads, **opts)
    names = ("spikes", "v_last", "v_seq", "grad_x", "grad_v_init")
    assert got[0].dtype == x.dtype and got[1].dtype == x.dtype
    assert torch.equal(got[0], ref[0]), f"spikes differ from the reference ({backend}, {opts})"
    if tol is None:
        tol = 1e-5 if x.dtype in (torch.float32, torch.float64) else 4 * rounding_step(x.dtype)
    errs = {}
    for name, a, b in zip(names[1:], got[1:], ref[1:]):
        if a is None and b is None:
            continue
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} vs reference {tuple(b.shape)}"
        errs[name] = rel_err(a, b)
        assert errs[name] <= tol, f"{name}: relative error {errs[name]:.3g} > {tol:.3g} ({backend}, {x.dtype}, {opts})"
    return errs


def random_input(shape, dtype=torch.float32, device="cpu", scale=1.5, offset=0.3, generator=None):
    """Currents around the threshold, so that neurons both fire and stay silent."""
    x = torch.randn(shape, generator=generator, dtype=torch.float32) * scale + offset
    return x.to(device=device, dtype=dtype)


def default_alpha(surrogate: str) -> float:
    return DEFAULT_ALPHA[surrogate]
