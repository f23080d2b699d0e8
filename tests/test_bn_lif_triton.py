"""The Triton fused BN + residual + LIF op (ops/bn_lif/triton.py, issue 16) against the
reference (F.batch_norm + the LIF reference) in forward, every gradient (y, gamma, beta,
residual, v_init) and the running statistics, over shapes, layouts (NCHW, channels_last,
BatchNorm1d), dtypes, residual or not, train and eval; the one-read statistics; the
determinism of the per-channel sums. The parametric LIF fused the same way (its dL/dw
too, and dL/dk's bits run to run and for any number of programs), and a model step with
``learnable_tau`` on this backend against the unfused model. On the CPU under
TRITON_INTERPRET=1 (small shapes: the interpreter is slow); on a GPU the same tests run
the compiled kernels.

Many tiles and the persistent loops are exercised by lowering the interpreter's tile
(``INTERPRETER_TILE``) so a small tensor spans many programs."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_bn_lif import NAMES, _case_args, _plif_case_args, _train_step, cases, compare, make_inputs, run
from tks_kernels import models
from tks_kernels._backends import available_backends
from tks_kernels.ops import bn_lif as B
from tks_kernels.ops.bn_lif import reference as bn_ref
from tks_kernels.ops.lif import make_config
from tks_kernels.ops.plif import decay_factor as plif_decay_factor
from tks_kernels.ops.plif import init_w as plif_init_w
from tks_kernels.ops.plif import make_config as plif_make_config

if not available_backends()["triton"][0]:
    pytest.skip(f"triton backend unavailable: {available_backends()['triton'][1]}", allow_module_level=True)

from tks_kernels.ops.bn_lif import triton as bn_tri  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_triton(inputs, bn_opts, cfg, seed=1, plif_w=None):
    """test_bn_lif's ``run`` with the Triton module on DEVICE: the same inputs and output
    gradients (made on the CPU), the results back on the CPU (plif_w: the PLIF op)."""
    if DEVICE == "cpu":
        return run(bn_tri, inputs, bn_opts, cfg, seed, plif_w=plif_w)
    y, r, v0, w, b, rm, rv = (None if t is None else t.detach().clone().to(DEVICE) for t in inputs)
    leaves = [t.requires_grad_() if t is not None else None for t in (y, w, b, r, v0)]
    bn = B.BNArgs(w, b, rm, rv, **bn_opts)
    if plif_w is None:
        s, vl = bn_tri.bn_lif(y, bn, cfg, r, v0)
    else:
        pw = plif_w.detach().clone().to(DEVICE).requires_grad_()
        leaves.append(pw)
        s, vl = bn_tri.bn_plif(y, bn, cfg, plif_decay_factor(pw, y.dtype), r, v0)
    gen = torch.Generator().manual_seed(seed)
    gs = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.dtype).to(DEVICE)
    gv = torch.randn(vl.shape, generator=gen, dtype=torch.float64).to(s.dtype).to(DEVICE)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad((s.double() * gs.double()).sum() + (vl.double() * gv.double()).sum(), present))
    out = (s, vl, rm, rv) + tuple(next(grads) if t is not None else None for t in leaves)
    return tuple(None if t is None else t.cpu() for t in out)


def _dev(inputs):
    return tuple(None if t is None else t.to(DEVICE) for t in inputs)


@pytest.fixture(params=[4096, 32], ids=["one_tile", "many_tiles"])
def tile(request, monkeypatch):
    monkeypatch.setattr(bn_tri, "INTERPRETER_TILE", request.param)
    return request.param


@settings(max_examples=12, deadline=None, derandomize=True)
@given(case=cases())
def test_triton_matches_reference_fp64(case):
    inputs, bn_opts, cfg = _case_args(case, torch.float64)
    compare(run_triton(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(case=cases(), small=st.booleans())
def test_triton_matches_reference_fp32(case, small):
    old = bn_tri.INTERPRETER_TILE
    bn_tri.INTERPRETER_TILE = 16 if small else old  # hypothesis and function fixtures do not mix
    try:
        inputs, bn_opts, cfg = _case_args(case, torch.float32)
        compare(run_triton(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-4, atol=2e-5)
    finally:
        bn_tri.INTERPRETER_TILE = old


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "bn1d"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_triton_layouts_fp64(layout, residual, batch_stats, tile):
    shape = (3, 3, 5) if layout == "bn1d" else (3, 2, 5, 4, 3)
    inputs = make_inputs(shape, torch.float64, layout == "channels_last", residual, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=0.5)
    cfg = make_config(tau=1.5, decay_input=True, v_threshold=0.5, v_reset=None, surrogate="sigmoid")
    compare(run_triton(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("shape, channels_last", [((2, 2, 3, 8, 9), False), ((2, 3, 40, 2, 2), True)],
                         ids=["nchw_wide_rows", "channels_last_many_channels"])
def test_triton_several_column_blocks(shape, channels_last, monkeypatch):
    # rows (72 elements) or channels (40) wider than a 32-element tile: several column
    # blocks, each program of the persistent loops on one of them
    monkeypatch.setattr(bn_tri, "INTERPRETER_TILE", 32)
    inputs = make_inputs(shape, torch.float64, channels_last, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="erf", detach_reset=False)
    compare(run_triton(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_triton_matches_reference_16bit(dtype, channels_last, batch_stats):
    # as test_bn_lif's 16-bit case: the kernel stores dL/dx in 16 bits before BN's
    # backward (the unfused layers do too); the reference keeps it in fp32
    inputs = make_inputs((3, 2, 4, 5, 3), dtype, channels_last, True, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=0.0, surrogate="piecewise_quadratic", alpha=2.0,
                      detach_reset=True, fire_at_threshold=False)
    tol = 2 * torch.finfo(dtype).eps
    compare(run_triton(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=tol, atol=tol)


@pytest.mark.parametrize("channels_last", [False, True])
def test_statistics_one_read_match_var_mean(channels_last, tile):
    # an offset far from zero: unshifted sums of squares would lose the variance
    y = make_inputs((2, 3, 6, 5, 4), torch.float32, channels_last, False, False)[0] * 0.01 + 300.0
    mean, var = bn_tri.bn_stats_triton(y.to(DEVICE))
    v_ref, m_ref = torch.var_mean(y.double(), dim=(0, 1, 3, 4), unbiased=False)
    torch.testing.assert_close(mean.cpu(), m_ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(var.cpu(), v_ref, rtol=1e-5, atol=1e-12)


def test_backward_is_deterministic(tile):
    inputs = make_inputs((3, 2, 8, 6, 6), torch.float32, True, True, False)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="atan")
    one, two = run_triton(inputs, bn_opts, cfg), run_triton(inputs, bn_opts, cfg)
    for name, a, b in zip(NAMES, one, two):
        if a is not None:
            assert torch.equal(a, b), name


def test_backend_triton_through_the_public_op():
    y, r, v0, w, b, rm, rv = _dev(make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    cfg = make_config()
    got = B.bn_lif(y, B.BNArgs(w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5), cfg, r, v0, backend="triton")
    want = B.bn_lif(y, B.BNArgs(w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5), cfg, r, v0, backend="torch")
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert B.fused_backend("triton", y.device) == "triton"


def test_no_grad_saves_nothing_and_grad_saves_only_y():
    y, r, v0, w, b, rm, rv = _dev(make_inputs((2, 2, 3, 4, 4), torch.float32, False, False, False))
    saved = []
    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bn_tri.bn_lif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), make_config())
    assert saved == []
    y.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bn_tri.bn_lif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), make_config())
    full = [t for t in saved if t.numel() == y.numel()]
    assert len(full) == 1 and full[0].data_ptr() == y.data_ptr()


def test_opcheck():
    y, r, v0, w, b, rm, rv = _dev(make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_forward_triton,
                          (y, r, scale, shift, v0, 2.0, True, 0.5, 0.0, False, False))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_backward_triton,
                          (torch.randn_like(y), None, y, r, scale, shift, center, invstd, v0, 2.0, True, 0.5, 0.0,
                           False, True, False, 2, 2.0, True))
    torch.library.opcheck(torch.ops.tks_kernels.bn_stats_triton, (y,))


def test_bad_vectors_name_the_argument():
    y = torch.zeros(2, 2, 3, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match="scale"):
        bn_tri.bn_lif_forward_triton(y, None, torch.zeros(4, device=DEVICE), torch.zeros(3, device=DEVICE), None,
                                     2.0, True, 1.0, 0.0, False, True)
    with pytest.raises(ValueError, match="residual"):
        bn_tri.bn_lif_forward_triton(y, y[:, :1], torch.zeros(3, device=DEVICE), torch.zeros(3, device=DEVICE),
                                     None, 2.0, True, 1.0, 0.0, False, True)


# ---------------------------------------------------------------- parametric LIF


@settings(max_examples=8, deadline=None, derandomize=True)
@given(case=cases())
def test_triton_plif_matches_reference_fp64(case):
    inputs, bn_opts, cfg, w = _plif_case_args(case, torch.float64)
    compare(run_triton(inputs, bn_opts, cfg, plif_w=w.double()), run(bn_ref, inputs, bn_opts, cfg, plif_w=w.double()),
            rtol=1e-9, atol=1e-11)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(case=cases(), small=st.booleans())
def test_triton_plif_matches_reference_fp32(case, small):
    old = bn_tri.INTERPRETER_TILE
    bn_tri.INTERPRETER_TILE = 16 if small else old
    try:
        inputs, bn_opts, cfg, w = _plif_case_args(case, torch.float32)
        compare(run_triton(inputs, bn_opts, cfg, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w),
                rtol=1e-4, atol=2e-5)
    finally:
        bn_tri.INTERPRETER_TILE = old


@pytest.mark.parametrize("decay_input", [True, False], ids=["decay_input", "no_decay_input"])
@pytest.mark.parametrize("v_reset", [0.0, None], ids=["hard", "soft"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_triton_plif_options_fp32(decay_input, v_reset, channels_last, monkeypatch):
    # every charge and reset, both layouts, many tiles; train and eval, detached reset or
    # not, both firing rules alternate with them
    monkeypatch.setattr(bn_tri, "INTERPRETER_TILE", 32)
    train = decay_input != channels_last
    inputs = make_inputs((3, 2, 4, 5, 3), torch.float32, channels_last, True, True)
    bn_opts = dict(batch_stats=train, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = plif_make_config(decay_input, 0.5, v_reset, "atan", 2.0, train, v_reset is None)
    w = torch.tensor(plif_init_w(2.5))
    compare(run_triton(inputs, bn_opts, cfg, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w), rtol=1e-4,
            atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last, batch_stats", [(False, True), (True, False)])
def test_triton_plif_matches_reference_16bit(dtype, channels_last, batch_stats):
    inputs = make_inputs((3, 2, 4, 5, 3), dtype, channels_last, True, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = plif_make_config(True, 0.5, 0.0, "sigmoid", 4.0, False, True)
    tol = 2 * torch.finfo(dtype).eps
    w = torch.tensor(plif_init_w(2.5))
    compare(run_triton(inputs, bn_opts, cfg, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w), rtol=tol,
            atol=tol)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_plif_backward_is_deterministic(channels_last, monkeypatch):
    # dL/dk: one fp64 partial per tile, summed in a fixed order: the same bits run to run
    # and for any number of programs; with channels as rows (NCHW) every result is
    monkeypatch.setattr(bn_tri, "INTERPRETER_TILE", 64)  # 16 tiles per step
    shape = (3, 2, 4, 6, 6) if DEVICE == "cpu" else (3, 8, 16, 32, 32)  # GPU: 128 tiles of 1024
    inputs = make_inputs(shape, torch.float32, channels_last, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = plif_make_config(True, 1.0, None, "atan", 2.0, False, True)
    w = torch.tensor(plif_init_w(3.0))
    one, two = run_triton(inputs, bn_opts, cfg, plif_w=w), run_triton(inputs, bn_opts, cfg, plif_w=w)
    for name, a, b in zip(NAMES, one, two):
        if a is not None:
            assert torch.equal(a, b), name
    monkeypatch.setattr(bn_tri, "INTERPRETER_PROGRAMS", 7)  # 3 -> 7 programs
    monkeypatch.setattr(bn_tri, "_sm_count", lambda device: 1)  # GPU: 128 -> 8 programs
    other = run_triton(inputs, bn_opts, cfg, plif_w=w)
    assert torch.equal(other[-1], one[-1]), "dL/dw depends on the number of programs"
    if not channels_last:
        for name, a, b in zip(NAMES, one, other):
            if a is not None:
                assert torch.equal(a, b), name


def test_plif_through_the_public_op_and_saves_only_y():
    y, r, v0, w, b, rm, rv = _dev(make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    cfg = plif_make_config()
    pw = torch.tensor(plif_init_w(2.0), device=DEVICE)
    got = B.bn_plif(y, B.BNArgs(w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5), cfg, pw, r, v0, backend="triton")
    want = B.bn_plif(y, B.BNArgs(w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5), cfg, pw, r, v0, backend="torch")
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert B.fused_backend("triton", y.device, plif=True) == "triton"
    saved = []
    y.requires_grad_()
    pw.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bn_tri.bn_plif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), cfg, plif_decay_factor(pw, y.dtype))
    full = [t for t in saved if t.numel() == y.numel()]
    assert len(full) == 1 and full[0].data_ptr() == y.data_ptr()


def test_plif_opcheck():
    y, r, v0, w, b, rm, rv = _dev(make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    k = torch.tensor(0.4, device=DEVICE)
    torch.library.opcheck(torch.ops.tks_kernels.bn_plif_forward_triton,
                          (y, r, scale, shift, v0, k, True, 0.5, 0.0, False, False))
    torch.library.opcheck(torch.ops.tks_kernels.bn_plif_backward_triton,
                          (torch.randn_like(y), None, y, r, scale, shift, center, invstd, v0, k, False, 0.5, 0.0,
                           True, True, False, 1, 2.0, True))
    with pytest.raises(ValueError, match="k must be a 0-dim"):
        bn_tri.bn_plif_forward_triton(y, r, scale, shift, v0, k.double(), True, 0.5, 0.0, False, False)


def test_model_step_learnable_tau_fused_equals_unfused(monkeypatch):
    # a whole VGGSNN with ParametricLIF neurons on the triton backend: every pair fused
    torch.manual_seed(5)
    kw = dict(width=1 / 16, input_size=16, neuron=dict(learnable_tau=True, tau=3.0))
    unfused = models.create("vggsnn", in_channels=2, T=2, backend="triton", fuse_bn=False, **kw).to(DEVICE)
    fused = copy.deepcopy(unfused)
    fused.fuse_bn = True
    calls = []
    real = B.bn_plif
    monkeypatch.setattr(B, "bn_plif", lambda *a, **k: calls.append(k.get("backend")) or real(*a, **k))
    x = torch.rand(2, 2, 16, 16, device=DEVICE)
    target = torch.tensor([0, 1], device=DEVICE)
    results = {}
    for label, model in (("unfused", unfused), ("fused", fused)):
        calls.clear()
        results[label] = (_train_step(model, x, target), list(calls))
    assert results["unfused"][1] == [] and results["fused"][1] == ["triton"] * 8
    (o0, g0), (o1, g1) = results["unfused"][0], results["fused"][0]
    torch.testing.assert_close(o1, o0, rtol=1e-4, atol=1e-5)
    assert any(k.endswith(".w") for k in g0)  # the PLIF parameters get gradients
    for k in g0:
        scale = max(g0[k].abs().max().item(), 1e-3)
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-5 * scale, msg=k)
    for k, v in unfused.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_plif_torch_compile_fullgraph():
    # the fused op traces with no graph break, forward and backward (aot_eager on the CPU:
    # Inductor's C++ build would cost most of this file's time; Inductor on a GPU)
    backend = "inductor" if DEVICE == "cuda" else "aot_eager"
    cfg = plif_make_config(True, 0.5, None, "atan", 2.0, False, True)
    y0, _, v00, w0, b0, _, _ = _dev(make_inputs((2, 2, 3, 4, 4), torch.float32, True, False, True))
    pw0 = torch.tensor(plif_init_w(2.0), device=DEVICE)

    def f(y, v0, w, b, pw):
        rm, rv = torch.zeros(3, device=y.device), torch.ones(3, device=y.device)
        s, v = bn_tri.bn_plif(y, B.BNArgs(w, b, rm, rv, True, 0.1, 1e-5), cfg, plif_decay_factor(pw, y.dtype),
                              None, v0)
        return (s * torch.arange(s.numel(), device=s.device).view(s.shape)).sum() + v.square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    results = []
    for fn in (compiled, f):
        args = [t.clone().requires_grad_() for t in (y0, v00, w0, b0, pw0)]
        loss = fn(*args)
        results.append((loss, *torch.autograd.grad(loss, args)))
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
