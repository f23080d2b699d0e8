"""The layout the native kernels see, shared by the LIF-family ops' CPU and CUDA glue.

Every ``[T, *]`` tensor of a call is ``[T, N]`` with N contiguous elements per step in one
memory order (x's: contiguous, channels_last, any permutation of the step's dims), and
every ``[*]`` tensor has the layout of ``x[0]``. Tensors already laid out so are used
as they are: a channels_last activation is not copied.
"""
from __future__ import annotations

from typing import Optional

import torch


def _dense(sizes, strides) -> bool:
    """Whether a tensor of these sizes and strides covers its memory exactly once."""
    expected = 1
    for size, stride in sorted((p for p in zip(sizes, strides) if p[0] != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def time_major_dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when its steps are dense and time is the outermost dimension in memory,
    else a contiguous copy."""
    if x.is_contiguous() or x.numel() == 0:
        return x
    if x.shape[0] == 1 or x.stride(0) == x.numel() // x.shape[0]:
        if _dense(x.shape[1:], x.stride()[1:]):
            return x
    return x.contiguous()


def like_layout(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t (ref's shape) with exactly ref's strides, in t's dtype (a copy only when they differ)."""
    if t.stride() == ref.stride() or ref.numel() <= 1:
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


def grad_like(grad: Optional[torch.Tensor], ref: torch.Tensor, name: str) -> Optional[torch.Tensor]:
    """The gradient of an output shaped like ref (None when absent), checked, in ref's
    dtype and with ref's strides."""
    if grad is None:
        return None
    if grad.shape != ref.shape:
        raise RuntimeError(f"tks_kernels: {name} has shape {tuple(grad.shape)}, expected {tuple(ref.shape)}")
    return like_layout(grad.to(ref.dtype), ref)


def check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise RuntimeError(f"tks_kernels: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")


def check_steps(t: torch.Tensor, name: str) -> None:
    if t.dim() < 1 or t.shape[0] < 1:
        raise RuntimeError(f"tks_kernels: {name} must be [T, *] with T >= 1, got shape {tuple(t.shape)}")


def check_step_tensor(t: Optional[torch.Tensor], x: torch.Tensor, name: str) -> None:
    """A [*] tensor that goes with x [T, *]: x's device, dtype and step shape."""
    if t is None:
        return
    if t.device != x.device:
        raise RuntimeError(f"tks_kernels: {name} is on {t.device} but x is on {x.device}")
    if t.dtype != x.dtype:
        raise RuntimeError(f"tks_kernels: {name} has dtype {t.dtype} but x has {x.dtype}")
    if t.shape != x.shape[1:]:
        raise RuntimeError(f"tks_kernels: {name} must have shape {tuple(x.shape[1:])} (x.shape[1:]), "
                           f"got {tuple(t.shape)}")


def check_same_device(t: Optional[torch.Tensor], ref: torch.Tensor, name: str) -> None:
    if t is not None and t.device != ref.device:
        raise RuntimeError(f"tks_kernels: {name} is on {t.device} but the op runs on {ref.device}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def surrogate_grad_like(sg: Optional[torch.Tensor], ref: torch.Tensor) -> Optional[torch.Tensor]:
    """The external g' tensor of a backward: ref's shape and layout, the compute dtype."""
    if sg is None:
        return None
    if sg.shape != ref.shape:
        raise RuntimeError(f"tks_kernels: surrogate_grad has shape {tuple(sg.shape)}, expected {tuple(ref.shape)}")
    if sg.device != ref.device:
        raise RuntimeError(f"tks_kernels: surrogate_grad is on {sg.device} but the op runs on {ref.device}")
    return like_layout(sg.to(compute_dtype(ref.dtype)), ref)
