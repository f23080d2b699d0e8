"""The GPU fused BN + residual + LIF / parametric LIF kernels, CUDA (csrc/cuda/bn_lif_cuda.cu,
ops/bn_lif/cuda.py) and Triton compiled (ops/bn_lif/triton.py), issue 16, on a GPU:
forward, every gradient (y, gamma, beta, residual, v_init) and the running statistics
against the reference (fp64) and against the CPU kernel fed the same coefficients (fp32,
bf16, fp16: spikes bit for bit), over shapes chosen to reach every path of the kernels
(one tile and many; rows wider than a tile and more channels than a tile's columns, so
several column blocks; the persistent loops; odd sizes and misaligned pointers, the
scalar path; a T too long for shared memory, the global scratch), layouts, residual or
not, train and eval; the statistics against fp64 ``var_mean``; bit-equal results run to
run; the same spikes from both backends. The parametric LIF (``bn_plif``) likewise, dL/dw
included and its determinism, on the backends that fuse it (``HAS_PLIF``), and a model
with ``learnable_tau`` fused against unfused. GPU tests are marked ``gpu``; the CUDA
code is compiled by CMake everywhere nvcc is (tests/test_codegen_cuda.py checks it). The
tests at the end need no GPU: the CUDA binding's and the C API's argument checks, which
run before any launch."""
from __future__ import annotations

import ctypes

import pytest
import torch

from test_bn_lif import NAMES, compare, make_inputs, run
from tks_kernels import _native
from tks_kernels.ops import bn_lif as B
from tks_kernels.ops.bn_lif import reference as bn_ref
from tks_kernels.ops.lif import SURROGATES, DEFAULT_ALPHA, make_config
from tks_kernels.ops.plif import decay_factor as plif_decay_factor
from tks_kernels.ops.plif import init_w as plif_init_w
from tks_kernels.ops.plif import make_config as plif_make_config

gpu = pytest.mark.gpu


def run_cuda(inputs, bn_opts, cfg, backend="cuda", seed=1, misalign=False, plif_w=None):
    """test_bn_lif's ``run`` through ``ops.bn_lif.bn_lif(backend=...)`` on the GPU (with
    plif_w: ``bn_plif`` with that PLIF parameter, its gradient last); the results on the
    CPU. misalign: every [T, N] tensor starts one element into its storage (no 16-byte
    access possible)."""
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
    if plif_w is None:
        s, vl = B.bn_lif(y, B.BNArgs(w, b, rm, rv, **bn_opts), cfg, r, v0, backend=backend)
    else:
        pw = plif_w.detach().clone().cuda().requires_grad_()
        leaves.append(pw)
        s, vl = B.bn_plif(y, B.BNArgs(w, b, rm, rv, **bn_opts), cfg, pw, r, v0, backend=backend)
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


BACKENDS = ["cuda", "triton"]


def _skip_unavailable(backend):
    from tks_kernels import available_backends

    if not available_backends()[backend][0]:
        pytest.skip(f"{backend}: {available_backends()[backend][1]}")
    if backend == "cuda" and _native.cuda_lib is None:
        pytest.skip(f"no CUDA library: {_native.CUDA_ERROR}")


def _skip_without_plif(backend):
    """Skips unless ``backend`` fuses the parametric LIF (its module's ``HAS_PLIF``)."""
    _skip_unavailable(backend)
    if not getattr(B.backend_module(backend), "HAS_PLIF", False):
        pytest.skip(f"backend {backend} has no fused BN + PLIF kernel")


# the reference (step by step, fp64, on the CPU) on the shapes of distinct paths
REF_SHAPES = [SHAPES[i] for i in (0, 2, 5, 6, 8)]


@gpu
@pytest.mark.parametrize("shape, channels_last", REF_SHAPES, ids=[str(s) for s, _ in REF_SHAPES])
@pytest.mark.parametrize("residual, batch_stats", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_matches_reference_fp64(backend, shape, channels_last, residual, batch_stats):
    _skip_unavailable(backend)
    inputs = make_inputs(shape, torch.float64, channels_last, residual, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=0.5)
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=0.0, surrogate="atan", detach_reset=False)
    compare(run_cuda(inputs, bn_opts, cfg, backend), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@gpu
@pytest.mark.parametrize("shape, channels_last", SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_kernels_match_the_cpu_kernels(backend, shape, channels_last, dtype, batch_stats):
    # fp32 arithmetic over up to 2M elements: against the CPU kernel fed the same
    # per-channel coefficients (the same formulas, no contraction), the spikes are equal
    # bit for bit (against F.batch_norm, rounded otherwise, a few would flip at the
    # threshold); the gradients within the sums' order and the 16-bit storage.
    from tks_kernels.ops.bn_lif import cpu as bn_cpu

    _skip_unavailable(backend)
    if bn_cpu._native.cpu_lib is None:
        pytest.skip("no native CPU library")
    if backend == "cuda":
        fwd_op, bwd_op = bn_cpu.BN_LIF_FORWARD, bn_cpu.BN_LIF_BACKWARD
    else:
        from tks_kernels.ops.bn_lif import triton as bn_tri

        fwd_op, bwd_op = bn_tri.bn_lif_forward_triton, bn_tri.bn_lif_backward_triton
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
    fwd.append(tuple(t.cpu() for t in fwd_op(*cuda_in, *scalars)))
    bwd.append(tuple(t.cpu() for t in bwd_op(*bwd_args("cuda"), 2.0, True, 0.5, 0.0, False, False, True, 1, 2.0,
                                             batch_stats)))
    assert torch.equal(fwd[0][0], fwd[1][0]), "spikes"
    torch.testing.assert_close(fwd[1][1], fwd[0][1], rtol=0, atol=0, msg="v_last")
    tol = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    for name, a, e in zip(("grad_y", "grad_residual", "grad_v_init", "sums"), bwd[1], bwd[0]):
        scale = max(e.double().abs().max().item(), 1.0)
        torch.testing.assert_close(a.double(), e.double(), rtol=tol, atol=tol * scale, msg=name)


@gpu
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_every_surrogate_and_reset(backend, surrogate, soft):
    _skip_unavailable(backend)
    inputs = make_inputs((4, 4, 8, 8, 8), torch.float64, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(tau=1.5, decay_input=not soft, v_threshold=0.5, v_reset=None if soft else -0.2,
                      surrogate=surrogate, alpha=DEFAULT_ALPHA[surrogate], detach_reset=False)
    compare(run_cuda(inputs, bn_opts, cfg, backend), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@gpu
def test_cuda_misaligned_pointers_take_the_scalar_path():
    _skip_unavailable("cuda")
    inputs = make_inputs((4, 4, 16, 8, 8), torch.float32, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config()
    a = run_cuda(inputs, bn_opts, cfg)
    b = run_cuda(inputs, bn_opts, cfg, misalign=True)
    for name, x, e in zip(NAMES, a, b):
        if e is not None:
            torch.testing.assert_close(x, e, rtol=1e-6, atol=1e-7, msg=name)


@gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_long_time(backend):
    # CUDA: T * tile * 4 bytes beyond shared memory, d of the steps in the global
    # workspace; Triton: a scratch slot of 300 steps
    _skip_unavailable(backend)
    inputs = make_inputs((300, 2, 4, 4, 4), torch.float64, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="sigmoid")
    compare(run_cuda(inputs, bn_opts, cfg, backend), run(bn_ref, inputs, bn_opts, cfg), rtol=1e-9, atol=1e-11)


@gpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_statistics(backend, channels_last):
    _skip_unavailable(backend)
    if backend == "cuda":
        stats = torch.ops.tks_kernels.bn_stats  # the CUDA kernel registered on the op
    else:
        from tks_kernels.ops.bn_lif.triton import bn_stats_triton as stats

    y = make_inputs((4, 8, 32, 16, 16), torch.float32, channels_last, False, False)[0] * 0.01 + 300.0
    mean, var = stats(y.cuda())
    v_ref, m_ref = torch.var_mean(y.double(), dim=(0, 1, 3, 4), unbiased=False)
    torch.testing.assert_close(mean.cpu(), m_ref, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(var.cpu(), v_ref, rtol=1e-5, atol=1e-12)


@gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_backends_are_deterministic(backend):
    _skip_unavailable(backend)
    inputs = make_inputs((4, 16, 64, 16, 16), torch.float32, True, True, False)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = make_config(surrogate="atan")
    one, two = run_cuda(inputs, bn_opts, cfg, backend), run_cuda(inputs, bn_opts, cfg, backend)
    for name, a, b in zip(NAMES, one, two):
        if a is not None:
            assert torch.equal(a, b), name


@gpu
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_and_triton_give_the_same_spikes(channels_last):
    _skip_unavailable("cuda")
    _skip_unavailable("triton")
    inputs = make_inputs((4, 8, 32, 16, 16), torch.float32, channels_last, True, True)
    bn_opts = dict(batch_stats=False, momentum=0.1, eps=1e-5, weight_scale=1.0)  # the same coefficients
    cfg = make_config()
    a = run_cuda(inputs, bn_opts, cfg, "cuda")
    b = run_cuda(inputs, bn_opts, cfg, "triton")
    assert torch.equal(a[0], b[0])
    for name, x, e in zip(NAMES[1:], a[1:], b[1:]):
        if e is not None:
            torch.testing.assert_close(x, e, rtol=1e-5, atol=1e-6, msg=name)


@gpu
def test_cuda_opcheck():
    _skip_unavailable("cuda")
    y, r, v0, w, b, rm, rv = (None if t is None else t.cuda()
                              for t in make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_forward,
                          (y, r, scale, shift, v0, 2.0, True, 0.5, 0.0, False, False))
    torch.library.opcheck(torch.ops.tks_kernels.bn_lif_backward,
                          (torch.randn_like(y), None, y, r, scale, shift, center, invstd, v0, 2.0, True, 0.5, 0.0,
                           False, True, False, 2, 2.0, True))
    torch.library.opcheck(torch.ops.tks_kernels.bn_stats, (y,))


PLIF_NEURON = dict(learnable_tau=True)


@gpu
@pytest.mark.parametrize("name, kw, cin", [
    ("resnet19", dict(width=1 / 8, input_size=16), 3),
    ("vggsnn", dict(width=1 / 8, input_size=32), 2),
    ("resnet19", dict(width=1 / 8, input_size=16, neuron=PLIF_NEURON), 3),
    ("vggsnn", dict(width=1 / 8, input_size=32, neuron=dict(learnable_tau=True, tau=3.0)), 2),
], ids=["resnet19", "vggsnn", "resnet19-plif", "vggsnn-plif"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_model_training_step_fused_equals_unfused(backend, name, kw, cin, monkeypatch):
    import copy

    from tks_kernels import models

    plif = kw.get("neuron", {}).get("learnable_tau", False)
    if plif:
        _skip_without_plif(backend)
    else:
        _skip_unavailable(backend)
    fn = "bn_plif" if plif else "bn_lif"
    calls = []
    real = getattr(B, fn)
    monkeypatch.setattr(B, fn, lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(5)
    unfused = models.create(name, in_channels=cin, T=3, backend=backend, fuse_bn=False, **kw).cuda().double()
    fused = copy.deepcopy(unfused)
    fused.fuse_bn = True
    x = torch.rand(4, cin, kw["input_size"], kw["input_size"], dtype=torch.float64, device="cuda")
    target = torch.tensor([0, 1, 2, 3], device="cuda")
    outs, n_calls = {}, {}
    for label, model in (("unfused", unfused), ("fused", fused)):
        calls.clear()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        steps = []
        for _ in range(2):
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out.mean(0), target)
            opt.zero_grad()
            loss.backward()
            steps.append((out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
            opt.step()
        model.eval()  # eval: running statistics, no grad
        with torch.no_grad():
            steps.append((model(x), {}))
        outs[label] = steps
        n_calls[label] = len(calls)
    assert n_calls["unfused"] == 0 and n_calls["fused"] > 0, n_calls  # the fused model runs the fused op
    for (o0, g0), (o1, g1) in zip(outs["unfused"], outs["fused"]):
        torch.testing.assert_close(o1, o0, rtol=1e-9, atol=1e-12)
        for k in g0:
            torch.testing.assert_close(g1[k], g0[k], rtol=1e-9, atol=1e-12 * max(g0[k].abs().max().item(), 1e-3),
                                       msg=k)
    for k, v in unfused.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, rtol=1e-9, atol=1e-12, msg=k)


# ---------------------------------------------------------------- parametric LIF

def _plif_cfg(decay_input=True, soft=False, surrogate="atan", detach_reset=False, fire_at_threshold=True):
    return plif_make_config(decay_input, 0.5, None if soft else 0.0, surrogate, DEFAULT_ALPHA[surrogate], detach_reset,
                            fire_at_threshold)


PLIF_W = torch.tensor(plif_init_w(2.5))


@gpu
@pytest.mark.parametrize("shape, channels_last", REF_SHAPES, ids=[str(s) for s, _ in REF_SHAPES])
@pytest.mark.parametrize("residual, batch_stats, decay_input", [(True, True, True), (False, True, False),
                                                                (True, False, False)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_plif_matches_reference_fp64(backend, shape, channels_last, residual, batch_stats, decay_input):
    # every output: spikes exact, v_last, running statistics, the gradients of y, gamma,
    # beta, the residual, v_init and the PLIF parameter w (through dL/dk)
    _skip_without_plif(backend)
    inputs = make_inputs(shape, torch.float64, channels_last, residual, True)
    bn_opts = dict(batch_stats=batch_stats, momentum=0.1, eps=1e-5, weight_scale=0.5)
    cfg = _plif_cfg(decay_input)
    w = PLIF_W.double()
    compare(run_cuda(inputs, bn_opts, cfg, backend, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w),
            rtol=1e-9, atol=1e-11)


@gpu
@pytest.mark.parametrize("shape, channels_last", SHAPES, ids=[str(s) for s, _ in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_cuda_plif_kernels_match_the_cpu_kernels(shape, channels_last, dtype, batch_stats):
    # the CUDA ops against the CPU ops fed the same coefficients and k: spikes and v_last
    # bit for bit, the gradients and dL/dk within the sums' order and the 16-bit storage
    from tks_kernels.ops.bn_lif import cpu as bn_cpu

    _skip_without_plif("cuda")
    if not bn_cpu.HAS_PLIF:
        pytest.skip("the native CPU library has no fused BN + PLIF kernel")
    y, r, v0, w, b, rm, rv = make_inputs(shape, dtype, channels_last, True, True)
    coeffs = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    k = plif_decay_factor(PLIF_W, dtype).detach()
    gen = torch.Generator().manual_seed(2)
    gs = torch.randn(y.shape, generator=gen).to(dtype)
    gl = torch.randn(y.shape[1:], generator=gen).to(dtype)
    fwd_flags = (True, 0.5, 0.0, False, True)  # decay_input, v_threshold, v_reset, soft, fire_at
    bwd_flags = (True, 0.5, 0.0, False, False, True, 1, 2.0, batch_stats)  # ... detach, fire_at, atan, alpha
    fwd_op, bwd_op = torch.ops.tks_kernels.bn_plif_forward, torch.ops.tks_kernels.bn_plif_backward
    on = lambda d: [t.to(d) if t is not None else None for t in (y, r, coeffs[0], coeffs[1], v0, k)]
    bwd_in = lambda d: [t.to(d) if t is not None else None for t in (gs, gl, y, r) + coeffs + (v0, k)]
    fwd = [fwd_op(*on("cpu"), *fwd_flags), [t.cpu() for t in fwd_op(*on("cuda"), *fwd_flags)]]
    bwd = [bwd_op(*bwd_in("cpu"), *bwd_flags), [t.cpu() for t in bwd_op(*bwd_in("cuda"), *bwd_flags)]]
    assert torch.equal(fwd[0][0], fwd[1][0]), "spikes"
    assert torch.equal(fwd[0][1], fwd[1][1]), "v_last"
    tol = 1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    for name, a, e in zip(("grad_y", "grad_residual", "grad_v_init", "sums", "grad_k"), bwd[1], bwd[0]):
        scale = max(e.double().abs().max().item(), 1.0)
        torch.testing.assert_close(a.double(), e.double(), rtol=tol, atol=tol * scale, msg=name)


@gpu
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_plif_every_surrogate_and_reset(backend, surrogate, soft):
    _skip_without_plif(backend)
    inputs = make_inputs((4, 4, 8, 8, 8), torch.float64, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = _plif_cfg(decay_input=not soft, soft=soft, surrogate=surrogate, fire_at_threshold=soft)
    w = PLIF_W.double()
    compare(run_cuda(inputs, bn_opts, cfg, backend, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w),
            rtol=1e-9, atol=1e-11)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_plif_misaligned_pointers_take_the_scalar_path(dtype):
    _skip_without_plif("cuda")
    inputs = make_inputs((4, 4, 16, 8, 8), dtype, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = _plif_cfg()
    a = run_cuda(inputs, bn_opts, cfg, plif_w=PLIF_W)
    b = run_cuda(inputs, bn_opts, cfg, misalign=True, plif_w=PLIF_W)
    assert torch.equal(a[0], b[0]), "spikes"
    tol = 1e-6 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    for name, x, e in zip(NAMES[1:], a[1:], b[1:]):
        if e is not None:
            torch.testing.assert_close(x, e, rtol=tol, atol=tol, msg=name)


@gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_plif_long_time(backend):
    # CUDA: the charges of 300 steps do not fit in shared memory: the global workspace
    _skip_without_plif(backend)
    inputs = make_inputs((300, 2, 4, 4, 4), torch.float64, False, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = _plif_cfg(surrogate="sigmoid")
    w = PLIF_W.double()
    compare(run_cuda(inputs, bn_opts, cfg, backend, plif_w=w), run(bn_ref, inputs, bn_opts, cfg, plif_w=w),
            rtol=1e-9, atol=1e-11)


@gpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_plif_is_deterministic(backend, channels_last):
    # many blocks, each with its own dL/dk partial: the same bits run to run
    _skip_without_plif(backend)
    inputs = make_inputs((4, 16, 64, 16, 16), torch.float32, channels_last, True, True)
    bn_opts = dict(batch_stats=True, momentum=0.1, eps=1e-5, weight_scale=1.0)
    cfg = _plif_cfg(decay_input=False)
    one, two = (run_cuda(inputs, bn_opts, cfg, backend, plif_w=PLIF_W) for _ in range(2))
    for name, a, b in zip(NAMES, one, two):
        if a is not None:
            assert torch.equal(a, b), name
    assert one[-1].abs().item() > 0  # dL/dw was computed


@gpu
def test_cuda_plif_opcheck():
    _skip_without_plif("cuda")
    y, r, v0, w, b, rm, rv = (None if t is None else t.cuda()
                              for t in make_inputs((2, 2, 3, 4, 4), torch.float32, True, True, True))
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    k = torch.tensor(0.4, device="cuda")
    torch.library.opcheck(torch.ops.tks_kernels.bn_plif_forward, (y, r, scale, shift, v0, k, True, 0.5, 0.0, False,
                                                                   False))
    torch.library.opcheck(torch.ops.tks_kernels.bn_plif_backward,
                          (torch.randn_like(y), None, y, r, scale, shift, center, invstd, v0, k, True, 0.5, 0.0,
                           False, True, False, 2, 2.0, True))


# ---------------------------------------------------------------- without a GPU
# The CUDA binding's checks run before any launch, so they run here on CPU tensors; the
# C API's checks run before any CUDA call, so they run wherever the CUDA library loads.

def _bn_cuda():
    from tks_kernels.ops.bn_lif import cuda as bn_cuda

    return bn_cuda


def _plif_op_args(dtype=torch.float32):
    y, r, v0, w, b, rm, rv = make_inputs((2, 2, 3, 4, 4), dtype, False, True, True)
    scale, shift, center, invstd = B.batch_norm_coefficients(y, B.BNArgs(w, b, rm, rv, False, 0.1, 1e-5))
    k = torch.tensor(0.4, dtype=B.compute_dtype(dtype))
    return y, r, v0, scale, shift, center, invstd, k


@pytest.mark.parametrize("bad, match", [
    (dict(k=torch.tensor(0.4, dtype=torch.float64)), "k must be a 0-dim torch.float32"),
    (dict(k=torch.tensor([0.4])), "k must be a 0-dim"),
    (dict(scale=torch.ones(4)), "per-channel vectors"),
    (dict(y=torch.ones(3, 4)), "y must be"),
    (dict(), "run on CUDA tensors"),  # every check passed: the last one says why it cannot launch
])
def test_cuda_plif_forward_checks_its_arguments(bad, match):
    y, r, v0, scale, shift, _, _, k = _plif_op_args()
    args = dict(y=y, residual=r, scale=scale, shift=shift, v_init=v0, k=k)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        _bn_cuda()._cuda_plif_forward(*args.values(), True, 0.5, 0.0, False, True)


@pytest.mark.parametrize("bad, match", [
    (dict(k=torch.tensor(0.4, dtype=torch.float32)), "k must be a 0-dim torch.float64"),
    (dict(center=torch.ones(3)), "per-channel vectors"),
    (dict(grad_spikes=torch.ones(2, 2, 3, 4, 3, dtype=torch.float64)), "grad_spikes has shape"),
    (dict(), "run on CUDA tensors"),
])
def test_cuda_plif_backward_checks_its_arguments(bad, match):
    y, r, v0, scale, shift, center, invstd, k = _plif_op_args(torch.float64)
    args = dict(grad_spikes=torch.ones_like(y), grad_v_last=None, y=y, residual=r, scale=scale, shift=shift,
                center=center, invstd=invstd, v_init=v0, k=k)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        _bn_cuda()._cuda_plif_backward(*args.values(), True, 0.5, 0.0, False, False, True, 1, 2.0, True)


def test_cuda_lif_binding_checks_before_launch():
    y, r, v0, scale, shift, center, invstd, _ = _plif_op_args()
    with pytest.raises(RuntimeError, match="run on CUDA tensors"):
        _bn_cuda()._cuda_forward(y, r, scale, shift, v0, 2.0, True, 0.5, 0.0, False, True)
    with pytest.raises(RuntimeError, match="per-channel vectors"):
        _bn_cuda()._cuda_backward(torch.ones_like(y), None, y, r, scale, shift, center[:2], invstd, v0, 2.0, True,
                                  0.5, 0.0, False, False, True, 1, 2.0, True)
    with pytest.raises(RuntimeError, match="CUDA tensors, but y is on cpu"):
        _bn_cuda().bn_plif(y, B.BNArgs(None, None, None, None, True, 0.1, 1e-5), _plif_cfg(), torch.tensor(0.4))


def _cuda_lib():
    if _native.cuda_lib is None:
        pytest.skip(f"no CUDA library: {_native.CUDA_ERROR}")
    return _native.cuda_lib


def test_cuda_library_fuses_plif():
    lib = _cuda_lib()
    assert _bn_cuda().HAS_PLIF
    for name in ("tks_bn_plif_forward_cuda", "tks_bn_plif_backward_cuda"):
        assert getattr(lib, name).argtypes == _native._CUDA_PROTOTYPES[name]


def _c_error(rc):
    assert rc == _native.ERR_VALUE, rc
    return _native.cuda_lib.tks_last_error().decode()


# dummy host addresses: the C API checks them for null only and fails before any CUDA call
_BUF = ctypes.create_string_buffer(64)
_P = ctypes.addressof(_BUF)


@pytest.mark.parametrize("bad, match", [
    (dict(dtype=9), "dtype must be 0 (float32)"),
    (dict(N=10), "N (10) must be a multiple of C * inner (2 * 4)"),
    (dict(C=0), "C (channels) must be >= 1, got 0"),
    (dict(T=0), "T (the number of steps) must be >= 1"),
    (dict(k=None), "k must not be NULL"),
    (dict(y=None), "y must not be NULL"),
])
def test_c_api_plif_forward_checks_its_arguments(bad, match):
    lib = _cuda_lib()
    a = dict(dtype=0, y=_P, residual=None, scale=_P, shift=_P, v_init=None, k=_P, spikes=_P, v_last=_P, T=2, N=8,
             C=2, inner=4, v_threshold=0.5, v_reset=0.0, flags=_native.DECAY_INPUT, stream=None)
    a.update(bad)
    assert match in _c_error(lib.tks_bn_plif_forward_cuda(*a.values()))


@pytest.mark.parametrize("bad, match", [
    (dict(surrogate=7), "surrogate id must be in"),
    (dict(grad_k=None), "grad_k must not be NULL"),
    (dict(k=None), "k must not be NULL"),
    (dict(grad_residual=_P), "grad_residual must be given exactly when residual is"),
    (dict(workspace=None), "workspace must not be NULL"),
    (dict(inner=0), "inner (the channel stride within a step) must be >= 1"),
])
def test_c_api_plif_backward_checks_its_arguments(bad, match):
    lib = _cuda_lib()
    a = dict(dtype=0, grad_spikes=_P, grad_v_last=None, y=_P, residual=None, scale=_P, shift=_P, center=_P,
             invstd=_P, v_init=None, k=_P, grad_y=_P, grad_residual=None, grad_v_init=None, sums=_P, grad_k=_P,
             workspace=_P, T=2, N=8, C=2, inner=4, v_threshold=0.5, v_reset=0.0, flags=0, surrogate=1, alpha=2.0,
             batch_stats=1, stream=None)
    a.update(bad)
    assert match in _c_error(lib.tks_bn_plif_backward_cuda(*a.values()))
