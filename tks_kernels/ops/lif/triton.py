"""Fused Triton kernels of the LIF family: the multi-step LIF neuron and, with the
``LEARN_TAU`` flag, the parametric LIF (``ops/plif/triton.py`` launches these same
kernels and host functions). One program per block of neurons runs the whole time loop.

Kernels (each one family for LIF and PLIF):

- ``_forward_kernel``: spikes, v_last (and v_seq); optionally one saved value per neuron
  and step for the saved-distance backward.
- ``_backward_x_kernel``, the default backward: recomputes from the input. Training
  forward saves x itself (autograd keeps it; nothing new is allocated) and writes only
  the spikes (plus v_last / v_seq). Backward re-runs the forward recurrence from x for
  its block of neurons with the same jit functions in the same order, so its spikes
  equal the forward's in every dtype, keeping each step's membrane h in registers for a
  chunk of ``CHUNK`` steps, then runs the reverse recurrence over the chunk. Chunks are
  taken from the last; a chunk's starting membrane is recomputed from the first step.
- ``_backward_kernel``, the saved-distance backward: forward saves d = h - v_threshold in
  x's dtype (PLIF in fp32/fp64: h itself, so v_{t-1} is exact), in fp16/bf16 with its
  side of zero kept and saturated at the type's largest finite value (``store_distance``
  of ops/_triton_launch.py). The contract-3 functions (``forward_saved``,
  ``backward_sg``, ``saved_distance``) and T > ``RECOMPUTE_MAX_STEPS`` use it.

The rule (``recompute_chunk``, ``recomputes``): chunks of min(next_pow2(T), 4) steps, and
recompute while T <= 8 (at most two chunks). Bytes per neuron and step of forward+backward
in fp32: saved-d 24 (x, spikes, d; d, grad_spikes, grad_x), recompute 16 + 4 R where R is
how often backward reads x: 1 for one chunk (20 bytes), 1.5 for two (22); three chunks
would be 24, no gain for the extra arithmetic. The chunk is 4 because the reverse loop
over a chunk is unrolled (the tuple of h is indexed by constants) and ptxas interleaves
its steps: compiled for sm_90 with 4 fp32 elements per thread, chunks of 8 took the
sigmoid backward to 190 registers (PLIF 236), chunks of 4 to about 100 (PLIF 136), with
no spills (tests/test_codegen_triton.py keeps every variant within 160 and spill-free).

The math and its operation order mirror ``csrc/lif_math.h`` and ``reference.py``, so
spikes equal the reference bit for bit in fp32:

- true division by tau: a tau that is a power of two (with an exact reciprocal)
  multiplies by 1/tau, which is the correctly rounded quotient; any other tau divides
  with ``tl.math.div_rn`` (IEEE round to nearest; Triton's fp32 ``/`` is ``div.full``).
  A reciprocal with FMA corrections is not used: it is the correctly rounded quotient only
  with a guard that sends tiny and huge quotients (and taus with a significand of all
  ones) to IEEE division, and per element in a Triton block program that guard is a
  select, which computes the division anyway;
- no FMA contraction: kernels are launched with ``enable_fp_fusion=False``, the
  counterpart of the CUDA kernels' ``-fmad=false``;
- the scalars reach the kernels as the bit patterns of their compute-type roundings
  (``scalar_bits``), rounded like PyTorch rounds a Python float.

PLIF: the decay k = 1/tau = sigmoid(w) arrives as a 0-dim tensor in the compute type and
is loaded by the kernels (no host sync); the charge multiplies by it (``charge_k`` of
csrc/lif_math.h). Backward adds gh_t * dh_t/dk over the steps per lane in the compute
type, then over its lanes in fp64, into one slot per program; the slots are summed once
in fp64 after the kernel (deterministic): dL/dk.

State and arithmetic are fp32 (fp64 for fp64 storage); storage fp32/fp16/bf16/fp64.

The kernels are wrapped as ``torch.library.custom_op``s (``tks_kernels::lif_forward_x_triton``
/ ``lif_backward_x_triton`` for recompute, ``lif_forward_triton`` / ``lif_backward_triton``
for the saved distance) with fake implementations and autograd, so
``torch.compile(fullgraph=True)`` traces through them with no graph break. They are
opaque custom ops rather than ``triton_op``s on purpose: Inductor recompiles a traced
``wrap_triton`` kernel with its own launch options, which would drop
``enable_fp_fusion=False``; and an opaque op runs the same launch on CPU tensors under
``TRITON_INTERPRET=1`` and on CUDA tensors.
"""
from __future__ import annotations

import math
import struct
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
    launch_config_k,
    launch_config_x,
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

# Recompute while T <= RECOMPUTE_MAX_STEPS (chunks of at most RECOMPUTE_CHUNK steps); see
# the module docstring. Module attributes, so a benchmark can move the rule.
RECOMPUTE_CHUNK = 4
RECOMPUTE_MAX_STEPS = 8

# saved-value modes of _forward_kernel
SAVE_NOTHING, SAVE_D, SAVE_H = 0, 1, 2


# --------------------------------------------------------------------------- kernels


@triton.jit
def _div(a, b, IS_F64: tl.constexpr):
    """IEEE a / b (fp64 ``/`` is div.rn already; fp32 ``/`` is not)."""
    if IS_F64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _div_tau(a, tau, inv_tau, TAU_POW2: tl.constexpr, IS_F64: tl.constexpr):
    """a / tau correctly rounded: for a power-of-two tau whose reciprocal is exact, the
    product a * (1/tau) is one rounding of the same exact quotient; else IEEE division."""
    if TAU_POW2:
        return a * inv_tau
    else:
        return _div(a, tau, IS_F64)


@triton.jit
def _surrogate_const(alpha, KIND: tl.constexpr, IS_F64: tl.constexpr):
    """The loop-invariant factor of g' for ``_surrogate_grad_c`` (the LIF kernels get it
    from the host, ``surrogate_const``: ptxas neither hoists an IEEE division out of the
    time loop nor, hoisted, keeps its slow-path call free of a stack frame)."""
    if KIND == 1:  # atan: (pi / 2) * alpha
        return _div(tl.full([], _PI, alpha.dtype), 2.0, IS_F64) * alpha
    elif KIND == 3:  # piecewise_exp
        return _div(alpha, 2.0, IS_F64)
    elif KIND == 6:  # erf
        return _div(alpha, tl.full([], _SQRT_PI, alpha.dtype), IS_F64)
    else:
        return alpha


@triton.jit
def _surrogate_grad_c(x, alpha, c, KIND: tl.constexpr, IS_F64: tl.constexpr):
    """g'(x) at x = h - v_threshold with c = ``_surrogate_const(alpha, KIND)``; KIND is
    the index in ``SURROGATES``. Same expressions, in the same order, as
    ``surrogate_grad`` in csrc/lif_math.h."""
    if KIND == 0:  # sigmoid
        sg = _div(1.0, 1.0 + tl.exp(-alpha * x), IS_F64)
        return alpha * sg * (1.0 - sg)
    elif KIND == 1:  # atan
        u = c * x
        return _div(alpha, 2.0 * (1.0 + u * u), IS_F64)
    elif KIND == 2:  # piecewise_quadratic
        g = alpha - alpha * alpha * tl.abs(x)
        return tl.where(g > 0.0, g, 0.0)
    elif KIND == 3:  # piecewise_exp
        return c * tl.exp(-alpha * tl.abs(x))
    elif KIND == 4:  # soft_sign
        u = 1.0 + tl.abs(alpha * x)
        return _div(alpha, 2.0 * u * u, IS_F64)
    elif KIND == 5:  # super_spike
        u = 1.0 + tl.abs(x)
        return _div(alpha, u * u, IS_F64)
    else:  # erf
        return c * tl.exp(-alpha * alpha * x * x)


@triton.jit
def _surrogate_grad(x, alpha, KIND: tl.constexpr, IS_F64: tl.constexpr):
    """g'(x) at x = h - v_threshold; KIND is the index in ``SURROGATES`` (for kernels
    that do not hoist the constant: ``_surrogate_grad_c``)."""
    return _surrogate_grad_c(x, alpha, _surrogate_const(alpha, KIND, IS_F64), KIND, IS_F64)


@triton.jit
def _charge(v, xt, vr, tau, inv_tau, k, DECAY_INPUT: tl.constexpr, LEARN_TAU: tl.constexpr,
            TAU_POW2: tl.constexpr, IS_F64: tl.constexpr):
    """h_t from v_{t-1} and x_t: divided by tau (LIF, ``charge``), or times k = 1/tau
    (PLIF, ``charge_k`` of lif_math.h), in the reference's order."""
    if LEARN_TAU:
        if DECAY_INPUT:
            h = v + (xt - (v - vr)) * k
        else:
            h = v - (v - vr) * k + xt
    else:
        if DECAY_INPUT:
            h = v + _div_tau(xt - (v - vr), tau, inv_tau, TAU_POW2, IS_F64)
        else:
            h = v - _div_tau(v - vr, tau, inv_tau, TAU_POW2, IS_F64) + xt
    return h


@triton.jit
def _fire(h, vth, fire_at):
    """The spike of h (compute type, 0/1): h >= v_threshold when ``fire_at``, else
    h > v_threshold. Forward and the recomputing backward both use this."""
    return tl.where(h == vth, fire_at != 0, h > vth).to(h.dtype)


@triton.jit
def _reset(h, s, vth, vr, SOFT_RESET: tl.constexpr):
    """v_t from h_t and its spike s (v_reset is 0 for soft reset)."""
    if SOFT_RESET:
        return h - s * vth
    else:
        return s * vr + (1.0 - s) * h


@triton.jit
def _grad_h(gs, g, sg, d, s, vth, vr, nd, SOFT_RESET: tl.constexpr):
    """dL/dh_t (``step_backward`` of lif_math.h): gs = dL/ds_t, g = dL/dv_t, sg = g'(d),
    d = h_t - v_threshold, s the spike; nd is 0 with detach_reset, else 1."""
    if SOFT_RESET:
        gh = gs * sg + g * (1.0 - vth * sg * nd)
    else:
        vr_minus_h = (vr - vth) - d
        gh = gs * sg + g * ((1.0 - s) + vr_minus_h * sg * nd)
    return gh


@triton.jit
def _grad_in(gh, h, v_prev, vr, tau, inv_tau, decay_v, k, DECAY_INPUT: tl.constexpr, LEARN_TAU: tl.constexpr,
             TAU_POW2: tl.constexpr, IS_F64: tl.constexpr):
    """(dL/dx_t, dL/dv_{t-1}, the step's dL/dk term) from gh = dL/dh_t. The term is
    gh_t * dh_t/dk, times k under decay_input (the sum is divided by k once); LIF: unused."""
    if LEARN_TAU:
        if DECAY_INPUT:
            gx = gh * k
            term = gh * (h - v_prev)
        else:
            gx = gh
            term = gh * -(v_prev - vr)
        gv = gh - gh * k
    else:
        if DECAY_INPUT:
            gx = _div_tau(gh, tau, inv_tau, TAU_POW2, IS_F64)
        else:
            gx = gh
        gv = gh * decay_v
        term = gh
    return gx, gv, term


@triton.jit
def _decay(tau_bits, k_ptr, IS_F64: tl.constexpr, LEARN_TAU: tl.constexpr):
    """(tau, 1/tau, 1 - 1/tau, k) of a kernel: LIF's from tau's bits, PLIF's k loaded
    (then tau, 1/tau and 1 - 1/tau are placeholders the code does not use)."""
    tau = scalar(tau_bits, IS_F64)
    if LEARN_TAU:
        k = tl.load(k_ptr).to(tau.dtype)
        inv_tau = k
        decay_v = k
    else:
        inv_tau = _div(1.0, tau, IS_F64)
        decay_v = 1.0 - inv_tau
        k = inv_tau
    return tau, inv_tau, decay_v, k


@triton.jit
def _lanes(N, N_ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
    """(offsets of this program's neurons, the step between time steps, their mask).
    N is written as a multiple of 16 when it is one, so the compiler can prove 16-byte
    alignment of every access and mask and vectorise them without N being specialised."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    if N_ALIGNED:
        step = (N.to(tl.int64) // 16) * 16
    else:
        step = N.to(tl.int64)
    return offs, step, offs < step


@triton.jit(do_not_specialize=["T", "N", "tau_bits", "vth_bits", "vr_bits", "fire_at"])
def _forward_kernel(
    x_ptr, v_init_ptr, k_ptr, spikes_ptr, v_last_ptr, v_seq_ptr, saved_ptr,
    T, N, tau_bits, vth_bits, vr_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, HAS_V_INIT: tl.constexpr,
    SAVE: tl.constexpr, SAVE_V_SEQ: tl.constexpr, KEEP_SIGN: tl.constexpr, D_MAX: tl.constexpr,
    LEARN_TAU: tl.constexpr, TAU_POW2: tl.constexpr, N_ALIGNED: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """x, spikes, v_seq, saved: [T, N] (step t at t * N); v_init, v_last: [N]; k: one
    element (LEARN_TAU). v_reset is 0 for soft reset (then only the charge's rest
    potential). fire_at: 1 fires on h >= v_threshold, 0 on h > v_threshold (run-time:
    one variant). SAVE: 0 nothing, 1 d = h - v_threshold (``store_distance``, KEEP_SIGN
    for 16-bit storage), 2 h."""
    tau, inv_tau, decay_v, k = _decay(tau_bits, k_ptr, IS_F64, LEARN_TAU)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    dt = vth.dtype
    st = spikes_ptr.dtype.element_ty
    offs, step, mask = _lanes(N, N_ALIGNED, BLOCK)
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
        h = _charge(v, xt, vr, tau, inv_tau, k, DECAY_INPUT, LEARN_TAU, TAU_POW2, IS_F64)
        s = _fire(h, vth, fire_at)
        v = _reset(h, s, vth, vr, SOFT_RESET)
        tl.store(spikes_ptr + base + offs, s.to(st), mask=mask)
        if SAVE == 1:
            store_distance(saved_ptr, base + offs, h - vth, mask, fire_at, D_MAX, KEEP_SIGN)
        elif SAVE == 2:
            tl.store(saved_ptr + base + offs, h.to(st), mask=mask)
        if SAVE_V_SEQ:
            tl.store(v_seq_ptr + base + offs, v.to(st), mask=mask)
    tl.store(v_last_ptr + offs, v.to(st), mask=mask)


@triton.jit(do_not_specialize=["T", "N", "tau_bits", "vth_bits", "vr_bits", "alpha_bits", "sgc_bits", "nd_bits",
                                "fire_at"])
def _backward_x_kernel(
    grad_spikes_ptr, grad_v_last_ptr, grad_v_seq_ptr, x_ptr, v_init_ptr, k_ptr,
    grad_x_ptr, grad_v_init_ptr, partials_ptr,
    T, N, tau_bits, vth_bits, vr_bits, alpha_bits, sgc_bits, nd_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, SURROGATE: tl.constexpr,
    HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr,
    HAS_V_INIT: tl.constexpr, LEARN_TAU: tl.constexpr, TAU_POW2: tl.constexpr, CHUNK: tl.constexpr,
    N_ALIGNED: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The recomputing backward: x, grad_spikes, grad_v_seq, grad_x: [T, N]; v_init,
    grad_v_last, grad_v_init: [N]; partials: one fp64 per program (LEARN_TAU).
    Per chunk of CHUNK steps, from the last: the forward recurrence from v_init up to the
    chunk (whole earlier chunks, unrolled), then the chunk's steps with each h kept in
    registers (a tuple), then the reverse recurrence over them. Steps t >= T of the last
    chunk load nothing and change nothing."""
    tau, inv_tau, decay_v, k = _decay(tau_bits, k_ptr, IS_F64, LEARN_TAU)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    alpha = scalar(alpha_bits, IS_F64)
    sgc = scalar(sgc_bits, IS_F64)  # _surrogate_const(alpha, SURROGATE), from the host
    nd = scalar(nd_bits, IS_F64)
    dt = vth.dtype
    st = grad_x_ptr.dtype.element_ty
    offs, step, mask = _lanes(N, N_ALIGNED, BLOCK)
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        gv = tl.zeros([BLOCK], dtype=dt)
    if HAS_V_INIT:
        v_first = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        v_first = tl.zeros([BLOCK], dtype=dt) + vr
    acc = tl.zeros([BLOCK], dtype=dt)
    n_chunks = tl.cdiv(T, CHUNK)
    for ci in range(trip_count(n_chunks)):
        c = n_chunks - 1 - ci
        t0 = c * CHUNK
        v = v_first
        for pc in range(trip_count(c)):  # the chunks before this one (all full)
            for j in tl.static_range(CHUNK):
                xt = tl.load(x_ptr + (pc * CHUNK + j) * step + offs, mask=mask, other=0.0).to(dt)
                h = _charge(v, xt, vr, tau, inv_tau, k, DECAY_INPUT, LEARN_TAU, TAU_POW2, IS_F64)
                v = _reset(h, _fire(h, vth, fire_at), vth, vr, SOFT_RESET)
        v_start = v
        hs = ()
        for j in tl.static_range(CHUNK):
            t = t0 + j
            xt = tl.load(x_ptr + t * step + offs, mask=offs < tl.where(t < T, step, 0), other=0.0).to(dt)
            h = _charge(v, xt, vr, tau, inv_tau, k, DECAY_INPUT, LEARN_TAU, TAU_POW2, IS_F64)
            v = _reset(h, _fire(h, vth, fire_at), vth, vr, SOFT_RESET)
            hs = hs + (h,)
        for j in tl.static_range(CHUNK - 1, -1, -1):
            t = t0 + j
            valid = t < T
            here = offs < tl.where(valid, step, 0)
            base = t * step
            h = hs[j]
            d = h - vth  # the saved path's d, in the compute type
            s = _fire(h, vth, fire_at)
            g = gv
            if HAS_GRAD_V_SEQ:
                g = g + tl.load(grad_v_seq_ptr + base + offs, mask=here, other=0.0).to(dt)
            if HAS_GRAD_SPIKES:
                gs = tl.load(grad_spikes_ptr + base + offs, mask=here, other=0.0).to(dt)
            else:
                gs = tl.zeros([BLOCK], dtype=dt)
            sg = _surrogate_grad_c(d, alpha, sgc, SURROGATE, IS_F64)
            gh = _grad_h(gs, g, sg, d, s, vth, vr, nd, SOFT_RESET)
            if LEARN_TAU:
                if j > 0:
                    v_prev = _reset(hs[j - 1], _fire(hs[j - 1], vth, fire_at), vth, vr, SOFT_RESET)
                else:
                    v_prev = v_start
            else:
                v_prev = h  # unused
            gx, gv_new, term = _grad_in(gh, h, v_prev, vr, tau, inv_tau, decay_v, k, DECAY_INPUT, LEARN_TAU,
                                        TAU_POW2, IS_F64)
            tl.store(grad_x_ptr + base + offs, gx.to(st), mask=here)
            gv = tl.where(valid, gv_new, gv)
            if LEARN_TAU:
                acc += tl.where(valid, term, 0.0)
    tl.store(grad_v_init_ptr + offs, gv.to(st), mask=mask)
    if LEARN_TAU:  # the lanes' sums over the steps, added across the block in fp64
        tl.store(partials_ptr + tl.program_id(0), tl.sum(tl.where(mask, acc, 0.0).to(tl.float64), axis=0))


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
    return _reset(h, s, vth, vr, SOFT_RESET)


@triton.jit(do_not_specialize=["T", "N", "tau_bits", "vth_bits", "vr_bits", "alpha_bits", "sgc_bits", "nd_bits",
                                "fire_at"])
def _backward_kernel(
    grad_spikes_ptr, grad_v_last_ptr, grad_v_seq_ptr, saved_ptr, v_init_ptr, k_ptr, sg_ptr,
    grad_x_ptr, grad_v_init_ptr, partials_ptr,
    T, N, tau_bits, vth_bits, vr_bits, alpha_bits, sgc_bits, nd_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, SURROGATE: tl.constexpr,
    HAS_GRAD_SPIKES: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, HAS_GRAD_V_SEQ: tl.constexpr,
    HAS_V_INIT: tl.constexpr, SAVE_H: tl.constexpr, HAS_SG: tl.constexpr, LEARN_TAU: tl.constexpr,
    TAU_POW2: tl.constexpr, N_ALIGNED: tl.constexpr, IS_F64: tl.constexpr, BLOCK: tl.constexpr,
):
    """The saved-distance backward (the reverse recurrence of DESIGN.md,
    ``step_backward`` of lif_math.h). grad_spikes, grad_v_seq, saved, grad_x: [T, N];
    grad_v_last, v_init, grad_v_init: [N]. saved: d (SAVE_H False) or h. HAS_SG: g'(d)
    is read from sg ([T, N], compute type; any surrogate) instead of the built-in
    SURROGATE. LEARN_TAU: v_{t-1} from step t-1's saved value (v_init for t = 0) enters
    this program's share of dL/dk in partials[program_id]. nd is 0 with detach_reset,
    else 1 (a run-time value, as in lif_math.h: half the variants to compile)."""
    tau, inv_tau, decay_v, k = _decay(tau_bits, k_ptr, IS_F64, LEARN_TAU)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    alpha = scalar(alpha_bits, IS_F64)
    sgc = scalar(sgc_bits, IS_F64)  # _surrogate_const(alpha, SURROGATE), from the host
    nd = scalar(nd_bits, IS_F64)
    dt = vth.dtype
    st = grad_x_ptr.dtype.element_ty
    offs, step, mask = _lanes(N, N_ALIGNED, BLOCK)
    if HAS_GRAD_V_LAST:
        gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        gv = tl.zeros([BLOCK], dtype=dt)
    if HAS_V_INIT:
        v_first = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        v_first = tl.zeros([BLOCK], dtype=dt) + vr
    acc = tl.zeros([BLOCK], dtype=dt)
    # Loads of step t - 1 are issued before step t's arithmetic and store (prefetch);
    # with LEARN_TAU step t needs step t - 1's saved value too: those run two ahead.
    last = (T - 1) * step
    q_cur = tl.load(saved_ptr + last + offs, mask=mask, other=0.0)
    if LEARN_TAU:
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
        if LEARN_TAU:
            qp = widen(q_prev, dt)
            q_cur = q_prev
            q_prev = tl.load(saved_ptr + (prev - step) + offs, mask=offs < tl.where(t > 1, step, 0), other=0.0)
        else:
            q_cur = tl.load(saved_ptr + prev + offs, mask=more, other=0.0)
        if SAVE_H:
            h = q
            d = q - vth
        else:
            h = q + vth  # PLIF's 16-bit storage only (LIF does not use h here)
            d = q
        if HAS_SG:
            sg = sg_next.to(dt)
            sg_next = tl.load(sg_ptr + prev + offs, mask=more, other=0.0)
        else:
            sg = _surrogate_grad_c(d, alpha, sgc, SURROGATE, IS_F64)
        g = gv
        if HAS_GRAD_V_SEQ:
            g = g + gq_next.to(dt)
            gq_next = tl.load(grad_v_seq_ptr + prev + offs, mask=more, other=0.0)
        if HAS_GRAD_SPIKES:
            gs = gs_next.to(dt)
            gs_next = tl.load(grad_spikes_ptr + prev + offs, mask=more, other=0.0)
        else:
            gs = tl.zeros([BLOCK], dtype=dt)
        gh = _grad_h(gs, g, sg, d, fires(d, fire_at).to(dt), vth, vr, nd, SOFT_RESET)
        if LEARN_TAU:
            v_prev = tl.where(t > 0, _v_from_saved(qp, vth, vr, fire_at, SOFT_RESET, SAVE_H), v_first)
        else:
            v_prev = h  # unused
        gx, gv, term = _grad_in(gh, h, v_prev, vr, tau, inv_tau, decay_v, k, DECAY_INPUT, LEARN_TAU, TAU_POW2,
                                IS_F64)
        tl.store(grad_x_ptr + base + offs, gx.to(st), mask=mask)
        if LEARN_TAU:
            acc += term
    tl.store(grad_v_init_ptr + offs, gv.to(st), mask=mask)
    if LEARN_TAU:  # the lanes' sums over the steps, added across the block in fp64
        tl.store(partials_ptr + tl.program_id(0), tl.sum(tl.where(mask, acc, 0.0).to(tl.float64), axis=0))


# --------------------------------------------------------------------------- launch (LIF and PLIF)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def tau_is_power_of_two(tau: float, cdt: torch.dtype) -> bool:
    """Whether tau, rounded to the compute type cdt, is a power of two whose reciprocal is
    exactly representable there: then x * (1/tau) is x / tau correctly rounded."""
    if cdt == torch.float32:
        tau = struct.unpack("<f", struct.pack("<f", tau))[0]
    if not math.isfinite(tau) or tau == 0.0 or abs(math.frexp(tau)[0]) != 0.5:
        return False
    inv = 1.0 / tau  # exact in double (a power of two within double's range)
    if cdt == torch.float32:
        try:
            inv32 = struct.unpack("<f", struct.pack("<f", inv))[0]
        except OverflowError:
            return False
        return inv32 * tau == 1.0
    return inv * tau == 1.0 and inv != 0.0


def _rounded(value: float, cdt: torch.dtype) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0] if cdt == torch.float32 else value


def surrogate_const(alpha: float, surrogate: int, cdt: torch.dtype) -> float:
    """``_surrogate_const`` of the kernels on the host, to the bit once rounded to cdt
    (``scalar_bits``): atan (pi / 2) * alpha, piecewise_exp alpha / 2, erf alpha /
    sqrt(pi), else alpha, from the operands rounded to cdt. In fp32 the double
    product of two fp32 numbers is exact and a double quotient rounds to the correctly
    rounded fp32 one (53 >= 2 * 24 + 2 bits), so the result is the kernel's own."""
    a = _rounded(alpha, cdt)
    if surrogate == 1:
        return _rounded(math.pi, cdt) / 2.0 * a
    if surrogate == 3:
        return a / 2.0
    if surrogate == 6:
        return a / _rounded(math.sqrt(math.pi), cdt)
    return a


def recompute_chunk(T: int) -> int:
    """Steps per chunk of the recomputing backward: min(next_pow2(T), RECOMPUTE_CHUNK)."""
    return min(triton.next_power_of_2(max(T, 1)), RECOMPUTE_CHUNK)


def recomputes(x: torch.Tensor) -> bool:
    """Whether a training forward of x saves x and backward recomputes from it (T <=
    RECOMPUTE_MAX_STEPS: at most two chunks), else the saved-distance path."""
    return x.dim() >= 1 and 1 <= x.shape[0] <= RECOMPUTE_MAX_STEPS


def check_k(k: torch.Tensor, x: torch.Tensor, what: str) -> torch.dtype:
    cdt = compute_dtype(x.dtype)
    if k.dim() != 0 or k.dtype != cdt or k.device != x.device:
        raise ValueError(f"tks_kernels Triton {what}: k must be a 0-dim {cdt} tensor on {x.device}, "
                         f"got {k.dtype} of shape {tuple(k.shape)} on {k.device}")
    return cdt


def _check_forward(x, v_init, what):
    check_device(x)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"tks_kernels Triton {what}: x must be [T, *] with T >= 1, got shape {tuple(x.shape)}")
    if v_init is not None and (v_init.shape != x.shape[1:] or v_init.dtype != x.dtype or v_init.device != x.device):
        raise ValueError(
            f"tks_kernels Triton {what}: v_init must be {x.dtype} of shape {tuple(x.shape[1:])} on {x.device}, "
            f"got {v_init.dtype} of shape {tuple(v_init.shape)} on {v_init.device}"
        )


def _check_grads(ref: torch.Tensor, what: str, **tensors):
    for name, g in tensors.items():
        shape = ref.shape[1:] if name in ("grad_v_last", "v_init") else ref.shape
        if g is not None and (g.shape != shape or g.device != ref.device):
            raise ValueError(f"tks_kernels Triton {what}: {name} must have shape {tuple(shape)} on {ref.device}, "
                             f"got {tuple(g.shape)} on {g.device}")


def _check_surrogate(surrogate: int, what: str):
    if not 0 <= surrogate < 7:
        raise ValueError(f"tks_kernels Triton {what}: surrogate id must be in [0, 7), got {surrogate}")


def _tau_args(tau: float, cdt: torch.dtype, k: Optional[torch.Tensor]):
    """(tau_bits, TAU_POW2): PLIF (k given) passes tau = 1, unused."""
    if k is not None:
        return scalar_bits(1.0, cdt), False
    return scalar_bits(tau, cdt), tau_is_power_of_two(tau, cdt)


def run_forward(x: torch.Tensor, v_init: Optional[torch.Tensor], k: Optional[torch.Tensor], tau: float,
                decay_input: bool, v_threshold: float, v_reset: float, soft_reset: bool, save: int,
                return_v_seq: bool, fire_at_threshold: bool, what: str = "LIF"):
    """The forward kernel for x [T, *] (PLIF when k [] is given, else LIF with tau):
    (spikes [T, *], v_last [*], v_seq [T, *] or [0], saved [T, *] or [0]). save: SAVE_*."""
    _check_forward(x, v_init, what)
    cdt = check_k(k, x, what) if k is not None else compute_dtype(x.dtype)
    xd, x0, spikes, v_last, v_seq, saved = forward_outputs(x, save != SAVE_NOTHING, return_v_seq)
    T, N = xd.shape[0], x0.numel()
    if N == 0:
        return spikes, v_last, v_seq, saved
    v0 = like_layout(v_init, x0) if v_init is not None else None
    tau_bits, pow2 = _tau_args(tau, cdt, k)
    block, warps = launch_config(N, x.dtype)
    with on_device(x):
        _forward_kernel[(triton.cdiv(N, block),)](
            xd, v0 if v0 is not None else xd, k if k is not None else xd, spikes, v_last,
            v_seq if return_v_seq else spikes, saved if save != SAVE_NOTHING else spikes,
            T, N, tau_bits, scalar_bits(v_threshold, cdt), scalar_bits(0.0 if soft_reset else v_reset, cdt),
            int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, HAS_V_INIT=v0 is not None, SAVE=save,
            SAVE_V_SEQ=return_v_seq, KEEP_SIGN=x.dtype in (torch.float16, torch.bfloat16),
            D_MAX=distance_max(x.dtype), LEARN_TAU=k is not None, TAU_POW2=pow2, N_ALIGNED=N % 16 == 0,
            IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
        )
    return spikes, v_last, v_seq, saved


def run_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, tau, decay_input, v_threshold, v_reset,
                 soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, sg, what: str = "LIF"):
    """The saved-distance backward: (grad_x [T, *], grad_v_init [*], grad_k [] or None)."""
    check_device(saved)
    _check_surrogate(surrogate, what)
    q = time_major_dense(saved)
    grad_x, grad_v_init = torch.empty_like(q), torch.empty_like(q[0])
    _check_grads(q, what, grad_spikes=grad_spikes, grad_v_seq=grad_v_seq, grad_v_last=grad_v_last, v_init=v_init)
    cdt = check_k(k, saved, what) if k is not None else compute_dtype(q.dtype)
    if sg is not None and (sg.shape != q.shape or sg.dtype != cdt or sg.device != q.device):
        raise ValueError(f"tks_kernels Triton {what}: sg must be {cdt} of shape {tuple(q.shape)} on {q.device}, "
                         f"got {sg.dtype} of shape {tuple(sg.shape)} on {sg.device}")
    T, N = q.shape[0], q[0].numel()
    if N == 0:
        return grad_x, grad_v_init, (torch.zeros_like(k) if k is not None else None)
    sgd = sg_like(sg, q) if sg is not None else None
    gs = like_layout(grad_spikes, q) if grad_spikes is not None else None
    gq = like_layout(grad_v_seq, q) if grad_v_seq is not None else None
    gl = like_layout(grad_v_last, q[0]) if grad_v_last is not None else None
    v0 = like_layout(v_init, q[0]) if (v_init is not None and k is not None) else None
    tau_bits, pow2 = _tau_args(tau, cdt, k)
    block, warps = launch_config(N, q.dtype) if k is None else launch_config_k(N, q.dtype)
    grid = triton.cdiv(N, block)
    partials = torch.empty(grid if k is not None else 0, dtype=torch.float64, device=q.device)
    with on_device(q):
        _backward_kernel[(grid,)](
            gs if gs is not None else q, gl if gl is not None else q, gq if gq is not None else q, q,
            v0 if v0 is not None else q, k if k is not None else q, sgd if sgd is not None else q,
            grad_x, grad_v_init, partials if k is not None else q,
            T, N, tau_bits, scalar_bits(v_threshold, cdt), scalar_bits(0.0 if soft_reset else v_reset, cdt),
            scalar_bits(alpha, cdt), scalar_bits(surrogate_const(alpha, surrogate, cdt), cdt),
            scalar_bits(0.0 if detach_reset else 1.0, cdt), int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, SURROGATE=surrogate if sgd is None else 0,
            HAS_GRAD_SPIKES=gs is not None, HAS_GRAD_V_LAST=gl is not None, HAS_GRAD_V_SEQ=gq is not None,
            HAS_V_INIT=v0 is not None, SAVE_H=k is not None and q.dtype in (torch.float32, torch.float64),
            HAS_SG=sgd is not None, LEARN_TAU=k is not None, TAU_POW2=pow2, N_ALIGNED=N % 16 == 0,
            IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps, enable_fp_fusion=False,
        )
    return grad_x, grad_v_init, (_grad_k(partials, k, decay_input) if k is not None else None)


def _grad_k(partials: torch.Tensor, k: torch.Tensor, decay_input: bool) -> torch.Tensor:
    total = partials.sum()
    if decay_input:
        total = total / k.double()
    return total.to(k.dtype)


def run_backward_x(grad_spikes, grad_v_last, grad_v_seq, x, v_init, k, tau, decay_input, v_threshold, v_reset,
                   soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, what: str = "LIF"):
    """The recomputing backward from x and v_init as forward got them:
    (grad_x [T, *], grad_v_init [*], grad_k [] or None)."""
    _check_forward(x, v_init, what)
    _check_surrogate(surrogate, what)
    xd = time_major_dense(x)
    grad_x, grad_v_init = torch.empty_like(xd), torch.empty_like(xd[0])
    _check_grads(xd, what, grad_spikes=grad_spikes, grad_v_seq=grad_v_seq, grad_v_last=grad_v_last)
    cdt = check_k(k, x, what) if k is not None else compute_dtype(x.dtype)
    T, N = xd.shape[0], xd[0].numel()
    if N == 0:
        return grad_x, grad_v_init, (torch.zeros_like(k) if k is not None else None)
    gs = like_layout(grad_spikes, xd) if grad_spikes is not None else None
    gq = like_layout(grad_v_seq, xd) if grad_v_seq is not None else None
    gl = like_layout(grad_v_last, xd[0]) if grad_v_last is not None else None
    v0 = like_layout(v_init, xd[0]) if v_init is not None else None
    tau_bits, pow2 = _tau_args(tau, cdt, k)
    chunk = recompute_chunk(T)
    block, warps = launch_config_x(N, x.dtype, chunk, ieee_div=k is None and not pow2)
    grid = triton.cdiv(N, block)
    partials = torch.empty(grid if k is not None else 0, dtype=torch.float64, device=x.device)
    with on_device(x):
        _backward_x_kernel[(grid,)](
            gs if gs is not None else xd, gl if gl is not None else xd, gq if gq is not None else xd, xd,
            v0 if v0 is not None else xd, k if k is not None else xd, grad_x, grad_v_init,
            partials if k is not None else xd,
            T, N, tau_bits, scalar_bits(v_threshold, cdt), scalar_bits(0.0 if soft_reset else v_reset, cdt),
            scalar_bits(alpha, cdt), scalar_bits(surrogate_const(alpha, surrogate, cdt), cdt),
            scalar_bits(0.0 if detach_reset else 1.0, cdt), int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, SURROGATE=surrogate,
            HAS_GRAD_SPIKES=gs is not None, HAS_GRAD_V_LAST=gl is not None, HAS_GRAD_V_SEQ=gq is not None,
            HAS_V_INIT=v0 is not None, LEARN_TAU=k is not None, TAU_POW2=pow2, CHUNK=chunk,
            N_ALIGNED=N % 16 == 0, IS_F64=cdt == torch.float64, BLOCK=block, num_warps=warps,
            enable_fp_fusion=False,
        )
    return grad_x, grad_v_init, (_grad_k(partials, k, decay_input) if k is not None else None)


def backward_x_outputs(x: torch.Tensor):
    """grad_x and grad_v_init as run_backward_x makes them (for the fake implementations)."""
    xd = time_major_dense(x)
    return torch.empty_like(xd), torch.empty_like(xd[0])


# --------------------------------------------------------------------------- LIF ops: saved distance


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
    return run_forward(x, v_init, None, tau, decay_input, v_threshold, v_reset, soft_reset,
                       SAVE_D if save_for_backward else SAVE_NOTHING, return_v_seq, fire_at_threshold)


@lif_forward_triton.register_fake
def _lif_forward_triton_fake(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                             detach_reset, save_for_backward, return_v_seq, fire_at_threshold=True):
    _, _, spikes, v_last, v_seq, d_saved = forward_outputs(x, save_for_backward, return_v_seq)
    return spikes, v_last, v_seq, d_saved


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
    grad_x, grad_v_init, _ = run_backward(grad_spikes, grad_v_last, grad_v_seq, d_saved, None, None, tau,
                                          decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                                          detach_reset, fire_at_threshold, sg)
    return grad_x, grad_v_init


@lif_backward_triton.register_fake
def _lif_backward_triton_fake(grad_spikes, grad_v_last, grad_v_seq, d_saved, *scalars, sg=None):
    return backward_x_outputs(d_saved)


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


# --------------------------------------------------------------------------- LIF ops: recompute


@torch.library.custom_op("tks_kernels::lif_forward_x_triton", mutates_args=())
def lif_forward_x_triton(
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
    return_v_seq: bool,
    fire_at_threshold: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, *] -> (spikes [T, *], v_last [*], v_seq [T, *] or [0]); differentiated, it
    keeps x and v_init themselves and backward recomputes from them."""
    spikes, v_last, v_seq, _ = run_forward(x, v_init, None, tau, decay_input, v_threshold, v_reset, soft_reset,
                                           SAVE_NOTHING, return_v_seq, fire_at_threshold)
    return spikes, v_last, v_seq


@lif_forward_x_triton.register_fake
def _lif_forward_x_triton_fake(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                               detach_reset, return_v_seq, fire_at_threshold=True):
    _, _, spikes, v_last, v_seq, _ = forward_outputs(x, False, return_v_seq)
    return spikes, v_last, v_seq


@torch.library.custom_op("tks_kernels::lif_backward_x_triton", mutates_args=())
def lif_backward_x_triton(
    grad_spikes: Optional[torch.Tensor],
    grad_v_last: Optional[torch.Tensor],
    grad_v_seq: Optional[torch.Tensor],
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
    fire_at_threshold: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of (spikes, v_last, v_seq) -> (grad_x [T, *], grad_v_init [*]) from the
    forward's own x and v_init (recomputed); a missing gradient counts as zero."""
    grad_x, grad_v_init, _ = run_backward_x(grad_spikes, grad_v_last, grad_v_seq, x, v_init, None, tau,
                                            decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                                            detach_reset, fire_at_threshold)
    return grad_x, grad_v_init


@lif_backward_x_triton.register_fake
def _lif_backward_x_triton_fake(grad_spikes, grad_v_last, grad_v_seq, x, v_init, *scalars, **kwargs):
    return backward_x_outputs(x)


def _setup_context_x(ctx, inputs, output):
    (x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     return_v_seq, fire_at_threshold) = inputs
    # The inputs themselves: autograd keeps them (no copy), and their version counters
    # refuse a backward after x or v_init was changed in place.
    ctx.save_for_backward(x, v_init)
    ctx.set_materialize_grads(False)
    ctx.scalars = (tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   fire_at_threshold)
    ctx.has_v_seq = return_v_seq
    ctx.has_v_init = v_init is not None


def _backward_x(ctx, grad_spikes, grad_v_last, grad_v_seq):
    x, v_init = ctx.saved_tensors
    grad_x, grad_v_init = lif_backward_x_triton(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, x, v_init, *ctx.scalars
    )
    return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * 10


lif_forward_x_triton.register_autograd(_backward_x, setup_context=_setup_context_x)


# --------------------------------------------------------------------------- API


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool):
    """Training with T <= RECOMPUTE_MAX_STEPS: ``tks_kernels::lif_forward_x_triton`` (x is
    kept, backward recomputes); longer: ``tks_kernels::lif_forward_triton`` saving d;
    no gradient needed: the inference kernel, nothing kept."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (v_init is not None and v_init.requires_grad))
    args = (cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
            cfg.detach_reset)
    if needs_grad and recomputes(x):
        spikes, v_last, v_seq = lif_forward_x_triton(x, v_init, *args, return_v_seq, cfg.fire_at_threshold)
    else:
        spikes, v_last, v_seq, _ = lif_forward_triton(x, v_init, *args, needs_grad, return_v_seq,
                                                      cfg.fire_at_threshold)
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    """x: [T, *] -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    return forward_op(x, v_init, cfg, return_v_seq)


# Any surrogate, fused (contracts.md section 3; the autograd wrapper is ops/lif/__init__.py):
# the saved-distance path, as g' of the user's surrogate is computed from d outside.

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
    return saved.to(compute_dtype(saved.dtype))
