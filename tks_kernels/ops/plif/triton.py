"""Fused Triton kernels of the multi-step parametric LIF neuron: forward (training and
inference) and backward, each one program per block of neurons running the whole time
loop, as ``ops/lif/triton.py`` (whose surrogate this reuses; the launch helpers are
``ops/_triton_launch.py``).

- The decay k = 1/tau = sigmoid(w) arrives as a 0-dim tensor in the compute type and is
  loaded by the kernels (no host sync); the charge multiplies by it in the reference's
  order (``charge_k`` of csrc/lif_math.h), launched with ``enable_fp_fusion=False``, so
  spikes equal the reference bit for bit.
- Forward saves one value per neuron and step: h itself for fp32/fp64 storage (exact),
  d = h - v_threshold for fp16/bf16 with its side of zero kept and saturated
  (``store_distance`` of ops/_triton_launch.py); nothing in inference.
- ``fire_at_threshold`` (h >= v_threshold, else h > v_threshold) is a run-time flag.
- Backward recovers v_{t-1} from step t-1's saved value, and each program adds
  gh_t * dh_t/dk over the steps per lane in fp32 (fp64 for fp64), then over its lanes in
  fp64, into one slot of a partials buffer; the slots are summed once (in fp64) after
  the kernel: dL/dk.

Wrapped as ``torch.library.custom_op``s (``tks_kernels::plif_forward_triton``,
``tks_kernels::plif_backward_triton``) with fake implementations and autograd, for the
reasons given in ``ops/lif/triton.py``.
"""
from __future__ import annotations

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
from ..lif.triton import _surrogate_grad
from . import PLIFConfig

# --------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=["T", "N", "vth_bits", "vr_bits", "fire_at"])
def _plif_forward_kernel(
    x_ptr, v_init_ptr, k_ptr, spikes_ptr, v_last_ptr, v_seq_ptr, saved_ptr,
    T, N, vth_bits, vr_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, HAS_V_INIT: tl.constexpr,
    SAVE: tl.constexpr, SAVE_V_SEQ: tl.constexpr, SAVE_H: tl.constexpr, D_MAX: tl.constexpr,
    N_ALIGNED: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):
    """x, spikes, v_seq, saved: [T, N] (step t at t * N); v_init, v_last: [N]; k: one
    element. v_reset is 0 for soft reset (then only the charge's rest potential).
    fire_at: 1 fires on h >= v_threshold, 0 on h > v_threshold (run-time: one variant).
    SAVE_H: save h (fp32/fp64 storage), else d = h - v_threshold as ``store_distance``
    says (side of zero kept, saturated)."""
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    dt = vth.dtype
    k = tl.load(k_ptr).to(dt)
    st = spikes_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    # N as a visible multiple of 16 when it is one (see ops/lif/triton.py).
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
        x_next = tl.load(x_ptr + (base + step) + offs, mask=offs < tl.where(t + 1 < T, step, 0), other=0.0)
        if DECAY_INPUT:
            h = v + (xt - (v - vr)) * k
        else:
            h = v - (v - vr) * k + xt
        s = tl.where(h == vth, fire_at != 0, h > vth).to(dt)
        if SOFT_RESET:
            v = h - s * vth
        else:
            v = s * vr + (1.0 - s) * h
        tl.store(spikes_ptr + base + offs, s.to(st), mask=mask)
        if SAVE:
            if SAVE_H:
                tl.store(saved_ptr + base + offs, h.to(st), mask=mask)
            else:
                store_distance(saved_ptr, base + offs, h - vth, mask, fire_at, D_MAX, True)
        if SAVE_V_SEQ:
            tl.store(v_seq_ptr + base + offs, v.to(st), mask=mask)
    tl.store(v_last_ptr + offs, v.to(st), mask=mask)


@triton.jit
def _v_from_saved(q, vth, vr, fire_at, SOFT_RESET: tl.constexpr, SAVE_H: tl.constexpr):
    """v_t from step t's saved value: the forward's reset of h_t (v_from_saved)."""
    if SAVE_H:
        h = q
        d = q - vth
    else:
        h = q + vth
        d = q
    s = fires(d, fire_at).to(q.dtype)
    if SOFT_RESET:
        return h - s * vth
    else:
        return s * vr + (1.0 - s) * h


@triton.jit(do_not_specialize=["T", "N", "vth_bits", "vr_bits", "alpha_bits", "nd_bits", "fire_at"])
def _plif_backward_kernel(
    grad_spikes_ptr, grad_v_last_ptr, grad_v_seq_ptr, saved_ptr, v_init_ptr, k_ptr, sg_ptr,
    grad_x_ptr, grad_v_init_ptr, partials_ptr,
    T, N, vth_bits, vr_bits, alpha_bits, nd_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, SURROGATE: tl.constexpr,
    HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr,
    HAS_V_INIT: tl.constexpr, SAVE_H: tl.constexpr, HAS_SG: tl.constexpr, N_ALIGNED: tl.constexpr,
    IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The reverse recurrence (``step_backward`` of lif_math.h) with the decay k, and
    this program's share of sum_t gh_t * charge_k_term into partials[program_id].
    nd is 0 with detach_reset, else 1; fire_at as in the forward kernel. HAS_SG: g'(d)
    is read from sg ([T, N], compute type; any surrogate) instead of the built-in one."""
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    alpha = scalar(alpha_bits, IS_F64)
    nd = scalar(nd_bits, IS_F64)
    dt = vth.dtype
    k = tl.load(k_ptr).to(dt)
    st = grad_x_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if N_ALIGNED:
        step = (N.to(tl.int64) // 16) * 16
    else:
        step = N.to(tl.int64)
    mask = offs < step
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        gv = tl.zeros([BLOCK], dtype=dt)
    if HAS_V_INIT:
        v_first = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        v_first = tl.zeros([BLOCK], dtype=dt) + vr
    acc = tl.zeros([BLOCK], dtype=dt)
    # Step t needs the saved values of t and t - 1; loads run one step ahead.
    last = (T - 1) * step
    q_cur = tl.load(saved_ptr + last + offs, mask=mask, other=0.0)
    q_prev = tl.load(saved_ptr + (last - step) + offs, mask=offs < tl.where(T > 1, step, 0), other=0.0)
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
        q = widen(q_cur, dt)
        qp = widen(q_prev, dt)
        q_cur = q_prev
        q_prev = tl.load(saved_ptr + (prev - step) + offs, mask=offs < tl.where(t > 1, step, 0), other=0.0)
        g = gv
        if HAS_GRAD_V_SEQ:
            g = g + gq_next.to(dt)
            gq_next = tl.load(grad_v_seq_ptr + prev + offs, mask=more, other=0.0)
        if HAS_GRAD_SPIKES:
            gs = gs_next.to(dt)
            gs_next = tl.load(grad_spikes_ptr + prev + offs, mask=more, other=0.0)
        else:
            gs = tl.zeros([BLOCK], dtype=dt)
        if SAVE_H:
            h = q
            d = q - vth
        else:
            h = q + vth
            d = q
        v_prev = tl.where(t > 0, _v_from_saved(qp, vth, vr, fire_at, SOFT_RESET, SAVE_H), v_first)
        if HAS_SG:
            sg = sg_next.to(dt)
            sg_next = tl.load(sg_ptr + prev + offs, mask=more, other=0.0)
        else:
            sg = _surrogate_grad(d, alpha, SURROGATE, IS_F64)
        if SOFT_RESET:
            gh = gs * sg + g * (1.0 - vth * sg * nd)
        else:
            s = fires(d, fire_at).to(dt)
            vr_minus_h = (vr - vth) - d
            gh = gs * sg + g * ((1.0 - s) + vr_minus_h * sg * nd)
        if DECAY_INPUT:
            gx = gh * k
            acc += gh * (h - v_prev)  # k * dh/dk; the sum is divided by k once
        else:
            gx = gh
            acc += gh * -(v_prev - vr)
        tl.store(grad_x_ptr + base + offs, gx.to(st), mask=mask)
        gv = gh - gh * k
    tl.store(grad_v_init_ptr + offs, gv.to(st), mask=mask)
    # the lanes' sums over the steps, added across the block in fp64
    tl.store(partials_ptr + tl.program_id(0), tl.sum(tl.where(mask, acc, 0.0).to(tl.float64), axis=0))


# --------------------------------------------------------------------------- launch


def _check_k(k: torch.Tensor, x: torch.Tensor) -> torch.dtype:
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    if k.dim() != 0 or k.dtype != cdt or k.device != x.device:
        raise ValueError(f"tks_kernels Triton PLIF: k must be a 0-dim {cdt} tensor on {x.device}, "
                         f"got {k.dtype} of shape {tuple(k.shape)} on {k.device}")
    return cdt


@torch.library.custom_op("tks_kernels::plif_forward_triton", mutates_args=())
def plif_forward_triton(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    k: torch.Tensor,
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
    """x [T, *], k [] -> (spikes [T, *], v_last [*], v_seq [T, *] or [0], saved [T, *] or [0]).

    ``v_reset`` is the rest potential (0 for soft reset); ``surrogate``, ``alpha`` and
    ``detach_reset`` are only for the autograd formula. ``fire_at_threshold``: spikes on
    h >= v_threshold, else on h > v_threshold.
    """
    check_device(x)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"tks_kernels Triton PLIF: x must be [T, *] with T >= 1, got shape {tuple(x.shape)}")
    if v_init is not None and (v_init.shape != x.shape[1:] or v_init.dtype != x.dtype or v_init.device != x.device):
        raise ValueError(
            f"tks_kernels Triton PLIF: v_init must be {x.dtype} of shape {tuple(x.shape[1:])} on {x.device}, "
            f"got {v_init.dtype} of shape {tuple(v_init.shape)} on {v_init.device}"
        )
    cdt = _check_k(k, x)
    xd, x0, spikes, v_last, v_seq, saved = forward_outputs(x, save_for_backward, return_v_seq)
    T, N = xd.shape[0], x0.numel()
    if N == 0:
        return spikes, v_last, v_seq, saved
    v0 = like_layout(v_init, x0) if v_init is not None else None
    block, warps = launch_config(N, x.dtype)
    with on_device(x):
        _plif_forward_kernel[(triton.cdiv(N, block),)](
            xd, v0 if v0 is not None else xd, k, spikes, v_last,
            v_seq if return_v_seq else spikes, saved if save_for_backward else spikes,
            T, N, scalar_bits(v_threshold, cdt), scalar_bits(0.0 if soft_reset else v_reset, cdt),
            int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, HAS_V_INIT=v0 is not None,
            SAVE=save_for_backward, SAVE_V_SEQ=return_v_seq,
            SAVE_H=x.dtype in (torch.float32, torch.float64), D_MAX=distance_max(x.dtype), N_ALIGNED=N % 16 == 0,
            IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
        )
    return spikes, v_last, v_seq, saved


@plif_forward_triton.register_fake
def _plif_forward_triton_fake(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                              detach_reset, save_for_backward, return_v_seq, fire_at_threshold=True):
    _, _, spikes, v_last, v_seq, saved = forward_outputs(x, save_for_backward, return_v_seq)
    return spikes, v_last, v_seq, saved


def _backward_outputs(saved: torch.Tensor, k: torch.Tensor):
    d = time_major_dense(saved)
    return d, torch.empty_like(d), torch.empty_like(d[0]), torch.empty_like(k)


@torch.library.custom_op("tks_kernels::plif_backward_triton", mutates_args=())
def plif_backward_triton(
    grad_spikes: Optional[torch.Tensor],
    grad_v_last: Optional[torch.Tensor],
    grad_v_seq: Optional[torch.Tensor],
    saved: torch.Tensor,
    v_init: Optional[torch.Tensor],
    k: torch.Tensor,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    fire_at_threshold: bool = True,
    sg: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of (spikes, v_last, v_seq) -> (grad_x [T, *], grad_v_init [*], grad_k []);
    a missing gradient counts as zero. ``saved`` is the forward's fourth output, ``v_init``
    the forward's (v_{-1} enters dL/dk). ``sg`` [T, *] in the compute dtype: g'(h_t -
    v_threshold) of any surrogate, used instead of ``surrogate``."""
    check_device(saved)
    if not 0 <= surrogate < 7:
        raise ValueError(f"tks_kernels Triton PLIF: surrogate id must be in [0, 7), got {surrogate}")
    cdt = _check_k(k, saved)
    q, grad_x, grad_v_init, _ = _backward_outputs(saved, k)
    for name, g, shape in (("grad_spikes", grad_spikes, q.shape), ("grad_v_seq", grad_v_seq, q.shape),
                           ("grad_v_last", grad_v_last, q.shape[1:]), ("v_init", v_init, q.shape[1:])):
        if g is not None and (g.shape != shape or g.device != q.device):
            raise ValueError(f"tks_kernels Triton PLIF: {name} must have shape {tuple(shape)} on {q.device}, "
                             f"got {tuple(g.shape)} on {g.device}")
    if sg is not None and (sg.shape != q.shape or sg.dtype != cdt or sg.device != q.device):
        raise ValueError(f"tks_kernels Triton PLIF: sg must be {cdt} of shape {tuple(q.shape)} on {q.device}, "
                         f"got {sg.dtype} of shape {tuple(sg.shape)} on {sg.device}")
    T, N = q.shape[0], q[0].numel()
    if N == 0:
        return grad_x, grad_v_init, torch.zeros_like(k)
    sgd = sg_like(sg, q) if sg is not None else None
    gs = like_layout(grad_spikes, q) if grad_spikes is not None else None
    gq = like_layout(grad_v_seq, q) if grad_v_seq is not None else None
    gl = like_layout(grad_v_last, q[0]) if grad_v_last is not None else None
    v0 = like_layout(v_init, q[0]) if v_init is not None else None
    block, warps = launch_config(N, q.dtype)
    grid = triton.cdiv(N, block)
    partials = torch.empty(grid, dtype=torch.float64, device=q.device)
    with on_device(q):
        _plif_backward_kernel[(grid,)](
            gs if gs is not None else q, gl if gl is not None else q, gq if gq is not None else q, q,
            v0 if v0 is not None else q, k, sgd if sgd is not None else q, grad_x, grad_v_init, partials,
            T, N, scalar_bits(v_threshold, cdt), scalar_bits(0.0 if soft_reset else v_reset, cdt),
            scalar_bits(alpha, cdt), scalar_bits(0.0 if detach_reset else 1.0, cdt), int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, SURROGATE=surrogate if sgd is None else 0,
            HAS_GRAD_SPIKES=gs is not None, HAS_GRAD_V_LAST=gl is not None, HAS_GRAD_V_SEQ=gq is not None,
            HAS_V_INIT=v0 is not None, SAVE_H=q.dtype in (torch.float32, torch.float64), HAS_SG=sgd is not None,
            N_ALIGNED=N % 16 == 0, IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps,
            enable_fp_fusion=False,
        )
    total = partials.sum()
    if decay_input:
        total = total / k.double()
    return grad_x, grad_v_init, total.to(cdt)


@plif_backward_triton.register_fake
def _plif_backward_triton_fake(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, *scalars, sg=None):
    _, grad_x, grad_v_init, grad_k = _backward_outputs(saved, k)
    return grad_x, grad_v_init, grad_k


def _setup_context(ctx, inputs, output):
    (x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     save, return_v_seq, fire_at_threshold) = inputs
    if not save:
        raise RuntimeError("tks_kernels::plif_forward_triton needs save_for_backward=True to be differentiated")
    ctx.save_for_backward(output[3], v_init, k)
    ctx.mark_non_differentiable(output[3])
    # Gradients of unused outputs stay None, so backward reads no zero tensors.
    ctx.set_materialize_grads(False)
    ctx.scalars = (decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset, fire_at_threshold)
    ctx.has_v_seq = return_v_seq


def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_saved):
    saved, v_init, k = ctx.saved_tensors
    grad_x, grad_v_init, grad_k = plif_backward_triton(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, saved, v_init, k, *ctx.scalars
    )
    return (grad_x, grad_v_init if v_init is not None else None, grad_k) + (None,) * 10


plif_forward_triton.register_autograd(_backward, setup_context=_setup_context)


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
               return_v_seq: bool):
    """Calls ``tks_kernels::plif_forward_triton``, saving for backward only when a gradient
    is needed (else the inference kernel runs and nothing is kept)."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or k.requires_grad or (v_init is not None and v_init.requires_grad)
    )
    spikes, v_last, v_seq, _ = plif_forward_triton(
        x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, needs_grad, return_v_seq, cfg.fire_at_threshold,
    )
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    """x: [T, *] -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    return forward_op(x, v_init, k, cfg, return_v_seq)


# Any surrogate, fused (contracts.md section 3; the autograd wrapper is ops/plif/__init__.py).

def forward_saved(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                  return_v_seq: bool):
    """x [T, *], k [] -> (spikes, v_last, v_seq or None, saved), no autograd; saved is h
    for fp32/fp64 storage, else d = h - v_threshold (side of zero kept, saturated)."""
    with torch.no_grad():
        spikes, v_last, v_seq, saved = plif_forward_triton(
            x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, True, return_v_seq, cfg.fire_at_threshold,
        )
    return spikes, v_last, v_seq if return_v_seq else None, saved


def backward_sg(grad_spikes: torch.Tensor, grad_v_last: Optional[torch.Tensor], grad_v_seq: Optional[torch.Tensor],
                saved: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, sg: torch.Tensor,
                cfg: PLIFConfig):
    """(grad_x [T, *], grad_v_init [*], grad_k [] in k's dtype) with g'(h_t - v_threshold)
    = sg ([T, *], compute dtype) in place of the built-in surrogate's; no autograd."""
    return plif_backward_triton(
        grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
        cfg.soft_reset, cfg.surrogate_id, cfg.alpha, cfg.detach_reset, cfg.fire_at_threshold, sg,
    )


def saved_distance(saved: torch.Tensor, cfg: PLIFConfig) -> torch.Tensor:
    """d = h - v_threshold ([T, *], compute dtype): the kernel's own subtraction for the
    saved h of fp32/fp64 storage (v_threshold rounded to it first), the saved d itself
    for 16-bit storage."""
    if saved.dtype in (torch.float32, torch.float64):
        return saved - torch.tensor(cfg.v_threshold, dtype=saved.dtype, device=saved.device)
    return saved.float()
