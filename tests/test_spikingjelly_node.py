"""tks_kernels.LIF / ParametricLIF behave as SpikingJelly 2.0's LIFNode /
ParametricLIFNode (constructor, memories, reset/detach, settable options, store_v_seq,
step modes, functional forwards, repr, pickling, deepcopy), run side by side with
SpikingJelly's on the same calls; and tks_kernels.spikingjelly's subclasses are
SpikingJelly's own classes running our kernels."""
from __future__ import annotations

import copy
import inspect
import io
import pickle

import pytest
import torch

import tks_kernels
from tks_kernels import surrogate as tks_surrogate

from lif_cases import rel_err

sj_base = pytest.importorskip("spikingjelly.activation_based.base")
sjn = pytest.importorskip("spikingjelly.activation_based.neuron")
sjs = pytest.importorskip("spikingjelly.activation_based.surrogate")
sjf = pytest.importorskip("spikingjelly.activation_based.functional")
tks_sj = pytest.importorskip("tks_kernels.spikingjelly")

HAS_CPU = tks_kernels.available_backends()["cpu"][0]
BACKENDS = ["torch"] + (["cpu"] if HAS_CPU else [])
PAIRS = {  # ours -> SpikingJelly's
    "LIF": (tks_kernels.LIF, sjn.LIFNode),
    "PLIF": (tks_kernels.ParametricLIF, sjn.ParametricLIFNode),
    "sj.LIFNode": (tks_sj.LIFNode, sjn.LIFNode),
    "sj.PLIFNode": (tks_sj.ParametricLIFNode, sjn.ParametricLIFNode),
}


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.9 + 0.5


def public_names(obj):
    return {n for n in dir(obj) if not n.startswith("_")} - set(dir(torch.nn.Module()))


@pytest.mark.parametrize("pair", ["LIF", "PLIF"])
def test_every_public_attribute_of_spikingjellys_node_exists(pair):
    ours, theirs = PAIRS[pair]
    missing = public_names(theirs()) - public_names(ours())
    assert not missing


@pytest.mark.parametrize("pair", ["LIF", "PLIF"])
def test_constructor_signature_is_spikingjellys_then_keyword_only_extras(pair):
    ours, theirs = PAIRS[pair]
    p_ours = inspect.signature(ours).parameters
    p_sj = inspect.signature(theirs).parameters
    positional = [n for n, p in p_ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    first = "tau" if pair == "LIF" else "init_tau"
    assert positional == [first, "decay_input", "v_threshold", "v_reset", "surrogate_function", "detach_reset",
                          "step_mode", "backend", "store_v_seq"]
    for name in p_sj:
        if name != "surrogate_function":  # ours: None = Sigmoid(alpha=4) made per neuron
            assert p_ours[name].default == p_sj[name].default, name
    assert {n for n, p in p_ours.items() if p.kind == p.KEYWORD_ONLY} == {"surrogate", "alpha", "fire_at_threshold"}
    node = ours()
    assert node.step_mode == "s" and isinstance(node.surrogate_function, tks_surrogate.Sigmoid)
    assert node.surrogate_function.alpha == 4.0


def test_positional_arguments_in_both_spikingjelly_orders():
    fn = sjs.ATan()
    # SpikingJelly 0.0.0.0.14: (..., step_mode, backend, store_v_seq)
    a = tks_kernels.LIF(3.0, False, 0.5, None, fn, True, "m", "torch", True)
    assert (a.tau, a.decay_input, a.v_threshold, a.v_reset, a.detach_reset, a.step_mode, a.backend, a.store_v_seq) == \
        (3.0, False, 0.5, None, True, "m", "torch", True)
    assert a.surrogate_function is fn
    # SpikingJelly 2.0: (..., step_mode, store_v_seq); no backend is a bool
    b = tks_kernels.LIF(3.0, False, 0.5, None, fn, True, "m", True)
    assert (b.backend, b.store_v_seq) == ("auto", True)
    p = tks_kernels.ParametricLIF(3.0, True, 1.0, 0.0, fn, False, "m", True)
    assert p.store_v_seq and abs(p.tau - 3.0) < 1e-6
    # the old order (surrogate name, alpha after v_reset) fails loudly, never silently
    with pytest.raises(TypeError, match="detach_reset"):
        tks_kernels.LIF(2.0, True, 1.0, 0.0, "atan", 2.0)


def test_backend_names_of_spikingjelly_are_accepted():
    assert tks_kernels.LIF(backend="cupy").backend == "cuda"
    assert tks_kernels.LIF(backend="triton").backend == "triton"
    assert tks_kernels.LIF(backend="torch").backend == "torch"
    assert tks_sj.LIFNode(backend="cupy").backend == "cuda"
    with pytest.raises(ValueError, match="backend"):
        tks_kernels.LIF(backend="gpu")


def test_surrogate_arguments():
    assert tks_kernels.LIF(surrogate="erf", alpha=1.5).surrogate_function.alpha == 1.5
    assert isinstance(tks_kernels.LIF(surrogate_function="atan").surrogate_function, tks_surrogate.ATan)
    with pytest.raises(TypeError, match="not both"):
        tks_kernels.LIF(surrogate_function=sjs.ATan(), surrogate="atan")
    with pytest.raises(TypeError, match="alpha"):
        tks_kernels.LIF(surrogate_function=sjs.ATan(), alpha=2.0)
    with pytest.raises(TypeError, match="surrogate_function must be"):
        tks_kernels.LIF(surrogate_function=3.0)
    with pytest.raises(ValueError, match="step_mode"):
        tks_kernels.LIF(step_mode="x")
    lif = tks_kernels.LIF()
    with pytest.raises(ValueError, match="step_mode"):
        lif.step_mode = "multi"
    assert lif.step_mode == "s"


def run_both(pair, calls, backend="torch", **kw):
    """Construct ours and SpikingJelly's with ``kw`` and apply each of ``calls`` (functions
    of a node returning a tensor or None) to both; returns the two result lists."""
    ours_cls, sj_cls = PAIRS[pair]
    extra = {"backend": backend} if ours_cls in (tks_kernels.LIF, tks_kernels.ParametricLIF) else {"backend": backend}
    nodes = (ours_cls(**kw, **extra), sj_cls(**kw))
    out = ([], [])
    for call in calls:
        for node, res in zip(nodes, out):
            res.append(call(node))
    return nodes, out


def assert_same(a, b, what=""):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), (what, a, b)
        assert a.shape == b.shape and a.dtype == b.dtype, what
        assert rel_err(a, b) < 1e-6, what
    else:
        assert a == b, what


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pair", list(PAIRS))
def test_same_state_machine_as_spikingjelly(pair, backend):
    """One script of calls, options changes and state operations on both neurons."""
    x = rand(4, 3, 5)
    xs = rand(3, 5, seed=1)

    def grab(n):
        return n.v.detach().clone() if isinstance(n.v, torch.Tensor) else n.v

    calls = [
        lambda n: n(xs),                                        # single step (the default mode)
        lambda n: n(xs * 1.5),                                  # the state carries over
        grab,
        lambda n: n.reset(),
        grab,
        lambda n: setattr(n, "step_mode", "m"),
        lambda n: n(x),                                         # multi-step from rest
        lambda n: n(rand(2, 4, 5, seed=3)),                     # other shape: restarts from rest
        lambda n: n.v.shape,
        lambda n: n.reset(),
        lambda n: setattr(n, "v_threshold", 0.7),               # options take effect next call
        lambda n: setattr(n, "detach_reset", True),
        lambda n: setattr(n, "v_reset", -0.25),
        lambda n: setattr(n, "decay_input", False),
        lambda n: n(x),
        grab,
        lambda n: setattr(n, "store_v_seq", True),
        lambda n: n.v_seq,                                      # switching it clears v_seq
        lambda n: n(x),
        lambda n: n.v_seq,                                      # [T, *] in multi-step mode
        lambda n: setattr(n, "step_mode", "s"),
        lambda n: n(xs),
        lambda n: n(xs),
        lambda n: n.v_seq,                                      # single-step accumulation
        lambda n: n(rand(7, seed=5)),
        lambda n: n.v_seq,                                      # restarts on a new shape
        lambda n: setattr(n, "store_v_seq", False),
        lambda n: n.v_seq,
        lambda n: [k for k, _ in n.named_memories()],
        lambda n: n.get_reset_value("v"),
        lambda n: n.reset(),
        lambda n: n.v,
        lambda n: setattr(n, "v_reset", None),                  # soft reset, reset value still 0.0
        lambda n: n(xs),
        grab,
    ]
    if pair in ("LIF", "sj.LIFNode"):
        calls.insert(14, lambda n: setattr(n, "tau", 3.0))
    nodes, (ours, theirs) = run_both(pair, calls, backend)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_same(a, b, f"call {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_gradients_through_the_kept_state_equal_spikingjellys(pair, backend, step_mode):
    ours_cls, sj_cls = PAIRS[pair]
    x = rand(6, 2, 7).requires_grad_()
    grads = []
    for cls, kw in ((ours_cls, {"backend": backend}), (sj_cls, {})):
        n = cls(surrogate_function=sjs.ATan(), step_mode=step_mode, store_v_seq=True, **kw)
        chunks = [x[:2], x[2:5], x[5:]] if step_mode == "m" else list(x)
        out = torch.cat([n(c) if step_mode == "m" else n(c).unsqueeze(0) for c in chunks])
        loss = (out * x.detach()).sum() + n.v.sum() + n.v_seq.square().sum()
        params = (x,) + ((n.w,) if hasattr(n, "w") else ())
        grads.append((out,) + torch.autograd.grad(loss, params))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1:], grads[1][1:]):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("pair", list(PAIRS))
def test_detach_cuts_the_graph_as_spikingjellys(pair):
    ours_cls, sj_cls = PAIRS[pair]
    x = rand(4, 3).requires_grad_()
    res = []
    for cls in (ours_cls, sj_cls):
        n = cls(step_mode="m", store_v_seq=True)
        n(x)
        n.detach()
        sjf.detach_net(torch.nn.Sequential(n))
        res.append((n.v.requires_grad, n.v_seq.requires_grad))
        y = n(x)
        (g,) = torch.autograd.grad(y.sum() + n.v.sum(), x)
        res.append(g)
    assert res[0] == res[2] == (False, False)
    assert rel_err(res[1], res[3]) < 1e-6


@pytest.mark.parametrize("pair", list(PAIRS))
def test_functional_forwards_and_materialize_states(pair):
    ours_cls, sj_cls = PAIRS[pair]
    x = rand(3, 4, 5)
    outs = []
    for cls in (ours_cls, sj_cls):
        n = cls(v_reset=-0.1)
        st = n.materialize_states((x[0],), (n.v,), "s")
        o1, st1 = n.single_step_functional_forward((x[0],), st)
        n.step_mode = "m"
        o2, st2 = n.functional_forward((x,), (-0.1,))
        o3, st3 = n.multi_step_functional_forward((x,), n.materialize_states((x,), (n.v,), "m"))
        outs.append((st[0], o1[0], st1[0], o2[0], st2[0], o3[0], st3[0]))
        assert n.v == -0.1  # the functional forwards leave the memories alone
        assert n.supported_step_mode() == ("s", "m")
        v, s = torch.full((4,), 0.5), torch.tensor([0.0, 1.0, 1.0, 0.0])
        outs[-1] += (n.apply_hard_reset(v, s, -0.1), n.apply_soft_reset(v, s, 1.0))
    for a, b in zip(*outs):
        assert_same(a, b)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_register_memory_and_reset_values(pair):
    ours_cls, sj_cls = PAIRS[pair]
    for cls in (ours_cls, sj_cls):
        n = cls()
        n.register_memory("trace", torch.zeros(3))
        assert [k for k, _ in n.named_memories()] == ["v", "trace"] and len(list(n.memories())) == 2
        n.trace = torch.ones(3)
        n.reset()
        assert torch.equal(n.trace, torch.zeros(3))
        n.set_reset_value("trace", torch.full((3,), 2.0))
        n.reset()
        assert torch.equal(n.trace, torch.full((3,), 2.0))
        assert "trace" in dir(n)
        with pytest.raises((AssertionError, ValueError)):
            n.register_memory("v_threshold", 0.0)
        with pytest.raises(KeyError):
            n.get_reset_value("nope")
        del n.trace
        assert [k for k, _ in n.named_memories()] == ["v"]


@pytest.mark.parametrize("pair", list(PAIRS))
def test_pickle_deepcopy_repr_and_to(pair):
    ours_cls, _ = PAIRS[pair]
    n = ours_cls(surrogate_function=sjs.ATan(alpha=3.0), step_mode="m", store_v_seq=True)
    x = rand(3, 2, 4)
    with torch.no_grad():  # a state with a graph is no leaf tensor: deepcopy refuses it (SpikingJelly's too)
        n(x)
    for clone in (copy.deepcopy(n), pickle.loads(pickle.dumps(n))):
        assert type(clone) is type(n) and clone.step_mode == "m" and clone.store_v_seq
        assert clone.surrogate_function.alpha == 3.0 and torch.equal(clone.v, n.v)
        clone.reset()
        n2 = copy.deepcopy(clone)
        assert torch.equal(n2(x), clone(x))
    buf = io.BytesIO()
    torch.save(n.state_dict(), buf)
    assert set(n.state_dict()) == ({"w"} if hasattr(n, "w") else set())
    r = repr(n)
    assert "v_threshold=1.0, v_reset=0.0, detach_reset=False, step_mode=m" in r and "tau=" in r
    assert "ATan(alpha=3.0" in r
    h = n.to(torch.float64)
    assert h.v.dtype == torch.float64


def test_spikingjelly_subclasses_are_spikingjellys_classes():
    for ours, theirs in ((tks_sj.LIFNode, sjn.LIFNode), (tks_sj.ParametricLIFNode, sjn.ParametricLIFNode)):
        n = ours()
        assert isinstance(n, theirs) and isinstance(n, sj_base.MemoryModule) and isinstance(n, sjn.BaseNode)
        assert n.step_mode == "s" and isinstance(n.surrogate_function, sjs.Sigmoid)
        assert inspect.signature(ours).parameters.keys() - {"backend", "fire_at_threshold"} == \
            inspect.signature(theirs).parameters.keys()


def test_fused_op_runs_in_the_spikingjelly_subclass(monkeypatch):
    from tks_kernels.ops import lif as lif_ops

    calls = []
    real = lif_ops.lif_multistep
    monkeypatch.setattr(lif_ops, "lif_multistep", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    n = tks_sj.LIFNode(step_mode="m", store_v_seq=True)
    n(rand(6, 3))
    assert calls == [torch.Size([6, 3])]  # one fused call, v_seq included (no single-step loop)
    n.step_mode = "s"
    n(rand(3))
    assert calls[-1] == torch.Size([1, 3])


def test_precision_setting_of_spikingjelly_is_refused():
    n = tks_sj.LIFNode(step_mode="m")
    n._neuron_precision = (torch.float16, "fp16", "fp32")
    with pytest.raises(NotImplementedError, match="precision"):
        n(rand(2, 3))


def test_clear_error_without_spikingjelly():
    import subprocess
    import sys

    code = ("import sys; sys.modules['spikingjelly'] = None\n"  # as if not installed
            "import tks_kernels\n"
            "lif = tks_kernels.LIF(surrogate_function=tks_kernels.surrogate.ATan(), step_mode='m')\n"
            "import torch; lif(torch.rand(2, 3))\n"
            "try:\n    import tks_kernels.spikingjelly\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR tks_kernels.spikingjelly subclasses SpikingJelly's neurons and needs SpikingJelly" in out.stdout
