"""The CUDA fused BN + residual + LIF / PLIF kernels (``csrc/cuda/bn_lif_cuda.cu`` in
``libtks_kernels_cuda``) as the CUDA kernels of the ``tks_kernels::bn_lif_forward`` /
``bn_lif_backward`` / ``bn_plif_forward`` / ``bn_plif_backward`` / ``bn_stats`` ops that
``cpu.py`` defines (``torch.library`` dispatches by the tensors' device; the fake
implementations there and ``_fused.py``'s autograd Function serve both): the statistics in one read
of y, deterministic. What forward saves is the same as on the CPU (y, the residual,
v_init, four ``[C]`` vectors, and k). Kernels run on the tensors' device and its current
stream; workspaces come from PyTorch's caching allocator. PLIF's decay k stays in device
memory (no host sync) and dL/dk is summed per block and the blocks' partials in a fixed
order (deterministic).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ... import _native
from .._layout import like_layout, time_major_dense
from ..lif import LIFConfig
from . import BNArgs
from .cpu import (BN_LIF_BACKWARD, BN_LIF_FORWARD, BN_PLIF_BACKWARD, BN_PLIF_FORWARD, BN_STATS, _channels,
                  _check_vectors, NATIVE_OPS, native_batch_stats)
from ._fused import fused

# The library has the fused parametric LIF (its functions are in _native's prototype table,
# so a library that loaded has them).
HAS_PLIF = _native.cuda_lib is not None and hasattr(_native.cuda_lib, "tks_bn_plif_forward_cuda")


def _device_guard(device: torch.device):
    return torch.cuda.device(device)


def _check_devices(ref: torch.Tensor, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise RuntimeError(f"tks_kernels: {name} is on {t.device} but the op runs on {ref.device}")


def _check_k(y: torch.Tensor, k: torch.Tensor) -> None:
    """k: the 0-dim decay in y's compute dtype on y's device (read by the kernels there)."""
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    if k.dim() != 0 or k.dtype != dtype or k.device != y.device:
        raise RuntimeError(f"tks_kernels: bn_plif's k must be a 0-dim {dtype} tensor on {y.device}, got shape "
                           f"{tuple(k.shape)} {k.dtype} on {k.device}")


def _check_on_cuda(y: torch.Tensor) -> None:
    # last of the checks: on a CPU tensor (tests without a GPU) every other one has passed
    if y.device.type != "cuda":
        raise RuntimeError(f"tks_kernels: the CUDA BN + LIF kernels run on CUDA tensors, but y is on {y.device}")
    if _native.cuda_lib is None:
        raise RuntimeError(f"tks_kernels: the CUDA BN + LIF kernels need libtks_kernels_cuda: {_native.CUDA_ERROR}")


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
    _check_on_cuda(y_in)
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


def _forward(y_in, residual, scale, shift, v_init, decay, decay_input, v_threshold, v_reset, soft_reset,
             fire_at_threshold, plif):
    """decay: tau (LIF, a float) or k (PLIF, a 0-dim tensor)."""
    if y_in.dim() < 3 or y_in.shape[0] < 1:
        raise RuntimeError(f"tks_kernels: y must be [T, B, C, *] with T >= 1, got shape {tuple(y_in.shape)}")
    _check_devices(y_in, residual=residual, scale=scale, shift=shift, v_init=v_init)
    _check_vectors(y_in, scale, shift)
    if plif:
        _check_k(y_in, decay)
    _check_on_cuda(y_in)
    y = time_major_dense(y_in)
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    spikes = torch.empty_like(y)
    v_last = torch.empty_like(y[0])
    if y.numel() > 0:
        C, inner = _channels(y)
        lib = _native.cuda_lib
        head = [_native.dtype_code(y.dtype, "y"), y.data_ptr(), _native.ptr(res), scale.data_ptr(),
                shift.data_ptr(), _native.ptr(v0)]
        mid = [spikes.data_ptr(), v_last.data_ptr(), y.shape[0], y[0].numel(), C, inner]
        tail = [v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, False, fire_at_threshold)]
        with _device_guard(y.device):
            stream = _native.cuda_stream(y.device)
            if plif:
                _native.check(lib, lib.tks_bn_plif_forward_cuda(*head, decay.data_ptr(), *mid, *tail, stream))
            else:
                _native.check(lib, lib.tks_bn_lif_forward_cuda(*head, *mid, decay, *tail, stream))
    return spikes, v_last


def _backward(grad_spikes, grad_v_last, y_in, residual, scale, shift, center, invstd, v_init, decay, decay_input,
              v_threshold, v_reset, soft_reset, detach_reset, fire_at_threshold, surrogate, alpha, batch_stats, plif):
    _check_devices(y_in, grad_spikes=grad_spikes, grad_v_last=grad_v_last, residual=residual, scale=scale,
                   shift=shift, center=center, invstd=invstd, v_init=v_init)
    _check_vectors(y_in, scale, shift, center, invstd)
    if grad_spikes.shape != y_in.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)}, y {tuple(y_in.shape)}")
    if plif:
        _check_k(y_in, decay)
    _check_on_cuda(y_in)
    y = time_major_dense(y_in)
    gs = like_layout(grad_spikes.to(y.dtype), y)
    gvl = None if grad_v_last is None else like_layout(grad_v_last.to(y.dtype), y[0])
    res = None if residual is None else like_layout(residual, y)
    v0 = None if v_init is None else like_layout(v_init, y[0])
    grad_y = torch.empty_like(y)
    grad_res = torch.empty_like(y) if res is not None else y.new_empty((0,))
    grad_v_init = torch.empty_like(y[0]) if v0 is not None else y.new_empty((0,))
    C, inner = _channels(y)
    sums = torch.zeros(2, y.shape[2], dtype=torch.float64, device=y.device)
    grad_k = torch.zeros((), dtype=decay.dtype, device=y.device) if plif else None
    if y.numel() > 0:
        lib = _native.cuda_lib
        with _device_guard(y.device):
            ws = _workspace(y, C, inner, True)
            head = [_native.dtype_code(y.dtype, "y"), gs.data_ptr(), _native.ptr(gvl), y.data_ptr(),
                    _native.ptr(res), scale.data_ptr(), shift.data_ptr(), center.data_ptr(), invstd.data_ptr(),
                    _native.ptr(v0)]
            outs = [grad_y.data_ptr(), grad_res.data_ptr() if res is not None else None,
                    grad_v_init.data_ptr() if v0 is not None else None, sums.data_ptr()]
            shape = [y.shape[0], y[0].numel(), C, inner]
            tail = [v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold),
                    surrogate, alpha, int(batch_stats), _native.cuda_stream(y.device)]
            if plif:
                _native.check(lib, lib.tks_bn_plif_backward_cuda(*head, decay.data_ptr(), *outs, grad_k.data_ptr(),
                                                                 ws.data_ptr(), *shape, *tail))
            else:
                _native.check(lib, lib.tks_bn_lif_backward_cuda(*head, *outs, ws.data_ptr(), *shape, decay, *tail))
    out = (grad_y, grad_res, grad_v_init, sums)
    return out + (grad_k,) if plif else out


def _cuda_forward(y, residual, scale, shift, v_init, tau, *flags):
    return _forward(y, residual, scale, shift, v_init, tau, *flags, False)


def _cuda_backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, tau, *rest):
    return _backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, tau, *rest, False)


def _cuda_plif_forward(y, residual, scale, shift, v_init, k, *flags):
    return _forward(y, residual, scale, shift, v_init, k, *flags, True)


def _cuda_plif_backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k, *rest):
    return _backward(grad_spikes, grad_v_last, y, residual, scale, shift, center, invstd, v_init, k, *rest, True)


if _native.cuda_lib is not None:
    BN_LIF_FORWARD.register("cuda", _cuda_forward)
    BN_LIF_BACKWARD.register("cuda", _cuda_backward)
    BN_STATS.register("cuda", _cuda_stats)
if HAS_PLIF:
    BN_PLIF_FORWARD.register("cuda", _cuda_plif_forward)
    BN_PLIF_BACKWARD.register("cuda", _cuda_plif_backward)


def _check_backend(y: torch.Tensor, what: str) -> None:
    if y.device.type != "cuda":
        raise RuntimeError(f"the cuda {what} backend runs on CUDA tensors, but y is on {y.device}")
    if _native.cuda_lib is None:
        raise RuntimeError(f"the cuda {what} backend needs libtks_kernels_cuda: {_native.CUDA_ERROR}")


def bn_lif(y: torch.Tensor, bn: BNArgs, cfg: LIFConfig, residual: Optional[torch.Tensor] = None,
           v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused op with the CUDA kernels (checked by ``ops.bn_lif.bn_lif``): y,
    residual [T, B, C, *] on a CUDA device, v_init [B, C, *] -> (spikes, v_last)."""
    _check_backend(y, "BN + LIF")
    return fused(NATIVE_OPS, native_batch_stats, y, bn, cfg, residual, v_init, None)


def bn_plif(y: torch.Tensor, bn: BNArgs, cfg, k: torch.Tensor, residual: Optional[torch.Tensor] = None,
            v_init: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fused parametric LIF op with the CUDA kernels (checked by ``ops.bn_lif.bn_plif``):
    as :func:`bn_lif`, with k the 0-dim decay ``sigmoid(w)`` in the compute dtype on y's
    device (differentiable: dL/dk flows back to it)."""
    _check_backend(y, "BN + PLIF")
    if not HAS_PLIF:
        raise NotImplementedError("libtks_kernels_cuda has no fused BN + PLIF kernel (a stale build); rebuild it")
    return fused(NATIVE_OPS, native_batch_stats, y, bn, cfg, residual, v_init, k)
