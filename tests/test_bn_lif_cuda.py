"""The CUDA fused BN + residual + LIF kernels (csrc/cuda/bn_lif_cuda.cu, ops/bn_lif/cuda.py,
issue 16) against the reference on a GPU: forward, every gradient (y, gamma, beta,
residual, v_init) and the running statistics over shapes chosen to reach every path of
the kernels (one tile and many; rows wider than a tile and more channels than a tile's
columns, so several column blocks; the persistent loops; odd sizes and misaligned
pointers, the scalar path; a T too long for shared memory, the global scratch), layouts,
dtypes, residual or not, train and eval; the statistics against fp64 ``var_mean``;
bit-equal results run to run; the same spikes as the Triton kernels. GPU only (marked
``gpu``); the CUDA code is compiled by CMake everywhere nvcc is."""
from __future__ import annotations

import pytest
import torch

from test_bn_lif import NAMES, compare, make_inputs, run
from tks_kernels import _native
from tks_kernels.ops import bn_lif as B
from tks_kernels.ops.bn_lif import reference as bn_ref
from tks_kernels.ops.lif import SURROGATES, DEFAULT_ALPHA, make_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_native.cuda_lib is None, reason=f"no CUDA library: {_native.CUDA_ERROR}")]


def run_cuda(inputs, bn_opts, cfg, backend="cuda", seed=1, misalign=False):
    """test_bn_lif's ``run`` through ``ops.bn_lif.bn_lif(backend=...)`` on the GPU; the
    results on the CPU. misalign: every [T, N] tensor starts one element into its storage
    (no 16-byte access possible)."""
    def dev(t):
        if t is None:
            return None
        t = t.detach().clone().cuda()
        if misalign and t.dim() >= 3:
            buf = torch.empty(t.numel() + 1, dtype=t.dtype, device="cuda")[1:]
            t = buf.view(t.shape).copy_(t) if t.is_contiguous() else t
        return t
    y, r, v0, w, b, rm, rv = (dev(t) for t in inputs)
    leaves = [t.requires_grad_() if t is not None else None for t in (y, w, b, r, v0)]
    s, vl = B.bn_lif(y, B.BNArgs(w, b, rm, rv, **bn_opts), cfg, r, v0, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    gs = torch.randn(s.shape, generator=gen, dtype=torch.float64).to(s.dtype).cuda()
    gv = torch.randn(vl.shape, generator=gen, dtype=torch.float64).to(s.dtype).cuda()
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad((s.double() * gs.double()).sum() + (vl.double() * gv.double()).sum(), present))
    out = (s, vl, rm, rv) + tuple(next(grads) if t is not None else None for t in leaves)
    return tuple(None if t is None else t.cpu() for t in out)


SHAPES = [
    ((4, 2, 3, 4, 4), False),  # one tile
    ((4, 8, 16, 32, 32), False),  # NCHW, a row per tile, many tiles
    ((4, 4, 8, 64, 64), False),  # NCHW rows wider than a tile: several column blocks
    ((4, 32, 64, 4, 4), False),  # NCHW, many rows per tile
    ((4, 8, 64, 16, 16), True),  # channels_last
    ((2, 2, 2048, 2, 2), True),  # channels_last, more channels than a tile's columns
    ((3, 5, 7, 7, 7), False),  # odd sizes: the scalar path
    ((3, 5, 10, 5, 3), True),
    ((4, 64, 100), False),  # BatchNorm1d
]


@pytest.mark.parametrize("shape, channels_last", SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_cuda_matches_reference_fp64(shape, channels_last, residual, batch_stats):
    inputs = make_inputs(shape, torch.float64, channels_last, residual, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=0.5)
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=0.0, surrogate="atan", detach_reset=False)
    compare(run_cuda(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("shape, channels_last", SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_cuda_kernels_match_the_cpu_kernels(shape, channels_last, dtype, batch_stats):
    # fp32 arithmetic over up to 2M elements: against the CPU kernel fed the same
    # per-channel coefficients (the same formulas, no contraction), the spikes are equal
    # bit for bit (against F.batch_norm, rounded otherwise, a few would flip at the
    # threshold); the gradients within the sums' order and the 16-bit storage.
    from tks_kernels.ops.bn_lif import cpu as bn_cpu

    if bn_cpu._native.cpu_lib is None:
        pytest.skip("no native CPU library")
    y, r, v0, w, b, rm, rv = make_inputs(shape, dtype, channels_last, True, True)
    coeffs = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    gen = torch.Generator().manual_seed(2)
    gs = torch.randn(y.shape, generator=gen).to(dtype)
    gl = torch.randn(y.shape[1:], generator=gen).to(dtype)
    scalars = (2.0, True, 0.5, 0.0, False, True)  # tau, decay_input, v_threshold, v_reset, soft, fire_at
    fwd = [bn_cpu._cpu_forward(y, r, coeffs[0], coeffs[1], v0, *scalars[:5], scalars[5])]
    bwd_args = lambda d: [t.to(d) if t is not None else None for t in (gs, gl, y, r) + coeffs + (v0,)]
    bwd = [bn_cpu._cpu_backward(*bwd_args("cpu"), 2.0, True, 0.5, 0.0, False, False, True, 1, 2.0, batch_stats)]
    cuda_in = [t.cuda() if t is not None else None for t in (y, r, coeffs[0], coeffs[1], v0)]
    fwd.append(tuple(t.cpu() for t in bn_cpu.BN_LIF_FORWARD(*cuda_in, *scalars)))
    bwd.append(tuple(t.cpu() for t in bn_cpu.BN_LIF_BACKWARD(*bwd_args("cuda"), 2.0, True, 0.5, 0.0, False, False,
                                                              True, 1, 2.0, batch_stats)))
    assert torch.equal(fwd[0][0], fwd[1][0]), "spikes"
    torch.testing.assert_close(fwd[1][1], fwd[0][1], rtol=0, atol=0, msg="v_last")
    tol = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    for name, a, e in zip(("grad_y", "grad_residual", "grad_v_init", "sums"), bwd[1], bwd[0]):
        scale = max(e.double().abs().max().item(), 1.0)
        torch.testing.assert_close(a.double(), e.double(), rtol=tol, atol=tol * scale, msg=name)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("soft", [False, True])
def test_cuda_every_surrogate_and_reset(surrogate, soft):
    inputs = make_inputs((4, 4, 8, 8, 8), torch.float64, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(tau=1.5, decay_input=not soft, v_threshold=0.5, v_reset=None if soft else -0.2,
                      surrogate=surrogate, alpha=DEFAULT_ALPHA[surrogate], detach_reset=False)
    compare(run_cuda(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


def test_cuda_misaligned_pointers_take_the_scalar_path():
    inputs = make_inputs((4, 4, 16, 8, 8), torch.float32, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config()
    a = run_cuda(inputs, bn_opts, cfg)
    b = run_cuda(inputs, bn_opts, cfg, misalign=True)
    for name, x, e in zip(NAMES, a, b):
        if e is not None:
            torch.testing.assert_close(x, e, rtol=1e-6, atol=1e-7, msg=name)


def test_cuda_long_time_uses_the_global_scratch():
    # T * tile * 4 bytes beyond shared memory: d of the steps in the global workspace
    inputs = make_inputs((300, 2, 4, 4, 4), torch.float64, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="sigmoid")
    compare(run_cuda(inputs, bn_opts, cfg), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_statistics(channels_last):
    from tks_kernels.ops.bn_lif import cuda as bn_cuda

    y = make_inputs((4, 8, 32, 16, 16), torch.float32, channels_last, False, False)[0] * 0.01 + 300.0
    mean, var = bn_cuda.bn_stats_cuda(y.cuda())
    v_ref, m_ref = torch.var_mean(y.double(), dim=(0, 1, 3, 4), unbiased=False)
    torch.testing.assert_close(mean.cpu(), m_ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(var.cpu(), v_ref, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_backends_are_deterministic(backend):
    inputs = make_inputs((4, 16, 64, 16, 16), torch.float32, True, True, False)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="atan")
    one, two = run_cuda(inputs, bn_opts, cfg, backend), run_cuda(inputs, bn_opts, cfg, backend)
    for name, a, b in zip(NAMES, one, two):
        if a is not None:
            assert torch.equal(a, b), name


@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_and_triton_give_the_same_spikes(channels_last):
    inputs = make_inputs((4, 8, 32, 16, 16), torch.float32, channels_last, True, True)
    bn_opts = dict(batch_stats=False, momentum=0.1, eps=1e-5, weight_scale=1.0)  # the same coefficients
    cfg = make_config()
    a = run_cuda(inputs, bn_opts, cfg, "cuda")
    b = run_cuda(inputs, bn_opts, cfg, "triton")
    assert torch.equal(a[0], b[0])
    for name, x, e in zip(NAMES[1:], a[1:], b[1:]):
        if e is not None:
            torch.testing.assert_close(x, e, rtol=1e-5, atol=1e-6, msg=name)


def test_cuda_opcheck():
    y, r, v0, w, b, rm, rv = (None if t is None else t.cuda()
                              for t in make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_forward,
                          (y, r, scale, shift, v0, 2.0, True, 0.5, 0.0, False, False))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_backward,
                          (torch.randn_like(y), None, y, r, scale, shift, center, invstd, v0, 2.0, True, 0.5, 0.0,
                           False, True, False, 2, 2.0, True))
    torch.library.opcheck(torch.ops.tks_kernels.bn_stats_cuda, (y,))
