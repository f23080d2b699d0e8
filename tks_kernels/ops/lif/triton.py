"""Fused Triton kernels of the multi-step LIF neuron: forward (training and inference)
and backward, each one program per block of neurons running the whole time loop.

The math and its operation order mirror ``csrc/lif_math.h`` and ``reference.py``, so
spikes equal the reference bit for bit in fp32:

- true division by tau: Triton's ``/`` on fp32 is ``div.full.f32`` (about 2 ulp) on
  NVIDIA, so fp32 divisions use ``tl.math.div_rn`` (IEEE round to nearest);
- no FMA contraction: kernels are launched with ``enable_fp_fusion=False``, the
  counterpart of the CUDA kernels' ``-fmad=false``;
- the scalars reach the kernels as the bit patterns of their compute-type roundings
  (``scalar_bits``), rounded like PyTorch rounds a Python float.

State and arithmetic are fp32 (fp64 for fp64 storage); storage fp32/fp16/bf16/fp64.
Training forward saves one tensor for backward: d = h - v_threshold in x's dtype, in
fp16/bf16 with its side of zero kept and saturated at the type's largest finite value
(``store_distance`` of ops/_triton_launch.py), so backward's spikes (d >= 0, or d > 0
with ``fire_at_threshold=False``) equal the forward's; inference forward saves nothing.

The kernels are wrapped as ``torch.library.custom_op``s
(``tks_kernels::lif_forward_triton``, ``tks_kernels::lif_backward_triton``) with fake
implementations and autograd, so ``torch.compile(fullgraph=True)`` traces through them
with no graph break. They are opaque custom ops rather than ``triton_op``s on purpose:
Inductor recompiles a traced ``wrap_triton`` kernel with its own launch options, which
would drop ``enable_fp_fusion=False``; and an opaque op runs the same launch on CPU
tensors under ``TRITON_INTERPRET=1`` and on CUDA tensors.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._triton_launch import (
    check_device,
    distance_max,
    fires,
    forward_outputs,
    launch_config,
    like_layout,
    on_device,
    scalar,
    scalar_bits,
    sg_like,
    store_distance,
    time_major_dense,
    trip_count,
    widen,
)
from . import LIFConfig

_PI = tl.constexpr(math.pi)
_SQRT_PI = tl.constexpr(math.sqrt(math.pi))


# --------------------------------------------------------------------------- kernels


@triton.jit
def _div(a, b, IS_F64: tl.constexpr):
    """IEEE a / b (fp64 ``/`` is div.rn already; fp32 ``/`` is not)."""
    if IS_F64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _surrogate_grad(x, alpha, KIND: tl.constexpr, IS_F64: tl.constexpr):
    """g'(x) at x = h - v_threshold; KIND is the index in ``SURROGATES``.
    Same expressions as ``surrogate_grad`` in csrc/lif_math.h."""
    if KIND == 0:  # sigmoid
        sg = _div(1.0, 1.0 + tl.exp(-alpha * x), IS_F64)
        return alpha * sg * (1.0 - sg)
    elif KIND == 1:  # atan
        u = _div(tl.full([], _PI, x.dtype), 2.0, IS_F64) * alpha * x
        return _div(alpha, 2.0 * (1.0 + u * u), IS_F64)
    elif KIND == 2:  # piecewise_quadratic
        g = alpha - alpha * alpha * tl.abs(x)
        return tl.where(g > 0.0, g, 0.0)
    elif KIND == 3:  # piecewise_exp
        return _div(alpha, 2.0, IS_F64) * tl.exp(-alpha * tl.abs(x))
    elif KIND == 4:  # soft_sign
        u = 1.0 + tl.abs(alpha * x)
        return _div(alpha, 2.0 * u * u, IS_F64)
    elif KIND == 5:  # super_spike
        u = 1.0 + tl.abs(x)
        return _div(alpha, u * u, IS_F64)
    else:  # erf
        return _div(alpha, tl.full([], _SQRT_PI, x.dtype), IS_F64) * tl.exp(-alpha * alpha * x * x)


@triton.jit(do_not_specialize=["T", "N", "tau_bits", "vth_bits", "vr_bits", "fire_at"])
def _lif_forward_kernel(
    x_ptr, v_init_ptr, spikes_ptr, v_last_ptr, v_seq_ptr, d_ptr,
    T, N, tau_bits, vth_bits, vr_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, HAS_V_INIT: tl.constexpr,
    SAVE_D: tl.constexpr, SAVE_V_SEQ: tl.constexpr, KEEP_SIGN: tl.constexpr, D_MAX: tl.constexpr,
    N_ALIGNED: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):
    """x, spikes, v_seq, d: [T, N] (step t at t * N); v_init, v_last: [N].
    v_reset is 0 for soft reset (it is then only the charge's rest potential).
    fire_at: 1 fires on h >= v_threshold, 0 on h > v_threshold (run-time: one variant).
    KEEP_SIGN: 16-bit storage, d saved as ``store_distance`` says."""
    tau = scalar(tau_bits, IS_F64)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    dt = tau.dtype
    st = spikes_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    # N, the step between time steps and the mask's bound, is written as a multiple of
    # 16 when it is one, so the compiler can prove 16-byte alignment of every access and
    # mask and vectorise them without N being specialised.
    if N_ALIGNED:
        step = (N.to(tl.int64) // 16) * 16
    else:
        step = N.to(tl.int64)
    mask = offs < step
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        v = tl.zeros([BLOCK], dtype=dt) + vr
    x_next = tl.load(x_ptr + offs, mask=mask, other=0.0)
    for t in range(trip_count(T)):
        base = t * step
        xt = x_next.to(dt)
        # Prefetch the next step's input before this step's stores: twice the bytes
        # in flight per thread.
        # (a scalar condition is folded into the bound: the interpreter mis-types `mask & c`)
        x_next = tl.load(x_ptr + (base + step) + offs, mask=offs < tl.where(t + 1 < T, step, 0), other=0.0)
        if DECAY_INPUT:
            h = v + _div(xt - (v - vr), tau, IS_F64)
        else:
            h = v - _div(v - vr, tau, IS_F64) + xt
        s = tl.where(h == vth, fire_at != 0, h > vth).to(dt)
        if SOFT_RESET:
            v = h - s * vth
        else:
            v = s * vr + (1.0 - s) * h
        tl.store(spikes_ptr + base + offs, s.to(st), mask=mask)
        if SAVE_D:
            store_distance(d_ptr, base + offs, h - vth, mask, fire_at, D_MAX, KEEP_SIGN)
        if SAVE_V_SEQ:
            tl.store(v_seq_ptr + base + offs, v.to(st), mask=mask)
    tl.store(v_last_ptr + offs, v.to(st), mask=mask)


@triton.jit(do_not_specialize=["T", "N", "tau_bits", "vth_bits", "vr_bits", "alpha_bits", "nd_bits", "fire_at"])
def _lif_backward_kernel(
    grad_spikes_ptr, grad_v_last_ptr, grad_v_seq_ptr, d_ptr, sg_ptr, grad_x_ptr, grad_v_init_ptr,
    T, N, tau_bits, vth_bits, vr_bits, alpha_bits, nd_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, SURROGATE: tl.constexpr, HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr,
    HAS_GRAD_V_SEQ: tl.constexpr, HAS_SG: tl.constexpr, N_ALIGNED: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The reverse recurrence of DESIGN.md (``step_backward`` of lif_math.h).
    grad_spikes, grad_v_seq, d, grad_x: [T, N]; grad_v_last, grad_v_init: [N].
    HAS_SG: g'(d) is read from sg ([T, N], compute type; any surrogate) instead of the
    built-in SURROGATE.
    nd is 0 with detach_reset, else 1 (a run-time value, as in lif_math.h: half the
    variants to compile); fire_at as in the forward kernel."""
    tau = scalar(tau_bits, IS_F64)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    alpha = scalar(alpha_bits, IS_F64)
    dt = tau.dtype
    st = grad_x_ptr.dtype.element_ty
    nd = scalar(nd_bits, IS_F64)
    decay_v = 1.0 - _div(1.0, tau, IS_F64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if N_ALIGNED:  # as in the forward kernel
        step = (N.to(tl.int64) // 16) * 16
    else:
        step = N.to(tl.int64)
    mask = offs < step
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        gv = tl.zeros([BLOCK], dtype=dt)
    # Loads of step t - 1 are issued before step t's arithmetic and store (prefetch).
    last = (T - 1) * step
    d_next = tl.load(d_ptr + last + offs, mask=mask, other=0.0)
    if HAS_GRAD_SPIKES:
        gs_next = tl.load(grad_spikes_ptr + last + offs, mask=mask, other=0.0)
    if HAS_GRAD_V_SEQ:
        gq_next = tl.load(grad_v_seq_ptr + last + offs, mask=mask, other=0.0)
    if HAS_SG:
        sg_next = tl.load(sg_ptr + last + offs, mask=mask, other=0.0)
    for i in range(trip_count(T)):
        t = T - 1 - i
        base = t * step
        prev = base - step
        more = offs < tl.where(t > 0, step, 0)
        d = widen(d_next, dt)
        d_next = tl.load(d_ptr + prev + offs, mask=more, other=0.0)
        if HAS_SG:
            sg = sg_next.to(dt)
            sg_next = tl.load(sg_ptr + prev + offs, mask=more, other=0.0)
        else:
            sg = _surrogate_grad(d, alpha, SURROGATE, IS_F64)
        g = gv
        if HAS_GRAD_V_SEQ:
            g = g + gq_next.to(dt)
            gq_next = tl.load(grad_v_seq_ptr + prev + offs, mask=more, other=0.0)
        if HAS_GRAD_SPIKES:
            gs = gs_next.to(dt)
            gs_next = tl.load(grad_spikes_ptr + prev + offs, mask=more, other=0.0)
        else:
            gs = tl.zeros([BLOCK], dtype=dt)
        if SOFT_RESET:
            gh = gs * sg + g * (1.0 - vth * sg * nd)
        else:
            s = fires(d, fire_at).to(dt)
            vr_minus_h = (vr - vth) - d
            gh = gs * sg + g * ((1.0 - s) + vr_minus_h * sg * nd)
        if DECAY_INPUT:
            gx = _div(gh, tau, IS_F64)
        else:
            gx = gh
        tl.store(grad_x_ptr + base + offs, gx.to(st), mask=mask)
        gv = gh * decay_v
    tl.store(grad_v_init_ptr + offs, gv.to(st), mask=mask)


# --------------------------------------------------------------------------- launch


@torch.library.custom_op("tks_kernels::lif_forward_triton", mutates_args=())
def lif_forward_triton(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    save_for_backward: bool,
    return_v_seq: bool,
    fire_at_threshold: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, *] -> (spikes [T, *], v_last [*], v_seq [T, *] or [0], d_saved [T, *] or [0]).

    ``v_reset`` is the rest potential (0 for soft reset); ``surrogate``, ``alpha`` and
    ``detach_reset`` are only for the autograd formula. ``fire_at_threshold``: spikes on
    h >= v_threshold, else on h > v_threshold.
    """
    check_device(x)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"tks_kernels Triton LIF: x must be [T, *] with T >= 1, got shape {tuple(x.shape)}")
    if v_init is not None and (v_init.shape != x.shape[1:] or v_init.dtype != x.dtype or v_init.device != x.device):
        raise ValueError(
            f"tks_kernels Triton LIF: v_init must be {x.dtype} of shape {tuple(x.shape[1:])} on {x.device}, "
            f"got {v_init.dtype} of shape {tuple(v_init.shape)} on {v_init.device}"
        )
    xd, x0, spikes, v_last, v_seq, d_saved = forward_outputs(x, save_for_backward, return_v_seq)
    T, N = xd.shape[0], x0.numel()
    if N == 0:
        return spikes, v_last, v_seq, d_saved
    v0 = like_layout(v_init, x0) if v_init is not None else None
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    block, warps = launch_config(N, x.dtype)
    with on_device(x):
        _lif_forward_kernel[(triton.cdiv(N, block),)](
            xd, v0 if v0 is not None else xd, spikes, v_last,
            v_seq if return_v_seq else spikes, d_saved if save_for_backward else spikes,
            T, N, scalar_bits(tau, cdt), scalar_bits(v_threshold, cdt),
            scalar_bits(0.0 if soft_reset else v_reset, cdt), int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, HAS_V_INIT=v0 is not None,
            SAVE_D=save_for_backward, SAVE_V_SEQ=return_v_seq,
            KEEP_SIGN=x.dtype in (torch.float16, torch.bfloat16), D_MAX=distance_max(x.dtype),
            N_ALIGNED=N % 16 == 0,
            IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
        )
    return spikes, v_last, v_seq, d_saved


@lif_forward_triton.register_fake
def _lif_forward_triton_fake(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                             detach_reset, save_for_backward, return_v_seq, fire_at_threshold=True):
    _, _, spikes, v_last, v_seq, d_saved = forward_outputs(x, save_for_backward, return_v_seq)
    return spikes, v_last, v_seq, d_saved


def _backward_outputs(d_saved: torch.Tensor):
    d = time_major_dense(d_saved)
    return d, torch.empty_like(d), torch.empty_like(d[0])


@torch.library.custom_op("tks_kernels::lif_backward_triton", mutates_args=())
def lif_backward_triton(
    grad_spikes: Optional[torch.Tensor],
    grad_v_last: Optional[torch.Tensor],
    grad_v_seq: Optional[torch.Tensor],
    d_saved: torch.Tensor,
    tau: float,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    fire_at_threshold: bool = True,
    sg: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of (spikes, v_last, v_seq) -> (grad_x [T, *], grad_v_init [*]);
    a missing gradient counts as zero. ``d_saved`` is the forward's fourth output (made
    with the same ``fire_at_threshold``). ``sg`` [T, *] in the compute dtype (fp32, fp64
    for fp64): g'(h_t - v_threshold) of any surrogate, used instead of ``surrogate``."""
    check_device(d_saved)
    if not 0 <= surrogate < 7:
        raise ValueError(f"tks_kernels Triton LIF: surrogate id must be in [0, 7), got {surrogate}")
    d, grad_x, grad_v_init = _backward_outputs(d_saved)
    for name, g, shape in (("grad_spikes", grad_spikes, d.shape), ("grad_v_seq", grad_v_seq, d.shape),
                           ("grad_v_last", grad_v_last, d.shape[1:])):
        if g is not None and (g.shape != shape or g.device != d.device):
            raise ValueError(f"tks_kernels Triton LIF: {name} must have shape {tuple(shape)} on {d.device}, "
                             f"got {tuple(g.shape)} on {g.device}")
    cdt = torch.float64 if d.dtype == torch.float64 else torch.float32
    if sg is not None and (sg.shape != d.shape or sg.dtype != cdt or sg.device != d.device):
        raise ValueError(f"tks_kernels Triton LIF: sg must be {cdt} of shape {tuple(d.shape)} on {d.device}, "
                         f"got {sg.dtype} of shape {tuple(sg.shape)} on {sg.device}")
    T, N = d.shape[0], d[0].numel()
    if N == 0:
        return grad_x, grad_v_init
    sgd = sg_like(sg, d) if sg is not None else None
    gs = like_layout(grad_spikes, d) if grad_spikes is not None else None
    gq = like_layout(grad_v_seq, d) if grad_v_seq is not None else None
    gl = like_layout(grad_v_last, d[0]) if grad_v_last is not None else None
    block, warps = launch_config(N, d.dtype)
    with on_device(d):
        _lif_backward_kernel[(triton.cdiv(N, block),)](
            gs if gs is not None else d, gl if gl is not None else d, gq if gq is not None else d, d,
            sgd if sgd is not None else d, grad_x, grad_v_init,
            T, N, scalar_bits(tau, cdt), scalar_bits(v_threshold, cdt),
            scalar_bits(0.0 if soft_reset else v_reset, cdt), scalar_bits(alpha, cdt),
            scalar_bits(0.0 if detach_reset else 1.0, cdt), int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, SURROGATE=surrogate if sgd is None else 0,
            HAS_GRAD_SPIKES=gs is not None, HAS_GRAD_V_LAST=gl is not None, HAS_GRAD_V_SEQ=gq is not None,
            HAS_SG=sgd is not None, N_ALIGNED=N % 16 == 0, IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps,
            enable_fp_fusion=False,
        )
    return grad_x, grad_v_init


@lif_backward_triton.register_fake
def _lif_backward_triton_fake(grad_spikes, grad_v_last, grad_v_seq, d_saved, *scalars, sg=None):
    _, grad_x, grad_v_init = _backward_outputs(d_saved)
    return grad_x, grad_v_init


def _setup_context(ctx, inputs, output):
    (x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     save, return_v_seq, fire_at_threshold) = inputs
    if not save:
        raise RuntimeError("tks_kernels::lif_forward_triton needs save_for_backward=True to be differentiated")
    ctx.save_for_backward(output[3])
    ctx.mark_non_differentiable(output[3])
    # Gradients of unused outputs stay None, so backward reads no zero tensors.
    ctx.set_materialize_grads(False)
    ctx.scalars = (tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   fire_at_threshold)
    ctx.has_v_seq = return_v_seq
    ctx.has_v_init = v_init is not None


def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_d_saved):
    (d_saved,) = ctx.saved_tensors
    grad_x, grad_v_init = lif_backward_triton(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, d_saved, *ctx.scalars
    )
    return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * 11


lif_forward_triton.register_autograd(_backward, setup_context=_setup_context)


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool):
    """Calls ``tks_kernels::lif_forward_triton``, saving for backward only when a gradient
    is needed (else the inference kernel runs and nothing is kept)."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (v_init is not None and v_init.requires_grad))
    spikes, v_last, v_seq, _ = lif_forward_triton(
        x, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, needs_grad, return_v_seq, cfg.fire_at_threshold,
    )
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    """x: [T, *] -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    return forward_op(x, v_init, cfg, return_v_seq)


# Any surrogate, fused (contracts.md section 3; the autograd wrapper is ops/lif/__init__.py).

def forward_saved(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool):
    """x [T, *] -> (spikes, v_last, v_seq or None, saved), no autograd; saved is the
    distance d = h - v_threshold in x's dtype (16-bit: side of zero kept, saturated)."""
    with torch.no_grad():
        spikes, v_last, v_seq, saved = lif_forward_triton(
            x, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, True, return_v_seq, cfg.fire_at_threshold,
        )
    return spikes, v_last, v_seq if return_v_seq else None, saved


def backward_sg(grad_spikes: torch.Tensor, grad_v_last: Optional[torch.Tensor], grad_v_seq: Optional[torch.Tensor],
                saved: torch.Tensor, sg: torch.Tensor, cfg: LIFConfig):
    """(grad_x [T, *], grad_v_init [*]) with g'(h_t - v_threshold) = sg ([T, *], compute
    dtype) in place of the built-in surrogate's; no autograd."""
    return lif_backward_triton(
        grad_spikes, grad_v_last, grad_v_seq, saved, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
        cfg.soft_reset, cfg.surrogate_id, cfg.alpha, cfg.detach_reset, cfg.fire_at_threshold, sg,
    )


def saved_distance(saved: torch.Tensor, cfg: LIFConfig) -> torch.Tensor:
    """d = h - v_threshold ([T, *], compute dtype) from what ``forward_saved`` saved."""
    return saved.to(torch.float64 if saved.dtype == torch.float64 else torch.float32)
