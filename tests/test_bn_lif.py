"""The fused BN + residual + LIF op (ops/bn_lif, issue 16): the CPU kernel against the
reference (F.batch_norm + the LIF reference) in forward, every gradient and the running
statistics, over shapes, layouts, dtypes, options, train and eval; the models' fused
layers against the separate ones (nn.BatchNorm2d / TdBatchNorm2d + LIF) and whole
training steps of ResNet-19 and VGGSNN, fused against unfused."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tks_kernels import LIF, ParametricLIF, models
from tks_kernels.models import layers as model_layers
from tks_kernels.models.layers import SeqToANN, TdBatchNorm2d, bn_lif_forward
from tks_kernels.ops import bn_lif as B
from tks_kernels.ops.bn_lif import cpu as bn_cpu
from tks_kernels.ops.bn_lif import reference as bn_ref
from tks_kernels.ops.lif import DEFAULT_ALPHA, SURROGATES, make_config
from tks_kernels.ops.plif import decay_factor as plif_decay_factor
from tks_kernels.ops.plif import init_w as plif_init_w
from tks_kernels.ops.plif import make_config as plif_make_config

pytestmark = pytest.mark.skipif(bn_cpu._native.cpu_lib is None, reason="the native CPU library did not load")
needs_plif = pytest.mark.skipif(not (bn_cpu.HAS_PLIF and bn_cpu.HAS_STATS),
                                reason="the native library lacks the fused BN + PLIF and statistics kernels (a stale "
                                       "build: rebuild libtks_kernels)")


def make_inputs(shape, dtype, channels_last, residual, v_init, affine=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    T, Bn, C = shape[:3]

    def rnd(*s, scale=1.0, shift=0.0):
        return (torch.randn(s, generator=gen, dtype=torch.float64) * scale + shift)

    y = rnd(*shape, scale=1.5, shift=0.3).to(dtype)
    if channels_last and len(shape) == 5:
        y = y.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (T, Bn))
    r = rnd(*shape, scale=0.5).to(dtype) if residual else None
    v0 = (torch.rand(shape[1:], generator=gen, dtype=torch.float64) * 0.6 - 0.1).to(dtype) if v_init else None
    w = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(dtype) if affine else None
    b = (rnd(C, scale=0.3)).to(dtype) if affine else None
    rm = rnd(C, scale=0.5)
    rv = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5
    return y, r, v0, w, b, rm.to(dtype), rv.to(dtype)


def run(module, inputs, bn_opts, cfg, seed=1, plif_w=None):
    """Forward and backward of module.bn_lif (reference or cpu; module.bn_plif with the
    PLIF parameter plif_w) on copies of inputs: (spikes, v_last, running_mean, running_var,
    grads of y, weight, bias, residual, v_init[, plif_w])."""
    y, r, v0, w, b, rm, rv = (None if t is None else t.detach().clone() for t in inputs)
    leaves = [t.requires_grad_() if t is not None else None for t in (y, w, b, r, v0)]
    bn = B.BNArgs(w, b, rm, rv, **bn_opts)
    if plif_w is None:
        s, vl = module.bn_lif(y, bn, cfg, r, v0)
    else:
        pw = plif_w.detach().clone().requires_grad_()
        leaves.append(pw)
        s, vl = module.bn_plif(y, bn, cfg, plif_decay_factor(pw, y.dtype), r, v0)
    gen = torch.Generator().manual_seed(seed)
    gs = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.dtype)
    gv = torch.randn(vl.shape, generator=gen, dtype=torch.float64).to(s.dtype)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad((s.double() * gs.double()).sum() + (vl.double() * gv.double()).sum(), present))
    return (s, vl, rm, rv) + tuple(next(grads) if t is not None else None for t in leaves)


NAMES = ("spikes", "v_last", "running_mean", "running_var", "grad_y", "grad_weight", "grad_bias", "grad_residual",
         "grad_v_init", "grad_plif_w")


def compare(got, want, rtol, atol, exact_spikes=True):
    for name, a, e in zip(NAMES, got, want):
        if e is None:
            assert a is None, name
            continue
        if name == "spikes" and exact_spikes:
            assert torch.equal(a, e), "spikes differ"
            continue
        scale = e.double().abs().max().item() if e.numel() else 0.0
        torch.testing.assert_close(a.double(), e.double(), rtol=rtol, atol=atol * max(scale, 1.0), msg=name)


@st.composite
def cases(draw):
    T = draw(st.integers(1, 4))
    Bn = draw(st.integers(1, 3))
    C = draw(st.integers(1, 6))
    spatial = draw(st.sampled_from([(), (1, 1), (2, 3), (4, 4), (5, 2)]))
    surrogate = draw(st.sampled_from(SURROGATES))
    return dict(
        shape=(T, Bn, C) + spatial,
        channels_last=draw(st.booleans()),
        residual=draw(st.booleans()),
        v_init=draw(st.booleans()),
        affine=draw(st.booleans()),
        batch_stats=draw(st.booleans()),
        momentum=draw(st.sampled_from([0.1, 0.5, 1.0 / 3])),
        eps=draw(st.sampled_from([1e-5, 1e-3])),
        weight_scale=draw(st.sampled_from([1.0, 0.5 * 2 ** -0.5])),
        lif=dict(tau=draw(st.sampled_from([2.0, 1.5])), decay_input=draw(st.booleans()),
                 v_threshold=draw(st.sampled_from([0.5, 1.0])), v_reset=draw(st.sampled_from([0.0, -0.2, None])),
                 surrogate=surrogate, alpha=DEFAULT_ALPHA[surrogate] * draw(st.sampled_from([1.0, 2.0])),
                 detach_reset=draw(st.booleans()), fire_at_threshold=draw(st.booleans())),
    )


def _case_args(case, dtype):
    if case["batch_stats"] and case["shape"][0] * case["shape"][1] * int(torch.tensor(case["shape"][3:]).prod()) < 2:
        case = dict(case, batch_stats=False)  # one value per channel: no batch statistics
    inputs = make_inputs(case["shape"], dtype, case["channels_last"], case["residual"], case["v_init"], case["affine"])
    bn_opts = dict(batch_stats=case["batch_stats"], momentum=case["momentum"], eps=case["eps"],
                   weight_scale=case["weight_scale"])
    return inputs, bn_opts, make_config(**case["lif"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=cases())
def test_cpu_matches_reference_fp64(case):
    inputs, bn_opts, cfg = _case_args(case, torch.float64)
    compare(run(bn_cpu, inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=cases())
def test_cpu_matches_reference_fp32(case):
    inputs, bn_opts, cfg = _case_args(case, torch.float32)
    compare(run(bn_cpu, inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_cpu_matches_reference_16bit(dtype, channels_last, batch_stats):
    # 16-bit storage, fp32 arithmetic in both: the same spikes; gradients within the
    # storage rounding (the kernel stores dL/dx in 16 bits before BN's backward, as the
    # unfused layers do, the reference keeps it in fp32).
    inputs = make_inputs((3, 2, 4, 5, 3), dtype, channels_last, True, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=0.0, surrogate="piecewise_quadratic", alpha=2.0,
                      detach_reset=True, fire_at_threshold=False)
    tol = 2 * torch.finfo(dtype).eps
    compare(run(bn_cpu, inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=tol, atol=tol)


def test_backward_is_deterministic_across_thread_counts():
    # several chunks of neurons per step (N = 2 * 8 * 32 * 32 = 4 chunks)
    inputs = make_inputs((3, 2, 8, 32, 32), torch.float32, False, True, False)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="atan")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(bn_cpu, inputs, bn_opts, cfg)
        torch.set_num_threads(max(2, threads))
        many = run(bn_cpu, inputs, bn_opts, cfg)
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(NAMES, one, many):
        if a is not None:
            assert torch.equal(a, b), name


# ---------------------------------------------------------------- parametric LIF

def _plif_case_args(case, dtype):
    inputs, bn_opts, _ = _case_args(case, dtype)
    lif = dict(case["lif"])
    tau = lif.pop("tau")
    w = torch.tensor(plif_init_w(tau + 1.2 * (sum(case["shape"]) % 3)), dtype=torch.float32)
    return inputs, bn_opts, plif_make_config(**lif), w


@needs_plif
@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=cases())
def test_cpu_plif_matches_reference_fp64(case):
    inputs, bn_opts, cfg, w = _plif_case_args(case, torch.float64)
    compare(run(bn_cpu, inputs, bn_opts, cfg, plif_w=w.double()), run(bn_ref, inputs, bn_opts, cfg, plif_w=w.double()),
            rtol=1e-9, atol=1e-11)


@needs_plif
@settings(max_examples=25, deadline=None, derandomize=True)
@given(case=cases())
def test_cpu_plif_matches_reference_fp32(case):
    inputs, bn_opts, cfg, w = _plif_case_args(case, torch.float32)
    compare(run(bn_cpu, inputs, bn_opts, cfg, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w),
            rtol=1e-4, atol=2e-5)


@needs_plif
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last, batch_stats", [(False, True), (True, False)])
def test_cpu_plif_matches_reference_16bit(dtype, channels_last, batch_stats):
    inputs = make_inputs((3, 2, 4, 5, 3), dtype, channels_last, True, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = plif_make_config(True, 0.5, 0.0, "sigmoid", 4.0, False, True)
    tol = 2 * torch.finfo(dtype).eps
    w = torch.tensor(plif_init_w(2.5))
    compare(run(bn_cpu, inputs, bn_opts, cfg, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w), rtol=tol,
            atol=tol)


@needs_plif
def test_plif_backward_is_deterministic_across_thread_counts():
    # several chunks of neurons per step, channels_last: the dL/dk and per-channel sums
    inputs = make_inputs((3, 2, 8, 32, 32), torch.float32, True, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = plif_make_config(False, 1.0, None, "atan", 2.0, False, True)
    w = torch.tensor(plif_init_w(3.0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(bn_cpu, inputs, bn_opts, cfg, plif_w=w)
        torch.set_num_threads(max(2, threads))
        many = run(bn_cpu, inputs, bn_opts, cfg, plif_w=w)
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(NAMES, one, many):
        if a is not None:
            assert torch.equal(a, b), name


@needs_plif
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape, channels_last", [((2, 3, 5, 7, 9), False), ((2, 3, 5, 7, 9), True),
                                                   ((3, 4, 6), False), ((2, 2, 3, 40, 40), False),
                                                   ((2, 2, 24, 6, 6), True), ((1, 2, 2, 67, 71), False),
                                                   ((1, 3, 1500, 2, 2), False)])
def test_native_batch_statistics(dtype, shape, channels_last):
    # the one-read statistics kernel against torch.var_mean in fp64, a large mean included;
    # shapes for each path: channel groups of short runs (and more channels than one group
    # holds), whole runs as lanes, runs longer than a group (67 * 71 > 4096)
    gen = torch.Generator().manual_seed(7)
    y = (torch.randn(shape, generator=gen, dtype=torch.float64) * 0.5 + 100.0).to(dtype)
    if channels_last:
        y = y.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    mean, var = bn_cpu.native_batch_stats(y)
    var_e, mean_e = torch.var_mean(y.double(), dim=B.stat_dims(y), unbiased=False)
    assert mean.dtype == var.dtype == torch.float64
    torch.testing.assert_close(mean, mean_e, rtol=1e-13, atol=0)
    torch.testing.assert_close(var, var_e, rtol=1e-9, atol=1e-12)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = bn_cpu.native_batch_stats(y)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], mean) and torch.equal(one[1], var)


def test_no_grad_saves_nothing_and_gives_the_same_spikes():
    inputs = make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True)
    y, r, v0, w, b, rm, rv = inputs
    cfg = make_config()
    saved = []
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        s, vl = B.bn_lif(y, B.BNArgs(w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5), cfg, r, v0, backend="cpu")
    assert saved == []
    s_ref, vl_ref = B.bn_lif(y, B.BNArgs(w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5), cfg, r, v0, backend="torch")
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(vl, vl_ref)


def test_saves_y_not_the_membrane():
    y, r, v0, w, b, rm, rv = make_inputs((2, 2, 3, 4, 4), torch.float32, False, False, False)
    y.requires_grad_()
    w.requires_grad_()
    big = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: big.append(t) or t, lambda t: t):
        B.bn_lif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), make_config(), backend="cpu")
    full = [t for t in big if t.numel() == y.numel()]
    assert len(full) == 1 and full[0].data_ptr() == y.data_ptr()


def test_opcheck():
    y, r, v0, w, b, rm, rv = make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True)
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_forward,
                          (y, r, scale, shift, v0, 2.0, True, 0.5, 0.0, False, False))
    gs = torch.randn_like(y)
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_backward,
                          (gs, None, y, r, scale, shift, center, invstd, v0, 2.0, True, 0.5, 0.0, False, True, False,
                           2, 2.0, True))


@pytest.mark.parametrize("bad, match", [
    (dict(residual=torch.zeros(2, 2, 3, 4)), "residual"),
    (dict(v_init=torch.zeros(2, 3, 4, 5)), "v_init"),
    (dict(bn_batch_stats=False, bn_running=False), "running_mean"),
    (dict(bn_weight=torch.ones(4)), "bn.weight"),
])
def test_bad_input_names_the_argument(bad, match):
    y, r, v0, w, b, rm, rv = make_inputs((2, 2, 3, 4, 4), torch.float32, False, False, False)
    running = bad.get("bn_running", True)
    bn = B.BNArgs(bad.get("bn_weight", w), b, rm if running else None, rv if running else None,
                  bad.get("bn_batch_stats", True), 0.1, 1e-5)
    with pytest.raises((ValueError, TypeError), match=match):
        B.bn_lif(y, bn, make_config(), bad.get("residual"), bad.get("v_init"), backend="cpu")


def test_backend_without_kernel_says_so(monkeypatch):
    monkeypatch.setattr(B, "resolve_backend", lambda backend, device: "triton")
    monkeypatch.delitem(B.BACKEND_MODULES, "triton", raising=False)
    y, r, v0, w, b, rm, rv = make_inputs((2, 2, 3, 4, 4), torch.float32, False, False, False)
    with pytest.raises(NotImplementedError, match="triton"):
        B.bn_lif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), make_config(), backend="triton")
    with pytest.raises(NotImplementedError, match="triton"):
        B.bn_plif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), plif_make_config(), torch.tensor(0.0), backend="triton")
    assert B.fused_backend("triton", y.device) is None


@needs_plif
def test_plif_opcheck():
    y, r, v0, w, b, rm, rv = make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True)
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    k = torch.tensor(0.4)
    torch.library.opcheck(torch.ops.tks_kernels.bn_plif_forward, (y, r, scale, shift, v0, k, True, 0.5, 0.0, False,
                                                                   False))
    gs = torch.randn_like(y)
    torch.library.opcheck(torch.ops.tks_kernels.bn_plif_backward,
                          (gs, None, y, r, scale, shift, center, invstd, v0, k, True, 0.5, 0.0, False, True, False,
                           2, 2.0, True))
    torch.library.opcheck(torch.ops.tks_kernels.bn_stats, (y,))


# ---------------------------------------------------------------- the models' layers

PAPER = dict(models.PAPER_NEURON)


def _bn_modules():
    return [
        ("bn2d", lambda c: nn.BatchNorm2d(c)),
        ("bn2d_cumulative", lambda c: nn.BatchNorm2d(c, momentum=None)),
        ("tdbn_fixed_scale", lambda c: TdBatchNorm2d(c, alpha=2 ** -0.5, v_threshold=0.5, fixed_scale=True)),
        ("tdbn", lambda c: TdBatchNorm2d(c, alpha=2 ** -0.5, v_threshold=0.5)),
    ]


@pytest.mark.parametrize("name, make_bn", _bn_modules())
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_fused_layer_equals_separate_layers(name, make_bn, channels_last, residual):
    torch.manual_seed(3)
    C = 4
    conv_bn = SeqToANN(nn.Conv2d(3, C, 3, padding=1, bias=False), make_bn(C)).double()
    with torch.no_grad():
        conv_bn[1].weight.uniform_(0.5, 1.5)
        conv_bn[1].bias.uniform_(-0.2, 0.2)
    neuron = model_layers.make_lif(PAPER, "auto")
    pair = {}
    x = torch.rand(3, 2, 3, 5, 6, dtype=torch.float64)
    res = torch.randn(3, 2, C, 5, 6, dtype=torch.float64, requires_grad=True) if residual else None
    for fuse in (False, True):
        cb, sn = copy.deepcopy(conv_bn), copy.deepcopy(neuron)
        if channels_last:
            cb = cb.to(memory_format=torch.channels_last)
        outs = []
        for step in range(3):  # running statistics over several steps, then eval
            cb.train(step < 2)
            xx = x.flatten(0, 1)
            if channels_last:
                xx = xx.contiguous(memory_format=torch.channels_last)
            xx = xx.unflatten(0, (3, 2)).requires_grad_()
            s = bn_lif_forward(cb, sn, xx, residual=res, fuse=fuse)
            sn.reset()
            gs = torch.randn(s.shape, dtype=s.dtype, generator=torch.Generator().manual_seed(step))
            grads = torch.autograd.grad((s * gs).sum(), [xx, cb[1].weight, cb[1].bias] + ([res] if residual else []))
            outs.append((s,) + grads)
        pair[fuse] = (outs, {k: v.clone() for k, v in cb.state_dict().items()})
    for o0, o1 in zip(pair[False][0], pair[True][0]):
        assert torch.equal(o0[0], o1[0])
        for a, e in zip(o1[1:], o0[1:]):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    for k, v in pair[False][1].items():
        torch.testing.assert_close(pair[True][1][k], v, rtol=1e-12, atol=1e-15, msg=k)


@needs_plif
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels_last, residual, train", [(False, False, True), (True, True, True),
                                                            (False, True, False), (True, False, False)])
def test_fused_plif_layer_equals_separate_layers(dtype, channels_last, residual, train, monkeypatch):
    # BN + ParametricLIF fused against nn.BatchNorm2d + ParametricLIF: spikes, every gradient
    # (input, residual, gamma, beta, the PLIF's w), the running statistics; two steps so the
    # membrane carries over (v_init) and the running statistics move
    torch.manual_seed(8)
    C = 5
    conv_bn = SeqToANN(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C)).to(dtype)
    with torch.no_grad():
        conv_bn[1].weight.uniform_(0.5, 1.5)
        conv_bn[1].bias.uniform_(-0.2, 0.2)
    neuron = model_layers.make_lif(dict(PAPER, learnable_tau=True, tau=3.0), "auto")
    assert type(neuron) is ParametricLIF
    x = torch.rand(3, 2, 3, 6, 5, dtype=dtype)
    res = torch.randn(3, 2, C, 6, 5, dtype=dtype, requires_grad=True) if residual else None
    results = {}
    calls = []
    real = B.bn_plif
    monkeypatch.setattr(B, "bn_plif", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fuse in (False, True):
        cb, sn = copy.deepcopy(conv_bn), copy.deepcopy(neuron)
        if channels_last:
            cb = cb.to(memory_format=torch.channels_last)
        cb.train(train)
        xx = x.flatten(0, 1)
        if channels_last:
            xx = xx.contiguous(memory_format=torch.channels_last)
        xx = xx.unflatten(0, (3, 2)).requires_grad_()
        s1 = bn_lif_forward(cb, sn, xx, residual=res, fuse=fuse)
        s2 = bn_lif_forward(cb, sn, xx * 0.7, residual=res, fuse=fuse)  # continues from the membrane
        sn.reset()
        gen = torch.Generator().manual_seed(1)
        loss = (s1 * torch.randn(s1.shape, generator=gen, dtype=dtype)).sum() + (
            s2 * torch.randn(s2.shape, generator=gen, dtype=dtype)).sum()
        leaves = [xx, cb[1].weight, cb[1].bias, sn.w] + ([res] if residual else [])
        grads = torch.autograd.grad(loss, leaves)
        results[fuse] = ((s1, s2) + grads, {k: v.clone() for k, v in cb.state_dict().items()})
    assert len(calls) == 2  # the fused run's two calls
    rtol, atol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    (u, su), (f, sf) = results[False], results[True]
    assert torch.equal(u[0], f[0]) and torch.equal(u[1], f[1])
    assert u[5].abs().item() > 0  # the PLIF's w gets a gradient
    for a, e in zip(f[2:], u[2:]):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol * max(e.abs().max().item(), 1.0))
    for k, v in su.items():
        torch.testing.assert_close(sf[k], v, rtol=rtol, atol=atol, msg=k)


def test_batchnorm1d_pair_fuses():
    torch.manual_seed(4)
    lin_bn = SeqToANN(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5)).double()
    neuron = model_layers.make_lif(PAPER, "auto")
    x = torch.randn(4, 3, 6, dtype=torch.float64)
    outs = []
    for fuse in (False, True):
        lb = copy.deepcopy(lin_bn)
        s = bn_lif_forward(lb, neuron, x, fuse=fuse)
        neuron.reset()
        (g,) = torch.autograd.grad((s * torch.arange(s.numel(), dtype=s.dtype).view_as(s).sin()).sum(), lb[0].weight)
        outs.append((s, g, lb[1].running_var.clone()))
    assert torch.equal(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(outs[1][2], outs[0][2])


@needs_plif
def test_only_lif_and_plif_with_a_builtin_surrogate_fuse():
    y = torch.zeros(2, 2, 3, 4, 4)
    bn = nn.BatchNorm2d(3)
    assert model_layers._fused_backend(bn, LIF(step_mode="m"), y) == "cpu"
    assert model_layers._fused_backend(bn, LIF(step_mode="m", backend="torch"), y) == "torch"
    assert model_layers._fused_backend(bn, ParametricLIF(step_mode="m"), y) == "cpu"
    assert model_layers._fused_backend(bn, ParametricLIF(step_mode="m", surrogate_function=lambda x: (x >= 0).float()),
                                       y) is None
    assert model_layers._fused_backend(bn, LIF(step_mode="s"), y) is None
    assert model_layers._fused_backend(bn, LIF(step_mode="m", surrogate_function=lambda x: (x >= 0).float()), y) is None


# ---------------------------------------------------------------- whole models

MODEL_CASES = [
    ("resnet19", dict(width=1 / 16, input_size=8), 3, 17),
    ("resnet19", dict(width=1 / 16, input_size=8, style="tdbn"), 3, 17),
    ("vggsnn", dict(width=1 / 16, input_size=16), 2, 8),
    pytest.param("resnet19_plif", dict(width=1 / 16, input_size=8, neuron=dict(learnable_tau=True)), 3, 17,
                 marks=needs_plif),
    pytest.param("vggsnn_plif", dict(width=1 / 16, input_size=16, neuron=dict(learnable_tau=True, tau=3.0)), 2, 8,
                 marks=needs_plif),
]


def _train_step(model, x, target):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    out = model(x)
    loss = nn.functional.cross_entropy(out.mean(0), target)
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    return out.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name, kw, cin, pairs", MODEL_CASES)
def test_model_training_step_fused_equals_unfused(name, kw, cin, pairs, dtype, monkeypatch):
    torch.manual_seed(5)
    unfused = models.create(name.replace("_plif", ""), in_channels=cin, T=3, fuse_bn=False, **kw).to(dtype)
    fused = copy.deepcopy(unfused)
    fused.fuse_bn = True
    assert list(fused.state_dict()) == list(unfused.state_dict())
    calls = []
    fn = "bn_plif" if name.endswith("_plif") else "bn_lif"
    real = getattr(B, fn)
    monkeypatch.setattr(B, fn, lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(4, cin, kw["input_size"], kw["input_size"], dtype=dtype)
    target = torch.tensor([0, 1, 2, 3])
    results = {}
    for label, model in (("unfused", unfused), ("fused", fused)):
        calls.clear()
        steps = [_train_step(model, x, target) for _ in range(2)]
        results[label] = (steps, len(calls))
        model.eval()
        with torch.no_grad():
            results[label] += (model(x),)
    assert results["unfused"][1] == 0 and results["fused"][1] == 2 * pairs
    rtol, atol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
    for (o0, g0), (o1, g1) in zip(results["unfused"][0], results["fused"][0]):
        torch.testing.assert_close(o1, o0, rtol=rtol, atol=atol)
        for k in g0:
            scale = max(g0[k].abs().max().item(), 1e-3)
            torch.testing.assert_close(g1[k], g0[k], rtol=rtol, atol=atol * scale, msg=k)
    torch.testing.assert_close(results["fused"][2], results["unfused"][2], rtol=rtol, atol=atol)
    for k, v in unfused.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, rtol=rtol, atol=atol, msg=k)


def test_checkpoint_loads_in_both():
    torch.manual_seed(6)
    fused = models.create("resnet19", T=2, width=1 / 16, input_size=8)
    assert fused.fuse_bn
    x = torch.rand(2, 3, 8, 8)
    fused(x).sum().backward()  # moves the running statistics
    fused.eval()
    unfused = models.create("resnet19", T=2, width=1 / 16, input_size=8, fuse_bn=False).eval()
    unfused.load_state_dict(fused.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), unfused(x))
    with pytest.raises(TypeError, match="fuse_bn"):
        models.create("vggsnn", fuse_bn="yes")
