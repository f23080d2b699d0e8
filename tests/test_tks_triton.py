"""The Triton TKS loss against the reference: on CPU tensors under the interpreter
(TRITON_INTERPRET=1, set by conftest.py without a GPU; small tensors, it is slow), and
the GPU backends (``triton`` and ``cuda`` on CUDA tensors, tests marked ``gpu``).

Fused results are compared with the reference evaluated in fp64 on the CPU on the same
values (see test_tks_loss.py): fp32 to 1e-5 relative. The interpreter truncates rather
than rounds bf16 stores (DESIGN.md), hence its looser bf16 gradient tolerance.
"""
from __future__ import annotations

import os

import pytest
import torch

from tks_kernels import TKSLoss, functional
from tks_kernels._backends import available_backends, triton_interpreted
from tks_kernels.ops import tks

from test_tks_loss import OPTIONS, assert_close_to_truth, make_case, rel_err, run, truth

HAS_CUDA = torch.cuda.is_available()
TRITON_ON_CPU = available_backends()["triton"][0] and triton_interpreted() and not HAS_CUDA
needs_interpreter = pytest.mark.skipif(not TRITON_ON_CPU, reason="needs triton under TRITON_INTERPRET=1 (no GPU)")


def _require(backend):
    ok, why = available_backends()[backend]
    if not ok:
        if backend == "cuda" and os.environ.get("TKS_REQUIRE_EXTENSION") != "1":
            pytest.skip(why)
        pytest.fail(f"backend {backend!r} is not available on this GPU machine: {why}")


# ------------------------------------------------------------------ interpreter (CPU)

@needs_interpreter
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 6, 10), (3, 4, 700), (64, 3, 5)])
def test_triton_interpreter_matches_reference(opts, shape):
    for soft_target in (False, True):
        o, y = make_case(*shape, soft_target=soft_target)
        cfg = tks.make_config(0.6, 2.5, **opts)
        assert_close_to_truth(run("triton", o, y, cfg), truth(o, y, cfg))


@needs_interpreter
def test_triton_interpreter_classes_in_many_chunks():
    """C beyond one tile: the online softmax merges chunks (8192 // BLOCK_T classes each)."""
    o, y = make_case(8, 2, 2000, seed=3)
    cfg = tks.make_config(0.5)
    from tks_kernels.ops.tks.triton import _launch_config

    assert _launch_config(8, 2000)[1] < 2000 and _launch_config(64, 300)[1] < 300
    assert_close_to_truth(run("triton", o, y, cfg), truth(o, y, cfg))
    o, y = make_case(64, 2, 300, seed=4)
    assert_close_to_truth(run("triton", o, y, cfg), truth(o, y, cfg))


@needs_interpreter
def test_triton_interpreter_gradcheck_fp64():
    o, y = make_case(3, 2, 4, dtype=torch.float64)
    cfg = tks.make_config(0.7, 3.0)
    x = o.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: tks.tks_loss(a, y, cfg, backend="triton")[0], (x,))


@needs_interpreter
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_triton_interpreter_half_precision(dtype, tol):
    o, y = make_case(4, 5, 100, dtype=dtype)
    cfg = tks.make_config(0.5)
    got = run("triton", o, y, cfg)
    assert got[0].dtype == torch.float32 and got[3].dtype == dtype
    assert_close_to_truth(got, truth(o, y, cfg), tol=1e-5, grad_tol=tol)


@needs_interpreter
def test_triton_interpreter_strided_and_no_grad():
    o, y = make_case(5, 4, 17)
    cfg = tks.make_config(0.4)
    want = truth(o, y, cfg)
    assert_close_to_truth(run("triton", o.transpose(0, 1).contiguous().transpose(0, 1), y, cfg), want)
    assert_close_to_truth(run("triton", o.transpose(1, 2).contiguous().transpose(1, 2), y, cfg), want)
    from tks_kernels.ops.tks.triton import tks_loss_triton

    loss, parts, grad = tks_loss_triton(o, y, 0.4, 3.0, False, False, 0.0, False)
    assert grad.numel() == 0
    assert float(loss) == pytest.approx(float(want[0]), rel=1e-5)
    assert float(parts[1]) == pytest.approx(float(want[2]), rel=1e-5)


@needs_interpreter
def test_triton_interpreter_out_of_range_label_is_nan():
    """What a compiled graph (no Python range check) gets: NaN, not a wrong number."""
    from tks_kernels.ops.tks.triton import tks_loss_triton

    o = torch.randn(2, 3, 4)
    loss, parts, _ = tks_loss_triton(o, torch.tensor([0, 7, 1]), 0.5, 3.0, False, False, 0.0, False)
    assert torch.isnan(loss) and torch.isnan(parts).all()
    with pytest.raises(ValueError, match=r"target\[1\] = 7"):
        functional.tks_loss(o, torch.tensor([0, 7, 1]), lam=0.5, backend="triton")


@needs_interpreter
def test_triton_interpreter_op_registration():
    from tks_kernels.ops.tks.triton import tks_loss_triton

    o = torch.randn(3, 4, 5, requires_grad=True)
    torch.library.opcheck(tks_loss_triton, (o, torch.randint(0, 5, (4,)), 0.5, 3.0, False, False, 0.1, True))
    torch.library.opcheck(tks_loss_triton, (o.detach(), torch.softmax(torch.randn(4, 5), -1), 0.5, 3.0, True, True,
                                            0.0, False))


@needs_interpreter
def test_triton_interpreter_compile_fullgraph():
    o, y = make_case(3, 4, 6)

    def step(x):
        return functional.tks_loss(x, y, lam=0.3, backend="triton") * 3

    x1 = o.clone().requires_grad_()
    x2 = o.clone().requires_grad_()
    l1 = torch.compile(step, fullgraph=True, backend="aot_eager")(x1)
    l2 = step(x2)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(x1.grad, x2.grad)


# ------------------------------------------------------------------------------- GPU

GPU_BACKENDS = ["triton", "cuda"]
GPU_SHAPES = [(1, 1, 1), (1, 3, 2), (4, 8, 10), (8, 5, 1000), (3, 4, 2000), (64, 3, 7), (4, 300, 100)]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_gpu_matches_reference(backend, shape):
    _require(backend)
    for opts in OPTIONS:
        for soft_target in (False, True):
            o, y = make_case(*shape, soft_target=soft_target)
            cfg = tks.make_config(0.6, 2.5, **opts)
            assert_close_to_truth(run(backend, o, y, cfg, device="cuda"), truth(o, y, cfg))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2), (torch.float64, 1e-10)])
def test_gpu_dtypes(backend, dtype, tol):
    _require(backend)
    o, y = make_case(4, 6, 300, dtype=dtype)
    cfg = tks.make_config(0.5)
    got = run(backend, o, y, cfg, device="cuda")
    assert got[3].dtype == dtype
    assert_close_to_truth(got, truth(o, y, cfg), tol=1e-5 if dtype != torch.float64 else 1e-10, grad_tol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_strides_no_grad_and_determinism(backend):
    _require(backend)
    o, y = make_case(5, 7, 129)
    cfg = tks.make_config(0.4, teacher="mean")
    want = truth(o, y, cfg)
    assert_close_to_truth(run(backend, o.transpose(0, 1).contiguous().transpose(0, 1), y, cfg, device="cuda"), want)
    assert_close_to_truth(run(backend, o.transpose(1, 2).contiguous().transpose(1, 2), y, cfg, device="cuda"), want)
    a = run(backend, o, y, cfg, device="cuda")
    b = run(backend, o, y, cfg, device="cuda")
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    with torch.no_grad():
        loss = functional.tks_loss(o.cuda().requires_grad_(), y.cuda(), lam=0.4, teacher="mean", backend=backend)
    assert loss.grad_fn is None and float(loss) == pytest.approx(float(want[0]), rel=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_backward_scales_in_place(backend):
    _require(backend)
    o, y = make_case(4, 8, 50)
    cfg = tks.make_config(0.5)
    want = truth(o, y, cfg)[3]
    x = o.cuda().requires_grad_()
    (tks.tks_loss(x, y.cuda(), cfg, backend=backend)[0] * -2.5).backward()
    assert rel_err(x.grad.cpu(), -2.5 * want) <= 1e-5
    # Forward+backward holds one logits-sized buffer: the kept gradient, scaled in place
    # and handed out as x.grad.
    x.grad = None
    target = y.cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    tks.tks_loss(x, target, cfg, backend=backend)[0].backward()
    torch.cuda.synchronize()
    nbytes = x.numel() * x.element_size()
    assert torch.cuda.max_memory_allocated() - before <= nbytes + 65536
    assert torch.cuda.memory_allocated() - before <= nbytes + 65536


@pytest.mark.gpu
def test_gpu_auto_picks_triton_and_compile_fullgraph():
    _require("triton")
    o, y = make_case(4, 8, 10)
    x = o.cuda()
    assert tks.pick_backend("auto", x) == "triton"
    crit = TKSLoss(alpha=0.7, schedule="static")
    for backend in GPU_BACKENDS:
        if not available_backends()[backend][0]:
            continue

        def step(z):
            return functional.tks_loss(z, y.cuda(), lam=0.3, backend=backend) * 2 + crit(z, y.cuda())

        x1 = x.clone().requires_grad_()
        x2 = x.clone().requires_grad_()
        l1 = torch.compile(step, fullgraph=True)(x1)
        l2 = step(x2)
        l1.backward()
        l2.backward()
        torch.testing.assert_close(l1, l2)
        torch.testing.assert_close(x1.grad, x2.grad)
