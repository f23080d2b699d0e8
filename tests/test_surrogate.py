"""Any surrogate, fused: every SpikingJelly surrogate class (default and non-default
parameters) and users' own surrogates give SpikingJelly's / the step-by-step autograd
loop's spikes and gradients with LIF and ParametricLIF; the seven with a built-in
derivative run the built-in kernels, the others the generic path (fused forward, g'
from one vectorised call, the backend's ``backward_sg``); the fused op, not a Python
loop, is what runs in multi-step mode.

Backends: ``torch`` (the reference loop), ``double`` (tests/sg_contract_backend.py, a
plain-torch stand-in for the contract-3 functions, so the generic wrappers are checked
before the native kernels have them), and each fused backend that runs here (for a
surrogate without a built-in derivative: once it provides forward_saved/backward_sg).
"""
from __future__ import annotations

import copy
import inspect
import itertools

import pytest
import torch

import tks_kernels
from tks_kernels import surrogate as tks_surrogate
from tks_kernels.ops import lif as lif_ops
from tks_kernels.ops import plif as plif_ops

import sg_contract_backend
from lif_cases import rel_err

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sjs = pytest.importorskip("spikingjelly.activation_based.surrogate")

STATUS = tks_kernels.available_backends()
FUSED = [b for b in ("cpu", "triton", "cuda") if STATUS[b][0]]
BACKENDS = ["torch", "double"] + FUSED

# SpikingJelly's surrogates with a Heaviside forward, with default and non-default parameters
SJ_CASES = {
    "Sigmoid": {"alpha": 2.5}, "ATan": {"alpha": 3.0}, "PiecewiseQuadratic": {"alpha": 1.7},
    "PiecewiseExp": {"alpha": 2.2}, "SoftSign": {"alpha": 1.3}, "SuperSpike": {"alpha": 0.6}, "Erf": {"alpha": 1.1},
    "NonzeroSignLogAbs": {"alpha": 2.0}, "PiecewiseLeakyReLU": {"w": 0.5, "c": 0.1},
    "SquarewaveFourierSeries": {"n": 4, "T_period": 6.0}, "S2NN": {"alpha": 3.0, "beta": 2.0},
    "QPseudoSpike": {"alpha": 3.0}, "LeakyKReLU": {"leak": 0.1, "k": 0.5}, "FakeNumericalGradient": {"alpha": 0.5},
    "LogTailedReLU": {"alpha": 0.1}, "DeterministicPass": None, "Rect": {"alpha": 0.7},
}
BUILTIN = {"Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf"}
NOT_HEAVISIDE = ("PoissonPass", "MultiLevelSpikeCount")


def test_every_spikingjelly_surrogate_class_is_covered():
    classes = {n for n, c in vars(sjs).items()
               if inspect.isclass(c) and issubclass(c, sjs.SurrogateFunctionBase) and c is not sjs.SurrogateFunctionBase}
    assert classes == set(SJ_CASES) | set(NOT_HEAVISIDE)


def sj_cases():
    for name, params in SJ_CASES.items():
        yield pytest.param(name, {}, id=f"{name}-default")
        if params is not None:
            yield pytest.param(name, params, id=f"{name}-" + ",".join(f"{k}={v}" for k, v in params.items()))


@pytest.fixture
def double(monkeypatch):
    """Route backend "double" of the LIF and PLIF dispatch to the contract stand-in."""
    import tks_kernels.neuron

    monkeypatch.setattr(tks_kernels.neuron, "BACKENDS", tks_kernels.neuron.BACKENDS + ("double",))
    for ops, module in ((lif_ops, sg_contract_backend.LIF), (plif_ops, sg_contract_backend.PLIF)):
        real = ops._resolve
        monkeypatch.setitem(ops._MODULES, "double", module)
        monkeypatch.setattr(ops, "_resolve", lambda b, d, real=real: "double" if b == "double" else real(b, d))


def backend_for(backend: str, fn, op: str = "LIF"):
    """Skip (with the reason) a fused backend that cannot yet differentiate ``fn``."""
    builtin = tks_surrogate.builtin_of(fn) is not None
    if backend == "double" and builtin:
        pytest.skip("the stand-in has only the any-surrogate functions (built-ins run the native kernels)")
    if backend in ("torch", "double") or builtin:
        return
    loader = lif_ops.backend_module if op == "LIF" else plif_ops.backend_module
    try:
        lif_ops.sg_backend(backend, op=op, loader=loader)
    except NotImplementedError as exc:
        pytest.skip(str(exc).split(",")[0])


OPTIONS = [dict(v_reset=0.0, detach_reset=False, decay_input=True), dict(v_reset=None, detach_reset=True, decay_input=True),
           dict(v_reset=-0.2, detach_reset=False, decay_input=False)]


def make_input(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.9 + 0.45


def compare_with_spikingjelly(ours_cls, sj_cls, fn, backend, shape=(5, 3, 12), **extra):
    """Our multi-step neuron against SpikingJelly's with (copies of) ``fn``: spikes exactly,
    v, v_seq and the gradients of x, v_init (and w) to 1e-5 of their magnitude."""
    for i, opts in enumerate(OPTIONS):
        x = make_input(shape, seed=i).requires_grad_()
        v0 = make_input(shape[1:], seed=10 + i).mul(0.5).requires_grad_()
        wts = [make_input(shape, seed=20 + i), make_input(shape[1:], seed=30 + i), make_input(shape, seed=40 + i)]
        results = []
        for cls, kw in ((sj_cls, {}), (ours_cls, {"backend": backend})):
            node = cls(**extra, v_threshold=0.6, surrogate_function=copy.deepcopy(fn), step_mode="m",
                       store_v_seq=True, **opts, **kw)
            node.v = v0
            s = node(x)
            loss = (s * wts[0]).sum() + (node.v * wts[1]).sum() + (node.v_seq * wts[2]).sum()
            inputs = (x, v0) + ((node.w,) if hasattr(node, "w") else ())
            results.append((s, node.v, node.v_seq) + torch.autograd.grad(loss, inputs))
        ref, got = results
        assert torch.equal(got[0], ref[0]), f"spikes differ ({opts})"
        assert got[0].sum() > 0 and got[0].sum() < got[0].numel(), "the case must fire some but not all spikes"
        for name, a, b in zip(("v", "v_seq", "grad_x", "grad_v_init", "grad_w"), got[1:], ref[1:]):
            assert a.shape == b.shape, name
            assert rel_err(a, b) < 1e-5, f"{name}: {rel_err(a, b):.3g} ({opts})"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,params", list(sj_cases()))
def test_lif_with_spikingjelly_surrogate_gives_spikingjellys_gradients(name, params, backend, double):
    fn = getattr(sjs, name)(**params)
    backend_for(backend, fn)
    compare_with_spikingjelly(tks_kernels.LIF, sj_neuron.LIFNode, fn, backend, tau=2.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,params", list(sj_cases()))
def test_plif_with_spikingjelly_surrogate_gives_spikingjellys_gradients_and_w(name, params, backend, double):
    fn = getattr(sjs, name)(**params)
    backend_for(backend, fn, "PLIF")
    compare_with_spikingjelly(tks_kernels.ParametricLIF, sj_neuron.ParametricLIFNode, fn, backend, init_tau=3.0)


@pytest.mark.parametrize("name", NOT_HEAVISIDE)
def test_surrogate_without_heaviside_forward_is_refused(name):
    fn = sjs.PoissonPass() if name == "PoissonPass" else sjs.MultiLevelSpikeCount(3)
    lif = tks_kernels.LIF(surrogate_function=fn, step_mode="m", backend="torch")
    with pytest.raises(ValueError, match="Heaviside|probe"):
        lif(torch.rand(3, 4))
    with pytest.raises(ValueError, match="spiking=True|not a Heaviside"):
        tks_kernels.LIF(surrogate_function=sjs.ATan(spiking=False), step_mode="m")(torch.rand(3, 4))


# --- users' own surrogates --------------------------------------------------------

class TriangleFn(torch.autograd.Function):
    """A user's surrogate as an autograd.Function: g'(x) = max(0, 1 - |x|)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1 - x.abs()).clamp_min(0)


class InPlaceGradFn(torch.autograd.Function):
    """A user's surrogate whose backward writes into the incoming gradient in place."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.mul_(torch.exp(-x.abs()))


class StraightThroughTanh(torch.nn.Module):
    """A user's nn.Module surrogate: the forward is the step, the gradient tanh's."""

    def __init__(self, beta=2.0):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        soft = torch.tanh(self.beta * x)
        return (x >= 0).to(x.dtype) + (soft - soft.detach())


USER_SURROGATES = {
    "autograd.Function class": TriangleFn,
    "autograd.Function.apply": TriangleFn.apply,
    "in-place backward": InPlaceGradFn,
    "nn.Module": StraightThroughTanh(),
    "callable": lambda x: StraightThroughTanh(0.7)(x),
}


@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("kind", list(USER_SURROGATES))
@pytest.mark.parametrize("neuron", ["LIF", "ParametricLIF"])
def test_user_surrogate_runs_fused_and_equals_the_autograd_loop(neuron, kind, backend, double):
    fn = USER_SURROGATES[kind]
    backend_for(backend, fn, "LIF" if neuron == "LIF" else "PLIF")
    cls = getattr(tks_kernels, neuron)
    for i, opts in enumerate(OPTIONS):
        x = make_input((6, 2, 9), seed=i).requires_grad_()
        v0 = make_input((2, 9), seed=5 + i).requires_grad_()
        res = []
        for b in ("torch", backend):
            node = cls(surrogate_function=fn, step_mode="m", store_v_seq=True, backend=b, **opts)
            node.v = v0
            s = node(x)
            loss = (s * x.detach().cos()).sum() + node.v.sum() + (node.v_seq * 0.3).sum()
            res.append((s, node.v) + torch.autograd.grad(loss, (x, v0) + ((node.w,) if neuron != "LIF" else ())))
        assert torch.equal(res[0][0], res[1][0])
        for a, b in zip(res[1][1:], res[0][1:]):
            assert rel_err(a, b) < 1e-5


def test_reference_path_is_the_step_loop_with_the_surrogate_itself():
    # backend="torch" with a surrogate object = SpikingJelly's SimpleLIFNode-style loop
    fn = sjs.Rect(alpha=0.8)
    x = make_input((5, 7), seed=3).requires_grad_()
    s, v = tks_kernels.functional.lif_multistep(x, surrogate=fn, tau=2.0, v_threshold=0.5, backend="torch")
    vv, spikes = torch.zeros(7), []
    for t in range(5):
        h = vv + (x[t] - vv) / 2.0
        st = fn(h - 0.5)
        vv = st * 0.0 + (1 - st) * h
        spikes.append(st)
    ref = torch.stack(spikes)
    assert torch.equal(s, ref)
    (g1,) = torch.autograd.grad(s.sum() + v.sum(), x)
    (g2,) = torch.autograd.grad(ref.sum() + vv.sum(), x)
    assert rel_err(g1, g2) < 1e-6


# --- the fused op is what runs --------------------------------------------------------

ALL_SURROGATES = {**{f"sj.{n}": (lambda n=n: getattr(sjs, n)()) for n in SJ_CASES},
                  **{f"tks.{c.__name__}": c for c in tks_surrogate.CLASS_OF_NAME.values()},
                  **{f"user.{k}": (lambda f=f: f) for k, f in USER_SURROGATES.items()}}


class _Counter:
    def __init__(self, monkeypatch, obj, name):
        self.calls = []
        fn = getattr(obj, name)

        def wrapper(*args, **kwargs):
            self.calls.append(args)
            return fn(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapper)


def _forbid(monkeypatch, obj, name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{obj.__name__}.{name} (a Python step loop) ran instead of the fused op")

    monkeypatch.setattr(obj, name, fail)


@pytest.mark.parametrize("backend", ["double"] + FUSED)
@pytest.mark.parametrize("key", list(ALL_SURROGATES))
@pytest.mark.parametrize("neuron", ["LIF", "ParametricLIF"])
def test_multi_step_mode_runs_the_fused_op_for_every_surrogate(neuron, key, backend, double, monkeypatch):
    fn = ALL_SURROGATES[key]()
    is_lif = neuron == "LIF"
    ops = lif_ops if is_lif else plif_ops
    backend_for(backend, fn, "LIF" if is_lif else "PLIF")
    from tks_kernels.ops.lif import reference as lif_reference
    from tks_kernels.ops.plif import reference as plif_reference

    _forbid(monkeypatch, lif_reference, "lif_multistep")
    _forbid(monkeypatch, plif_reference, "plif_multistep")
    _forbid(monkeypatch, ops, "reference_any_surrogate")
    stand_in = sg_contract_backend.LIF if is_lif else sg_contract_backend.PLIF
    module = ops.backend_module(backend) if backend != "double" else stand_in
    builtin = tks_surrogate.builtin_of(fn) is not None
    forward = "lif_multistep" if is_lif else "plif_multistep"
    counters = {n: _Counter(monkeypatch, module, n) for n in
                ((forward,) if builtin else ("forward_saved", "backward_sg"))}
    x_seen = []
    if not builtin and isinstance(fn, torch.nn.Module):
        fn.register_forward_hook(lambda m, inp, out: x_seen.append(tuple(inp[0].shape)))
    node = getattr(tks_kernels, neuron)(surrogate_function=fn, step_mode="m", backend=backend)
    x = make_input((7, 3, 5), seed=1).requires_grad_()
    s = node(x)
    (s.sum() + node.v.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if not is_lif:
        assert node.w.grad is not None and node.w.grad != 0
    for name, c in counters.items():
        assert len(c.calls) == 1, f"{name} ran {len(c.calls)} times for 7 steps"
    if x_seen:  # the surrogate's derivative: one vectorised call over all 7 steps (beside the probe)
        assert x_seen.count((7, 3, 5)) == 1


# --- our surrogate objects ----------------------------------------------------------

@pytest.mark.parametrize("name", lif_ops.SURROGATES)
def test_our_surrogate_classes_equal_spikingjellys(name):
    ours_cls = tks_surrogate.CLASS_OF_NAME[name]
    sj_cls = getattr(sjs, ours_cls.__name__)
    for alpha in (None, 0.7, 3.0):
        ours = ours_cls() if alpha is None else ours_cls(alpha)
        sj = sj_cls() if alpha is None else sj_cls(alpha=alpha)
        assert ours.alpha == sj.alpha
        x = torch.linspace(-3, 3, 601, dtype=torch.float64).requires_grad_()
        (ga,) = torch.autograd.grad(ours(x).sum(), x)
        (gb,) = torch.autograd.grad(sj(x).sum(), x)
        assert torch.equal(ours(x), sj(x))
        assert rel_err(ga, gb) < 1e-12
        assert tks_surrogate.builtin_of(ours) == (name, ours.alpha) == tks_surrogate.builtin_of(sj)


def test_builtin_recognition():
    class MyATan(sjs.ATan):  # a subclass may change the derivative: generic path
        pass

    assert tks_surrogate.builtin_of(MyATan()) is None
    assert tks_surrogate.builtin_of(sjs.ATan(alpha=-1.0)) is None  # outside the kernels' range: generic, exact
    assert tks_surrogate.builtin_of(sjs.ATan(spiking=False)) is None
    assert tks_surrogate.builtin_of(sjs.Rect()) is None
    assert tks_surrogate.builtin_of(tks_surrogate.from_name("erf", 1.5)) == ("erf", 1.5)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        tks_surrogate.from_name("relu")
    with pytest.raises(ValueError, match="alpha"):
        tks_surrogate.ATan(0.0)
    bad = tks_surrogate.ATan()
    bad.alpha = float("nan")
    with pytest.raises(ValueError, match="alpha"):
        tks_kernels.LIF(surrogate_function=bad, step_mode="m")(torch.rand(2, 3))


@pytest.mark.parametrize("backend", ["torch"] + FUSED)
def test_changing_alpha_takes_effect_at_the_next_call(backend):
    x = make_input((4, 30), seed=2).requires_grad_()
    (g_ref,) = torch.autograd.grad(
        tks_kernels.LIF(surrogate_function=sjs.ATan(alpha=5.0), step_mode="m", backend="torch")(x).sum(), x)
    for given in (sjs.ATan(), tks_surrogate.ATan(), "atan"):
        lif = tks_kernels.LIF(surrogate_function=given, step_mode="m", backend=backend)
        (g_default,) = torch.autograd.grad(lif(x).sum(), x)
        lif.reset()
        lif.surrogate_function.alpha = 5.0
        assert lif.alpha == 5.0 and lif.surrogate == "atan"
        (g_new,) = torch.autograd.grad(lif(x).sum(), x)
        assert not torch.allclose(g_new, g_default) and rel_err(g_new, g_ref) < 1e-5
        lif.reset()
        lif.surrogate_function = "sigmoid"  # a name set later works too
        lif(x)


@pytest.mark.parametrize("backend", [b for b in FUSED])
def test_backend_without_contract_functions_raises_not_falls_back(backend):
    try:
        lif_ops.sg_backend(backend)
        pytest.skip(f"backend {backend!r} provides forward_saved/backward_sg")
    except NotImplementedError:
        pass
    lif = tks_kernels.LIF(surrogate_function=sjs.Rect(), step_mode="m", backend=backend)
    x = make_input((3, 4), seed=0)
    with pytest.raises(NotImplementedError, match="forward_saved"):
        lif(x.requires_grad_())
    lif.reset()
    with torch.no_grad():  # the forward alone needs no surrogate derivative
        assert torch.equal(lif(x), tks_kernels.LIF(surrogate_function=sjs.Rect(), step_mode="m", backend="torch")(x))


def test_functional_api_takes_surrogate_objects():
    x = make_input((4, 6), seed=4).requires_grad_()
    f = tks_kernels.functional.lif_multistep
    a = f(x, surrogate=sjs.Erf(alpha=1.5), backend="torch")
    b = f(x, surrogate="erf", alpha=1.5, backend="torch")
    assert torch.equal(a[0], b[0])
    ga = torch.autograd.grad(a[0].sum(), x)[0]
    gb = torch.autograd.grad(b[0].sum(), x)[0]
    assert rel_err(ga, gb) < 1e-6
    with pytest.raises(TypeError, match="alpha"):
        f(x, surrogate=sjs.Erf(), alpha=1.0)
    with pytest.raises(ValueError, match="fire_at_threshold=False"):
        f(x, surrogate=lambda d: (d > 0).float(), backend="torch")
    f(x, surrogate=lambda d: (d > 0).float(), fire_at_threshold=False, backend="torch")


# --- the generic path over random cases -------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GENERIC_FNS = [sjs.Rect(alpha=0.7), sjs.S2NN(), sjs.QPseudoSpike(), StraightThroughTanh(), TriangleFn.apply]


@settings(max_examples=60, deadline=None, derandomize=True)  # the same cases on every run
@given(
    shape=st.tuples(st.integers(1, 6), st.lists(st.integers(1, 5), max_size=2)).map(lambda t: (t[0],) + tuple(t[1])),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    fn=st.sampled_from(range(len(GENERIC_FNS))),
    v_reset=st.sampled_from([0.0, -0.3, None]),
    decay_input=st.booleans(), detach_reset=st.booleans(), with_v0=st.booleans(), with_seq=st.booleans(),
    plif=st.booleans(), backend=st.sampled_from(["double"] + FUSED), seed=st.integers(0, 2**16),
)
def test_generic_path_equals_the_reference_loop(shape, dtype, fn, v_reset, decay_input, detach_reset, with_v0, with_seq,
                                                 plif, backend, seed):
    fn = GENERIC_FNS[fn]
    module = (sg_contract_backend.PLIF if plif else sg_contract_backend.LIF) if backend == "double" else None
    if module is None:
        try:
            module = lif_ops.sg_backend(backend, op="PLIF" if plif else "LIF",
                                        loader=plif_ops.backend_module if plif else lif_ops.backend_module)
        except NotImplementedError:
            return  # covered once the backend provides the functions
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.9 + 0.4).to(dtype).requires_grad_()
    v0 = (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_() if with_v0 else None
    wts = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(3)]
    w = torch.tensor(0.4, requires_grad=True)
    results = []
    for fused in (True, False):
        if plif:
            cfg = plif_ops.make_config(decay_input, 0.6, v_reset, "sigmoid", None, detach_reset)
            k = plif_ops.decay_factor(w, dtype)
            out = (plif_ops._AnySurrogatePLIF.apply(x, v0, k, cfg, fn, module, with_seq) if fused else
                   plif_ops.reference_any_surrogate(x, v0, k, cfg, fn, with_seq))
        else:
            cfg = lif_ops.make_config(2.5, decay_input, 0.6, v_reset, "sigmoid", None, detach_reset)
            out = (lif_ops._AnySurrogateLIF.apply(x, v0, cfg, fn, module, with_seq) if fused else
                   lif_ops.reference_any_surrogate(x, v0, cfg, fn, with_seq))
        loss = sum((o * wt[: o.shape[0]] if o.dim() == x.dim() else o * wt[0]).sum() for o, wt in zip(out, wts))
        inputs = [x] + ([v0] if with_v0 else []) + ([w] if plif else [])
        results.append(tuple(out) + torch.autograd.grad(loss, inputs))
    got, ref = results
    assert torch.equal(got[0], ref[0])
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(got[1:], ref[1:]):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert rel_err(a, b) <= tol
