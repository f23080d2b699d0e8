"""The CUDA parametric LIF kernels (``csrc/cuda/plif_cuda.cu`` in ``libtks_kernels_cuda``)
as the CUDA kernels of the ``tks_kernels::plif_forward`` / ``plif_backward`` ops that
``cpu.py`` defines: ``torch.library`` dispatches by the tensors' device, and the fake
implementations and autograd registered there serve both. What forward saves is the
same too; k is read from device memory (no host sync), and dL/dk is summed per block
with the partials added in a fixed order by one more block, so it is deterministic.
For T <= ``recompute_max_steps_cuda(dtype)`` (32; fp64 16) forward saves x and backward
recomputes from it in chunks of 8 steps (``plif_forward_x`` / ``plif_backward_x``), by LIF's rule and
byte counts (``ops/lif/cuda.py``); dL/dk sums the steps in the saved-value backward's
order, so both give the same bits in fp32/fp64.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import _native
from ..lif.cuda import HAS_RECOMPUTE, _on_device, check_devices, layout_backward_x
from . import PLIFConfig
from .cpu import (PLIF_BACKWARD, PLIF_BACKWARD_X, PLIF_FORWARD, PLIF_FORWARD_X, check_k, forward_op, run_backward,
                  run_forward)
# Any surrogate, fused: the same op functions; the CUDA backward reads g' = sg from memory.
from .cpu import backward_sg, forward_saved, saved_distance  # noqa: F401


def _cuda_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                  save_for_backward, return_v_seq, fire_at_threshold=True):
    lib = _native.cuda_lib
    check_devices(x, v_init=v_init, k=k)
    with _on_device(x.device):
        stream = _native.cuda_stream(x.device)

        def launch(k, dtype, x, v0, spikes, v_last, v_seq, saved, T, N, *rest):
            _native.check(lib, lib.tks_plif_forward_cuda(dtype, x, v0, k.data_ptr(), spikes, v_last, v_seq, saved,
                                                         T, N, *rest, stream))

        return run_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, save_for_backward,
                           return_v_seq, fire_at_threshold, launch)


def _cuda_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, decay_input, v_threshold, v_reset,
                   soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True, surrogate_grad=None):
    lib = _native.cuda_lib
    check_devices(saved, grad_spikes=grad_spikes, grad_v_last=grad_v_last, grad_v_seq=grad_v_seq, v_init=v_init,
                  k=k)
    with _on_device(saved.device):
        stream = _native.cuda_stream(saved.device)

        def launch(k, dtype, gs, gvl, gvs, d, v0, sg, grad_x, grad_v_init, T, N, *rest):
            grad_k = torch.zeros((), dtype=k.dtype, device=k.device)
            # Per-block partial sums of dL/dk; freed to the caching allocator on this stream.
            workspace = torch.empty(lib.tks_plif_backward_cuda_workspace(dtype, N), dtype=torch.float64,
                                    device=saved.device)
            _native.check(lib, lib.tks_plif_backward_cuda(dtype, gs, gvl, gvs, d, v0, k.data_ptr(), sg, grad_x,
                                                          grad_v_init, grad_k.data_ptr(), workspace.data_ptr(), T,
                                                          N, *rest, stream))
            return grad_k

        return run_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, decay_input, v_threshold,
                            v_reset, soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, surrogate_grad,
                            launch)


def _cuda_forward_x(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                    return_v_seq, fire_at_threshold=True):
    spikes, v_last, v_seq, _ = _cuda_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate,
                                             alpha, detach_reset, False, return_v_seq, fire_at_threshold)
    return spikes, v_last, v_seq


def _cuda_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init, k, decay_input, v_threshold, v_reset,
                     soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True):
    lib = _native.cuda_lib
    check_k(k, x_in)
    x, v0, gs, gvl, gvs, grad_x, grad_v_init = layout_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init)
    grad_k = torch.zeros((), dtype=k.dtype, device=k.device)
    if x.numel() > 0:
        with _on_device(x.device):
            code, N = _native.dtype_code(x.dtype), x[0].numel()
            # Per-block partial sums of dL/dk; freed to the caching allocator on this stream.
            workspace = torch.empty(lib.tks_plif_backward_cuda_workspace(code, N), dtype=torch.float64,
                                    device=x.device)
            _native.check(lib, lib.tks_plif_backward_x_cuda(
                code, gs.data_ptr(), _native.ptr(gvl), _native.ptr(gvs), x.data_ptr(), _native.ptr(v0), k.data_ptr(),
                grad_x.data_ptr(), grad_v_init.data_ptr(), grad_k.data_ptr(), workspace.data_ptr(), x.shape[0], N,
                v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold),
                surrogate, alpha, _native.cuda_stream(x.device)))
    return grad_x, grad_v_init, grad_k


if _native.cuda_lib is not None:
    PLIF_FORWARD.register("cuda", _cuda_forward)
    PLIF_BACKWARD.register("cuda", _cuda_backward)
if HAS_RECOMPUTE:
    PLIF_FORWARD_X.register("cuda", _cuda_forward_x)
    PLIF_BACKWARD_X.register("cuda", _cuda_backward_x)


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    """x: [T, *] on a CUDA device -> spikes [T, *], v_last [*] (and v_seq [T, *])."""
    if x.device.type != "cuda":
        raise RuntimeError(f"the cuda PLIF backend runs on CUDA tensors, but x is on {x.device}")
    return forward_op(x, v_init, k, cfg, return_v_seq)
