"""The CUDA fused BN + residual + LIF kernels (``csrc/cuda/bn_lif_cuda.cu`` in
``libtks_kernels_cuda``) as the CUDA kernels of the ``tks_kernels::bn_lif_forward`` /
``bn_lif_backward`` / ``bn_stats`` ops that ``cpu.py`` defines (``torch.library``
dispatches by the tensors' device; the fake implementations and the autograd Function
there serve both): the statistics in one read of y, deterministic. What forward saves is
the same as on the CPU (y, the residual, v_init, four ``[C]`` vectors). Kernels run on the
tensors' device and its current stream; workspaces come from PyTorch's caching allocator.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ... import _native
from .._layout import like_layout, time_major_dense
from ..lif import LIFConfig
from . import BNArgs
from .cpu import BN_LIF_BACKWARD, BN_LIF_FORWARD, BN_STATS, _channels, _check_vectors, fused, native_batch_stats


def _device_guard(device: torch.device):
    return torch.cuda.device(device)


def _check_devices(ref: torch.Tensor, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise RuntimeError(f"tks_kernels: {name} is on {t.device} but the op runs on {ref.device}")


def _workspace(y: torch.Tensor, C: int, inner: int, backward: bool) -> torch.Tensor:
    lib = _native.cuda_lib
    n = lib.tks_bn_lif_workspace_cuda(_native.dtype_code(y.dtype, "y"), y.shape[0], y[0].numel(), C, inner,
                                      int(backward))
    if n < 0:
        raise RuntimeError(f"tks_kernels: no CUDA BN + LIF workspace for y of shape {tuple(y.shape)} "
                           f"(C = {C}, inner = {inner})")
    return torch.empty(max(n, 1), dtype=torch.uint8, device=y.device)


def _cuda_stats(y_in):
    """y [T, B, C, *] -> (mean [C], var [C]) fp64 over every dimension but C (var
    biased), one read of y, deterministic."""
    if y_in.dim() < 3 or y_in.numel() == 0:
        raise RuntimeError(f"tks_kernels: bn_stats needs a non-empty y [T, B, C, *], got shape {tuple(y_in.shape)}")
    y = time_major_dense(y_in)
    C, inner = _channels(y)
    mean = torch.empty(C, dtype=torch.float64, device=y.device)
    var = torch.empty(C, dtype=torch.float64, device=y.device)
    with _device_guard(y.device):
        ws = _workspace(y, C, inner, False)
        lib = _native.cuda_lib
        _native.check(lib, lib.tks_bn_stats_cuda(
            _native.dtype_code(y.dtype, "y"), y.data_ptr(), mean.data_ptr(), var.data_ptr(), ws.data_ptr(),
            y.shape[0], y[0].numel(), C, inner, _native.cuda_stream(y.device)))
    return mean, var


def _cuda_forward(y_in, residual, scale, shift, v_init, tau, decay_input, v_threshold, v_reset, soft_reset,
                  fire_at_threshold):
    if y_in.dim() < 3 or y_in.shape[0] < 1:
        raise RuntimeError(f"tks_kernels: y must be [T, B, C, *] with T >= 1, got shape {tuple(y_in.shape)}")
    _check_devices(y_in, residual=residual, scale=scale, shift=shift, v_init=v_init)
    y = time_major_dense(y_in)
    _check_vectors(y, scale, shift)
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    spikes = torch.empty_like(y)
    v_last = torch.empty_like(y[0])
    if y.numel() > 0:
        C, inner = _channels(y)
        lib = _native.cuda_lib
        with _device_guard(y.device):
            _native.check(lib, lib.tks_bn_lif_forward_cuda(
                _native.dtype_code(y.dtype, "y"), y.data_ptr(), _native.ptr(res), scale.data_ptr(),
                shift.data_ptr(), _native.ptr(v0), spikes.data_ptr(), v_last.data_ptr(), y.shape[0], y[0].numel(),
                C, inner, tau, v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, False,
                                                                       fire_at_threshold),
                _native.cuda_stream(y.device)))
    return spikes, v_last


def _cuda_backward(grad_spikes, grad_v_last, y_in, residual, scale, shift, center, invstd, v_init, tau, decay_input,
                   v_threshold, v_reset, soft_reset, detach_reset, fire_at_threshold, surrogate, alpha, batch_stats):
    _check_devices(y_in, grad_spikes=grad_spikes, grad_v_last=grad_v_last, residual=residual, scale=scale,
                   shift=shift, center=center, invstd=invstd, v_init=v_init)
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
    sums = torch.zeros(2, y.shape[2], dtype=torch.float64, device=y.device)
    if y.numel() > 0:
        lib = _native.cuda_lib
        with _device_guard(y.device):
            ws = _workspace(y, C, inner, True)
            _native.check(lib, lib.tks_bn_lif_backward_cuda(
                _native.dtype_code(y.dtype, "y"), gs.data_ptr(), _native.ptr(gvl), y.data_ptr(), _native.ptr(res),
                scale.data_ptr(), shift.data_ptr(), center.data_ptr(), invstd.data_ptr(), _native.ptr(v0),
                grad_y.data_ptr(), grad_res.data_ptr() if res is not None else None,
                grad_v_init.data_ptr() if v0 is not None else None, sums.data_ptr(), ws.data_ptr(), y.shape[0],
                y[0].numel(), C, inner, tau, v_threshold, v_reset,
                _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold), surrogate, alpha,
                int(batch_stats), _native.cuda_stream(y.device)))
    return grad_y, grad_res, grad_v_init, sums


if _native.cuda_lib is not None:
    BN_LIF_FORWARD.register("cuda", _cuda_forward)
    BN_LIF_BACKWARD.register("cuda", _cuda_backward)
    BN_STATS.register("cuda", _cuda_stats)


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused op with the CUDA kernels (checked by ``ops.bn_lif.bn_lif``): y,
    residual [T, B, C, *] on a CUDA device, v_init [B, C, *] -> (spikes, v_last)."""
    if y.device.type != "cuda":
        raise RuntimeError(f"the cuda BN + LIF backend runs on CUDA tensors, but y is on {y.device}")
    if _native.cuda_lib is None:
        raise RuntimeError(f"the cuda BN + LIF backend needs libtks_kernels_cuda: {_native.CUDA_ERROR}")
    return fused(y, bn, cfg, residual, v_init, None, native_batch_stats)
