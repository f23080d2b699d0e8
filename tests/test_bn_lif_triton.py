"""The Triton fused BN + residual + LIF op (ops/bn_lif/triton.py, issue 16) against the
reference (F.batch_norm + the LIF reference) in forward, every gradient (y, gamma, beta,
residual, v_init) and the running statistics, over shapes, layouts (NCHW, channels_last,
BatchNorm1d), dtypes, residual or not, train and eval; the one-read statistics; the
determinism of the per-channel sums. On the CPU under TRITON_INTERPRET=1 (small shapes:
the interpreter is slow); on a GPU the same tests run the compiled kernels.

Many tiles and the persistent loops are exercised by lowering the interpreter's tile
(``INTERPRETER_TILE``) so a small tensor spans many programs."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_bn_lif import NAMES, _case_args, cases, compare, make_inputs, run
from tks_kernels._backends import available_backends
from tks_kernels.ops import bn_lif as B
from tks_kernels.ops.bn_lif import reference as bn_ref
from tks_kernels.ops.lif import make_config

if not available_backends()["triton"][0]:
    pytest.skip(f"triton backend unavailable: {available_backends()['triton'][1]}", allow_module_level=True)

from tks_kernels.ops.bn_lif import triton as bn_tri  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def run_triton(inputs, bn_opts, cfg, seed=1):
    """test_bn_lif's ``run`` with the Triton module on DEVICE: the same inputs and output
    gradients (made on the CPU), the results back on the CPU."""
    if DEVICE == "cpu":
        return run(bn_tri, inputs, bn_opts, cfg, seed)
    y, r, v0, w, b, rm, rv = (None if t is None else t.detach().clone().to(DEVICE) for t in inputs)
    leaves = [t.requires_grad_() if t is not None else None for t in (y, w, b, r, v0)]
    s, vl = bn_tri.bn_lif(y, B.BNArgs(w, b, rm, rv, **bn_opts), cfg, r, v0)
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
