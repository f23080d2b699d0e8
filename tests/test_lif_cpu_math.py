"""The CPU kernels' fp32 exp and surrogate derivatives against float64 truth, over dense grids.

A one-step LIF with tau = 1, v_threshold = 0, v_reset = 0 and dL/ds = 1 has h = x, d = x
and dL/dx = g'(x) exactly (every other term is 0 or a multiplication by 1), so its
gradient exposes the kernel's g' (csrc/lif_math.h, the vectorised x86-64-v3 code where the
CPU has AVX2) bit for bit. With piecewise_exp and alpha = 2, g'(x) = exp(-2|x|) with an
exact argument: the kernel's exp itself. The sigmoid surrogate keeps the reference's form
a*sg*(1 - sg), whose 1 - sg cancels for x > 0 in fp32 (in the reference too): there its
error is bounded in absolute terms.

Errors are in units in the last place (ulp) of the fp32 value nearest the truth; the
exp-based surrogates are measured against the truth at the kernel's own fp32 argument
(-|a*x| rounded once: its rounding, |arg| * 2^-24 relative after exp, is the same in the
reference and not the kernel's to remove), and their end-to-end error against the truth
at x is bounded too.
"""
from __future__ import annotations

import math

import pytest
import torch

import tks_kernels
from tks_kernels.functional import lif_multistep
from tks_kernels.ops.lif import DEFAULT_ALPHA, SURROGATES

pytestmark = pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0], reason="the native CPU library did not load")

EPS = 2.0 ** -24  # half an fp32 ulp at 1, relative


def kernel_grad(x: torch.Tensor, surrogate: str, alpha: float) -> torch.Tensor:
    """g'(x) as the CPU kernel computes it (x: fp32, 1-D), returned in float64."""
    x = x.reshape(1, -1).clone().requires_grad_()
    s, _ = lif_multistep(x, tau=1.0, v_threshold=0.0, v_reset=0.0, surrogate=surrogate, alpha=alpha, backend="cpu")
    (g,) = torch.autograd.grad(s, x, torch.ones_like(s))
    return g.reshape(-1).double()


def ulp32(t: torch.Tensor) -> torch.Tensor:
    """The fp32 ulp at |t| (float64 in and out); the smallest subnormal at 0."""
    a = t.abs().float()
    return (torch.nextafter(a, torch.full_like(a, math.inf)) - a).double()


def grid(lo: float, hi: float, n: int, seed: int = 0) -> torch.Tensor:
    """n uniform random fp32 points in [lo, hi] plus a linspace and +-0."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.cat([torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo,
                     torch.linspace(lo, hi, n // 4, dtype=torch.float64), torch.tensor([0.0, -0.0])])
    return pts.float()


def test_exp_within_1_5_ulp_of_float64():
    # exp_f32 over [-87.3, 0] (the surrogates' range) with extra density near 0 and at
    # the clamp; over every float of [-87.34, 88.37] the degree-6 polynomial is within 1.02 ulp.
    arg = torch.cat([grid(-87.33654, 0.0, 1 << 21), grid(-1e-3, 0.0, 1 << 16, seed=1),
                     -torch.logspace(-30, math.log10(87.3), 1 << 16, dtype=torch.float64).float()])
    x = arg / -2.0  # exact: g'(x) = 1 * exp(-2|x|) = exp(arg)
    got = kernel_grad(x, "piecewise_exp", 2.0)
    truth = torch.exp(arg.double())
    err = ((got - truth).abs() / ulp32(truth)).max().item()
    assert err <= 1.5, f"exp: {err:.3f} ulp"
    assert kernel_grad(torch.tensor([0.0]), "piecewise_exp", 2.0).item() == 1.0
    # Below the clamp: tiny, finite, not negative; NaN stays NaN.
    tail = kernel_grad(torch.tensor([50.0, 1e30]), "piecewise_exp", 2.0)
    assert ((tail >= 0) & (tail <= 1.2e-38)).all()
    assert kernel_grad(torch.tensor([math.nan]), "piecewise_exp", 2.0).isnan().all()


def _truth_at_kernel_arg(surrogate: str, x: torch.Tensor, alpha: float):
    """float64 g' at the kernel's fp32 exp argument (its fp32 coefficient as computed),
    and that argument."""
    a32 = torch.tensor(alpha, dtype=torch.float32)
    if surrogate == "piecewise_exp":
        arg = -a32 * x.abs()
        return (a32 / 2).double() * torch.exp(arg.double()), arg
    # erf: a/sqrt(pi) * exp(-a*a*x*x), each product rounded to fp32 as the kernel does
    arg = ((-a32 * a32) * x) * x
    coef = a32 / torch.sqrt(torch.tensor(math.pi, dtype=torch.float32))
    return coef.double() * torch.exp(arg.double()), arg


def _truth(surrogate: str, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """float64 g' at the fp32 point x (alpha as the kernel rounds it)."""
    a = float(torch.tensor(alpha, dtype=torch.float32))
    x = x.double()
    if surrogate == "sigmoid":
        e = torch.exp(-(a * x).abs())
        return a * e / ((1 + e) * (1 + e))
    if surrogate == "atan":
        u = math.pi / 2 * a * x
        return a / (2 * (1 + u * u))
    if surrogate == "piecewise_quadratic":
        return torch.clamp_min(a - a * a * x.abs(), 0)
    if surrogate == "piecewise_exp":
        return a / 2 * torch.exp(-a * x.abs())
    if surrogate == "soft_sign":
        return a / (2 * (1 + (a * x).abs()) ** 2)
    if surrogate == "super_spike":
        return a / (1 + x.abs()) ** 2
    return a / math.sqrt(math.pi) * torch.exp(-a * a * x * x)


@pytest.mark.parametrize("surrogate", ["piecewise_exp", "erf"])
def test_exp_surrogates_within_a_few_ulp_of_float64(surrogate):
    for alpha in (DEFAULT_ALPHA[surrogate], 0.3, 1.0, 4.0, 7.5):
        # |arg| up to ~100: the clamp and beyond; the grid in x, denser near 0.
        reach = 100.0 / alpha if surrogate != "erf" else 10.0 / alpha
        x = torch.cat([grid(-reach, reach, 1 << 19), grid(-2.0 / alpha, 2.0 / alpha, 1 << 18, seed=2)])
        got = kernel_grad(x, surrogate, alpha)
        truth, arg = _truth_at_kernel_arg(surrogate, x, alpha)
        keep = arg >= -87.33654  # above the exp's clamp (below: results under ~1e-37)
        err = ((got - truth).abs() / ulp32(truth))[keep].max().item()
        # exp's ulp and one rounding (the coefficient's product): measured 1.55
        # (piecewise_exp), 1.77 (erf).
        assert err <= 2.5, f"{surrogate} alpha={alpha}: {err:.2f} ulp at the kernel's argument"
        assert (got[~keep].abs() <= 1.2e-38 * alpha).all()


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_every_surrogate_close_to_float64_at_x(surrogate):
    # End to end, the fp32 argument's rounding included: relative error within
    # (k |arg| + 8) * 2^-24 above the exp's clamp (k: the argument's roundings, 1, or 3 for
    # erf's -a*a*x*x), and never more than 1e-6 of the peak anywhere.
    for alpha in (DEFAULT_ALPHA[surrogate], 0.5, 3.0):
        x = grid(-30.0 / alpha, 30.0 / alpha, 1 << 19, seed=3)
        got = kernel_grad(x, surrogate, alpha)
        truth = _truth(surrogate, x, alpha)
        peak = _truth(surrogate, torch.zeros(1), alpha).item()
        assert (got - truth).abs().max().item() <= 1e-6 * peak, surrogate
        a = float(torch.tensor(alpha, dtype=torch.float32))
        arg = {"sigmoid": (a * x.double()).abs(), "piecewise_exp": a * x.double().abs(),
               "erf": (a * x.double()) ** 2}.get(surrogate, torch.zeros_like(x, dtype=torch.float64))
        k = 3.0 if surrogate == "erf" else 1.0
        if surrogate == "piecewise_quadratic":  # a - a^2 |x| cancels near its kinks: absolute
            assert (got - truth).abs().max().item() <= 4 * EPS * a, surrogate
            continue
        keep = arg < 87.3  # above the exp's clamp
        if surrogate == "sigmoid":
            # The reference's a*sg*(1 - sg): 1 - sg cancels for x > 0 (as in the reference):
            # there the error is absolute, within a few ulp of 1 times a.
            pos = x > 0
            assert (got - truth)[pos].abs().max().item() <= 4 * 2 * EPS * a, surrogate
            keep &= ~pos
        rel = ((got - truth).abs() / truth)[keep]
        bound = ((k * arg + 8.0) * EPS)[keep]
        worst = (rel / bound).max().item()
        assert worst <= 1.0, f"{surrogate} alpha={alpha}: {worst:.3f} of the bound"
