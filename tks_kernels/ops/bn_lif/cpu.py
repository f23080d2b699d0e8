"""The native fused BN + LIF / PLIF kernels (``libtks_kernels``) as ``torch.library`` custom
ops (with fake implementations); ``_fused.py``'s autograd Function puts BN's statistics
and parameters around them (``NATIVE_OPS``, the kernels of every device registered here).

Ops (the schemas below; a device backend registers its kernels on the same NativeOps):

- ``bn_stats(y) -> (mean, var)``: BN's batch statistics, fp64 ``[C]``, one read of y;
- ``bn_lif_forward`` / ``bn_lif_backward``: the LIF op;
- ``bn_plif_forward`` / ``bn_plif_backward``: the parametric LIF op, with the decay ``k``
  (a 0-dim tensor in the compute dtype) in place of tau; backward also returns dL/dk.

Forward saves y (BN's input, which unfused BN keeps too), the residual when there is one,
and four ``[C]`` vectors (and k): no membrane or distance tensor. Backward is one native
call: recompute, reverse recurrence, fp64 per-channel sums (the same bits for any thread
count), BN's input gradient.
"""
from __future__ import annotations

import ctypes
from typing import Optional, Tuple

import torch

from ... import _native
from .._layout import like_layout, time_major_dense
from .. import _cpu_cache
from .._native_op import NativeOp
from ..lif import LIFConfig
from . import BNArgs
from ._fused import FusedOps, fused

_LIB = torch.library.Library("tks_kernels", "FRAGMENT")
_LIB.define(
    "bn_lif_forward(Tensor y, Tensor? residual, Tensor scale, Tensor shift, Tensor? v_init, float tau, "
    "bool decay_input, float v_threshold, float v_reset, bool soft_reset, bool fire_at_threshold) "
    "-> (Tensor spikes, Tensor v_last)"
)
_LIB.define(
    "bn_lif_backward(Tensor grad_spikes, Tensor? grad_v_last, Tensor y, Tensor? residual, Tensor scale, "
    "Tensor shift, Tensor center, Tensor invstd, Tensor? v_init, float tau, bool decay_input, float v_threshold, "
    "float v_reset, bool soft_reset, bool detach_reset, bool fire_at_threshold, int surrogate, float alpha, "
    "bool batch_stats) -> (Tensor grad_y, Tensor grad_residual, Tensor grad_v_init, Tensor sums)"
)
_LIB.define(
    "bn_plif_forward(Tensor y, Tensor? residual, Tensor scale, Tensor shift, Tensor? v_init, Tensor k, "
    "bool decay_input, float v_threshold, float v_reset, bool soft_reset, bool fire_at_threshold) "
    "-> (Tensor spikes, Tensor v_last)"
)
_LIB.define(
    "bn_plif_backward(Tensor grad_spikes, Tensor? grad_v_last, Tensor y, Tensor? residual, Tensor scale, "
    "Tensor shift, Tensor center, Tensor invstd, Tensor? v_init, Tensor k, bool decay_input, float v_threshold, "
    "float v_reset, bool soft_reset, bool detach_reset, bool fire_at_threshold, int surrogate, float alpha, "
    "bool batch_stats) -> (Tensor grad_y, Tensor grad_residual, Tensor grad_v_init, Tensor sums, Tensor grad_k)"
)
_LIB.define("bn_stats(Tensor y) -> (Tensor mean, Tensor var)")

# The statistics and PLIF kernels are declared in _native.py's table like the others: a
# library without them does not load (a stale build), so they are there whenever it is.
HAS_STATS = HAS_PLIF = _native.cpu_lib is not None


def _channels(y: torch.Tensor) -> Tuple[int, int]:
    """(C, inner) of a time-major dense y [T, B, C, *]: the channel of element n of a step
    is (n // inner) % C (inner = H*W for NCHW, 1 for channels_last)."""
    C = y.shape[2]
    if C == 1 or y.numel() == 0:
        return C, 1
    return C, y.stride(2)


def _check_vectors(y: torch.Tensor, *vectors: torch.Tensor) -> None:
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    for v in vectors:
        if v.shape != (y.shape[2],) or v.dtype != dtype or not v.is_contiguous() or v.device != y.device:
            raise RuntimeError(f"tks_kernels: bn_lif's per-channel vectors must be contiguous [{y.shape[2]}] {dtype} "
                               f"on {y.device}, got {tuple(v.shape)} {v.dtype} on {v.device}")


def _check_k(y: torch.Tensor, k: torch.Tensor) -> float:
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    if k.numel() != 1 or k.dtype != dtype:
        raise RuntimeError(f"tks_kernels: bn_plif's k must be a 0-dim {dtype} tensor, got shape {tuple(k.shape)} "
                           f"{k.dtype}")
    return float(k.item())


def _cpu_stats(y_in):
    if y_in.dim() < 3 or y_in.numel() == 0:
        raise RuntimeError(f"tks_kernels: bn_stats needs a non-empty y [T, B, C, *], got shape {tuple(y_in.shape)}")
    y = time_major_dense(y_in)
    C, inner = _channels(y)
    mean = torch.empty(C, dtype=torch.float64)
    var = torch.empty(C, dtype=torch.float64)
    lib = _native.cpu_lib
    _native.check(lib, lib.tks_bn_stats_cpu(_native.dtype_code(y.dtype, "y"), y.data_ptr(), mean.data_ptr(),
                                            var.data_ptr(), y.shape[0], y[0].numel(), C, inner,
                                            torch.get_num_threads()))
    return mean, var


def _forward(y_in, residual, scale, shift, v_init, decay, decay_input, v_threshold, v_reset, soft_reset,
             fire_at_threshold, plif):
    if y_in.dim() < 3 or y_in.shape[0] < 1:
        raise RuntimeError(f"tks_kernels: y must be [T, B, C, *] with T >= 1, got shape {tuple(y_in.shape)}")
    y = time_major_dense(y_in)
    _check_vectors(y, scale, shift)
    d = _check_k(y, decay) if plif else decay
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    spikes = _cpu_cache.empty_like(y)
    v_last = _cpu_cache.empty_like(y[0])
    if y.numel() > 0:
        C, inner = _channels(y)
        lib = _native.cpu_lib
        fn = lib.tks_bn_plif_forward_cpu if plif else lib.tks_bn_lif_forward_cpu
        _native.check(lib, fn(
            _native.dtype_code(y.dtype, "y"), y.data_ptr(), _native.ptr(res), scale.data_ptr(), shift.data_ptr(),
            _native.ptr(v0), spikes.data_ptr(), v_last.data_ptr(), y.shape[0], y[0].numel(), C, inner, d,
            v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, False, fire_at_threshold),
            torch.get_num_threads()))
    return spikes, v_last


def _backward(grad_spikes, grad_v_last, y_in, residual, scale, shift, center, invstd, v_init, decay, decay_input,
              v_threshold, v_reset, soft_reset, detach_reset, fire_at_threshold, surrogate, alpha, batch_stats, plif):
    y = time_major_dense(y_in)
    _check_vectors(y, scale, shift, center, invstd)
    d = _check_k(y, decay) if plif else decay
    if grad_spikes.shape != y.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)}, y {tuple(y.shape)}")
    gs = like_layout(grad_spikes.to(y.dtype), y)
    gvl = None if grad_v_last is None else like_layout(grad_v_last.to(y.dtype), y[0])
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    grad_y = _cpu_cache.empty_like(y)
    grad_res = _cpu_cache.empty_like(y) if res is not None else y.new_empty((0,))
    grad_v_init = _cpu_cache.empty_like(y[0]) if v0 is not None else y.new_empty((0,))
    C, inner = _channels(y)
    sums = torch.zeros(2, y.shape[2], dtype=torch.float64)
    grad_k = ctypes.c_double(0.0)
    if y.numel() > 0:
        lib = _native.cpu_lib
        args = [_native.dtype_code(y.dtype, "y"), gs.data_ptr(), _native.ptr(gvl), y.data_ptr(), _native.ptr(res),
                scale.data_ptr(), shift.data_ptr(), center.data_ptr(), invstd.data_ptr(), _native.ptr(v0),
                grad_y.data_ptr(), grad_res.data_ptr() if res is not None else None,
                grad_v_init.data_ptr() if v0 is not None else None, sums.data_ptr()]
        if plif:
            args.append(ctypes.addressof(grad_k))
        args += [y.shape[0], y[0].numel(), C, inner, d, v_threshold, v_reset,
                 _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold), surrogate, alpha,
                 int(batch_stats), torch.get_num_threads()]
        fn = lib.tks_bn_plif_backward_cpu if plif else lib.tks_bn_lif_backward_cpu
        _native.check(lib, fn(*args))
    out = (grad_y, grad_res, grad_v_init, sums)
    if plif:
        out += (torch.tensor(grad_k.value, dtype=decay.dtype),)
    return out


def _cpu_forward(y, residual, scale, shift, v_init, tau, *flags):
    return _forward(y, residual, scale, shift, v_init, tau, *flags, False)


def _cpu_backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, tau, *rest):
    return _backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, tau, *rest, False)


def _cpu_plif_forward(y, residual, scale, shift, v_init, k, *flags):
    return _forward(y, residual, scale, shift, v_init, k, *flags, True)


def _cpu_plif_backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k, *rest):
    return _backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k, *rest, True)


def _fake_backward(grad_spikes, y, residual, v_init):
    return (torch.empty_like(y), torch.empty_like(y) if residual is not None else y.new_empty((0,)),
            torch.empty_like(y[0]) if v_init is not None else y.new_empty((0,)),
            y.new_empty((2, y.shape[2]), dtype=torch.float64))


@torch.library.register_fake("tks_kernels::bn_lif_forward")
def _bn_lif_forward_fake(y, residual, scale, shift, v_init, *scalars):
    return torch.empty_like(y), torch.empty_like(y[0])


@torch.library.register_fake("tks_kernels::bn_lif_backward")
def _bn_lif_backward_fake(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, *scalars):
    return _fake_backward(grad_spikes, y, residual, v_init)


@torch.library.register_fake("tks_kernels::bn_plif_forward")
def _bn_plif_forward_fake(y, residual, scale, shift, v_init, k, *scalars):
    return torch.empty_like(y), torch.empty_like(y[0])


@torch.library.register_fake("tks_kernels::bn_plif_backward")
def _bn_plif_backward_fake(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k, *scalars):
    return _fake_backward(grad_spikes, y, residual, v_init) + (torch.empty_like(k),)


@torch.library.register_fake("tks_kernels::bn_stats")
def _bn_stats_fake(y):
    return y.new_empty((y.shape[2],), dtype=torch.float64), y.new_empty((y.shape[2],), dtype=torch.float64)


BN_LIF_FORWARD = NativeOp(_LIB, "bn_lif_forward")
BN_LIF_BACKWARD = NativeOp(_LIB, "bn_lif_backward")
BN_PLIF_FORWARD = NativeOp(_LIB, "bn_plif_forward")
BN_PLIF_BACKWARD = NativeOp(_LIB, "bn_plif_backward")
BN_STATS = NativeOp(_LIB, "bn_stats")
if _native.cpu_lib is not None:
    BN_LIF_FORWARD.register("cpu", _cpu_forward)
    BN_LIF_BACKWARD.register("cpu", _cpu_backward)
if HAS_PLIF:
    BN_PLIF_FORWARD.register("cpu", _cpu_plif_forward)
    BN_PLIF_BACKWARD.register("cpu", _cpu_plif_backward)
if HAS_STATS:
    BN_STATS.register("cpu", _cpu_stats)


def native_batch_stats(y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased var) fp64 ``[C]`` of y [T, B, C, *] in one read (``tks_kernels::bn_stats``)."""
    return BN_STATS(y)


_STATS = native_batch_stats if HAS_STATS else None


# The kernels behind the fused op on every device with registered kernels (CPU here, CUDA
# in cuda.py).
NATIVE_OPS = FusedOps(BN_LIF_FORWARD, BN_LIF_BACKWARD, BN_PLIF_FORWARD, BN_PLIF_BACKWARD)


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused LIF op (checked by ``ops.bn_lif.bn_lif``)."""
    return fused(NATIVE_OPS, _STATS, y, bn, cfg, residual, v_init, None)


def bn_plif(y: torch.Tensor, bn: BNArgs, cfg, k: torch.Tensor, residual: Optional[torch.Tensor] = None,
            v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused PLIF op (checked by ``ops.bn_lif.bn_plif``); k: the 0-dim decay."""
    if not HAS_PLIF:
        raise NotImplementedError("the native library has no fused BN + PLIF kernel (a stale build); rebuild it")
    return fused(NATIVE_OPS, _STATS, y, bn, cfg, residual, v_init, k)
