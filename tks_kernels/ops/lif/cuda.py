"""The CUDA LIF kernels (``csrc/cuda/lif_cuda_{fwd,bwd}.cu`` in ``libtks_kernels_cuda``)
as the CUDA kernels of the ``tks_kernels::lif_forward`` / ``lif_backward`` ops that
``cpu.py`` defines: ``torch.library`` dispatches by the tensors' device, and the fake
implementations and autograd registered there serve both. What forward saves is the
same too (see ``cpu.py``). Kernels run on the tensors' device and its current stream.
"""
from __future__ import annotations

from typing import Optional

import torch

from ... import _native
from . import LIFConfig
from .cpu import LIF_BACKWARD, LIF_FORWARD, forward_op, run_backward, run_forward
# Any surrogate, fused: the same op functions; the CUDA backward reads g' = sg from memory.
from .cpu import backward_sg, forward_saved, saved_distance  # noqa: F401


def _on_device(device: torch.device):
    """A guard that makes device current (nothing when it already is)."""
    if device.index is None or device.index == torch.cuda.current_device():
        return _NoGuard
    return torch.cuda.device(device)


class _NoGuardType:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NoGuard = _NoGuardType()


def check_devices(ref: torch.Tensor, **tensors) -> None:
    """Every given (optional) tensor on ref's device: the op runs there."""
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            raise RuntimeError(f"tks_kernels: {name} is on {t.device} but the op runs on {ref.device}")


def _cuda_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                  save_for_backward, return_v_seq, fire_at_threshold=True):
    lib = _native.cuda_lib
    check_devices(x, v_init=v_init)
    with _on_device(x.device):
        stream = _native.cuda_stream(x.device)

        def launch(*args):
            _native.check(lib, lib.tks_lif_forward_cuda(*args, stream))

        return run_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, save_for_backward,
                           return_v_seq, fire_at_threshold, launch)


def _cuda_backward(grad_spikes, grad_v_last, grad_v_seq, d_saved, tau, decay_input, v_threshold, v_reset,
                   soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True, surrogate_grad=None):
    lib = _native.cuda_lib
    check_devices(d_saved, grad_spikes=grad_spikes, grad_v_last=grad_v_last, grad_v_seq=grad_v_seq,
                  surrogate_grad=surrogate_grad)
    with _on_device(d_saved.device):
        stream = _native.cuda_stream(d_saved.device)

        def launch(*args):
            _native.check(lib, lib.tks_lif_backward_cuda(*args, stream))

        return run_backward(grad_spikes, grad_v_last, grad_v_seq, d_saved, tau, decay_input, v_threshold, v_reset,
                            soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, surrogate_grad, launch)


if _native.cuda_lib is not None:
    LIF_FORWARD.register("cuda", _cuda_forward)
    LIF_BACKWARD.register("cuda", _cuda_backward)


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    """x: [T, *] on a CUDA device -> spikes [T, *], v_last [*] (and v_seq [T, *])."""
    if x.device.type != "cuda":
        raise RuntimeError(f"the cuda LIF backend runs on CUDA tensors, but x is on {x.device}")
    return forward_op(x, v_init, cfg, return_v_seq)
