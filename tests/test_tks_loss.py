"""The TKS loss: the reference against the definition written out literally, every
fused backend against the reference (loss, ce, soft and dL/dlogits), gradchecks,
dtypes, strides, torch.compile, the loss modules, and the errors for bad input.

Fused fp32 results are compared with the reference evaluated in fp64 on the same
values (the definition without its own rounding): relative error <= 1e-5, the
gradient's measured against its largest entry.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

try:  # test_tks_triton imports the helpers below on GPU machines that may lack hypothesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

import tks_kernels
from tks_kernels import MeanCELoss, TETLoss, TKSLoss, functional
from tks_kernels._backends import available_backends
from tks_kernels.loss import TKSLossParts
from tks_kernels.ops import tks
from tks_kernels.ops.tks import reference

HAS_CPU_EXT = available_backends()["cpu"][0]
needs_cpu = pytest.mark.skipif(not HAS_CPU_EXT, reason="the native CPU library did not load")

OPTIONS = [
    dict(teacher="sum", detach_teacher=False, label_smoothing=0.0),
    dict(teacher="mean", detach_teacher=False, label_smoothing=0.0),
    dict(teacher="sum", detach_teacher=True, label_smoothing=0.0),
    dict(teacher="mean", detach_teacher=True, label_smoothing=0.1),
    dict(teacher="sum", detach_teacher=False, label_smoothing=0.2),
]


# ----------------------------------------------------------------------------- helpers

def make_case(T, B, C, *, soft_target=False, scale=2.0, dtype=torch.float32, seed=0):
    """Random logits and targets where sample 0 is answered correctly at every step,
    sample 1 at none, sample 2 at exactly one (when B and C allow), the rest at random.
    Correct/wrong steps get a clear margin so that rounding cannot flip an argmax."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(T, B, C, generator=g, dtype=torch.float64) * scale
    label = torch.randint(0, C, (B,), generator=g)
    if C >= 2:
        other = (label + 1) % C
        for b, pattern in ((0, [True] * T), (1, [False] * T), (2, [t == T // 2 for t in range(T)])):
            if b >= B:
                break
            for t, correct in enumerate(pattern):
                winner = label[b] if correct else other[b]
                o[t, b, winner] = o[t, b].max() + 1.0
    if soft_target:
        # A mixup-like target whose argmax is the label.
        target = torch.rand(B, C, generator=g, dtype=torch.float64) * 0.3
        target[torch.arange(B), label] += 1.0
        target = (target / target.sum(-1, keepdim=True)).to(torch.float32)
    else:
        target = label
    return o.to(dtype), target


def run(backend, logits, target, cfg, grad=True, device="cpu"):
    """(loss, ce, soft, dL/dlogits) of one backend on `device`, returned on the CPU; the
    gradient is None without grad."""
    x = logits.detach().to(device).requires_grad_(grad)
    loss, parts = tks.tks_loss(x, target.to(device), cfg, backend=backend)
    assert parts.shape == (2,) and not parts.requires_grad
    g = None
    if grad:
        loss.backward()
        g = x.grad.cpu()
    ce, soft = parts.cpu().unbind(0)
    return loss.detach().cpu(), ce, soft, g


def truth(logits, target, cfg):
    """The reference in fp64 on the same values."""
    t = target.double() if target.is_floating_point() else target
    return run("torch", logits.double(), t, cfg)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_close_to_truth(got, want, tol=1e-5, grad_tol=None):
    grad_tol = tol if grad_tol is None else grad_tol
    for name, a, b in zip(("loss", "ce", "soft"), got[:3], want[:3]):
        err = abs(float(a) - float(b)) / max(abs(float(b)), 1e-6)
        assert err <= tol, f"{name}: {float(a)} vs {float(b)} (relative error {err:.2e})"
    if want[3] is not None:
        assert got[3].shape == want[3].shape
        err = rel_err(got[3], want[3])
        assert err <= grad_tol, f"gradient: relative error {err:.2e} > {grad_tol}"


def literal_tks(o, y, lam, tau, teacher="sum", detach_teacher=False, eps=0.0):
    """DESIGN.md's definition, one sample and one step at a time (fp64)."""
    T, B, C = o.shape
    soft_target = y.is_floating_point()
    ce_sum = o.new_zeros(())
    soft_sum = o.new_zeros(())
    for b in range(B):
        ens = sum(o[t, b] for t in range(T)) / T
        yb = y[b].to(o.dtype) if soft_target else F.one_hot(y[b], C).to(o.dtype)
        yb = (1 - eps) * yb + eps / C
        ce_sum = ce_sum - (yb * torch.log_softmax(ens, -1)).sum()
        label = int(torch.argmax(y[b])) if soft_target else int(y[b])
        correct = [t for t in range(T) if int(torch.argmax(o[t, b])) == label]
        if correct:
            z = sum(o[t, b] for t in correct)
            if teacher == "mean":
                z = z / len(correct)
        else:
            z = o.new_zeros(C)
        if detach_teacher:
            z = z.detach()
        q = torch.softmax(z / tau, -1)
        for t in range(T):
            soft_sum = soft_sum - (q * torch.log_softmax(o[t, b], -1)).sum()
    ce = ce_sum / B
    soft = tau * tau * soft_sum / (T * B)
    return (1 - lam) * ce + lam * soft, ce, soft


# ------------------------------------------------------------------ the reference itself

@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("soft_target", [False, True])
def test_reference_matches_literal_definition(opts, soft_target):
    o, y = make_case(4, 5, 6, soft_target=soft_target, dtype=torch.float64)
    if soft_target:
        y = y.double()
    cfg = tks.make_config(0.6, 2.5, **opts)
    x1 = o.clone().requires_grad_()
    x2 = o.clone().requires_grad_()
    got = reference.tks_loss_parts(x1, y, cfg)
    want = literal_tks(x2, y, 0.6, 2.5, opts["teacher"], opts["detach_teacher"], opts["label_smoothing"])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    got[0].backward()
    want[0].backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)


def test_reference_teacher_cases():
    """No correct step: uniform teacher; one: that step's softmax at tau; every step
    of a constant sequence: the sum is T times the logits."""
    tau = 2.0
    o = torch.tensor([[[3.0, 0.0, 1.0]], [[0.0, 3.0, 1.0]]], dtype=torch.float64)  # T=2, B=1, C=3
    cfg = tks.make_config(1.0, tau)

    def soft_of(target):
        return float(reference.tks_loss_parts(o, torch.tensor([target]), cfg)[2])

    def soft_with_teacher(q):
        return float(tau * tau * -(q * torch.log_softmax(o[:, 0], -1)).sum(-1).mean())

    assert soft_of(2) == pytest.approx(soft_with_teacher(torch.full((3,), 1 / 3, dtype=torch.float64)))
    assert soft_of(0) == pytest.approx(soft_with_teacher(torch.softmax(o[0, 0] / tau, -1)))
    same = torch.tensor([[[1.0, 0.5, 0.0]]] * 3, dtype=torch.float64)
    got = float(reference.tks_loss_parts(same, torch.tensor([0]), cfg)[2])
    q = torch.softmax(3 * same[0, 0] / tau, -1)
    assert got == pytest.approx(float(tau * tau * -(q * torch.log_softmax(same[0, 0], -1)).sum()))


# A detached teacher is not the derivative of the loss (by design), so gradcheck, which
# differentiates numerically, only applies to the options without it.
GRADCHECK_OPTIONS = [o for o in OPTIONS if not o["detach_teacher"]]


@pytest.mark.parametrize("opts", GRADCHECK_OPTIONS)
def test_reference_gradcheck(opts):
    o, y = make_case(3, 4, 5, dtype=torch.float64)
    cfg = tks.make_config(0.7, 3.0, **opts)
    x = o.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: reference.tks_loss(a, y, cfg)[0], (x,))


def test_reference_grad_matches_closed_form():
    """The gradient the fused kernels implement (csrc/tks_math.h), from autograd."""
    T, B, C = 4, 6, 7
    o, y = make_case(T, B, C, dtype=torch.float64)
    lam, tau = 0.6, 2.5
    cfg = tks.make_config(lam, tau)
    x = o.clone().requires_grad_()
    reference.tks_loss(x, y, cfg)[0].backward()
    Y = F.one_hot(y, C).double()
    m = (o.argmax(-1) == y).double()
    z = (m.unsqueeze(-1) * o).sum(0)
    q = torch.softmax(z / tau, -1)
    O = o.sum(0)
    qO = (q * O).sum(-1, keepdim=True)
    G = (1 - lam) / (T * B) * (torch.softmax(o.mean(0), -1) - Y) + lam * tau**2 / (T * B) * (o.softmax(-1) - q)
    G = G - m.unsqueeze(-1) * lam * tau / (T * B) * q * (O - qO)
    torch.testing.assert_close(x.grad, G, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ the fused CPU kernel

@needs_cpu
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("soft_target", [False, True])
# C <= 40 runs 16 samples side by side (csrc/cpu/tks_cpu.cpp, solve_lanes); larger C
# one sample at a time. Both, with batches that are not a multiple of 16.
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 2), (4, 8, 10), (3, 37, 40), (64, 3, 7), (2, 5, 41),
                                   (8, 5, 1000), (3, 4, 2000)])
def test_cpu_matches_reference(opts, soft_target, shape):
    o, y = make_case(*shape, soft_target=soft_target)
    cfg = tks.make_config(0.6, 2.5, **opts)
    assert_close_to_truth(run("cpu", o, y, cfg), truth(o, y, cfg))


if given is not None:

    @needs_cpu
    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(
        T=st.integers(1, 12),
        B=st.integers(1, 9),
        C=st.integers(1, 2000),
        lam=st.floats(0.0, 1.0),
        tau=st.floats(0.5, 8.0),
        opt=st.integers(0, len(OPTIONS) - 1),
        soft_target=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def test_cpu_matches_reference_random(T, B, C, lam, tau, opt, soft_target, seed):
        o, y = make_case(T, B, C, soft_target=soft_target, seed=seed)
        cfg = tks.make_config(lam, tau, **OPTIONS[opt])
        assert_close_to_truth(run("cpu", o, y, cfg), truth(o, y, cfg))


@needs_cpu
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 2, 41)])
def test_cpu_gradcheck_fp64(shape):
    o, y = make_case(*shape, dtype=torch.float64)
    for opts in GRADCHECK_OPTIONS:
        cfg = tks.make_config(0.7, 3.0, **opts)
        x = o.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a: tks.tks_loss(a, y, cfg, backend="cpu")[0], (x,))


@needs_cpu
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("shape", [(4, 20, 10), (4, 6, 300)])
def test_cpu_half_precision(dtype, tol, shape):
    """fp16/bf16 logits: fp32 arithmetic, so the loss is as exact as fp32; the gradient
    is rounded once, to the logits' dtype."""
    o, y = make_case(*shape, dtype=dtype)
    cfg = tks.make_config(0.5)
    got = run("cpu", o, y, cfg)
    want = truth(o, y, cfg)
    assert got[0].dtype == torch.float32 and got[3].dtype == dtype
    assert_close_to_truth(got, want, tol=1e-5, grad_tol=tol)


@needs_cpu
def test_cpu_strided_logits():
    """Any step/batch strides are read in place; a non-unit class stride is copied."""
    o, y = make_case(5, 6, 33)
    cfg = tks.make_config(0.4)
    want = truth(o, y, cfg)
    batch_first = o.transpose(0, 1).contiguous().transpose(0, 1)  # [T, B, C] view of [B, T, C]
    assert not batch_first.is_contiguous()
    assert_close_to_truth(run("cpu", batch_first, y, cfg), want)
    class_strided = o.transpose(1, 2).contiguous().transpose(1, 2)
    assert class_strided.stride(2) != 1
    assert_close_to_truth(run("cpu", class_strided, y, cfg), want)


@needs_cpu
def test_cpu_no_grad_computes_loss_only():
    o, y = make_case(4, 8, 50)
    cfg = tks.make_config(0.5)
    loss_g, parts_g, grad_g = torch.ops.tks_kernels.tks_loss_forward(o, y, 0.5, 3.0, False, False, 0.0, True)
    loss_n, parts_n, grad_n = torch.ops.tks_kernels.tks_loss_forward(o, y, 0.5, 3.0, False, False, 0.0, False)
    assert grad_g.shape == o.shape and grad_n.numel() == 0
    assert torch.equal(loss_g, loss_n) and torch.equal(parts_g, parts_n)
    x = o.clone().requires_grad_()
    with torch.no_grad():
        loss = functional.tks_loss(x, y, lam=0.5, backend="cpu")
    assert loss.grad_fn is None
    assert float(loss) == pytest.approx(float(loss_n))


@needs_cpu
def test_cpu_saves_only_the_gradient():
    o, y = make_case(4, 8, 50)
    x = o.clone().requires_grad_()
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        functional.tks_loss(x, y, lam=0.5, backend="cpu")
    assert sum(saved.values()) == x.numel() * x.element_size()


def peak_extra_cpu_bytes(fn):
    """Peak of CPU tensor bytes allocated while fn() runs, above what existed before
    (PyTorch's memory profiler timeline)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    cur = peak = 0
    for _, action, (key, _), size in prof._memory_profile().timeline:
        if key.device.type != "cpu":
            continue
        if action.name == "CREATE":
            cur += size
        elif action.name == "DESTROY":
            cur -= size
        peak = max(peak, cur)
    return peak


@needs_cpu
def test_cpu_forward_backward_memory_is_one_gradient():
    """Forward+backward holds one logits-sized buffer (the kept gradient, handed out as
    x.grad), for the unit and a scaled incoming gradient alike."""
    o, y = make_case(4, 64, 500)
    x = o.clone().requires_grad_()
    nbytes = x.numel() * x.element_size()
    for scale in (1.0, 0.5):
        x.grad = None
        peak = peak_extra_cpu_bytes(lambda: (functional.tks_loss(x, y, lam=0.5, backend="cpu") * scale).backward())
        assert nbytes <= peak <= nbytes + 65536, (scale, peak, nbytes)
    x.grad = None
    assert peak_extra_cpu_bytes(lambda: functional.tks_loss(x, y, lam=0.5, backend="torch").backward()) > 2 * nbytes


@needs_cpu
def test_cpu_backward_scales_and_guards_a_second_backward():
    o, y = make_case(3, 4, 6)
    cfg = tks.make_config(0.5)
    want = truth(o, y, cfg)[3]
    x = o.clone().requires_grad_()
    (tks.tks_loss(x, y, cfg, backend="cpu")[0] * -2.5).backward()
    torch.testing.assert_close(x.grad.double(), -2.5 * want, rtol=1e-5, atol=1e-7)
    # retain_graph with an incoming gradient of 1: nothing is modified, both work.
    x.grad = None
    loss = tks.tks_loss(x, y, cfg, backend="cpu")[0]
    g1 = torch.autograd.grad(loss, x, retain_graph=True)[0].clone()
    g2 = torch.autograd.grad(loss, x)[0]
    torch.testing.assert_close(g1, g2)
    # Otherwise the kept gradient was scaled in place: a second backward must fail loudly.
    loss = tks.tks_loss(x, y, cfg, backend="cpu")[0] * 3.0
    torch.autograd.grad(loss, x, retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        torch.autograd.grad(loss, x)


@needs_cpu
@pytest.mark.parametrize("C", [10, 300])
def test_cpu_result_does_not_depend_on_threads(C):
    o, y = make_case(4, 2000, C) if C <= 40 else make_case(4, 64, C)
    cfg = tks.make_config(0.5)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run("cpu", o, y, cfg)
        torch.set_num_threads(max(2, n))
        many = run("cpu", o, y, cfg)
    finally:
        torch.set_num_threads(n)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


@needs_cpu
def test_auto_backend_picks_cpu_and_the_reference_beyond_64_steps():
    o, y = make_case(2, 3, 4)
    assert tks.pick_backend("auto", o) == "cpu"
    long = torch.randn(65, 2, 3)
    assert tks.pick_backend("auto", long) == "torch"
    with pytest.raises(ValueError, match="T <= 64.*T = 65"):
        functional.tks_loss(long, torch.tensor([0, 1]), lam=0.5, backend="cpu")
    cfg = tks.make_config(0.5)
    assert_close_to_truth(run("auto", long, torch.tensor([0, 1]), cfg), truth(long, torch.tensor([0, 1]), cfg))


@needs_cpu
def test_cpu_op_registration():
    """Schema, fake implementation, autograd registration and AOT tracing of the op."""
    o = torch.randn(3, 4, 5, requires_grad=True)
    op = torch.ops.tks_kernels.tks_loss_forward.default
    for target, flags in ((torch.randint(0, 5, (4,)), (False, False, 0.1)),
                          (torch.softmax(torch.randn(4, 5), -1), (True, True, 0.0))):
        for compute_grad in (True, False):
            x = o if compute_grad else o.detach()
            torch.library.opcheck(op, (x, target, 0.5, 3.0, *flags, compute_grad))


@needs_cpu
def test_compile_fullgraph():
    o, y = make_case(4, 8, 10)
    crit = TKSLoss(alpha=0.7, schedule="static")

    def step(x, target):
        return functional.tks_loss(x, target, lam=0.3, temperature=2.0) * 2 + crit(x, target)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x1 = o.clone().requires_grad_()
    x2 = o.clone().requires_grad_()
    l1 = compiled(x1, y)
    l2 = step(x2, y)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(x1.grad, x2.grad)


# ------------------------------------------------------------------------ the modules

def test_tks_loss_module_schedules_and_parts():
    o, y = make_case(4, 6, 10)
    crit = TKSLoss(alpha=0.7, temperature=3.0, schedule="linear", epochs=10, backend="torch")
    parts = crit(o, y, epoch=5, return_parts=True)
    assert isinstance(parts, TKSLossParts)
    assert parts.lam == pytest.approx(0.35)
    assert float(parts.loss) == pytest.approx(float(0.65 * parts.ce + 0.35 * parts.soft), rel=1e-6)
    assert float(crit(o, y, epoch=0)) == pytest.approx(float(parts.ce), rel=1e-6)
    assert crit.lam(25) == pytest.approx(0.7)  # clamped past the last epoch
    constant = TKSLoss(alpha=0.4, schedule="constant", backend="torch")
    want = functional.tks_loss(o, y, lam=0.4, backend="torch")
    assert float(constant(o, y)) == pytest.approx(float(want))
    assert float(constant(o, y, epoch=3)) == pytest.approx(float(want))


def test_tet_loss_matches_the_authors_formula():
    o, y = make_case(4, 6, 10)
    crit = TETLoss()
    assert (crit.lamb, crit.means) == (1e-3, 1.0)
    per_step = sum(F.cross_entropy(o[t], y) for t in range(4)) / 4
    mse = F.mse_loss(o, torch.full_like(o, 1.0))
    torch.testing.assert_close(crit(o, y), (1 - 1e-3) * per_step + 1e-3 * mse)
    soft = torch.softmax(torch.randn(6, 10), -1)
    per_step = sum(F.cross_entropy(o[t], soft) for t in range(4)) / 4
    torch.testing.assert_close(TETLoss(lamb=0.0)(o, soft), per_step)


def test_mean_ce_loss():
    o, y = make_case(4, 6, 10)
    torch.testing.assert_close(MeanCELoss(label_smoothing=0.1)(o, y), F.cross_entropy(o.mean(0), y, label_smoothing=0.1))


def test_losses_share_one_call_signature():
    o, y = make_case(3, 4, 5)
    for crit in (TKSLoss(epochs=5, backend="torch"), TETLoss(), MeanCELoss()):
        x = o.clone().requires_grad_()
        loss = crit(x, y, epoch=2)
        loss.backward()
        assert loss.dim() == 0 and x.grad.shape == x.shape
    assert {"TKSLoss", "TETLoss", "MeanCELoss"} <= set(tks_kernels.__all__)


# ------------------------------------------------------------------------- bad input

BACKENDS_TO_CHECK = ["torch"] + (["cpu"] if HAS_CPU_EXT else [])


@pytest.mark.parametrize("backend", BACKENDS_TO_CHECK)
def test_bad_target(backend):
    o = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"target\[1\] = 4"):
        functional.tks_loss(o, torch.tensor([0, 4, 1]), lam=0.5, backend=backend)
    with pytest.raises(ValueError, match=r"target\[2\] = -1"):
        functional.tks_loss(o, torch.tensor([0, 1, -1]), lam=0.5, backend=backend)
    with pytest.raises(ValueError, match=r"\[B\] = \[3\].*\(3, 1\)"):
        functional.tks_loss(o, torch.zeros(3, 1, dtype=torch.long), lam=0.5, backend=backend)
    with pytest.raises(TypeError, match="int32"):
        functional.tks_loss(o, torch.zeros(3, dtype=torch.int32), lam=0.5, backend=backend)
    with pytest.raises(ValueError, match=r"\[B, C\] = \[3, 4\].*\(3, 5\)"):
        functional.tks_loss(o, torch.rand(3, 5), lam=0.5, backend=backend)
    with pytest.raises(TypeError, match="target must be a torch.Tensor.*list"):
        functional.tks_loss(o, [0, 1, 2], lam=0.5, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS_TO_CHECK)
def test_bad_logits_and_scalars(backend):
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"logits must be \[T, B, C\].*\(3, 4\)"):
        functional.tks_loss(torch.randn(3, 4), y, lam=0.5, backend=backend)
    with pytest.raises(ValueError, match=r"logits must be \[T, B, C\].*\(2, 0, 4\)"):
        functional.tks_loss(torch.randn(2, 0, 4), torch.zeros(0, dtype=torch.long), lam=0.5, backend=backend)
    with pytest.raises(TypeError, match="logits.*torch.int64"):
        functional.tks_loss(torch.zeros(2, 3, 4, dtype=torch.long), y, lam=0.5, backend=backend)
    o = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        functional.tks_loss(o, y, lam=0.5, temperature=0.0, backend=backend)
    with pytest.raises(ValueError, match="temperature must be > 0, got -1.0"):
        functional.tks_loss(o, y, lam=0.5, temperature=-1, backend=backend)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\].*got 1.5"):
        functional.tks_loss(o, y, lam=1.5, backend=backend)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\].*got -0.1"):
        functional.tks_loss(o, y, lam=-0.1, backend=backend)
    with pytest.raises(ValueError, match="lam must be finite, got nan"):
        functional.tks_loss(o, y, lam=math.nan, backend=backend)
    with pytest.raises(ValueError, match="teacher must be 'sum' or 'mean', got 'max'"):
        functional.tks_loss(o, y, lam=0.5, teacher="max", backend=backend)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 2.0"):
        functional.tks_loss(o, y, lam=0.5, label_smoothing=2.0, backend=backend)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of.*'gpu'"):
        functional.tks_loss(o, y, lam=0.5, backend="gpu")


def test_bad_module_arguments():
    with pytest.raises(ValueError, match="schedule='linear' needs epochs.*epochs=None"):
        TKSLoss()
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        TKSLoss(epochs=0)
    with pytest.raises(ValueError, match="schedule must be 'linear', 'static' or 'constant', got 'cosine'"):
        TKSLoss(schedule="cosine", epochs=3)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\].*got 1.2"):
        TKSLoss(alpha=1.2, schedule="static")
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        TKSLoss(temperature=0.0, schedule="static")
    o, y = make_case(2, 3, 4)
    with pytest.raises(ValueError, match="needs the epoch"):
        TKSLoss(epochs=3)(o, y)
    with pytest.raises(ValueError, match="epoch must be a number >= 0, got -1"):
        TKSLoss(epochs=3)(o, y, epoch=-1)
    with pytest.raises(ValueError, match=r"lamb must be a number in \[0, 1\], got 2"):
        TETLoss(lamb=2)
    with pytest.raises(ValueError, match=r"TETLoss: logits must be \[T, B, C\].*\(3, 4\)"):
        TETLoss()(torch.randn(3, 4), torch.tensor([0, 1, 2]))
