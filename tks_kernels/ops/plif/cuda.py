"""The CUDA parametric LIF kernels (``csrc/cuda/plif_cuda.cu``, registered for the CUDA
dispatch key in ``csrc/torch/plif_cuda_ops.cpp``).

They sit behind the same ``tks_kernels::plif_forward`` / ``plif_backward`` ops as the
CPU kernels: ``torch.library`` dispatches by the tensors' device, and the fake
implementations and autograd registered in ``cpu.py`` serve both. What forward saves
is the same too (see ``cpu.py``); dL/dk is summed per block and the partials added in
a fixed order by one more block, so it is deterministic.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..._backends import _has_kernel
from . import PLIFConfig
from .cpu import forward_op


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    """x: [T, *] on a CUDA device -> spikes [T, *], v_last [*] (and v_seq [T, *])."""
    if x.device.type != "cuda":
        raise RuntimeError(f"the cuda PLIF backend runs on CUDA tensors, but x is on {x.device}")
    if not _has_kernel("tks_kernels::plif_forward", "CUDA"):
        raise RuntimeError("backend='cuda' cannot run ParametricLIF here: tks_kernels._C was built without the "
                           "CUDA PLIF kernels (csrc/cuda/plif_cuda.cu); rebuild the extension")
    return forward_op(x, v_init, k, cfg, return_v_seq)
