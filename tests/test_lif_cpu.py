"""The fused CPU LIF kernels against the reference: every option, dtype and layout."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tks_kernels
from tks_kernels.functional import lif_multistep
from tks_kernels.ops.lif import SURROGATES

from lif_cases import OPTION_GRID, RESETS, assert_matches_reference, lif_run, random_input, rel_err

pytestmark = pytest.mark.skipif(not tks_kernels.available_backends()["cpu"][0], reason="the native CPU library did not load")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _id(opts):
    return "-".join(f"{k}={v}" for k, v in opts.items())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=_id)
def test_every_option_matches_reference(opts, dtype):
    x = random_input((6, 3, 37), dtype)
    v0 = random_input((3, 37), dtype, scale=0.5, offset=0.0)
    assert_matches_reference(x, v0, "cpu", tau=2.5, v_threshold=0.8, **opts)
    assert_matches_reference(x, None, "cpu", tau=2.5, v_threshold=0.8, **opts)


@settings(max_examples=40, deadline=None, derandomize=True)  # the same cases on every run
@given(
    T=st.integers(1, 12),
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=3),
    tau=st.floats(1.0, 10.0),
    v_threshold=st.floats(-0.5, 2.0),
    v_reset=st.one_of(st.none(), st.floats(-1.0, 0.5)),
    surrogate=st.sampled_from(SURROGATES),
    alpha=st.one_of(st.none(), st.floats(0.1, 8.0)),
    decay_input=st.booleans(),
    detach_reset=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    with_v0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_and_options(T, shape, tau, v_threshold, v_reset, surrogate, alpha, decay_input, detach_reset,
                                   dtype, with_v0, seed):
    g = torch.Generator().manual_seed(seed)
    x = random_input((T, *shape), dtype, generator=g)
    v0 = random_input(tuple(shape), dtype, generator=g, scale=0.5, offset=0.0) if with_v0 else None
    assert_matches_reference(x, v0, "cpu", tau=tau, v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate,
                             alpha=alpha, decay_input=decay_input, detach_reset=detach_reset)


@pytest.mark.parametrize(
    "shape",
    [(1, 5), (1, 1), (7, 1), (4, 0), (3, 0, 5), (2, 3, 4, 5, 6), (9, 4099), (2, 8200)],
    ids=str,
)
def test_edge_shapes(shape):
    x = random_input(shape)
    v0 = random_input(shape[1:], scale=0.5)
    assert_matches_reference(x, v0, "cpu")
    assert_matches_reference(x, None, "cpu", v_reset=None)


def test_non_contiguous_and_channels_last():
    base = random_input((4, 2, 6, 5, 3))  # [T, B, C, H, W]
    cases = {
        "transposed": base.transpose(3, 4),
        "time-strided": random_input((8, 2, 6, 5, 3))[::2],
        "sliced": base[..., 1:],
        "channels_last": base.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2)),
        "time-not-outermost": random_input((2, 4, 6, 5, 3)).transpose(0, 1),
        "expanded": random_input((4, 1, 6, 5, 3)).expand(4, 2, 6, 5, 3),
    }
    for name, x in cases.items():
        v0 = random_input(x.shape[1:], scale=0.5)
        assert_matches_reference(x, v0, "cpu", v_reset=None)
        assert_matches_reference(x, v0.transpose(-1, -2).contiguous().transpose(-1, -2), "cpu")


def test_channels_last_output_keeps_layout():
    x = random_input((4 * 2, 6, 5, 3)).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    s, v = lif_multistep(x, backend="cpu")
    assert s.stride() == x.stride(), "spikes should keep the input's memory layout (no copy)"


def test_fp16_bf16_spikes_survive_rounding_of_saved_state():
    # h a hair below the threshold: h - v_threshold rounds to 0 in bf16/fp16 unless the
    # sign is kept, and backward would then see a spike that forward did not fire.
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.full((1, 64), 1.0, dtype=dtype)
        vth = float(torch.tensor(1.0, dtype=torch.float32).nextafter(torch.tensor(2.0)))  # just above 1
        for opts in (dict(), dict(v_reset=None), dict(detach_reset=True)):
            assert_matches_reference(x, torch.zeros(64, dtype=dtype), "cpu", tau=1.0, v_threshold=vth, **opts)


def test_nan_and_inf_behave_as_reference():
    x = random_input((5, 40))
    x[1, 3] = float("nan")
    x[2, 7] = float("inf")
    x[3, 9] = -float("inf")
    for opts in (dict(), dict(v_reset=None), dict(decay_input=False, v_reset=-0.2)):
        got = lif_run(x, None, "cpu", **opts)
        ref = lif_run(x, None, "torch", **opts)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_same_spikes_as_spikingjelly():
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    sj_surrogates = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan, "piecewise_quadratic": surrogate.PiecewiseQuadratic,
                     "piecewise_exp": surrogate.PiecewiseExp, "soft_sign": surrogate.SoftSign, "erf": surrogate.Erf,
                     "super_spike": surrogate.SuperSpike}
    for name, cls in sj_surrogates.items():
        for v_reset in RESETS:
            for decay_input, detach_reset in ((True, False), (False, True)):
                x = random_input((6, 4, 33)).requires_grad_()
                sj = neuron.LIFNode(tau=3.0, decay_input=decay_input, v_threshold=0.7, v_reset=v_reset,
                                    surrogate_function=cls(), detach_reset=detach_reset, step_mode="m")
                s_ref = sj(x)
                (g_ref,) = torch.autograd.grad((s_ref * torch.linspace(-1, 1, 33)).sum(), x)
                ours = tks_kernels.LIF(tau=3.0, decay_input=decay_input, v_threshold=0.7, v_reset=v_reset, surrogate=name,
                                       detach_reset=detach_reset, step_mode="m", backend="cpu")
                s = ours(x)
                (g,) = torch.autograd.grad((s * torch.linspace(-1, 1, 33)).sum(), x)
                assert torch.equal(s, s_ref), name
                assert rel_err(g, g_ref) < 1e-5, name
                assert rel_err(ours.v, sj.v) < 1e-6


# --- gradcheck --------------------------------------------------------------------

def _membrane_only(backend, **opts):
    # Spikes are a step function: only the membrane path has a true derivative, and only
    # with detach_reset (otherwise the surrogate enters dv/dh). The surrogates themselves
    # are checked against the derivative of their primitive below.
    def f(x, v0):
        s, v, vs = lif_multistep(x, v0, backend=backend, return_v_seq=True, detach_reset=True, **opts)
        return v, vs
    return f


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("opts", [dict(), dict(v_reset=None), dict(decay_input=False, v_reset=-0.3), dict(tau=1.0)], ids=str)
def test_gradcheck_fp64(backend, opts):
    g = torch.Generator().manual_seed(3)
    x = random_input((5, 3, 4), torch.float64, generator=g)
    v0 = random_input((3, 4), torch.float64, generator=g, scale=0.4, offset=0.0)
    # keep h away from the threshold so finite differences do not cross it
    x = torch.where((x - 1.0).abs() < 0.05, x + 0.2, x).requires_grad_()
    assert torch.autograd.gradcheck(_membrane_only(backend, **opts), (x, v0.requires_grad_()), eps=1e-6, atol=1e-7)


_PRIMITIVES = {
    "sigmoid": lambda x, a: torch.sigmoid(a * x),
    "atan": lambda x, a: torch.atan(math.pi / 2 * a * x) / math.pi + 0.5,
    "piecewise_quadratic": lambda x, a: torch.where(
        x.abs() > 1 / a, (x > 0).double(), torch.where(x <= 0, 0.5 * a * a * x * x + a * x + 0.5, -0.5 * a * a * x * x + a * x + 0.5)),
    "piecewise_exp": lambda x, a: torch.where(x < 0, 0.5 * torch.exp(a * x), 1 - 0.5 * torch.exp(-a * x)),
    "soft_sign": lambda x, a: 0.5 * (a * x / (1 + (a * x).abs()) + 1),
    "super_spike": lambda x, a: a * torch.where(x < 0, 1 / (1 - x), 2 - 1 / (1 + x)),
    "erf": lambda x, a: 0.5 * (1 + torch.erf(a * x)),
}


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_surrogate_is_derivative_of_its_primitive(surrogate):
    from tks_kernels.ops.lif.reference import surrogate_grad
    from tks_kernels.ops.lif import DEFAULT_ALPHA

    for alpha in (DEFAULT_ALPHA[surrogate], 0.7, 3.0):
        x = torch.linspace(-2.5, 2.5, 97, dtype=torch.float64)
        x = x[(x.abs() - 1 / alpha).abs() > 1e-3].requires_grad_()  # piecewise_quadratic's kinks
        (d,) = torch.autograd.grad(_PRIMITIVES[surrogate](x, alpha).sum(), x)
        torch.testing.assert_close(surrogate_grad(x.detach(), surrogate, alpha), d, rtol=1e-9, atol=1e-12)


# --- memory -------------------------------------------------------------------------

def _saved_bytes(fn):
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("dtype,limit", [(torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)], ids=str)
def test_saved_for_backward_at_most_one_value_per_neuron_step(dtype, limit):
    T, N = 8, 3000
    x = random_input((T, N), dtype).requires_grad_()
    saved = _saved_bytes(lambda: lif_multistep(x, backend="cpu", return_v_seq=True))
    assert 0 < saved <= limit * T * N, f"saved {saved} bytes for {T * N} neuron-steps"
    with torch.no_grad():
        assert _saved_bytes(lambda: lif_multistep(x, backend="cpu")) == 0
    assert _saved_bytes(lambda: lif_multistep(x.detach(), backend="cpu")) == 0


# --- torch.compile --------------------------------------------------------------------

class _ConvSNN(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = tks_kernels.LIF(tau=2.0, v_threshold=0.5, surrogate="atan", step_mode="m", backend=backend)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.lif2 = tks_kernels.LIF(v_reset=None, detach_reset=True, step_mode="m", backend=backend)
        self.fc = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):  # [T, B, C, H, W]
        T, B = x.shape[:2]
        y = self.lif1(self.conv1(x.flatten(0, 1)).unflatten(0, (T, B)))
        y = self.lif2(self.conv2(y.flatten(0, 1)).unflatten(0, (T, B)))
        return self.fc(y.flatten(2))


def test_torch_compile_fullgraph_equals_eager():
    torch._dynamo.reset()
    model = _ConvSNN("cpu")
    x = random_input((3, 2, 2, 6, 6)).requires_grad_()
    eager_out = model(x)
    (eager_grad,) = torch.autograd.grad(eager_out.square().sum(), x)
    tks_kernels.reset_net(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-5, atol=1e-6)


def test_torch_compile_inductor_no_graph_break():
    torch._dynamo.reset()
    x = random_input((4, 2, 16)).requires_grad_()

    def f(x):
        s, v = lif_multistep(x * 2.0, tau=2.0, backend="cpu")
        return (s * x).sum() + v.sum()

    explanation = torch._dynamo.explain(f)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))
    (g1,) = torch.autograd.grad(compiled(x), x)
    (g2,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(g1, g2)


# ---- The recomputing backward (issue 15): forward saves x, backward re-runs the forward ----

from tks_kernels.ops import plif as plif_ops  # noqa: E402
from tks_kernels.ops.lif import cpu as lif_cpu  # noqa: E402

needs_recompute = pytest.mark.skipif(not lif_cpu.recompute_max_steps(torch.float32), reason="the native CPU library did not load")


def _saved_path(monkeypatch):
    """Every CPU forward after this takes the saved-d path (as for T above the limit)."""
    monkeypatch.setattr(lif_cpu, "_MAX_STEPS", {})


def _plif_run(x, v0, opts, seed=1):
    cfg = plif_ops.make_config(**opts)
    xi = x.detach().clone().requires_grad_()
    vi = v0.detach().clone().requires_grad_() if v0 is not None else None
    w = torch.tensor(-0.4, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, requires_grad=True)
    s, v, vs = plif_ops.plif_multistep(xi, vi, w, cfg, backend="cpu", return_v_seq=True)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o.double() * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() for o in (s, v, vs))
    grads = torch.autograd.grad(loss, [xi, w] + ([vi] if vi is not None else []))
    return (s, v, vs) + tuple(grads)


@needs_recompute
def test_recompute_is_the_default_cpu_path_and_saves_only_x():
    x = random_input((6, 3, 37)).requires_grad_()
    seen = []

    def pack(t):
        seen.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s, _ = lif_multistep(x, backend="cpu")
    assert any(t is x for t in seen) and all(t is x or t is None or t.numel() <= 1 for t in seen)
    assert lif_cpu.recomputes(x) and not lif_cpu.recomputes(x.new_empty((lif_cpu.recompute_max_steps(x.dtype) + 1, 1)))
    assert lif_cpu.recompute_max_steps(torch.float32) == 4096 and lif_cpu.recompute_max_steps(torch.float64) == 2048


@needs_recompute
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=_id)
def test_recompute_equals_saved_path_bit_for_bit(opts, dtype, monkeypatch):
    """fp32/fp64: the recomputing backward forms d = h - vth from the same h as forward, so
    LIF and PLIF gradients are the saved path's exactly (PLIF: dL/dw too)."""
    x = random_input((7, 3, 41), dtype)
    v0 = random_input((3, 41), dtype, scale=0.5, offset=0.0)
    for v in (v0, None):
        new = lif_run(x, v, "cpu", tau=2.5, v_threshold=0.8, **opts)
        new_p = _plif_run(x, v, dict(v_threshold=0.8, **opts))
        with monkeypatch.context() as m:
            _saved_path(m)
            old = lif_run(x, v, "cpu", tau=2.5, v_threshold=0.8, **opts)
            old_p = _plif_run(x, v, dict(v_threshold=0.8, **opts))
        for a, b in zip(new + new_p, old + old_p):
            if a is not None:
                assert torch.equal(a, b)


@needs_recompute
@pytest.mark.parametrize("T", [1, 130, 700, 4096])
def test_recompute_at_many_steps_matches_reference(T):
    """Blocks shrink as T grows (2048 lanes down to 16 at T = 4096): the reference still holds."""
    x = random_input((T, 2, 19))
    assert lif_cpu.recomputes(x)
    assert_matches_reference(x, random_input((2, 19), scale=0.5), "cpu", tau=3.0, surrogate="atan")
    assert_matches_reference(x.to(torch.bfloat16), None, "cpu", v_reset=None, fire_at_threshold=False)


@needs_recompute
def test_beyond_the_limit_saves_d_and_matches_reference():
    x = random_input((lif_cpu.recompute_max_steps(torch.float32) + 3, 5))
    assert not lif_cpu.recomputes(x)
    assert_matches_reference(x, None, "cpu", tau=3.0)


@needs_recompute
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_recompute_16bit_spikes_exact_and_plif_gradients_close(dtype):
    """16-bit: backward's spikes come from forward's charges themselves (no saved sign to
    keep); the reference check covers spikes exactly and gradients to the tolerance."""
    x = random_input((8, 4, 33), dtype)
    v0 = random_input((4, 33), dtype, scale=0.5, offset=0.0)
    for fat in (True, False):
        assert_matches_reference(x, v0, "cpu", tau=2.0, fire_at_threshold=fat)
    ref = plif_ops.plif_multistep(x.float(), v0.float(), torch.tensor(-0.4), plif_ops.make_config(), backend="torch")
    new = _plif_run(x, v0, {})
    assert torch.equal(new[0].float(), ref[0])


@needs_recompute
def test_recompute_refuses_x_changed_in_place():
    """Backward reads x again: autograd's version counter refuses a backward after x changed."""
    base = random_input((4, 8)).requires_grad_()
    x = base * 1.0
    s, _ = lif_multistep(x, backend="cpu")
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


@needs_recompute
def test_large_outputs_with_huge_page_advice_match_reference():
    """[T, N] outputs of >= 4 MiB get MADV_HUGEPAGE before their first write: the values
    are unchanged (and an odd, unaligned size is advised only on its aligned part)."""
    x = random_input((3, (1 << 19) + 7))
    assert_matches_reference(x, None, "cpu", tau=2.0)


@needs_recompute
def test_native_recompute_refusals_name_the_argument():
    from tks_kernels import _native

    lib = _native.cpu_lib
    x = torch.zeros(2, 3)
    g = torch.zeros(2, 3)
    out, gv = torch.empty(2, 3), torch.empty(3)
    args = (0, g.data_ptr(), None, None, x.data_ptr(), None, out.data_ptr(), gv.data_ptr())
    rc = lib.tks_lif_backward_x_cpu(*args, 2, 3, 2.0, 1.0, 0.0, 1, _native.SURROGATE_EXTERNAL, 1.0, 1)
    assert rc == _native.ERR_VALUE and b"surrogate" in lib.tks_last_error()
    rc = lib.tks_lif_backward_x_cpu(*args, 5000, 3, 2.0, 1.0, 0.0, 1, 0, 1.0, 1)
    assert rc == _native.ERR_VALUE and b"T <= 4096" in lib.tks_last_error()
    assert lib.tks_lif_recompute_max_steps_cpu(7) == -1


@needs_recompute
@pytest.mark.parametrize("T,N", [(3, 2047), (2, 2 * 2048 + 513), (40, 5000), (9, 3 * 512 + 7)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("path", ["recompute", "saved"])
def test_chunk_and_sub_row_boundaries(T, N, dtype, path, monkeypatch):
    """The kernels walk rows in chunks of 2048 neurons, their backward loops in sub-rows of
    512, and the recomputing backward in blocks that halve as T grows (1024 lanes at
    T = 40): neuron counts across each boundary, with ragged tails, on both backward paths,
    LIF (every surrogate family: exp-based, rational, piecewise) and PLIF (whose dL/dk is
    summed per chunk), against the reference."""
    if path == "saved":
        _saved_path(monkeypatch)
    x = random_input((T, N), dtype)
    assert lif_cpu.recomputes(x) == (path == "recompute")
    v0 = random_input((N,), dtype, scale=0.5, offset=0.0)
    for surrogate in ("sigmoid", "atan", "piecewise_quadratic"):
        assert_matches_reference(x, v0, "cpu", tau=2.0, surrogate=surrogate)
    assert_matches_reference(x, None, "cpu", tau=3.0, v_reset=None, fire_at_threshold=False)
    # PLIF against its reference in fp64 (its dL/dw sums per chunk)
    got = _plif_run(x, v0, dict(v_reset=0.0, surrogate="sigmoid"))
    cfg = plif_ops.make_config(v_reset=0.0, surrogate="sigmoid")
    xi, vi = x.double().requires_grad_(), v0.double().requires_grad_()
    w = torch.tensor(-0.4, dtype=torch.float64, requires_grad=True)
    s, v, vs = plif_ops.plif_multistep(xi, vi, w, cfg, backend="torch", return_v_seq=True)
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64)).sum() for o in (s, v, vs))
    want = (s, v, vs) + tuple(torch.autograd.grad(loss, [xi, w, vi]))
    assert torch.equal(got[0].double(), want[0]), "spikes"
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    for name, a, b in zip(("v_last", "v_seq", "grad_x", "grad_w", "grad_v_init"), got[1:], want[1:]):
        assert rel_err(a.double(), b) < tol, name
