"""The Triton LIF kernels against the reference (tks_kernels/ops/lif/reference.py).

Without a GPU the kernels run on CPU tensors under the Triton interpreter (set by
conftest.py), which is slow: tensors here are small, the kernels' blocks large. The same
tests run on CUDA tensors where there is a GPU (``gpu`` marker). Spikes exact in every
dtype; fp32 values and gradients 1e-5 relative; bf16/fp16 values within one storage step
(the interpreter truncates bf16 on stores), gradients also within the rounding of the
saved d (see ``assert_values``). Training takes the recomputing backward for T <=
``RECOMPUTE_MAX_STEPS`` and the saved-distance one above; both are tested (the
"recompute" section compares them directly).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from tks_kernels import functional
from tks_kernels._backends import triton_interpreted
from tks_kernels.ops.lif import SURROGATES, make_config, reference
from tks_kernels.ops.lif import triton as lif_triton

DEVICES = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(not triton_interpreted(), reason="CPU tensors need TRITON_INTERPRET=1"),
    ),
    pytest.param("cuda", marks=pytest.mark.gpu),
]
RESETS = [0.0, -0.25, None]  # hard at 0, hard elsewhere, soft


def _scale(ref: torch.Tensor) -> float:
    finite = ref.detach()[ref.detach().isfinite()]
    return max(finite.abs().max().item(), 1.0) if finite.numel() else 1.0


def assert_values(out: torch.Tensor, ref: torch.Tensor, what: str = "", grad: bool = False) -> None:
    """fp32/fp64: 1e-5 relative to the tensor's scale; fp16/bf16: one storage step
    (plus fp32-level differences of operation order). Gradients in fp16/bf16 also carry
    the rounding of the saved d = h - v_threshold (stored in x's dtype by design): two
    storage epsilons of the tensor's scale more (test_backward_narrow_is_fp32_math checks
    that nothing else differs)."""
    assert out.dtype == ref.dtype and out.shape == ref.shape, what
    o, r = out.detach().double(), ref.detach().double()
    scale = _scale(r)
    tol = torch.full_like(r, 1e-5 * scale)
    if out.dtype in (torch.float16, torch.bfloat16):
        fi = torch.finfo(out.dtype)
        binade = torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(fi.tiny))))
        tol = tol + binade * fi.eps + (2 * fi.eps * scale if grad else 0.0)
    bad = ~((o == r) | ((o - r).abs() <= tol) | (o.isnan() & r.isnan()))
    assert not bad.any(), f"{what}: {int(bad.sum())} of {r.numel()} differ; max |diff| {(o - r).abs().max().item():.3g}"


def assert_spikes(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype == ref.dtype and out.shape == ref.shape
    n = int((out != ref).sum())
    assert n == 0, f"{n} of {ref.numel()} spikes differ"


def _inputs(shape, dtype, device, v_init=True, scale=1.5):
    x = (torch.randn(shape, device=device) * scale + 0.4).to(dtype)
    v0 = (torch.randn(shape[1:], device=device) * 0.5).to(dtype) if v_init else None
    return x, v0


def _run_both(x, v0, cfg, return_v_seq, grad_outputs=None):
    """(outputs, grads) of the Triton backend and of the reference."""
    results = []
    for mod in (lif_triton, reference):
        # detach() keeps the strides (clone() would make an expanded x contiguous)
        xi = x.detach().requires_grad_(grad_outputs is not None)
        vi = v0.detach().requires_grad_(grad_outputs is not None) if v0 is not None else None
        out = mod.lif_multistep(xi, vi, cfg, return_v_seq)
        grads = None
        if grad_outputs is not None:
            pairs = [(o, g) for o, g in zip(out, grad_outputs) if g is not None]
            inputs = [xi] + ([vi] if vi is not None else [])
            grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs])
        results.append((out, grads))
    return results


def _check(x, v0, cfg, return_v_seq=False, grad_outputs=None):
    (out, grads), (rout, rgrads) = _run_both(x, v0, cfg, return_v_seq, grad_outputs)
    assert len(out) == len(rout)
    assert_spikes(out[0], rout[0])
    assert_values(out[1], rout[1], "v_last")
    if return_v_seq:
        assert_values(out[2], rout[2], "v_seq")
    if grads is not None:
        for name, g, rg in zip(("grad x", "grad v_init"), grads, rgrads):
            assert_values(g, rg, name, grad=True)


def _grad_outputs(x, return_v_seq, which=("spikes", "v_last", "v_seq")):
    g = lambda shape: torch.randn(shape, device=x.device).to(x.dtype)  # noqa: E731
    out = [g(x.shape) if "spikes" in which else None, g(x.shape[1:]) if "v_last" in which else None]
    if return_v_seq:
        out.append(g(x.shape) if "v_seq" in which else None)
    return out


# ------------------------------------------------------------------------- forward


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("decay_input,v_reset,has_v_init,return_v_seq",
                         list(itertools.product([True, False], RESETS, [True, False], [True, False])))
def test_forward_matches_reference(device, dtype, decay_input, v_reset, has_v_init, return_v_seq):
    cfg = make_config(tau=2.0, decay_input=decay_input, v_threshold=0.7, v_reset=v_reset)
    x, v0 = _inputs((9, 3, 37), dtype, device, v_init=has_v_init)
    with torch.no_grad():
        _check(x, v0, cfg, return_v_seq)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_forward_other_dtypes(device, dtype):
    cfg = make_config(tau=3.0, v_threshold=0.6, v_reset=0.1)
    x, v0 = _inputs((7, 5, 23), dtype, device)
    _check(x, v0, cfg, True, _grad_outputs(x, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau", [1.0, 1.7, 2.0, 3.3, 100.0, 4.0, 1024.0])
def test_forward_scalars_bit_exact(device, tau):
    """Spikes and fp32 values bit for bit with thresholds and taus that are not exact in
    binary (true division, no FMA, scalars rounded like PyTorch's); a power-of-two tau
    (1, 2, 4, 1024) multiplies by its exact reciprocal instead."""
    cfg = make_config(tau=tau, v_threshold=0.3, v_reset=-0.1)
    x, v0 = _inputs((12, 257), torch.float32, device, scale=0.6)
    with torch.no_grad():
        out = lif_triton.lif_multistep(x, v0, cfg, True)
        ref = reference.lif_multistep(x, v0, cfg, True)
    for o, r in zip(out, ref):
        assert torch.equal(o, r)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T", [1, 2, 7, 8, 9, 64])
def test_time_lengths(device, T):
    """Recompute in one chunk (T = 1, 2), in two (7: the last one partial, 8), and
    the saved distance beyond RECOMPUTE_MAX_STEPS (9, 64)."""
    cfg = make_config(tau=2.0, v_threshold=0.8, surrogate="atan")
    x, v0 = _inputs((T, 2, 19), torch.float32, device)
    _check(x, v0, cfg, True, _grad_outputs(x, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 1), (3, 5), (4, 16), (2, 3, 7, 11), (3, 5000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_odd_sizes(device, shape, dtype):
    """Sizes below, at and above a block (5000 > the interpreter's 4096), N % 16 == 0 or
    not (the aligned and unaligned kernel variants)."""
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=None, surrogate="soft_sign")
    x, v0 = _inputs(shape, dtype, device)
    _check(x, v0, cfg, True, _grad_outputs(x, True))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_and_shapes(device):
    cfg = make_config()
    x = torch.randn(4, 0, 3, device=device)
    s, v = lif_triton.lif_multistep(x, None, cfg)
    assert s.shape == (4, 0, 3) and v.shape == (0, 3)
    x = torch.randn(5, device=device)  # [T] only: one neuron
    _check(x, None, cfg, True, _grad_outputs(x, True))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, under the interpreter
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_nan_and_inf_as_reference(device, dtype, v_reset):
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=v_reset)
    x, v0 = _inputs((4, 3, 5), dtype, device)
    x[1, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    v0[2, 1] = float("nan")
    _check(x, v0, cfg, True, _grad_outputs(x, True))


# ------------------------------------------------------------------------- backward


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("decay_input,v_reset,detach_reset",
                         list(itertools.product([True, False], RESETS, [False, True])))
def test_backward_matches_reference(device, surrogate, decay_input, v_reset, detach_reset):
    cfg = make_config(tau=2.5, decay_input=decay_input, v_threshold=0.6, v_reset=v_reset,
                      surrogate=surrogate, detach_reset=detach_reset)
    x, v0 = _inputs((6, 3, 21), torch.float32, device)
    _check(x, v0, cfg, True, _grad_outputs(x, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("surrogate", ["sigmoid", "piecewise_quadratic", "erf"])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_backward_bf16(device, surrogate, v_reset):
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=v_reset, surrogate=surrogate, alpha=2.0)
    x, v0 = _inputs((8, 4, 29), torch.bfloat16, device)
    _check(x, v0, cfg, True, _grad_outputs(x, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("v_reset,detach_reset", [(0.0, False), (None, False), (-0.2, True)])
def test_backward_narrow_is_fp32_math(device, dtype, v_reset, detach_reset):
    """In fp16/bf16 the backward kernel does the fp32 backward's arithmetic on the stored
    values: fed the same saved d and gradients in fp32, it agrees up to the final store."""
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=v_reset, surrogate="sigmoid", detach_reset=detach_reset)
    x, v0 = _inputs((7, 3, 19), dtype, device)
    fwd = (x, v0, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset)
    bwd = (cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
           cfg.detach_reset)
    d = lif_triton.lif_forward_triton(*fwd, cfg.surrogate_id, cfg.alpha, cfg.detach_reset, True, False)[3]
    gs, gl, gq = _grad_outputs(x, True)
    narrow = lif_triton.lif_backward_triton(gs, gl, gq, d, *bwd)
    wide = lif_triton.lif_backward_triton(gs.float(), gl.float(), gq.float(), d.float(), *bwd)
    for g, w in zip(narrow, wide):
        assert_values(g, w.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", [("spikes",), ("v_last",), ("v_seq",), ("spikes", "v_seq")])
@pytest.mark.parametrize("has_v_init", [True, False])
def test_backward_partial_grads(device, which, has_v_init):
    """Gradients reaching only some outputs (the others arrive as None, read as zero)."""
    cfg = make_config(tau=2.0, v_threshold=0.5, surrogate="piecewise_exp")
    x, v0 = _inputs((5, 31), torch.float32, device, v_init=has_v_init)
    _check(x, v0, cfg, True, _grad_outputs(x, True, which))


@pytest.mark.parametrize("device", DEVICES)
def test_loss_through_autograd(device):
    """A loss of all outputs through .backward(), gradients accumulated into .grad."""
    cfg = make_config(tau=2.0, v_threshold=0.5, surrogate="super_spike", detach_reset=True)
    x0, v00 = _inputs((7, 2, 13), torch.float32, device)
    grads = []
    for mod in (lif_triton, reference):
        x, v0 = x0.clone().requires_grad_(), v00.clone().requires_grad_()
        s, v, vs = mod.lif_multistep(x, v0, cfg, True)
        (s.sum(0) * v).sum().backward(retain_graph=True)
        (vs.square().mean() + s.mean()).backward()
        grads.append((x.grad, v0.grad))
    for g, rg in zip(*grads):
        assert_values(g, rg, grad=True)


# ------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    cfg = make_config(tau=2.0, v_threshold=0.5, surrogate="sigmoid")
    base = torch.randn(11, 6, 8, device=device) + 0.3
    cases = {
        "time not outermost": base.permute(2, 1, 0)[:7],  # [8, 6, 11] strided
        "sliced": base[::2, 1:5, ::3],
        "transposed step": base.transpose(1, 2),  # time-major, steps dense: no copy
        "expanded": torch.randn(5, 1, 9, device=device).expand(5, 4, 9),
    }
    for name, x in cases.items():
        v0 = torch.randn(x.shape[1:], device=device).transpose(0, -1).contiguous().transpose(0, -1)
        try:
            _check(x, v0, cfg, True, _grad_outputs(x, True))
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from e


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_keeps_layout(device, dtype):
    """[T, B, C, H, W] with channels_last steps is read in place: outputs keep its strides."""
    cfg = make_config(tau=2.0, v_threshold=0.5)
    x = torch.randn(4, 2, 3, 5, 5, device=device).to(dtype)
    x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    assert not x.is_contiguous()
    assert lif_triton.time_major_dense(x) is x
    s, v, vs = lif_triton.lif_multistep(x, None, cfg, True)
    assert s.stride() == x.stride() and vs.stride() == x.stride()
    _check(x, None, cfg, True, _grad_outputs(x, True))


# ------------------------------------------------------------------------- saved state


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_saved_sign_matches_spikes(device, dtype):
    """Backward's spikes (d_saved >= 0) equal the forward's, also where d is a negative
    number too small for the storage type (it must not round to zero)."""
    # v_threshold = 0, v_init = 0: h_0 = x_0 / tau. With x_0 = -(smallest normal) and tau
    # large, d = h_0 is a negative fp32 number that rounds (or truncates) to -0 in fp16/bf16.
    # (Not built from subnormal inputs: the interpreter flushes bf16 subnormals on loads.)
    sn = torch.finfo(dtype).smallest_normal
    tau = 2048.0 if dtype == torch.float16 else 256.0
    x = torch.tensor([[-sn, sn, 0.0, -2 * sn, -3 * sn, 1.0, -1.0]], dtype=dtype, device=device)
    x = torch.cat([x, torch.randn(3, x.shape[1], device=device).to(dtype) * 1e-3])
    cfg = make_config(tau=tau, v_threshold=0.0, v_reset=0.0)
    spikes, v_last, _, d = lif_triton.lif_forward_triton(
        x, None, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, True, False)
    assert d.shape == x.shape and d.dtype == dtype
    assert torch.equal((d >= 0).to(dtype), spikes)
    if dtype != torch.float32:
        assert spikes[0, 0] == 0 and d[0, 0] < 0  # the case keep_sign is for
    rs, _ = reference.lif_multistep(x, None, cfg)
    assert_spikes(spikes, rs)
    # random data too
    x, v0 = _inputs((6, 4, 33), dtype, device)
    spikes, _, _, d = lif_triton.lif_forward_triton(
        x, v0, 2.0, True, 0.5, 0.0, False, 0, 4.0, False, True, False)
    assert torch.equal((d >= 0).to(dtype), spikes)


def _forward_saved(x, v0, cfg):
    """The forward custom op with save_for_backward: (spikes, v_last, d_saved)."""
    s, v, _, d = lif_triton.lif_forward_triton(
        x, v0, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, True, False, cfg.fire_at_threshold)
    return s, v, d


def _fires(d: torch.Tensor, fire_at_threshold: bool) -> torch.Tensor:
    return ((d >= 0) if fire_at_threshold else (d > 0)).to(d.dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fire_at_threshold", [True, False])
@pytest.mark.parametrize("v_reset,surrogate", [(0.0, "sigmoid"), (None, "piecewise_quadratic"), (-0.25, "atan")])
def test_fire_at_threshold_exact_ties(device, dtype, fire_at_threshold, v_reset, surrogate):
    """h == v_threshold exactly (constant input 2 * v_threshold, tau = 2, v starting at
    v_reset = 0): spikes under fire_at_threshold=True, none under False, equal to the
    reference's in every step; gradients as the reference's."""
    vth = 0.625
    cfg = make_config(tau=2.0, v_threshold=vth, v_reset=v_reset, surrogate=surrogate,
                      fire_at_threshold=fire_at_threshold)
    x, _ = _inputs((6, 2, 24), dtype, device)
    rest = cfg.v_rest
    x[:, :, :12] = 2 * (vth - rest)  # h_0 = rest + x / 2 = vth exactly
    s, _, d = _forward_saved(x, None, cfg)
    assert (d[0, :, :12] == 0).all()  # the ties happen
    assert (s[0, :, :12] == float(fire_at_threshold)).all()
    assert torch.equal(_fires(d, fire_at_threshold), s)
    _check(x, None, cfg, True, _grad_outputs(x, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fire_at_threshold", [True, False])
def test_saved_distance_keeps_side_of_zero(device, dtype, fire_at_threshold):
    """A d too small for the storage type is stored on its side of zero as the rule
    needs it: negative d as -(smallest subnormal) when firing at the threshold, positive
    d as +(smallest subnormal) under the strict rule; d == 0 stays 0. Backward's spikes
    then equal the forward's: gradients as the reference's (hard reset reads them)."""
    sn = torch.finfo(dtype).smallest_normal
    tau = 2048.0 if dtype == torch.float16 else 256.0  # d = x_0 / tau: below fp16/bf16's range
    row = torch.tensor([[sn, -sn, 0.0, 2 * sn, -3 * sn, 1.0, -1.0]], dtype=dtype, device=device)
    x = torch.cat([row, torch.randn(3, row.shape[1], device=device).to(dtype) * 1e-3])
    cfg = make_config(tau=tau, v_threshold=0.0, v_reset=0.0, fire_at_threshold=fire_at_threshold)
    s, _, d = _forward_saved(x, None, cfg)
    assert torch.equal(_fires(d, fire_at_threshold), s)
    assert d[0, 2] == 0 and s[0, 2] == float(fire_at_threshold)
    if dtype != torch.float32:  # the cases the rule is for
        if fire_at_threshold:
            assert s[0, 1] == 0 and d[0, 1] < 0
        else:
            assert s[0, 0] == 1 and d[0, 0] > 0
    _check(x, None, cfg, True, _grad_outputs(x, True))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow, under the interpreter
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fire_at_threshold", [True, False])
@pytest.mark.parametrize("v_reset,surrogate", [(0.0, "sigmoid"), (-0.25, "super_spike"), (None, "atan"),
                                               (0.0, "piecewise_exp")])
def test_saved_distance_saturates(device, dtype, fire_at_threshold, v_reset, surrogate):
    """|h - v_threshold| from small up to past the storage type's largest finite value
    (finite inputs): the saved d saturates at +-max instead of overflowing (an inf d gave
    NaN gradients where the reference has finite ones); spikes and gradients as the
    reference's."""
    big = torch.finfo(dtype).max
    # An offset that takes |d| past the largest finite value of the storage type, yet
    # keeps it finite in fp32. bf16's max is within 0.4% of fp32's: there one step, and
    # gradients of at most 1/4, else the reference's own fp32 products overflow
    # (gv * (v_reset - h) = inf, times g' = 0: NaN) in an order the kernels avoid.
    shift, T, gscale = (64.0, 3, 1.0) if dtype == torch.float16 else (1e36, 1, 0.25)
    for vth in (-shift, shift):
        cfg = make_config(tau=2.0, decay_input=False, v_threshold=vth, v_reset=v_reset, surrogate=surrogate,
                          fire_at_threshold=fire_at_threshold)
        x, _ = _inputs((T, 40), dtype, device)
        x[:, :8] = torch.tensor([big, -big, big / 2, -big / 2, big * 0.999, -big * 0.999, 1.0, -1.0])
        s, _, d = _forward_saved(x[:1], None, cfg)
        dref = x[:1].float() - vth  # h_0 = x_0 (decay_input=False, v starting at 0)
        assert d.isfinite().all() and (d.abs() <= big).all()
        assert torch.equal(d.float().sign(), dref.sign())
        assert (dref.abs() > big).any()  # the case this is for
        _check(x, None, cfg, True, [g * gscale for g in _grad_outputs(x, True)])


def _saved_storages(fn):
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return seen


@pytest.mark.parametrize("device", DEVICES)
def test_inference_saves_nothing(device):
    cfg = make_config(tau=2.0, v_threshold=0.5)
    x, v0 = _inputs((5, 3, 16), torch.bfloat16, device)
    # no input needs a gradient, or no_grad: nothing is saved, no d tensor is written
    assert _saved_storages(lambda: lif_triton.lif_multistep(x, v0, cfg, True)) == {}
    xg = x.clone().requires_grad_()
    with torch.no_grad():
        assert _saved_storages(lambda: lif_triton.lif_multistep(xg, v0, cfg, True)) == {}
        out = lif_triton.lif_forward_triton(x, v0, 2.0, True, 0.5, 0.0, False, 0, 4.0, False, False, True)
        assert out[3].numel() == 0
    # training, recompute (T <= RECOMPUTE_MAX_STEPS): x and v_init themselves, nothing new
    v0g = v0.clone().requires_grad_()
    saved = _saved_storages(lambda: lif_triton.lif_multistep(xg, v0g, cfg, False))
    assert saved == {xg.untyped_storage().data_ptr(): xg.untyped_storage().nbytes(),
                     v0g.untyped_storage().data_ptr(): v0g.untyped_storage().nbytes()}
    # longer: exactly one saved tensor, d in x's dtype ([T, *], 2 bytes per element)
    xl = _inputs((lif_triton.RECOMPUTE_MAX_STEPS + 1, 16), torch.bfloat16, device)[0].requires_grad_()
    saved = _saved_storages(lambda: lif_triton.lif_multistep(xl, None, cfg, False))
    assert list(saved.values()) == [xl.numel() * xl.element_size()]


# ------------------------------------------------------------------------- dispatch, compile


@pytest.mark.parametrize("device", DEVICES)
def test_public_api(device):
    x, v0 = _inputs((4, 2, 9), torch.float32, device)
    out = functional.lif_multistep(x, v0, tau=2.0, v_threshold=0.5, v_reset=None, backend="triton",
                                   return_v_seq=True)
    ref = functional.lif_multistep(x, v0, tau=2.0, v_threshold=0.5, v_reset=None, backend="torch",
                                   return_v_seq=True)
    for o, r in zip(out, ref):
        assert torch.equal(o, r)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    """torch.compile(fullgraph=True) traces the ops (no graph break) forward and backward.
    On CPU (interpreter) with the aot_eager backend: Inductor's C++ build of the graph
    would take most of this file's time budget; on CUDA with Inductor."""
    backend = "inductor" if device == "cuda" else "aot_eager"
    cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=None, surrogate="atan", detach_reset=True)

    def f(x, v0):
        s, v, vs = functional.lif_multistep(x * 1.5, v0, tau=cfg.tau, v_threshold=cfg.v_threshold,
                                            v_reset=cfg.v_reset, surrogate=cfg.surrogate,
                                            detach_reset=cfg.detach_reset, backend="triton",
                                            return_v_seq=True)
        return (s * torch.arange(s.shape[-1], device=s.device)).sum() + v.square().sum() + vs.mean()

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    x0, v00 = _inputs((6, 3, 17), torch.float32, device)
    results = []
    for fn in (compiled, f):
        x, v0 = x0.clone().requires_grad_(), v00.clone().requires_grad_()
        loss = fn(x, v0)
        results.append((loss, *torch.autograd.grad(loss, (x, v0))))
    for o, r in zip(*results):
        assert_values(o, r, grad=True)
    with torch.no_grad():
        assert_values(compiled(x0, v00), f(x0, v00))


# ------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
def test_no_recompile_for_new_sizes():
    """T and N are run-time arguments: new lengths and layer sizes (same dtype, same
    N % 16 class, same recompute chunk) reuse the compiled kernels."""
    cfg = make_config()
    kernels = (lif_triton._forward_kernel, lif_triton._backward_kernel, lif_triton._backward_x_kernel)
    for T in (4, 64):  # the recomputing backward (chunk 4) and the saved-distance one
        x, _ = _inputs((T, 64), torch.float32, "cuda")
        lif_triton.lif_multistep(x.requires_grad_(), None, cfg)[0].sum().backward()
    caches = [k.device_caches[torch.cuda.current_device()][0] for k in kernels]
    if not all(isinstance(c, dict) for c in caches):
        pytest.skip("this Triton version keeps its kernel cache differently")
    before = [len(c) for c in caches]
    for T, N in [(5, 96), (33, 4096), (7, 160 * 1024), (40, 160 * 1024)]:
        x, _ = _inputs((T, N), torch.float32, "cuda")
        lif_triton.lif_multistep(x.requires_grad_(), None, cfg)[0].sum().backward()
    assert [len(c) for c in caches] == before


@pytest.mark.gpu
def test_int64_offsets():
    """T * N > 2^31 elements: offsets past 2^31 (checked on the last step's tail)."""
    T, N = 3, (1 << 30) + 48
    cfg = make_config(tau=2.0, v_threshold=0.5)
    x = torch.randn(T, N, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        s, v = lif_triton.lif_multistep(x, None, cfg)
        tail = slice(N - 100_000, N)
        rs, rv = reference.lif_multistep(x[:, tail], None, cfg)
    assert_spikes(s[:, tail], rs)
    assert_values(v[tail], rv)
    del x, s, v
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------- any surrogate (contracts.md, 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("surrogate,v_reset,fire_at_threshold", [
    ("sigmoid", 0.0, True), ("atan", None, False), ("erf", -0.25, True), ("super_spike", 0.0, False)])
def test_backward_sg_with_the_reference_derivative(device, dtype, surrogate, v_reset, fire_at_threshold):
    """forward_saved + backward_sg fed the reference's g'(saved_distance) give the
    reference's gradients (the built-in surrogate's, taken from outside)."""
    cfg = make_config(tau=2.5, v_threshold=0.6, v_reset=v_reset, surrogate=surrogate,
                      fire_at_threshold=fire_at_threshold)
    x, v0 = _inputs((6, 3, 21), dtype, device)
    gs, gl, gq = _grad_outputs(x, True)
    spikes, v_last, v_seq, saved = lif_triton.forward_saved(x, v0, cfg, True)
    d = lif_triton.saved_distance(saved, cfg)
    assert d.dtype == torch.float32 and d.shape == x.shape
    assert torch.equal(_fires(d, fire_at_threshold).to(dtype), spikes)
    sg = reference.surrogate_grad(d, cfg.surrogate, cfg.alpha)
    got = lif_triton.backward_sg(gs, gl, gq, saved, sg, cfg)
    xr, vr = x.detach().requires_grad_(), v0.detach().requires_grad_()
    ref_out = reference.lif_multistep(xr, vr, cfg, True)
    assert_spikes(spikes, ref_out[0])
    assert_values(v_last, ref_out[1], "v_last")
    assert_values(v_seq, ref_out[2], "v_seq")
    ref = torch.autograd.grad(ref_out, (xr, vr), (gs, gl, gq))
    for name, g, rg in zip(("grad x", "grad v_init"), got, ref):
        assert_values(g, rg, name, grad=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("plif", [False, True])
def test_backward_sg_is_what_backward_uses(device, plif):
    """With detach_reset and soft reset every gradient is linear in g': twice sg gives
    exactly twice the gradients (multiplying by 2 is exact), and sg = 0 passes only the
    membrane path (no grad_spikes contribution)."""
    from tks_kernels.ops import plif as plif_ops
    from tks_kernels.ops.plif import triton as plif_triton
    x, v0 = _inputs((5, 2, 19), torch.float32, device)
    gs = torch.randn_like(x)
    if plif:
        cfg = plif_ops.make_config(v_threshold=0.5, v_reset=None, detach_reset=True)
        k = torch.tensor(0.4, device=device)
        saved = plif_triton.forward_saved(x, v0, k, cfg, False)[3]

        def bwd(sg, g):
            return plif_triton.backward_sg(g, None, None, saved, v0, k, sg, cfg)
    else:
        cfg = make_config(tau=2.0, v_threshold=0.5, v_reset=None, detach_reset=True)
        saved = lif_triton.forward_saved(x, v0, cfg, False)[3]

        def bwd(sg, g):
            return lif_triton.backward_sg(g, None, None, saved, sg, cfg)
    sg = torch.rand(x.shape, device=device)
    one, two = bwd(sg, gs), bwd(2 * sg, gs)
    for a, b in zip(one, two):
        assert torch.equal(2 * a, b)
    zero = bwd(torch.zeros_like(sg), gs)
    for a in zero:
        assert not a.any()  # no gradient reaches h but through g'
    with pytest.raises(ValueError, match="sg must be"):
        bwd(sg.double(), gs)


# ------------------------------------------------------------------------- recompute (issue 15)


def _plif_cfg(**kw):
    from tks_kernels.ops import plif as plif_ops
    return plif_ops.make_config(**kw)


def _both_backwards(x, v0, opts, plif, grads):
    """(forward spikes, recomputing backward's gradients, saved-distance backward's) of
    the LIF (or, plif, PLIF with k = 0.4) ops called directly."""
    from tks_kernels.ops.plif import triton as plif_triton
    gs, gl, gq = grads
    if plif:
        cfg = _plif_cfg(**opts)
        k = torch.tensor(0.4, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
        head = (cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
                cfg.detach_reset)
        s, _, _, saved = plif_triton.plif_forward_triton(x, v0, k, *head, True, True, cfg.fire_at_threshold)
        sx = plif_triton.plif_forward_x_triton(x, v0, k, *head, True, cfg.fire_at_threshold)[0]
        new = plif_triton.plif_backward_x_triton(gs, gl, gq, x, v0, k, *head, cfg.fire_at_threshold)
        old = plif_triton.plif_backward_triton(gs, gl, gq, saved, v0, k, *head, cfg.fire_at_threshold)
    else:
        cfg = make_config(**opts)
        head = (cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
                cfg.detach_reset)
        s, _, _, saved = lif_triton.lif_forward_triton(x, v0, *head, True, True, cfg.fire_at_threshold)
        sx = lif_triton.lif_forward_x_triton(x, v0, *head, True, cfg.fire_at_threshold)[0]
        new = lif_triton.lif_backward_x_triton(gs, gl, gq, x, v0, *head, cfg.fire_at_threshold)
        old = lif_triton.lif_backward_triton(gs, gl, gq, saved, *head, cfg.fire_at_threshold)
    assert torch.equal(s, sx)
    return s, new, old


# option sets: (T, opts); T across one chunk (1, 3), two (5 partial, 8 full) and more (the
# kernel itself takes any T: 13 and 40 are past the rule's two chunks)
_RECOMPUTE_CASES = [
    (1, dict(v_reset=0.0, surrogate="sigmoid")),
    (3, dict(v_reset=0.0, surrogate="piecewise_exp", decay_input=False)),
    (5, dict(v_reset=None, surrogate="atan", detach_reset=True, fire_at_threshold=False)),
    (8, dict(v_reset=-0.25, surrogate="piecewise_quadratic", decay_input=False)),
    (13, dict(v_reset=0.0, surrogate="erf", fire_at_threshold=False)),
    (40, dict(v_reset=-0.25, surrogate="soft_sign")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("plif", [False, True])
@pytest.mark.parametrize("T,opts", _RECOMPUTE_CASES)
def test_recompute_equals_saved_path(device, dtype, plif, T, opts):
    """In fp32/fp64 the saved value is exact, so the recomputing backward gives the
    saved-distance backward's gradients bit for bit (PLIF's dL/dk: to the rounding of
    the fp64 sum over the programs, whose blocks may differ); both as the reference's."""
    opts = dict(opts, v_threshold=0.6, **({} if plif else dict(tau=2.5 if T % 2 else 2.0)))
    x, v0 = _inputs((T, 2, 37), dtype, device)
    grads = _grad_outputs(x, True)
    _, new, old = _both_backwards(x, v0, opts, plif, grads)
    for a, b in zip(new[:2], old[:2]):
        assert torch.equal(a, b)
    if plif:
        torch.testing.assert_close(new[2], old[2], rtol=1e-12 if dtype == torch.float64 else 1e-6, atol=0)
    else:
        cfg = make_config(**opts)
        xr, vr = x.detach().requires_grad_(), v0.detach().requires_grad_()
        ref = torch.autograd.grad(reference.lif_multistep(xr, vr, cfg, True), (xr, vr), grads)
        for name, g, rg in zip(("grad x", "grad v_init"), new, ref):
            assert_values(g, rg, name, grad=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fire_at_threshold", [True, False])
@pytest.mark.parametrize("plif", [False, True])
def test_recompute_spikes_exact(device, dtype, fire_at_threshold, plif):
    """Backward's recomputed spikes are the forward's in every dtype, exact ties
    (h == v_threshold) and near-ties included. They are read off grad_x: with hard reset,
    detach_reset and only grad_v_seq > 0, dL/dh_t = (dL/dv_t) * (1 - s_t) with
    dL/dv_t > 0, so grad_x_t == 0 exactly where step t spiked."""
    T = 7  # two chunks, the last partial
    assert lif_triton.recomputes(torch.empty(T, 1))
    vth = 0.625
    x, _ = _inputs((T, 3, 40), dtype, device, scale=0.3)
    x[:, :, :10] = 2 * vth  # tau = 2 (k = 1/2), v starting at 0: h_0 = vth exactly
    x[:, :, 10:20] = (x[:, :, 10:20].float() * 1e-3 + vth).to(dtype)  # h close to vth
    opts = dict(v_threshold=vth, v_reset=0.0, detach_reset=True, fire_at_threshold=fire_at_threshold)
    gq = (torch.rand(x.shape, device=device) + 0.5).to(dtype)
    xg = x.detach().requires_grad_()
    if plif:
        from tks_kernels.ops.plif import triton as plif_triton
        out = plif_triton.plif_multistep(xg, None, torch.tensor(0.5, device=device), _plif_cfg(**opts), True)
    else:
        cfg = make_config(tau=2.0, **opts)
        out = lif_triton.lif_multistep(xg, None, cfg, True)
        assert_spikes(out[0], reference.lif_multistep(x, None, cfg)[0])
    spikes = out[0]
    assert (spikes[0, :, :10] == float(fire_at_threshold)).all()  # the ties happen
    (gx,) = torch.autograd.grad(out[2], xg, gq)
    assert torch.equal((gx == 0).to(dtype), spikes)


@pytest.mark.parametrize("device", DEVICES)
def test_recompute_refuses_modified_input(device):
    """x changed in place after forward: autograd refuses the backward (the version
    counter of the saved input), instead of recomputing from the new values."""
    cfg = make_config(tau=2.0, v_threshold=0.5)
    x = torch.randn(4, 20, device=device, requires_grad=True)
    y = x * 1.0
    s, _ = lif_triton.lif_multistep(y, None, cfg)
    y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


def test_tau_power_of_two_rule():
    """Which taus multiply by 1/tau: powers of two whose reciprocal is exact in the
    compute type (the product is then the correctly rounded quotient)."""
    f32, f64 = torch.float32, torch.float64
    for tau in (1.0, 2.0, 4.0, 1024.0, 2.0 ** 126, 2.0 ** 127, 0.5, 2.0 ** -126, 2.0 ** -127):
        assert lif_triton.tau_is_power_of_two(tau, f32), tau
        assert lif_triton.tau_is_power_of_two(tau, f64), tau
    for tau in (3.0, 1.7, 100.0, 2.0 ** 0.5, 1.0 + 2.0 ** -23):
        assert not lif_triton.tau_is_power_of_two(tau, f32), tau
    assert not lif_triton.tau_is_power_of_two(2.0 ** -149, f32)  # 2^149 overflows fp32
    assert lif_triton.tau_is_power_of_two(2.0 ** -149, f64)
    assert lif_triton.tau_is_power_of_two(1.0 + 2.0 ** -30, f32)  # rounds to 1 in fp32
    assert not lif_triton.tau_is_power_of_two(1.0 + 2.0 ** -30, f64)
    assert not lif_triton.tau_is_power_of_two(float("inf"), f32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_surrogate_constant_from_the_host(dtype):
    """The kernels take g''s loop-invariant factor from the host (surrogate_const): bit
    for bit the compute-type arithmetic the kernel did itself, for many alphas."""
    gen = torch.Generator().manual_seed(0)
    alphas = torch.cat([torch.exp(torch.empty(3000, dtype=torch.float64).uniform_(-12, 12, generator=gen)),
                        torch.tensor([1.0, 2.0, 4.0, 0.5, 3.0, 1e-30, 1e30])])
    pi, sqrt_pi = (torch.tensor(v, dtype=dtype) for v in (torch.pi, torch.pi ** 0.5))
    for alpha in alphas.tolist():
        a = torch.tensor(alpha, dtype=dtype)
        for kind, want in ((1, pi / 2 * a), (3, a / 2), (6, a / sqrt_pi), (0, a), (2, a)):
            got = torch.tensor(lif_triton.surrogate_const(alpha, kind, dtype), dtype=dtype)
            assert torch.equal(got, want), (alpha, kind, got.item(), want.item())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, under the interpreter
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tau", [2.0, 1024.0, 2.0 ** 20, 3.0, 10.0])
def test_division_by_tau_bits_over_all_ranges(device, tau):
    """h_0 = x_0 / tau for x over every fp32 exponent (random bit patterns, subnormal
    inputs and quotients, the largest finite values, signed zeros): the kernel's v_last
    (no spike, hard reset at 0: v = h) has the bits of torch's IEEE division, for a
    power-of-two tau (the product by 1/tau) and for others (div_rn)."""
    gen = torch.Generator().manual_seed(int(tau))
    bits = torch.randint(-(2 ** 31), 2 ** 31 - 1, (1, 40000), generator=gen, dtype=torch.int64).to(torch.int32)
    x = bits.view(torch.float32)
    edges = torch.tensor([[0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 3.4028235e38, -3.4028235e38,
                           2.0 ** -126 * 3, 1.0, -1.0, 6.0e-39]], dtype=torch.float32)
    x = torch.cat([x[:, x[0].isfinite()], edges], dim=1).to(device)
    cfg = make_config(tau=tau, v_threshold=3.0e38, v_reset=0.0)
    with torch.no_grad():
        _, v_last = lif_triton.lif_multistep(x, None, cfg)
    want = x[0] / torch.tensor(tau, dtype=torch.float32)
    assert torch.equal(v_last.view(torch.int32), (0.0 + want).view(torch.int32))
