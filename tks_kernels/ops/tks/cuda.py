"""The fused CUDA TKS loss: the same torch.library op as ``cpu.py``
(``tks_kernels::tks_loss_forward``, with its fake implementation and autograd), whose
CUDA kernel (``csrc/cuda/tks_cuda.cu``) is registered for CUDA tensors by
``csrc/torch/tks_cuda_ops.cpp``. One block per sample; the loss and dL/dlogits in one
forward pass, the gradient kept for backward.
"""
from __future__ import annotations

from .cpu import tks_loss  # noqa: F401  (the op dispatches on the tensors' device)

__all__ = ["tks_loss"]
