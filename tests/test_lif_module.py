"""The LIF module (state, reset, single step) and the argument checks of the LIF API."""
from __future__ import annotations

import pytest
import torch

import tks_kernels
from tks_kernels.functional import lif_multistep

from lif_cases import random_input, rel_err

HAS_CPU = tks_kernels.available_backends()["cpu"][0]
BACKENDS = ["torch"] + (["cpu"] if HAS_CPU else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_carries_over_and_gradient_flows_into_earlier_calls(backend):
    x = random_input((6, 3, 10)).requires_grad_()
    w = torch.randn(6, 3, 10)
    whole = tks_kernels.LIF(v_threshold=0.6, surrogate="atan", step_mode="m", backend=backend)
    s_whole = whole(x)
    (g_whole,) = torch.autograd.grad((s_whole * w).sum() + whole.v.sum(), x)

    parts = tks_kernels.LIF(v_threshold=0.6, surrogate="atan", step_mode="m", backend=backend)
    s_parts = torch.cat([parts(x[:2]), parts(x[2:5]), parts(x[5:])])
    (g_parts,) = torch.autograd.grad((s_parts * w).sum() + parts.v.sum(), x)
    assert torch.equal(s_parts, s_whole)
    assert rel_err(g_parts, g_whole) < 1e-6
    assert rel_err(parts.v, whole.v) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_step_mode_equals_multi_step(backend):
    x = random_input((5, 2, 7)).requires_grad_()
    multi = tks_kernels.LIF(v_reset=None, step_mode="m", backend=backend, store_v_seq=True)
    s_m = multi(x)
    single = tks_kernels.LIF(v_reset=None, step_mode="s", backend=backend)
    s_s = torch.stack([single(x[t]) for t in range(5)])
    assert torch.equal(s_m, s_s)
    (g_m,) = torch.autograd.grad(s_m.sum() + multi.v.sum(), x)
    (g_s,) = torch.autograd.grad(s_s.sum() + single.v.sum(), x)
    assert rel_err(g_s, g_m) < 1e-6
    assert multi.v_seq.shape == x.shape
    assert torch.equal(multi.v_seq[-1], multi.v)


def test_reset_and_reset_net():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), tks_kernels.LIF(v_reset=-0.5, step_mode="m"),
                              torch.nn.Linear(4, 4), tks_kernels.LIF(v_reset=None, step_mode="m"))
    x = random_input((3, 2, 4))
    first = net(x)
    assert isinstance(net[1].v, torch.Tensor)
    second = net(x)  # continues from the kept membrane
    tks_kernels.reset_net(net)
    assert net[1].v == -0.5 and net[3].v == 0.0
    assert torch.equal(net(x), first)
    assert second.shape == first.shape
    assert net.state_dict().keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_module_options_and_repr():
    lif = tks_kernels.LIF(tau=3.0, decay_input=False, v_threshold=0.5, v_reset=None, surrogate="erf", alpha=1.5,
                          detach_reset=True)
    assert (lif.tau, lif.decay_input, lif.v_threshold, lif.v_reset, lif.detach_reset, lif.alpha) == (3.0, False, 0.5, None, True, 1.5)
    assert "(surrogate_function): Erf(alpha=1.5, spiking=True)" in repr(lif)
    assert tks_kernels.LIF(surrogate="atan").alpha == 2.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_call_leaves_state_as_it_was(backend):
    lif = tks_kernels.LIF(step_mode="m", backend=backend)
    lif(random_input((2, 3, 5)))
    v_before = lif.v.clone()
    for bad in (torch.ones(2, 3, 5, dtype=torch.int64), torch.ones(0, 3, 5), torch.tensor(1.0)):
        with pytest.raises((ValueError, TypeError)):
            lif(bad)
        assert torch.equal(lif.v, v_before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_membrane_of_another_shape_restarts_from_rest_as_spikingjelly(backend):
    # SpikingJelly's materialize_states: a kept membrane whose shape does not fit the
    # input is replaced by v_reset (no error), e.g. a last, smaller batch without reset().
    lif = tks_kernels.LIF(v_reset=-0.25, step_mode="m", backend=backend)
    lif(random_input((2, 3, 5)))
    x = random_input((2, 4, 5))
    fresh = tks_kernels.LIF(v_reset=-0.25, step_mode="m", backend=backend)
    assert torch.equal(lif(x), fresh(x))
    assert torch.equal(lif.v, fresh.v)


def test_amp_bf16_input_with_fp32_state():
    lif = tks_kernels.LIF(step_mode="m", backend="cpu" if HAS_CPU else "torch")
    lif(random_input((2, 3, 5)))
    s = lif(random_input((2, 3, 5), torch.bfloat16))
    assert s.dtype == torch.bfloat16 and lif.v.dtype == torch.bfloat16


# --- bad input: every argument named in its error ---------------------------------

BAD_CONFIGS = [
    (dict(tau=0.5), ValueError, "tau"),
    (dict(tau=float("nan")), ValueError, "tau"),
    (dict(tau=float("inf")), ValueError, "tau"),
    (dict(tau="2"), TypeError, "tau"),
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha=-1.0), ValueError, "alpha"),
    (dict(v_threshold=float("inf")), ValueError, "v_threshold"),
    (dict(v_threshold=float("nan")), ValueError, "v_threshold"),
    (dict(v_reset=float("-inf")), ValueError, "v_reset"),
    (dict(surrogate="relu"), ValueError, "sigmoid, atan, piecewise_quadratic, piecewise_exp, soft_sign, super_spike, erf"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_CONFIGS, ids=[str(c[0]) for c in BAD_CONFIGS])
def test_bad_options_raise_naming_the_argument(kwargs, exc, match):
    x = random_input((2, 3))
    with pytest.raises(exc, match=match):
        lif_multistep(x, **kwargs)
    with pytest.raises(exc, match=match):
        tks_kernels.LIF(**kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_raise_naming_the_argument(backend):
    x = random_input((2, 3))
    cases = [
        (lambda: lif_multistep(torch.ones(2, 3, dtype=torch.int32), backend=backend), TypeError, "x must be a floating"),
        (lambda: lif_multistep(torch.ones(2, 3, dtype=torch.bool), backend=backend), TypeError, "x must be a floating"),
        (lambda: lif_multistep(torch.tensor(1.0), backend=backend), ValueError, "time dimension"),
        (lambda: lif_multistep(torch.ones(0, 3), backend=backend), ValueError, "time dimension"),
        (lambda: lif_multistep(x, torch.zeros(4), backend=backend), ValueError, "v_init must have shape"),
        (lambda: lif_multistep(x, torch.zeros(3, dtype=torch.float64), backend=backend), TypeError, "v_init must have x's dtype"),
        (lambda: lif_multistep(x, torch.zeros(3, device="meta"), backend=backend), ValueError, "v_init must be on x's device"),
        (lambda: lif_multistep(x, backend="fast"), ValueError, "backend must be 'auto' or one of"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_unavailable_backend_says_why():
    status = tks_kernels.available_backends()
    assert set(status) == {"torch", "cpu", "triton", "cuda"}
    for name, (ok, reason) in status.items():
        assert isinstance(ok, bool) and isinstance(reason, str) and reason
    if not torch.cuda.is_available():
        assert not status["cuda"][0]
        with pytest.raises(RuntimeError, match="backend='cuda' cannot run here"):
            lif_multistep(random_input((2, 3)), backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        tks_kernels.LIF(backend="gpu")


def test_auto_backend_uses_fused_kernel_on_cpu():
    if not HAS_CPU:
        pytest.skip("the native CPU library did not load")
    from tks_kernels.ops.lif import _resolve

    assert _resolve("auto", "cpu") == "cpu"


def test_alpha_defaults_follow_the_surrogate():
    x = random_input((3, 50)).requires_grad_()
    for name, alpha in (("sigmoid", 4.0), ("atan", 2.0), ("piecewise_quadratic", 1.0), ("erf", 2.0)):
        (a,) = torch.autograd.grad(lif_multistep(x, surrogate=name, backend="torch")[0].sum(), x)
        (b,) = torch.autograd.grad(lif_multistep(x, surrogate=name, alpha=alpha, backend="torch")[0].sum(), x)
        assert torch.equal(a, b)


def test_extension_is_built_when_required():
    # CI sets TKS_REQUIRE_EXTENSION=1 so that a broken build fails instead of skipping.
    import os

    if os.environ.get("TKS_REQUIRE_EXTENSION") != "1":
        pytest.skip("TKS_REQUIRE_EXTENSION is not set")
    ok, reason = tks_kernels.available_backends()["cpu"]
    assert ok, reason
