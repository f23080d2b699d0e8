"""The fused BN + residual + LIF (or parametric LIF) op in Triton (issue 16): the
``torch.library`` custom ops ``tks_kernels::bn_lif_forward_triton`` /
``bn_lif_backward_triton`` and ``bn_plif_forward_triton`` / ``bn_plif_backward_triton``
(the schemas of ``cpu.py``'s ``bn_lif_*`` / ``bn_plif_*``: same arguments, outputs and
saved tensors; PLIF takes the decay k = sigmoid(w), a 0-dim tensor in the compute dtype,
where LIF takes tau, and its backward also returns dL/dk) and ``bn_stats_triton``, the
one-read batch statistics. LIF and PLIF are one kernel family: the same two kernels with
a ``LEARN_TAU`` flag, built on the jit functions of ``ops/lif/triton.py`` (``_charge``,
``_fire``, ``_reset``, ``_grad_h``, ``_grad_in``), as ``ops/plif/triton.py`` shares the
LIF kernels.

Layout. y is time-major dense (``[T, N]``, N = B*C*prod(spatial) per step) and each step
is ``[outer, C, inner]`` in memory (inner = H*W for NCHW, 1 for channels_last). Every
kernel walks 2-D tiles ``[ROWS, COLS]`` of a step viewed as a row-major matrix
``[R, K]``, COLS along memory, so that one channel is one row or one column of a tile:

- ``inner > 1`` (NCHW): ``[R, K] = [outer*C, inner]``, row r is channel r % C;
- ``inner == 1`` (channels_last, BatchNorm1d): ``[R, K] = [outer, C]``, column k is
  channel k.

Per-channel sums (the statistics; dL/dbeta and dL/dgamma's sums in backward) are
deterministic: each element's T steps are added in order in fp32, a tile's elements per
channel in fp64 (``tl.sum``), every program's partials are written to their own slot of a
``[2, P, C]`` fp64 buffer (no atomics), and ``_combine_kernel`` adds the P partials of
each channel in order. With rows as channels a partial is one row of one tile
(P = outer * column blocks); with columns as channels a program walks a fixed set of row
blocks (a persistent loop) and keeps one partial per channel (P = programs per channel
block).

Statistics: the sums of y - y_c and (y - y_c)^2, shifted by one value y_c of each channel
(its first element): mean = y_c + S1/n, var = S2/n - (S1/n)^2 in fp64 without the
cancellation of unshifted sums.

Backward recomputes the forward from y per tile, keeping h of the T steps (compute
dtype) in a scratch slot of its program (the grid is persistent: the slots are reused,
so they stay in L2), then runs the reverse recurrence (PLIF: v_{t-1} is the reset of
step t-1's h from the scratch, the forward's own value). gx is stored in the storage
dtype and read back (as the unfused LIF layer stores it) for the sums and BN's input
gradient, as the CPU kernel does.

dL/dk (PLIF) is deterministic and does not depend on the grid: each lane adds its
gh_t * dh_t/dk over the steps in the compute dtype, each tile its lanes in fp64
(``tl.sum``, a fixed tree for a given tile shape and warp count) into its own slot of a
``[tiles]`` fp64 buffer, and the slots are summed once in fp64 after the kernel (then
divided by k under decay_input, as ``ops/lif/triton.py``'s ``_grad_k``). So it has the
same bits run to run and for any number of programs (SM count); a different tile shape
(dtype, alignment) may change its last bits. The per-channel sums with channels as
columns (channels_last) are per program, so those do depend on the program count.

Math as ``ops/lif/triton.py``: the division by tau correctly rounded (a power of two
whose reciprocal is exact multiplies by 1/tau, ``tau_is_power_of_two`` through
``_tau_args``; any other tau ``div_rn``), no FMA contraction
(``enable_fp_fusion=False``), scalars as the bit patterns of their compute-type
roundings (the surrogate's loop-invariant constant from the host,
``surrogate_const``); BN's apply is ``y * scale + shift`` then ``+ residual``, the
unfused layers' order, so spikes equal the CPU kernel's bit for bit.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._layout import like_layout, time_major_dense
from .._triton_launch import INTERPRETED, check_device, on_device, scalar, scalar_bits, trip_count
from ..lif import LIFConfig
from ..lif.triton import (
    _charge,
    _decay,
    _fire,
    _grad_h,
    _grad_in,
    _grad_k,
    _reset,
    _surrogate_grad_c,
    _tau_args,
    check_k,
    surrogate_const,
)
from . import BNArgs
from ._fused import FusedOps, fused


# Elements per tile under the interpreter (one large tile: each program costs Python
# time); tests lower it to run many tiles and the persistent loops.
INTERPRETER_TILE = 4096
# Programs of the persistent kernels under the interpreter (few, so the tests run the
# persistent loops; tests change it to show that no result depends on it).
INTERPRETER_PROGRAMS = 3

# --------------------------------------------------------------------------- kernels


@triton.jit
def _tile(tile, n_kb, R, K, C, ROWS: tl.constexpr, COLS: tl.constexpr, CH_ON_ROWS: tl.constexpr):
    """(rows [ROWS], cols [COLS], offs [ROWS, COLS], mask, ch, ch_mask) of tile ``tile``
    (row block tile // n_kb, column block tile % n_kb) of a step ``[R, K]``; ch: the
    channel of each row ([ROWS, 1]) or column ([1, COLS])."""
    rb = tile // n_kb
    kb = tile - rb * n_kb
    rows = rb.to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = kb.to(tl.int64) * COLS + tl.arange(0, COLS)
    offs = rows[:, None] * K + cols[None, :]
    mask = (rows < R)[:, None] & (cols < K)[None, :]
    if CH_ON_ROWS:
        ch = (rows % C)[:, None]
        ch_mask = (rows < R)[:, None]
    else:
        ch = cols[None, :]
        ch_mask = (cols < K)[None, :]
    return rows, cols, offs, mask, ch, ch_mask


@triton.jit
def _store_partial(part_ptr, s1, s2, rows, cols, kb, n_kb, R, K, C, P, CH_ON_ROWS: tl.constexpr):
    """One tile's (rows as channels) or one program's (columns as channels) per-channel
    partials s1, s2 (fp64 [ROWS] or [COLS]) into part [2, P, C]."""
    if CH_ON_ROWS:
        # row r = o * C + c -> partial (o * n_kb + kb, c)
        c = rows % C
        idx = ((rows - c) * n_kb + kb * C) + c
        m = rows < R
    else:
        idx = cols
        m = cols < K
    tl.store(part_ptr + idx, s1, mask=m)
    tl.store(part_ptr + P * C + idx, s2, mask=m)


@triton.jit(do_not_specialize=["T", "n_tiles", "n_kb", "n_prog", "C", "P"])
def _bn_stats_kernel(
    y_ptr, part_ptr, T, N, R, K, C, n_kb, n_tiles, n_prog, P,
    CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):
    """Per-channel sums of y - y_c and (y - y_c)^2 (y_c: channel c's first element) of
    the program's tiles ``pid, pid + n_prog, ...`` into part [2, P, C] (fp64)."""
    dt = tl.float64 if IS_F64 else tl.float32
    pid = tl.program_id(0)
    step = N.to(tl.int64)
    acc1 = tl.zeros([COLS], dtype=tl.float64)
    acc2 = tl.zeros([COLS], dtype=tl.float64)
    for it in range(trip_count((n_tiles - pid + n_prog - 1) // n_prog)):
        tile = pid + it * n_prog
        rows, cols, offs, mask, ch, ch_mask = _tile(tile, n_kb, R, K, C, ROWS, COLS, CH_ON_ROWS)
        # channel c's first element: step 0, outer 0, inner 0, at c * inner
        if CH_ON_ROWS:
            shift = tl.load(y_ptr + ch * K, mask=ch_mask, other=0.0).to(dt)
        else:
            shift = tl.load(y_ptr + ch, mask=ch_mask, other=0.0).to(dt)
        s1 = tl.zeros([ROWS, COLS], dtype=dt)
        s2 = tl.zeros([ROWS, COLS], dtype=dt)
        for t in range(trip_count(T)):
            yv = tl.load(y_ptr + t * step + offs, mask=mask, other=0.0).to(dt)
            d = tl.where(mask, yv - shift, 0.0)
            s1 += d
            s2 += d * d
        if CH_ON_ROWS:
            _store_partial(part_ptr, tl.sum(s1.to(tl.float64), axis=1), tl.sum(s2.to(tl.float64), axis=1), rows,
                           cols, tile % n_kb, n_kb, R, K, C, P, CH_ON_ROWS)
        else:
            acc1 += tl.sum(s1.to(tl.float64), axis=0)
            acc2 += tl.sum(s2.to(tl.float64), axis=0)
    if not CH_ON_ROWS:
        # this program's tiles are one column block: partial (pid // n_kb, c)
        cols = (pid % n_kb).to(tl.int64) * COLS + tl.arange(0, COLS)
        _store_partial(part_ptr + (pid // n_kb).to(tl.int64) * C, acc1, acc2, cols, cols, 0, n_kb, R, K, C, P,
                       CH_ON_ROWS)


@triton.jit(do_not_specialize=["P", "C"])
def _combine_kernel(part_ptr, out_ptr, P, C, PB: tl.constexpr, CB: tl.constexpr):
    """out[j, c] = sum over p of part[j, p, c] (fp64, j = 0, 1), in order of p blocks;
    program (c block, j)."""
    c = tl.program_id(0).to(tl.int64) * CB + tl.arange(0, CB)
    j = tl.program_id(1).to(tl.int64)
    base = part_ptr + j * P * C
    acc = tl.zeros([PB, CB], dtype=tl.float64)
    for i in range(trip_count((P + PB - 1) // PB)):
        p = i * PB + tl.arange(0, PB).to(tl.int64)
        m = (p < P)[:, None] & (c < C)[None, :]
        acc += tl.load(base + p[:, None] * C + c[None, :], mask=m, other=0.0)
    tl.store(out_ptr + j * C + c, tl.sum(acc, axis=0), mask=c < C)


@triton.jit(do_not_specialize=["T", "n_kb", "C", "tau_bits", "vth_bits", "vr_bits", "fire_at"])
def _bn_lif_forward_kernel(
    y_ptr, res_ptr, scale_ptr, shift_ptr, v_init_ptr, k_ptr, spikes_ptr, v_last_ptr,
    T, N, R, K, C, n_kb, tau_bits, vth_bits, vr_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, HAS_RES: tl.constexpr, HAS_V_INIT: tl.constexpr,
    LEARN_TAU: tl.constexpr, TAU_POW2: tl.constexpr, CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr,
):
    """x = y * scale[c] + shift[c] (+ residual), then the LIF recurrence of
    ``ops/lif/triton.py`` (its jit functions: LEARN_TAU the parametric LIF with the decay
    k loaded from k_ptr; TAU_POW2 the product by the exact 1/tau); writes the spikes
    [T, N] and v_last [N]."""
    tau, inv_tau, decay_v, k = _decay(tau_bits, k_ptr, IS_F64, LEARN_TAU)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    dt = vth.dtype
    st = spikes_ptr.dtype.element_ty
    rows, cols, offs, mask, ch, ch_mask = _tile(tl.program_id(0), n_kb, R, K, C, ROWS, COLS, CH_ON_ROWS)
    a = tl.load(scale_ptr + ch, mask=ch_mask, other=0.0)
    b = tl.load(shift_ptr + ch, mask=ch_mask, other=0.0)
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(dt)
    else:
        v = tl.zeros([ROWS, COLS], dtype=dt) + vr
    step = N.to(tl.int64)
    for t in range(trip_count(T)):
        base = t * step
        x = tl.load(y_ptr + base + offs, mask=mask, other=0.0).to(dt) * a + b
        if HAS_RES:
            x = x + tl.load(res_ptr + base + offs, mask=mask, other=0.0).to(dt)
        h = _charge(v, x, vr, tau, inv_tau, k, DECAY_INPUT, LEARN_TAU, TAU_POW2, IS_F64)
        s = _fire(h, vth, fire_at)
        v = _reset(h, s, vth, vr, SOFT_RESET)
        tl.store(spikes_ptr + base + offs, s.to(st), mask=mask)
    tl.store(v_last_ptr + offs, v.to(st), mask=mask)


@triton.jit(do_not_specialize=["T", "n_kb", "n_tiles", "n_prog", "C", "P", "tau_bits", "vth_bits", "vr_bits",
                               "alpha_bits", "sgc_bits", "nd_bits", "fire_at"])
def _bn_lif_backward_kernel(
    grad_spikes_ptr, grad_v_last_ptr, y_ptr, res_ptr, scale_ptr, shift_ptr, center_ptr, v_init_ptr, k_ptr,
    gx_ptr, dy_ptr, grad_v_init_ptr, part_ptr, kpart_ptr, scratch_ptr,
    T, N, R, K, C, n_kb, n_tiles, n_prog, P, tau_bits, vth_bits, vr_bits, alpha_bits, sgc_bits, nd_bits, fire_at,
    DECAY_INPUT: tl.constexpr, SOFT_RESET: tl.constexpr, SURROGATE: tl.constexpr, HAS_RES: tl.constexpr,
    HAS_V_INIT: tl.constexpr, HAS_GRAD_V_LAST: tl.constexpr, STORE_GX: tl.constexpr, STORE_DY: tl.constexpr,
    LEARN_TAU: tl.constexpr, TAU_POW2: tl.constexpr, CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr,
):
    """The program's tiles ``pid, pid + n_prog, ...``: the forward again (h of every step
    into the program's scratch slot [T, ROWS*COLS]), the reverse recurrence of
    ``lif_math.h``'s ``step_backward`` (the jit functions of ``ops/lif/triton.py``); gx
    [T, N] in the storage dtype (STORE_GX), dy = gx * scale (STORE_DY: running
    statistics), grad_v_init [N], and the per-channel partials of sum gx and sum gx *
    (y - center) into part [2, P, C] (fp64). LEARN_TAU (the parametric LIF, decay k
    from k_ptr): v_{t-1} is the reset of step t-1's h from the scratch (v_init at t = 0),
    and each tile's sum of gh_t * dh_t/dk (per lane over the steps in the compute type,
    over the tile's lanes in fp64) goes to kpart[tile]."""
    tau, inv_tau, decay_v, k = _decay(tau_bits, k_ptr, IS_F64, LEARN_TAU)
    vth = scalar(vth_bits, IS_F64)
    vr = scalar(vr_bits, IS_F64)
    alpha = scalar(alpha_bits, IS_F64)
    sgc = scalar(sgc_bits, IS_F64)  # _surrogate_const(alpha, SURROGATE), from the host
    nd = scalar(nd_bits, IS_F64)
    dt = vth.dtype
    st = y_ptr.dtype.element_ty
    pid = tl.program_id(0)
    step = N.to(tl.int64)
    slot = scratch_ptr + pid.to(tl.int64) * T * (ROWS * COLS)
    local = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
    acc1 = tl.zeros([COLS], dtype=tl.float64)
    acc2 = tl.zeros([COLS], dtype=tl.float64)
    for it in range(trip_count((n_tiles - pid + n_prog - 1) // n_prog)):
        tile = pid + it * n_prog
        rows, cols, offs, mask, ch, ch_mask = _tile(tile, n_kb, R, K, C, ROWS, COLS, CH_ON_ROWS)
        a = tl.load(scale_ptr + ch, mask=ch_mask, other=0.0)
        b = tl.load(shift_ptr + ch, mask=ch_mask, other=0.0)
        m = tl.load(center_ptr + ch, mask=ch_mask, other=0.0)
        if HAS_V_INIT:
            v = tl.load(v_init_ptr + offs, mask=mask, other=0.0).to(dt)
        else:
            v = tl.zeros([ROWS, COLS], dtype=dt) + vr
        v_first = v
        for t in range(trip_count(T)):
            base = t * step
            x = tl.load(y_ptr + base + offs, mask=mask, other=0.0).to(dt) * a + b
            if HAS_RES:
                x = x + tl.load(res_ptr + base + offs, mask=mask, other=0.0).to(dt)
            h = _charge(v, x, vr, tau, inv_tau, k, DECAY_INPUT, LEARN_TAU, TAU_POW2, IS_F64)
            tl.store(slot + t * (ROWS * COLS) + local, h)
            v = _reset(h, _fire(h, vth, fire_at), vth, vr, SOFT_RESET)
        if HAS_GRAD_V_LAST:
            gv = tl.load(grad_v_last_ptr + offs, mask=mask, other=0.0).to(dt)
        else:
            gv = tl.zeros([ROWS, COLS], dtype=dt)
        p1 = tl.zeros([ROWS, COLS], dtype=dt)
        p2 = tl.zeros([ROWS, COLS], dtype=dt)
        kacc = tl.zeros([ROWS, COLS], dtype=dt)
        if LEARN_TAU:
            # step t - 1's h is loaded at step t (the previous membrane of dL/dk, then the
            # next step's h: still one scratch load per step)
            h_next = tl.load(slot + (T - 1) * (ROWS * COLS) + local)
        for i in range(trip_count(T)):
            t = T - 1 - i
            base = t * step
            if LEARN_TAU:
                h = h_next
                h_next = tl.load(slot + tl.maximum(t - 1, 0) * (ROWS * COLS) + local)
            else:
                h = tl.load(slot + t * (ROWS * COLS) + local)
            d = h - vth
            sg = _surrogate_grad_c(d, alpha, sgc, SURROGATE, IS_F64)
            gs = tl.load(grad_spikes_ptr + base + offs, mask=mask, other=0.0).to(dt)
            gh = _grad_h(gs, gv, sg, d, _fire(h, vth, fire_at), vth, vr, nd, SOFT_RESET)
            if LEARN_TAU:
                v_prev = tl.where(t > 0, _reset(h_next, _fire(h_next, vth, fire_at), vth, vr, SOFT_RESET), v_first)
            else:
                v_prev = h  # unused
            gx, gv, term = _grad_in(gh, h, v_prev, vr, tau, inv_tau, decay_v, k, DECAY_INPUT, LEARN_TAU, TAU_POW2,
                                    IS_F64)
            if LEARN_TAU:
                kacc += term
            # gx as the unfused LIF layer stores it; the sums and BN's gradient read it back
            gxs = gx.to(st)
            gx = tl.where(mask, gxs.to(dt), 0.0)
            if STORE_GX:
                tl.store(gx_ptr + base + offs, gxs, mask=mask)
            if STORE_DY:
                tl.store(dy_ptr + base + offs, (gx * a).to(st), mask=mask)
            yc = tl.load(y_ptr + base + offs, mask=mask, other=0.0).to(dt) - m
            p1 += gx
            p2 += gx * yc
        if HAS_V_INIT:
            tl.store(grad_v_init_ptr + offs, gv.to(st), mask=mask)
        if LEARN_TAU:  # one fp64 partial per tile: the sum does not depend on the grid
            tl.store(kpart_ptr + tile, tl.sum(tl.sum(tl.where(mask, kacc, 0.0).to(tl.float64), axis=1), axis=0))
        if CH_ON_ROWS:
            _store_partial(part_ptr, tl.sum(p1.to(tl.float64), axis=1), tl.sum(p2.to(tl.float64), axis=1), rows,
                           cols, tile % n_kb, n_kb, R, K, C, P, CH_ON_ROWS)
        else:
            acc1 += tl.sum(p1.to(tl.float64), axis=0)
            acc2 += tl.sum(p2.to(tl.float64), axis=0)
    if not CH_ON_ROWS:
        cols = (pid % n_kb).to(tl.int64) * COLS + tl.arange(0, COLS)
        _store_partial(part_ptr + (pid // n_kb).to(tl.int64) * C, acc1, acc2, cols, cols, 0, n_kb, R, K, C, P,
                       CH_ON_ROWS)


@triton.jit(do_not_specialize=["T", "n_kb", "C"])
def _bn_input_grad_kernel(
    gx_ptr, y_ptr, scale_ptr, center_ptr, pc_ptr, qc_ptr, dy_ptr, T, N, R, K, C, n_kb,
    CH_ON_ROWS: tl.constexpr, IS_F64: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):
    """BN's input gradient with batch statistics: dy = gx * scale + (y - center) * pc + qc
    (dy may be gx itself: each element is read before it is written)."""
    dt = tl.float64 if IS_F64 else tl.float32
    st = dy_ptr.dtype.element_ty
    rows, cols, offs, mask, ch, ch_mask = _tile(tl.program_id(0), n_kb, R, K, C, ROWS, COLS, CH_ON_ROWS)
    a = tl.load(scale_ptr + ch, mask=ch_mask, other=0.0)
    m = tl.load(center_ptr + ch, mask=ch_mask, other=0.0)
    pc = tl.load(pc_ptr + ch, mask=ch_mask, other=0.0)
    qc = tl.load(qc_ptr + ch, mask=ch_mask, other=0.0)
    step = N.to(tl.int64)
    for t in range(trip_count(T)):
        base = t * step
        gx = tl.load(gx_ptr + base + offs, mask=mask, other=0.0).to(dt)
        yc = tl.load(y_ptr + base + offs, mask=mask, other=0.0).to(dt) - m
        tl.store(dy_ptr + base + offs, (gx * a + yc * pc + qc).to(st), mask=mask)


# --------------------------------------------------------------------------- launch


class _Geometry:
    """The tiling of a time-major dense y [T, B, C, *] (see the module docstring)."""

    def __init__(self, y: torch.Tensor, backward: bool = False):
        self.backward = backward
        self.f64 = y.dtype == torch.float64
        self.T = y.shape[0]
        self.C = y.shape[2]
        self.N = y[0].numel()
        inner = y.stride(2) if self.C > 1 and self.N > 0 else 1
        self.ch_on_rows = inner > 1
        self.R, self.K = (self.N // inner, inner) if self.ch_on_rows else (self.N // max(self.C, 1), self.C)
        self.outer = self.N // max(self.C * inner, 1)
        if INTERPRETED:
            tile = INTERPRETER_TILE
        elif self.K % 16:
            # no vector access: each element's scalar access has its own 64-bit address
            # (4 per thread keeps backward within the registers, tests/test_codegen_triton.py)
            tile = 512
        else:
            # 16-byte accesses: two per thread and stream (4 warps), one in backward (8
            # warps, so a thread keeps half the elements, tests/test_codegen_triton.py)
            tile = {2: 2048, 4: 1024, 8: 512}[y.element_size()]
        self.cols = min(triton.next_power_of_2(max(self.K, 1)), tile)
        self.rows = max(1, tile // self.cols)
        self.n_kb = triton.cdiv(self.K, self.cols)
        self.n_rb = triton.cdiv(self.R, self.rows)
        self.n_tiles = self.n_kb * self.n_rb

    def programs(self, device: torch.device) -> Tuple[int, int]:
        """(programs of the persistent kernels, P = partial rows per channel). Columns as
        channels: a multiple of n_kb programs, so that each program's tiles are one
        column block."""
        if INTERPRETED:
            target = INTERPRETER_PROGRAMS
        else:
            target = 8 * _sm_count(device)
        if self.ch_on_rows:
            return min(self.n_tiles, target), self.outer * self.n_kb
        per_cb = max(1, min(self.n_rb, target // self.n_kb))
        return per_cb * self.n_kb, per_cb

    def args(self):
        return self.T, self.N, self.R, self.K, self.C, self.n_kb

    def meta(self, dtype: torch.dtype):
        # backward: 8 warps on 16-bit and fp32 aligned tiles, one 16-byte access per thread
        # and stream (with 4 warps some fp32 tiles spilled under Triton 3.9)
        aligned = self.cols * self.rows > 512
        warps = 1 if INTERPRETED else (8 if self.backward and aligned and not self.f64 else 4)
        return dict(CH_ON_ROWS=self.ch_on_rows, IS_F64=dtype == torch.float64, ROWS=self.rows, COLS=self.cols,
                    num_warps=warps)


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of device (an H100/H200's 132 where there is no CUDA
    device: tests/triton_codegen.py compiles the launches of CPU tensors)."""
    if device.type != "cuda":
        return 132
    return torch.cuda.get_device_properties(device).multi_processor_count


def _combine(part: torch.Tensor, C: int) -> torch.Tensor:
    """[2, P, C] fp64 partials -> [2, C] fp64 sums, in a fixed order."""
    P = part.shape[1]
    out = torch.empty(2, C, dtype=torch.float64, device=part.device)
    cb = min(triton.next_power_of_2(C), 64)
    pb = max(1, min(triton.next_power_of_2(P), 4096 // cb))
    _combine_kernel[(triton.cdiv(C, cb), 2)](part, out, P, C, PB=pb, CB=cb, num_warps=1 if INTERPRETED else 4)
    return out


def _check(y: torch.Tensor, name: str = "y") -> torch.Tensor:
    check_device(y)
    if y.dim() < 3 or y.shape[0] < 1:
        raise ValueError(f"tks_kernels Triton BN + LIF: {name} must be [T, B, C, *] with T >= 1, got shape "
                         f"{tuple(y.shape)}")
    return time_major_dense(y)


def _check_vectors(y: torch.Tensor, **vectors: torch.Tensor) -> None:
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    for name, v in vectors.items():
        if v.shape != (y.shape[2],) or v.dtype != dtype or not v.is_contiguous() or v.device != y.device:
            raise ValueError(f"tks_kernels Triton BN + LIF: {name} must be a contiguous [{y.shape[2]}] {dtype} "
                             f"vector on {y.device}, got {tuple(v.shape)} {v.dtype} on {v.device}")


def _check_like(t: Optional[torch.Tensor], ref: torch.Tensor, name: str) -> Optional[torch.Tensor]:
    """t (ref's shape, dtype and device) with ref's strides, or None."""
    if t is None:
        return None
    if t.shape != ref.shape or t.device != ref.device:
        raise ValueError(f"tks_kernels Triton BN + LIF: {name} must have shape {tuple(ref.shape)} on {ref.device}, "
                         f"got {tuple(t.shape)} on {t.device}")
    return like_layout(t.to(ref.dtype), ref)


@torch.library.custom_op("tks_kernels::bn_stats_triton", mutates_args=())
def bn_stats_triton(y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """y [T, B, C, *] -> (mean [C], var [C]) over every dimension but C, fp64, the
    variance biased; one read of y, deterministic."""
    y = _check(y)
    g = _Geometry(y)
    if g.N == 0:
        raise ValueError(f"tks_kernels Triton BN + LIF: batch statistics of an empty y {tuple(y.shape)}")
    n_prog, P = g.programs(y.device)
    part = torch.empty(2, P, g.C, dtype=torch.float64, device=y.device)
    with on_device(y):
        _bn_stats_kernel[(n_prog,)](y, part, g.T, g.N, g.R, g.K, g.C, g.n_kb, g.n_tiles, n_prog, P,
                                    **g.meta(y.dtype))
        sums = _combine(part, g.C)
    n = y.numel() // g.C
    # the kernel's shift y_c: channel c's element at c * inner, y[0, 0, c, 0, ...]
    shift = y[(0, 0, slice(None)) + (0,) * (y.dim() - 3)].double()
    m1 = sums[0] / n
    return shift + m1, (sums[1] / n - m1 * m1).clamp_min(0.0)


@bn_stats_triton.register_fake
def _bn_stats_triton_fake(y):
    C = y.shape[2]
    return y.new_empty((C,), dtype=torch.float64), y.new_empty((C,), dtype=torch.float64)


def _run_forward(y_in, residual, scale, shift, v_init, tau: float, k: Optional[torch.Tensor], decay_input: bool,
                 v_threshold: float, v_reset: float, soft_reset: bool, fire_at_threshold: bool):
    """The forward kernel: LIF with tau (k None) or the parametric LIF with the decay k
    (0-dim, compute dtype) -> (spikes, v_last)."""
    y = _check(y_in)
    _check_vectors(y, scale=scale, shift=shift)
    cdt = check_k(k, y, "BN + PLIF") if k is not None else (torch.float64 if y.dtype == torch.float64
                                                             else torch.float32)
    res = _check_like(residual, y, "residual")
    v0 = _check_like(v_init, y[0], "v_init")
    spikes = torch.empty_like(y)
    v_last = torch.empty_like(y[0])
    g = _Geometry(y)
    if g.N == 0:
        return spikes, v_last
    tau_bits, pow2 = _tau_args(tau, cdt, k)
    with on_device(y):
        _bn_lif_forward_kernel[(g.n_tiles,)](
            y, res if res is not None else y, scale, shift, v0 if v0 is not None else y, k if k is not None else y,
            spikes, v_last, *g.args(), tau_bits, scalar_bits(v_threshold, cdt),
            scalar_bits(0.0 if soft_reset else v_reset, cdt), int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, HAS_RES=res is not None, HAS_V_INIT=v0 is not None,
            LEARN_TAU=k is not None, TAU_POW2=pow2, enable_fp_fusion=False, **g.meta(y.dtype),
        )
    return spikes, v_last


@torch.library.custom_op("tks_kernels::bn_lif_forward_triton", mutates_args=())
def bn_lif_forward_triton(
    y: torch.Tensor, residual: Optional[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor,
    v_init: Optional[torch.Tensor], tau: float, decay_input: bool, v_threshold: float, v_reset: float,
    soft_reset: bool, fire_at_threshold: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``LIF(y * scale + shift + residual)``: y, residual [T, B, C, *], scale, shift [C]
    (compute dtype), v_init [B, C, *] -> (spikes [T, B, C, *], v_last [B, C, *])."""
    return _run_forward(y, residual, scale, shift, v_init, tau, None, decay_input, v_threshold, v_reset, soft_reset,
                        fire_at_threshold)


@bn_lif_forward_triton.register_fake
def _bn_lif_forward_triton_fake(y, residual, scale, shift, v_init, *scalars):
    y = time_major_dense(y)
    return torch.empty_like(y), torch.empty_like(y[0])


@torch.library.custom_op("tks_kernels::bn_plif_forward_triton", mutates_args=())
def bn_plif_forward_triton(
    y: torch.Tensor, residual: Optional[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor,
    v_init: Optional[torch.Tensor], k: torch.Tensor, decay_input: bool, v_threshold: float, v_reset: float,
    soft_reset: bool, fire_at_threshold: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``PLIF(y * scale + shift + residual)`` with the decay k (0-dim, compute dtype,
    read by the kernel: no host sync): shapes as :func:`bn_lif_forward_triton`."""
    return _run_forward(y, residual, scale, shift, v_init, 1.0, k, decay_input, v_threshold, v_reset, soft_reset,
                        fire_at_threshold)


@bn_plif_forward_triton.register_fake
def _bn_plif_forward_triton_fake(y, residual, scale, shift, v_init, k, *scalars):
    y = time_major_dense(y)
    return torch.empty_like(y), torch.empty_like(y[0])


def _backward_outputs(y: torch.Tensor, residual, v_init):
    y = time_major_dense(y)
    return (torch.empty_like(y), torch.empty_like(y) if residual is not None else y.new_empty((0,)),
            torch.empty_like(y[0]) if v_init is not None else y.new_empty((0,)))


def _run_backward(grad_spikes, grad_v_last, y_in, residual, scale, shift, center, invstd, v_init, tau: float,
                  k: Optional[torch.Tensor], decay_input: bool, v_threshold: float, v_reset: float, soft_reset: bool,
                  detach_reset: bool, fire_at_threshold: bool, surrogate: int, alpha: float, batch_stats: bool):
    """The backward kernels -> (grad_y, grad_residual, grad_v_init, sums [2, C] fp64,
    grad_k (k's dtype) or None for LIF). dL/dk: one fp64 partial per tile, summed in a
    fixed order after the kernel (the same bits for any number of programs)."""
    y = _check(y_in)
    if not 0 <= surrogate < 7:
        raise ValueError(f"tks_kernels Triton BN + LIF: surrogate id must be in [0, 7), got {surrogate}")
    _check_vectors(y, scale=scale, shift=shift, center=center, invstd=invstd)
    cdt = check_k(k, y, "BN + PLIF") if k is not None else (torch.float64 if y.dtype == torch.float64
                                                             else torch.float32)
    gs = _check_like(grad_spikes, y, "grad_spikes")
    gl = _check_like(grad_v_last, y[0], "grad_v_last")
    res = _check_like(residual, y, "residual")
    v0 = _check_like(v_init, y[0], "v_init")
    grad_y, grad_res, grad_v_init = _backward_outputs(y, residual, v_init)
    g = _Geometry(y, backward=True)
    if g.N == 0:
        return (grad_y, grad_res, grad_v_init, torch.zeros(2, g.C, dtype=torch.float64, device=y.device),
                torch.zeros_like(k) if k is not None else None)
    n_prog, P = g.programs(y.device)
    part = torch.empty(2, P, g.C, dtype=torch.float64, device=y.device)
    kpart = torch.empty(g.n_tiles if k is not None else 0, dtype=torch.float64, device=y.device)
    scratch = torch.empty(n_prog * g.T * g.rows * g.cols, dtype=cdt, device=y.device)
    # gx goes to grad_residual (it is the residual's gradient), else, with batch
    # statistics, to grad_y, which the input-gradient pass then overwrites in place.
    gx = grad_res if res is not None else (grad_y if batch_stats else None)
    tau_bits, pow2 = _tau_args(tau, cdt, k)
    with on_device(y):
        _bn_lif_backward_kernel[(n_prog,)](
            gs, gl if gl is not None else y, y, res if res is not None else y, scale, shift, center,
            v0 if v0 is not None else y, k if k is not None else y, gx if gx is not None else y, grad_y,
            grad_v_init if v0 is not None else y, part, kpart if k is not None else part, scratch,
            *g.args(), g.n_tiles, n_prog, P, tau_bits, scalar_bits(v_threshold, cdt),
            scalar_bits(0.0 if soft_reset else v_reset, cdt), scalar_bits(alpha, cdt),
            scalar_bits(surrogate_const(alpha, surrogate, cdt), cdt), scalar_bits(0.0 if detach_reset else 1.0, cdt),
            int(fire_at_threshold),
            DECAY_INPUT=decay_input, SOFT_RESET=soft_reset, SURROGATE=surrogate, HAS_RES=res is not None,
            HAS_V_INIT=v0 is not None, HAS_GRAD_V_LAST=gl is not None, STORE_GX=gx is not None,
            STORE_DY=not batch_stats, LEARN_TAU=k is not None, TAU_POW2=pow2, enable_fp_fusion=False,
            **g.meta(y.dtype),
        )
        sums = _combine(part, g.C)
        if batch_stats:
            pc, qc = _input_grad_coefficients(sums, scale, invstd, y.numel() // g.C)
            _bn_input_grad_kernel[(g.n_tiles,)](gx, y, scale, center, pc, qc, grad_y, *g.args(),
                                                enable_fp_fusion=False, **g.meta(y.dtype))
        grad_k = _grad_k(kpart, k, decay_input) if k is not None else None
    return grad_y, grad_res, grad_v_init, sums, grad_k


@torch.library.custom_op("tks_kernels::bn_lif_backward_triton", mutates_args=())
def bn_lif_backward_triton(
    grad_spikes: torch.Tensor, grad_v_last: Optional[torch.Tensor], y: torch.Tensor,
    residual: Optional[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor, center: torch.Tensor,
    invstd: torch.Tensor, v_init: Optional[torch.Tensor], tau: float, decay_input: bool, v_threshold: float,
    v_reset: float, soft_reset: bool, detach_reset: bool, fire_at_threshold: bool, surrogate: int, alpha: float,
    batch_stats: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (grad_y, grad_residual ([0] without a residual), grad_v_init ([0] without
    v_init), sums [2, C] fp64 = (sum gx, sum gx * (y - center))), as ``bn_lif_backward``."""
    return _run_backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, tau, None,
                         decay_input, v_threshold, v_reset, soft_reset, detach_reset, fire_at_threshold, surrogate,
                         alpha, batch_stats)[:4]


@bn_lif_backward_triton.register_fake
def _bn_lif_backward_triton_fake(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init,
                                 *scalars):
    grad_y, grad_res, grad_v_init = _backward_outputs(y, residual, v_init)
    return grad_y, grad_res, grad_v_init, y.new_empty((2, y.shape[2]), dtype=torch.float64)


@torch.library.custom_op("tks_kernels::bn_plif_backward_triton", mutates_args=())
def bn_plif_backward_triton(
    grad_spikes: torch.Tensor, grad_v_last: Optional[torch.Tensor], y: torch.Tensor,
    residual: Optional[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor, center: torch.Tensor,
    invstd: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, decay_input: bool, v_threshold: float,
    v_reset: float, soft_reset: bool, detach_reset: bool, fire_at_threshold: bool, surrogate: int, alpha: float,
    batch_stats: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (grad_y, grad_residual, grad_v_init, sums, grad_k []) as
    :func:`bn_lif_backward_triton`, and dL/dk (k's dtype; fp64 partials per tile,
    deterministic), as ``bn_plif_backward``."""
    return _run_backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, 1.0, k,
                         decay_input, v_threshold, v_reset, soft_reset, detach_reset, fire_at_threshold, surrogate,
                         alpha, batch_stats)


@bn_plif_backward_triton.register_fake
def _bn_plif_backward_triton_fake(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k,
                                  *scalars):
    grad_y, grad_res, grad_v_init = _backward_outputs(y, residual, v_init)
    return grad_y, grad_res, grad_v_init, y.new_empty((2, y.shape[2]), dtype=torch.float64), torch.empty_like(k)


def _input_grad_coefficients(sums: torch.Tensor, scale: torch.Tensor, invstd: torch.Tensor,
                             count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(pc, qc) ``[C]`` in scale's dtype, with which BN's input gradient under batch
    statistics is ``dy = gx * scale + (y - center) * pc + qc`` (the CPU kernel's formula,
    in fp64 from the sums ``[2, C]`` = (sum gx, sum gx * (y - center)))."""
    a, inv = scale.double(), invstd.double()
    pc = -a * inv * inv * sums[1] / count
    qc = -a * sums[0] / count
    return pc.to(scale.dtype).contiguous(), qc.to(scale.dtype).contiguous()




TRITON_OPS = FusedOps(bn_lif_forward_triton, bn_lif_backward_triton, bn_plif_forward_triton,
                      bn_plif_backward_triton)


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused op with the Triton kernels (checked by ``ops.bn_lif.bn_lif``): y,
    residual [T, B, C, *], v_init [B, C, *] -> (spikes, v_last); saves for backward only
    when a gradient is needed."""
    return fused(TRITON_OPS, bn_stats_triton, y, bn, cfg, residual, v_init, None)


# The parametric LIF is fused on this backend (ops/bn_lif/__init__.py's dispatch reads it).
HAS_PLIF = True


def bn_plif(y: torch.Tensor, bn: BNArgs, cfg, k: torch.Tensor, residual: Optional[torch.Tensor] = None,
            v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused parametric-LIF op (checked by ``ops.bn_lif.bn_plif``; cfg a PLIFConfig):
    as :func:`bn_lif` with the decay k (0-dim, compute dtype, differentiable: dL/dk is the
    sum over every neuron and step, deterministic)."""
    return fused(TRITON_OPS, bn_stats_triton, y, bn, cfg, residual, v_init, k)
