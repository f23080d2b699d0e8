"""The CUDA LIF kernels (``csrc/cuda/lif_cuda_{fwd,bwd}.cu``, registered for the CUDA
dispatch key in ``csrc/torch/lif_cuda_ops.cpp``).

They sit behind the same ``tks_kernels::lif_forward`` / ``lif_backward`` ops as the CPU
kernels: ``torch.library`` dispatches by the tensors' device, and the fake
implementations and autograd registered in ``cpu.py`` serve both. What forward saves
is the same too: d = h - v_threshold per neuron and step, in x's dtype with its sign
kept; nothing under no_grad or when no input requires a gradient.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import LIFConfig
from .cpu import forward_op


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    """x: [T, *] on a CUDA device -> spikes [T, *], v_last [*] (and v_seq [T, *])."""
    if x.device.type != "cuda":
        raise RuntimeError(f"the cuda LIF backend runs on CUDA tensors, but x is on {x.device}")
    return forward_op(x, v_init, cfg, return_v_seq)
