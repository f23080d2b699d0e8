"""The native fused BN + LIF kernels (``libtks_kernels``) as the ``torch.library`` custom
ops ``tks_kernels::bn_lif_forward`` / ``bn_lif_backward`` (with fake implementations),
and the autograd Function that puts BN's statistics and parameters around them.

Forward saves y (BN's input, which unfused BN keeps too), the residual when there is one,
and four ``[C]`` vectors: no membrane or distance tensor. Backward is one native call:
recompute, reverse recurrence, fp64 per-channel sums (the same bits for any thread
count), BN's input gradient.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ... import _native
from .._layout import like_layout, time_major_dense
from .._native_op import NativeOp
from ..lif import LIFConfig
from . import BNArgs, batch_norm_coefficients

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


def _cpu_forward(y_in, residual, scale, shift, v_init, tau, decay_input, v_threshold, v_reset, soft_reset,
                 fire_at_threshold):
    if y_in.dim() < 3 or y_in.shape[0] < 1:
        raise RuntimeError(f"tks_kernels: y must be [T, B, C, *] with T >= 1, got shape {tuple(y_in.shape)}")
    y = time_major_dense(y_in)
    _check_vectors(y, scale, shift)
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    spikes = torch.empty_like(y)
    v_last = torch.empty_like(y[0])
    if y.numel() > 0:
        C, inner = _channels(y)
        lib = _native.cpu_lib
        _native.check(lib, lib.tks_bn_lif_forward_cpu(
            _native.dtype_code(y.dtype, "y"), y.data_ptr(), _native.ptr(res), scale.data_ptr(), shift.data_ptr(),
            _native.ptr(v0), spikes.data_ptr(), v_last.data_ptr(), y.shape[0], y[0].numel(), C, inner, tau,
            v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, False, fire_at_threshold),
            torch.get_num_threads()))
    return spikes, v_last


def _cpu_backward(grad_spikes, grad_v_last, y_in, residual, scale, shift, center, invstd, v_init, tau, decay_input,
                  v_threshold, v_reset, soft_reset, detach_reset, fire_at_threshold, surrogate, alpha, batch_stats):
    y = time_major_dense(y_in)
    _check_vectors(y, scale, shift, center, invstd)
    if grad_spikes.shape != y.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)}, y {tuple(y.shape)}")
    gs = like_layout(grad_spikes.to(y.dtype), y)
    gvl = None if grad_v_last is None else like_layout(grad_v_last.to(y.dtype), y[0])
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    grad_y = torch.empty_like(y)
    grad_res = torch.empty_like(y) if res is not None else y.new_empty((0,))
    grad_v_init = torch.empty_like(y[0]) if v0 is not None else y.new_empty((0,))
    C, inner = _channels(y)
    sums = torch.zeros(2, y.shape[2], dtype=torch.float64)
    if y.numel() > 0:
        lib = _native.cpu_lib
        _native.check(lib, lib.tks_bn_lif_backward_cpu(
            _native.dtype_code(y.dtype, "y"), gs.data_ptr(), _native.ptr(gvl), y.data_ptr(), _native.ptr(res),
            scale.data_ptr(), shift.data_ptr(), center.data_ptr(), invstd.data_ptr(), _native.ptr(v0),
            grad_y.data_ptr(), grad_res.data_ptr() if res is not None else None,
            grad_v_init.data_ptr() if v0 is not None else None, sums.data_ptr(), y.shape[0], y[0].numel(), C, inner,
            tau, v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold),
            surrogate, alpha, int(batch_stats), torch.get_num_threads()))
    return grad_y, grad_res, grad_v_init, sums


@torch.library.register_fake("tks_kernels::bn_lif_forward")
def _bn_lif_forward_fake(y, residual, scale, shift, v_init, *scalars):
    return torch.empty_like(y), torch.empty_like(y[0])


@torch.library.register_fake("tks_kernels::bn_lif_backward")
def _bn_lif_backward_fake(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, *scalars):
    return (torch.empty_like(y), torch.empty_like(y) if residual is not None else y.new_empty((0,)),
            torch.empty_like(y[0]) if v_init is not None else y.new_empty((0,)),
            y.new_empty((2, y.shape[2]), dtype=torch.float64))


BN_LIF_FORWARD = NativeOp(_LIB, "bn_lif_forward")
BN_LIF_BACKWARD = NativeOp(_LIB, "bn_lif_backward")
if _native.cpu_lib is not None:
    BN_LIF_FORWARD.register("cpu", _cpu_forward)
    BN_LIF_BACKWARD.register("cpu", _cpu_backward)


class _BNLIF(torch.autograd.Function):
    """(y, weight, bias, residual, v_init) -> (spikes, v_last); BN's statistics inside."""

    @staticmethod
    def forward(ctx, y, weight, bias, residual, v_init, bn: BNArgs, cfg: LIFConfig):
        scale, shift, center, invstd = batch_norm_coefficients(y, bn)
        spikes, v_last = BN_LIF_FORWARD(y, residual, scale, shift, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold,
                                        cfg.v_rest, cfg.soft_reset, cfg.fire_at_threshold)
        ctx.save_for_backward(y, residual, v_init, scale, shift, center, invstd)
        ctx.bn, ctx.cfg = bn, cfg
        ctx.set_materialize_grads(False)
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        y, residual, v_init, scale, shift, center, invstd = ctx.saved_tensors
        bn, cfg = ctx.bn, ctx.cfg
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(y)
        grad_y, grad_res, grad_v_init, sums = BN_LIF_BACKWARD(
            grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, cfg.tau, cfg.decay_input,
            cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.detach_reset, cfg.fire_at_threshold, cfg.surrogate_id,
            cfg.alpha, bn.batch_stats)
        grad_w = grad_b = None
        if bn.weight is not None and ctx.needs_input_grad[1]:
            # dL/dweight = weight_scale * sum(gx * x_hat), x_hat = (y - center) * invstd
            grad_w = (sums[1] * invstd.double() * bn.weight_scale).to(bn.weight.dtype)
        if bn.bias is not None and ctx.needs_input_grad[2]:
            grad_b = sums[0].to(bn.bias.dtype)
        return (grad_y, grad_w, grad_b, grad_res if residual is not None else None,
                grad_v_init if v_init is not None else None, None, None)


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused op (checked by ``ops.bn_lif.bn_lif``); saves for backward only when a
    gradient is needed."""
    tensors = (y, bn.weight, bn.bias, residual, v_init)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _BNLIF.apply(y, bn.weight, bn.bias, residual, v_init, bn, cfg)
    scale, shift, _, _ = batch_norm_coefficients(y, bn)
    return BN_LIF_FORWARD(y, residual, scale, shift, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
                          cfg.soft_reset, cfg.fire_at_threshold)
