"""The fused CUDA TKS loss (``csrc/cuda/tks_cuda.cu`` in ``libtks_kernels_cuda``) as the
CUDA kernel of the ``tks_kernels::tks_loss_forward`` op that ``cpu.py`` defines (its fake
implementation and autograd serve both). One block per sample; the loss and dL/dlogits
in one forward pass, the gradient kept for backward.
"""
from __future__ import annotations

import torch

from ... import _native
from ..lif.cuda import _on_device
from .cpu import TKS_LOSS_FORWARD, run_forward, tks_loss  # noqa: F401  (the op dispatches on the tensors' device)


def _cuda_forward(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing, compute_grad):
    lib = _native.cuda_lib
    with _on_device(logits.device):
        stream = _native.cuda_stream(logits.device)

        def launch(*args):
            _native.check(lib, lib.tks_loss_forward_cuda(*args, stream))

        return run_forward(logits, target, lam, temperature, teacher_mean, detach_teacher, label_smoothing,
                           compute_grad, launch)


if _native.cuda_lib is not None:
    TKS_LOSS_FORWARD.register("cuda", _cuda_forward)

__all__ = ["tks_loss"]
