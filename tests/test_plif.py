"""ParametricLIF (a learnable time constant, SpikingJelly's PLIFNode) on every backend
against the reference (tks_kernels/ops/plif/reference.py).

Spikes exact in every dtype; fp32 membranes and the gradients of x and v_init within
1e-5 relative to their largest magnitude (fp64: 1e-10); fp16/bf16 within a few storage
steps.

dL/dw is one sum over every neuron and step, and its error is taken relative to the
sum of its terms' magnitudes, sum_i |gh_i dh_i/dw| (``dk_terms``): the same as the
relative error when the terms do not cancel, and the scale that fp32 rounding works
on when they do. With random loss weights the sum can cancel to 1/1000 of that scale,
and there even the fp32 reference (or an fp64-summed one) is off by 1e-5 of the result
itself against fp64: 1e-5 of the result is then below what fp32 can decide. fp32: 1e-5,
fp64: 1e-10, fp16/bf16: one storage epsilon (backward recovers v_{t-1} from the saved
distance to threshold in the storage type, whose rounding enters every term).

Triton runs on CPU tensors under the interpreter (small tensors); ``gpu`` cases run the
cuda and triton backends on CUDA tensors where there is a GPU.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import tks_kernels
from tks_kernels._backends import triton_interpreted
from tks_kernels.ops import plif as plif_ops
from tks_kernels.ops.lif import SURROGATES
from tks_kernels.ops.lif.reference import _Fire
from tks_kernels.ops.plif import reference

from lif_cases import OPTION_GRID, RESETS, rel_err

HAS_CPU = tks_kernels.available_backends()["cpu"][0]
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="the native CPU library did not load")
needs_interp = pytest.mark.skipif(not (triton_interpreted() and tks_kernels.available_backends()["triton"][0]),
                                  reason="the Triton interpreter is not available here (TRITON_INTERPRET=1 and triton)")

# (backend, device) pairs: the fused kernels here, and on a GPU.
HOST_BACKENDS = [pytest.param("cpu", "cpu", marks=needs_cpu, id="cpu"),
                 pytest.param("triton", "cpu", marks=needs_interp, id="triton-interp")]
GPU_BACKENDS = [pytest.param("cuda", "cuda", marks=pytest.mark.gpu, id="cuda"),
                pytest.param("triton", "cuda", marks=pytest.mark.gpu, id="triton-cuda")]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
W0 = -0.4  # k = sigmoid(-0.4) ~ 0.40, tau ~ 2.5


def _id(opts):
    return "-".join(f"{k}={v}" for k, v in opts.items())


def make_input(shape, dtype=torch.float32, device="cpu", seed=0, scale=1.5, offset=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale + offset
    v0 = torch.randn(shape[1:], generator=g) * 0.5
    return x.to(device=device, dtype=dtype), v0.to(device=device, dtype=dtype)


def run(x, v0, backend, w0=W0, seed=1, **opts):
    """Forward with every output, backward from fixed random weights on each; w in
    float32 (float64 for float64 x).

    Returns (spikes, v_last, v_seq, grad_x, grad_v_init, grad_w)."""
    cfg = plif_ops.make_config(**opts)
    xi = x.detach().clone().requires_grad_()
    vi = v0.detach().clone().requires_grad_() if v0 is not None else None
    w_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = torch.tensor(w0, dtype=w_dtype, device=x.device, requires_grad=True)
    s, v, vs = plif_ops.plif_multistep(xi, vi, w, cfg, backend=backend, return_v_seq=True)
    weights = _loss_weights(x, seed)
    loss = sum((o.double() * g).sum() for o, g in zip((s, v, vs), weights))
    inputs = [xi, w] + ([vi] if vi is not None else [])
    grads = torch.autograd.grad(loss, inputs)
    return s, v, vs, grads[0], (grads[2] if vi is not None else None), grads[1]


def _loss_weights(x, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = (x.shape, x.shape[1:], x.shape)
    return [torch.randn(sh, generator=g, dtype=torch.float64).to(x.device) for sh in shapes]


def dk_terms(x, v0, w0, seed=1, **opts):
    """The reference's per-neuron-step terms of dL/dk (k as one tensor per neuron and
    step), whose magnitudes bound the rounding error of dL/dk."""
    cfg = plif_ops.make_config(**opts)
    xc = x.detach().float()
    k = torch.full(x.shape, torch.sigmoid(torch.tensor(w0)).item(), device=x.device, requires_grad=True)
    v = v0.detach().float() if v0 is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = reference.charge(v, xc[t], k[t], cfg.v_rest, cfg.decay_input)
        s = _Fire.apply(h, cfg.v_threshold, cfg.surrogate, cfg.alpha, cfg.fire_at_threshold)
        sr = s.detach() if cfg.detach_reset else s
        v = h - sr * cfg.v_threshold if cfg.v_reset is None else sr * cfg.v_reset + (1 - sr) * h
        spikes.append(s)
        v_seq.append(v)
    outs = (torch.stack(spikes), v, torch.stack(v_seq))
    loss = sum((o.double() * g).sum() for o, g in zip(outs, _loss_weights(x, seed)))
    (terms,) = torch.autograd.grad(loss, k)
    return terms


def assert_matches_reference(x, v0, backend, w0=W0, **opts):
    got = run(x, v0, backend, w0, **opts)
    ref = run(x, v0, "torch", w0, **opts)
    assert got[0].dtype == x.dtype and torch.equal(got[0], ref[0]), f"spikes differ ({backend}, {opts})"
    names = ("v_last", "v_seq", "grad_x", "grad_v_init", "grad_w")
    narrow = x.dtype in (torch.float16, torch.bfloat16)
    eps = torch.finfo(x.dtype).eps
    for name, a, b in zip(names, got[1:], ref[1:]):
        if b is None:
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, name
        err = rel_err(a, b)
        if name == "grad_w":
            k = torch.sigmoid(torch.tensor(w0)).item()
            scale = dk_terms(x, v0, w0, **opts).abs().sum().item() * k * (1 - k)  # dL/dw = dL/dk k (1 - k)
            tol = eps if narrow else TOL[x.dtype]
            diff = abs(a.item() - b.item())
            assert diff <= tol * scale, (f"grad_w: |diff| {diff:.3g} > {tol:.3g} x {scale:.3g} (relative to the "
                                         f"result: {err:.3g}; {backend}, {x.dtype}, {opts})")
        elif not narrow:
            assert err <= TOL[x.dtype], f"{name}: relative error {err:.3g} ({backend}, {x.dtype}, {opts})"
        else:
            # membranes: one storage step; input gradients: also the rounding of the saved d
            assert err <= (2 if name.startswith("v") else 6) * eps, f"{name}: {err:.3g} ({backend}, {x.dtype}, {opts})"


# --- every option, every backend ---------------------------------------------------

@pytest.mark.parametrize("backend,device", HOST_BACKENDS)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=_id)
def test_every_option_matches_reference(backend, device, opts):
    x, v0 = make_input((6, 3, 37), device=device)
    assert_matches_reference(x, v0, backend, v_threshold=0.8, **opts)
    if opts["surrogate"] == "sigmoid":
        assert_matches_reference(x, None, backend, v_threshold=0.8, **opts)


@pytest.mark.parametrize("backend,device", HOST_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("opts", [o for o in OPTION_GRID if o["surrogate"] in ("atan", "piecewise_quadratic")], ids=_id)
def test_other_dtypes_within_tolerance(backend, device, dtype, opts):
    x, v0 = make_input((5, 2, 40), dtype, device)
    assert_matches_reference(x, v0, backend, **opts)


@pytest.mark.parametrize("backend,device", HOST_BACKENDS)
@pytest.mark.parametrize("w0", [-2.5, 0.0, 2.0], ids=lambda w: f"w={w}")
def test_time_constants_and_shapes(backend, device, w0):
    # tau from ~13 to ~1.1; T = 1; sizes not multiples of a block; several blocks/chunks
    for shape in ((1, 7), (4, 1), (3, 1100), (2, 5, 3, 7)):
        x, v0 = make_input(shape, device=device, seed=len(shape))
        assert_matches_reference(x, v0, backend, w0=w0, v_reset=None)
        assert_matches_reference(x, v0, backend, w0=w0, decay_input=False, surrogate="erf")


@pytest.mark.parametrize("backend,device", HOST_BACKENDS)
def test_layouts_and_empty(backend, device):
    base, _ = make_input((4, 2, 6, 5, 3), device=device)
    cases = {
        "transposed": base.transpose(3, 4),
        "time-strided": make_input((8, 2, 6, 5, 3), device=device)[0][::2],
        "channels_last": base.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2)),
        "time-not-outermost": make_input((2, 4, 6, 5, 3), device=device)[0].transpose(0, 1),
    }
    for x in cases.values():
        _, v0 = make_input(tuple(x.shape), device=device, seed=2)
        assert_matches_reference(x, v0.transpose(-1, -2).contiguous().transpose(-1, -2), backend)
    s, v = plif_ops.plif_multistep(torch.ones(3, 0, device=device), None, torch.tensor(0.0), plif_ops.make_config(),
                                   backend=backend)
    assert s.shape == (3, 0) and v.shape == (0,)


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_gpu_every_option_matches_reference(backend, device, dtype):
    ok, reason = tks_kernels.available_backends()[backend]
    assert ok, reason
    # every option on an odd size (strided/unaligned paths) in fp32; a subset on an
    # aligned size (vectorised paths) in every dtype; one large tensor (many blocks)
    if dtype == torch.float32:
        for i, opts in enumerate(OPTION_GRID):
            x, v0 = make_input((6, 3, 37), dtype, device, seed=i)
            assert_matches_reference(x, v0, backend, v_threshold=0.8, **opts)
    for i, opts in enumerate(o for o in OPTION_GRID if o["surrogate"] in ("atan", "erf") and o["v_reset"] != -0.25):
        x, v0 = make_input((5, 4096), dtype, device, seed=i)
        assert_matches_reference(x, v0, backend, v_threshold=0.8, **opts)
    x, _ = make_input((3, 1_000_003), dtype, device)
    assert_matches_reference(x, None, backend, surrogate="atan")


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
def test_gpu_grad_w_deterministic(backend, device):
    x, v0 = make_input((8, 300_001), device=device)
    a = run(x, v0, backend)[5]
    b = run(x, v0, backend)[5]
    assert torch.equal(a, b)


# --- fire_at_threshold and the saved distance (Triton; cpu/cuda join as they have it) ---

TRITON_BACKENDS = [pytest.param("triton", "cpu", marks=needs_interp, id="triton-interp"),
                   pytest.param("triton", "cuda", marks=pytest.mark.gpu, id="triton-cuda")]


@pytest.mark.parametrize("backend,device", TRITON_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fire_at_threshold", [True, False], ids=lambda f: f"fire_at={f}")
@pytest.mark.parametrize("v_reset,decay_input", [(0.0, True), (None, False), (-0.25, True)], ids=str)
def test_fire_at_threshold_exact_ties(backend, device, dtype, fire_at_threshold, v_reset, decay_input):
    """k = sigmoid(0) = 1/2 and x_0 = 2 (v_threshold - v_rest): h_0 == v_threshold exactly;
    spikes there only when fire_at_threshold, everything as the reference's."""
    vth = 0.625
    rest = 0.0 if v_reset is None else v_reset
    x, v0 = make_input((5, 2, 24), dtype, device)
    # h_0 = rest + x_0 / 2 (decay_input) or rest + x_0 (not): the tie, for half the neurons
    x[0, :, :12] = (2 if decay_input else 1) * (vth - rest)
    opts = dict(v_threshold=vth, v_reset=v_reset, decay_input=decay_input, fire_at_threshold=fire_at_threshold)
    s = run(x, None, backend, w0=0.0, **opts)[0]
    assert (s[0, :, :12] == float(fire_at_threshold)).all()  # the ties happen
    assert_matches_reference(x, None, backend, w0=0.0, **opts)
    assert_matches_reference(x, v0, backend, w0=0.0, **opts)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow, under the interpreter
@pytest.mark.parametrize("backend,device", TRITON_BACKENDS)
@pytest.mark.parametrize("fire_at_threshold", [True, False], ids=lambda f: f"fire_at={f}")
@pytest.mark.parametrize("v_reset,surrogate", [(0.0, "sigmoid"), (-0.25, "super_spike"), (None, "atan")], ids=str)
def test_saved_distance_saturates_fp16(backend, device, fire_at_threshold, v_reset, surrogate):
    """fp16 with |h - v_threshold| past 65504 (finite inputs): the saved d saturates
    instead of overflowing to inf (NaN gradients); spikes and gradients as the reference's."""
    big = torch.finfo(torch.float16).max
    # (soft reset and a negative threshold: v = h - v_threshold itself overflows, in the
    # reference too)
    for vth in (64.0,) if v_reset is None else (-64.0, 64.0):
        x, _ = make_input((3, 40), torch.float16, device)
        x[0, :6] = torch.tensor([big, -big, big / 2, -big / 2, 1.0, -1.0])  # later steps: v decays
        opts = dict(v_threshold=vth, v_reset=v_reset, surrogate=surrogate, decay_input=False,
                    fire_at_threshold=fire_at_threshold)
        assert_matches_reference(x, None, backend, w0=0.0, **opts)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("device", [pytest.param("cpu", marks=needs_interp), pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("fire_at_threshold", [True, False], ids=lambda f: f"fire_at={f}")
def test_triton_saved_distance_side_and_range(device, dtype, fire_at_threshold):
    """The saved d of the Triton forward: finite and within the type's range, with the
    sign of h - v_threshold, and read back by the rule it fires it gives the spikes."""
    from tks_kernels.ops.plif import triton as plif_triton
    fi = torch.finfo(dtype)
    sn, big = fi.smallest_normal, fi.max
    shift = 64.0 if dtype == torch.float16 else 1e36  # |d| past max, finite in fp32
    x = torch.tensor([[big, -big, sn, -sn, 0.0, 1.0, -1.0]], dtype=dtype, device=device)
    k = torch.tensor(1 / 4096 if dtype == torch.float16 else 1 / 256, device=device)  # x * k below the range
    for vth in (-shift, 0.0, shift):
        s, _, _, d = plif_triton.plif_forward_triton(x, None, k, True, vth, 0.0, False, 0, 4.0, False, True, False,
                                                     fire_at_threshold)
        dref = x.float() * k - vth  # h_0 = x_0 * k
        assert d.isfinite().all() and (d.abs() <= big).all()
        nonzero = d != 0  # (a d on the harmless side of zero may round to 0)
        assert torch.equal(d.float().sign()[nonzero], dref.sign()[nonzero]), (vth, d, dref)
        fired = (d >= 0) if fire_at_threshold else (d > 0)
        assert torch.equal(fired, (dref >= 0) if fire_at_threshold else (dref > 0))
        assert torch.equal(fired.to(dtype), s)


class _FastSigmoidSpike(torch.autograd.Function):
    """A user surrogate with no built-in counterpart: fires at d >= 0, g'(d) = 1 / (1 + 10|d|)^2."""

    @staticmethod
    def forward(ctx, d):
        ctx.save_for_backward(d)
        return (d >= 0).to(d.dtype)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        return g / (1 + 10 * d.abs()) ** 2


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=needs_interp), pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("v_reset,decay_input", [(0.0, True), (None, False)], ids=str)
def test_triton_any_surrogate_matches_the_reference(device, dtype, v_reset, decay_input):
    """A surrogate function of the user's through the fused Triton kernels (forward_saved,
    saved_distance, backward_sg) against the step-by-step reference with that function."""
    cfg = plif_ops.make_config(v_threshold=0.7, v_reset=v_reset, decay_input=decay_input)
    x, v0 = make_input((6, 3, 37), dtype, device)
    results = []
    for backend in ("triton", "torch"):
        xi, vi = x.detach().clone().requires_grad_(), v0.detach().clone().requires_grad_()
        w = torch.tensor(W0, device=device, requires_grad=True)
        s, v, vs = plif_ops.plif_multistep_any(xi, vi, w, cfg, _FastSigmoidSpike.apply, backend=backend,
                                               return_v_seq=True)
        weights = [torch.rand(t.shape, generator=torch.Generator().manual_seed(i)).to(device)
                   for i, t in enumerate((s, v, vs))]  # positive: dL/dw does not cancel
        loss = sum((o.float() * g).sum() for o, g in zip((s, v, vs), weights))
        results.append((s, v, vs) + torch.autograd.grad(loss, (xi, vi, w)))
    got, ref = results
    assert torch.equal(got[0], ref[0])
    eps = torch.finfo(dtype).eps
    for name, a, b in zip(("v_last", "v_seq", "grad_x", "grad_v_init", "grad_w"), got[1:], ref[1:]):
        # bf16: membranes one storage step; input gradients also the rounding of the saved
        # d; dL/dw sums that rounding over every neuron and step (v_{t-1} is recovered
        # from the bf16 d), measured 0.049 relative here: 12 epsilons
        tol = 1e-5 if dtype == torch.float32 else {"v_last": 2, "v_seq": 2, "grad_w": 12}.get(name, 6) * eps
        assert rel_err(a, b) <= tol, (name, rel_err(a, b))


# --- gradcheck ------------------------------------------------------------------------

def _away_from_threshold(x, v0, w0, cfg, margin=0.02):
    """x nudged so that no h_t lies within margin of the threshold (finite differences
    must not flip a spike)."""
    x = x.clone()
    k = torch.sigmoid(torch.tensor(w0, dtype=x.dtype))
    v = v0.clone()
    for t in range(x.shape[0]):
        for _ in range(20):
            h = reference.charge(v, x[t], k, cfg.v_rest, cfg.decay_input)
            close = (h - cfg.v_threshold).abs() < margin
            if not close.any():
                break
            x[t] = torch.where(close, x[t] + 4 * margin, x[t])
        s = (h >= cfg.v_threshold).to(x.dtype)
        v = h - s * cfg.v_threshold if cfg.v_reset is None else s * cfg.v_reset + (1 - s) * h
    return x


GRADCHECK_BACKENDS = ["torch", pytest.param("cpu", marks=needs_cpu), pytest.param("triton", marks=needs_interp)]


@pytest.mark.parametrize("backend", GRADCHECK_BACKENDS)
@pytest.mark.parametrize("opts", [dict(), dict(v_reset=None), dict(decay_input=False, v_reset=-0.3)], ids=_id)
def test_gradcheck_fp64_including_w(backend, opts):
    # Spikes are a step function: the membrane outputs with detach_reset=True have a true
    # derivative in x, v_init and w.
    cfg = plif_ops.make_config(detach_reset=True, **opts)
    x, v0 = make_input((5, 3, 4), torch.float64, seed=3)
    x = _away_from_threshold(x, v0, W0, cfg)
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)

    def f(x, v0, w):
        _, v, vs = plif_ops.plif_multistep(x, v0, w, cfg, backend=backend, return_v_seq=True)
        return v, vs

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), v0.requires_grad_(), w), eps=1e-6, atol=1e-7)


# --- the dL/dw sum ----------------------------------------------------------------------

@needs_cpu
def test_cpu_grad_w_bitwise_equal_across_thread_counts():
    x, v0 = make_input((4, 70_001))  # 35 chunks of 2048 neurons
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(run(x, v0, "cpu", v_reset=None)[3:])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@needs_cpu
def test_saved_for_backward_one_value_per_neuron_step():
    def saved_bytes(fn):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(storages.values())

    T, N = 8, 3000
    for dtype in (torch.float32, torch.bfloat16):
        x = make_input((T, N), dtype)[0].requires_grad_()
        m = tks_kernels.ParametricLIF(step_mode="m", backend="cpu")
        # the saved value per neuron-step, the scalar k (and sigmoid's output)
        assert 0 < saved_bytes(lambda: m(x)) <= x.element_size() * T * N + 64
        with torch.no_grad():
            m.reset()
            assert saved_bytes(lambda: m(x)) == 0


@pytest.mark.parametrize("backend,device", HOST_BACKENDS)
@pytest.mark.parametrize("save,return_v_seq,with_v0", [(True, True, True), (True, False, False), (False, False, True)])
def test_opcheck(backend, device, save, return_v_seq, with_v0):
    # schema, fake (meta) implementation, aliasing and autograd registration of both ops
    plif_ops.backend_module(backend)  # registers the fake implementations and autograd
    fwd = torch.ops.tks_kernels.plif_forward if backend == "cpu" else torch.ops.tks_kernels.plif_forward_triton
    bwd = torch.ops.tks_kernels.plif_backward if backend == "cpu" else torch.ops.tks_kernels.plif_backward_triton
    x, v0 = make_input((4, 3, 5), device=device)
    v0 = v0.requires_grad_(save) if with_v0 else None  # no gradient without save_for_backward
    k = torch.tensor(0.4, requires_grad=save)
    args = (x.requires_grad_(save), v0, k, True, 1.0, -0.2, False, 1, 2.0, False, save, return_v_seq)
    torch.library.opcheck(fwd, args)
    if save:
        saved = fwd(*args)[3].detach()
        g = torch.randn_like(x)
        torch.library.opcheck(bwd, (g, g[0], g if return_v_seq else None, saved,
                                    v0.detach() if v0 is not None else None, k.detach(),
                                    True, 1.0, -0.2, False, 1, 2.0, False))


# --- the module -----------------------------------------------------------------------

MODULE_BACKENDS = ["torch"] + (["cpu"] if HAS_CPU else [])


def test_parameter_state_dict_and_training_changes_tau():
    m = tks_kernels.ParametricLIF(init_tau=3.0, step_mode="m")
    assert set(m.state_dict()) == {"w"} and isinstance(m.w, torch.nn.Parameter)
    assert m.w.dtype == torch.float32 and m.w.dim() == 0
    assert abs(m.tau - 3.0) < 1e-6 and abs(m.w.item() + torch.log(torch.tensor(2.0)).item()) < 1e-7
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    x = make_input((6, 4, 50))[0]
    m(x).sum().backward()
    assert m.w.grad is not None and m.w.grad.abs().item() > 0
    opt.step()
    assert abs(m.tau - 3.0) > 1e-4
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), tks_kernels.ParametricLIF(init_tau=4.0))
    copy = torch.nn.Sequential(torch.nn.Linear(3, 3), tks_kernels.ParametricLIF())
    copy.load_state_dict(net.state_dict())
    assert set(net.state_dict()) == {"0.weight", "0.bias", "1.w"} and abs(copy[1].tau - 4.0) < 1e-5


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_state_carries_over_and_gradients_flow_into_earlier_calls(backend):
    x = make_input((6, 3, 10))[0].requires_grad_()
    wts = torch.randn(6, 3, 10)
    whole = tks_kernels.ParametricLIF(v_threshold=0.6, surrogate="atan", step_mode="m", backend=backend)
    s = whole(x)
    g_whole = torch.autograd.grad((s * wts).sum() + whole.v.sum(), (x, whole.w))
    parts = tks_kernels.ParametricLIF(v_threshold=0.6, surrogate="atan", step_mode="m", backend=backend)
    s_parts = torch.cat([parts(x[:2]), parts(x[2:5]), parts(x[5:])])
    g_parts = torch.autograd.grad((s_parts * wts).sum() + parts.v.sum(), (x, parts.w))
    assert torch.equal(s_parts, s)
    for a, b in zip(g_parts, g_whole):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_single_step_mode_equals_multi_step(backend):
    x = make_input((5, 2, 7))[0].requires_grad_()
    multi = tks_kernels.ParametricLIF(v_reset=None, step_mode="m", backend=backend, store_v_seq=True)
    single = tks_kernels.ParametricLIF(v_reset=None, step_mode="s", backend=backend)
    s_m = multi(x)
    s_s = torch.stack([single(x[t]) for t in range(5)])
    assert torch.equal(s_m, s_s) and multi.v_seq.shape == x.shape
    g_m = torch.autograd.grad(s_m.sum() + multi.v.sum(), (x, multi.w))
    g_s = torch.autograd.grad(s_s.sum() + single.v.sum(), (x, single.w))
    for a, b in zip(g_s, g_m):
        assert rel_err(a, b) < 1e-5


def test_reset_net_and_failed_call_leaves_state():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), tks_kernels.ParametricLIF(v_reset=-0.5, step_mode="m"),
                              tks_kernels.LIF(v_reset=None, step_mode="m"))
    x = make_input((3, 2, 4))[0]
    first = net(x)
    net(x)
    tks_kernels.reset_net(net)
    assert net[1].v == -0.5 and net[2].v == 0.0
    assert torch.equal(net(x), first)
    m = net[1]
    v_before = m.v.clone()
    for bad in (torch.ones(2, 2, 4, dtype=torch.int64), torch.ones(0, 2, 4), torch.tensor(1.0)):
        with pytest.raises((ValueError, TypeError)):
            m(bad)
        assert torch.equal(m.v, v_before)
    # a membrane of another shape restarts from v_reset, as SpikingJelly's materialize_states
    fresh = tks_kernels.ParametricLIF(v_reset=-0.5, step_mode="m")
    assert torch.equal(m(torch.ones(2, 3, 4)), fresh(torch.ones(2, 3, 4))) and torch.equal(m.v, fresh.v)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(init_tau=1.0), ValueError, "init_tau"),
    (dict(init_tau=0.5), ValueError, "init_tau"),
    (dict(init_tau=float("inf")), ValueError, "init_tau"),
    (dict(init_tau="2"), TypeError, "init_tau"),
    (dict(v_threshold=float("nan")), ValueError, "v_threshold"),
    (dict(v_reset=float("inf")), ValueError, "v_reset"),
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(surrogate="relu"), ValueError, "surrogate must be one of"),
    (dict(step_mode="x"), ValueError, "step_mode"),
    (dict(backend="gpu"), ValueError, "backend"),
], ids=str)
def test_bad_options_raise_naming_the_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tks_kernels.ParametricLIF(**kwargs)


def test_bad_w_and_unavailable_backend():
    x = make_input((2, 3))[0]
    cfg = plif_ops.make_config()
    with pytest.raises(ValueError, match="w must be a scalar"):
        plif_ops.plif_multistep(x, None, torch.zeros(2), cfg)
    with pytest.raises(TypeError, match="w must be a 0-dim"):
        plif_ops.plif_multistep(x, None, 0.5, cfg)
    with pytest.raises(ValueError, match="w must be on x's device"):
        plif_ops.plif_multistep(x, None, torch.zeros((), device="meta"), cfg)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend='cuda' cannot run here"):
            tks_kernels.ParametricLIF(backend="cuda")(x)


def test_options_and_repr():
    m = tks_kernels.ParametricLIF(init_tau=4.0, decay_input=False, v_threshold=0.5, v_reset=None, surrogate="erf",
                                  alpha=1.5, detach_reset=True)
    assert (m.decay_input, m.v_threshold, m.v_reset, m.detach_reset, m.surrogate, m.alpha) == (False, 0.5, None, True, "erf", 1.5)
    assert m.init_tau == 4.0 and "tau=4.0" in repr(m) and "Erf(alpha=1.5, spiking=True)" in repr(m)


# --- torch.compile ----------------------------------------------------------------------

class _ConvSNN(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.plif1 = tks_kernels.ParametricLIF(v_threshold=0.5, surrogate="atan", step_mode="m", backend=backend)
        self.plif2 = tks_kernels.ParametricLIF(init_tau=3.0, v_reset=None, detach_reset=True, step_mode="m",
                                               backend=backend)
        self.fc = torch.nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):  # [T, B, C, H, W]
        T, B = x.shape[:2]
        y = self.plif1(self.conv(x.flatten(0, 1)).unflatten(0, (T, B)))
        return self.fc(self.plif2(y).flatten(2))


@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_cpu), pytest.param("triton", marks=needs_interp)])
def test_torch_compile_fullgraph_no_graph_break(backend):
    torch._dynamo.reset()
    model = _ConvSNN(backend)
    x = make_input((3, 2, 2, 5, 5))[0].requires_grad_()
    params = [x, model.plif1.w, model.plif2.w, model.conv.weight]
    out = model(x)
    eager = torch.autograd.grad(out.square().sum(), params)
    tks_kernels.reset_net(model)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    tks_kernels.reset_net(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out_c = compiled(x)
    got = torch.autograd.grad(out_c.square().sum(), params)
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- SpikingJelly ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", pytest.param("cpu", marks=needs_cpu)])
def test_equals_spikingjelly_plifnode(backend):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    sj_surrogates = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan, "piecewise_quadratic": surrogate.PiecewiseQuadratic,
                     "piecewise_exp": surrogate.PiecewiseExp, "soft_sign": surrogate.SoftSign, "erf": surrogate.Erf,
                     "super_spike": surrogate.SuperSpike}
    wts = torch.linspace(-1, 1, 33)
    for (name, cls), v_reset in itertools.product(sj_surrogates.items(), RESETS):
        for decay_input, detach_reset in ((True, False), (False, True)):
            x = make_input((6, 4, 33), seed=len(name))[0].requires_grad_()
            sj = neuron.ParametricLIFNode(init_tau=3.0, decay_input=decay_input, v_threshold=0.7, v_reset=v_reset,
                                          surrogate_function=cls(), detach_reset=detach_reset, step_mode="m")
            s_ref = sj(x)
            g_ref = torch.autograd.grad((s_ref * wts).sum() + sj.v.sum(), (x, sj.w))
            ours = tks_kernels.ParametricLIF(init_tau=3.0, decay_input=decay_input, v_threshold=0.7, v_reset=v_reset,
                                             surrogate=name, detach_reset=detach_reset, step_mode="m", backend=backend)
            assert torch.equal(ours.w, sj.w)
            s = ours(x)
            g = torch.autograd.grad((s * wts).sum() + ours.v.sum(), (x, ours.w))
            assert torch.equal(s, s_ref), (name, v_reset, decay_input)
            assert rel_err(g[0], g_ref[0]) < 1e-5, (name, v_reset, decay_input)
            assert rel_err(g[1], g_ref[1]) < 1e-5, (name, v_reset, decay_input, g[1].item(), g_ref[1].item())
            assert rel_err(ours.v, sj.v) < 1e-6
