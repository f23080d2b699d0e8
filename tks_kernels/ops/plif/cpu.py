"""The native parametric LIF kernels (``libtks_kernels``: CPU; ``libtks_kernels_cuda``:
CUDA) as the ``torch.library`` custom ops ``tks_kernels::plif_forward`` /
``plif_backward``, with fake implementations and autograd, so
``torch.compile(fullgraph=True)`` traces through them. This module defines the ops and
their CPU kernels; ``cuda.py`` registers the CUDA ones.

On the CPU, as LIF (``ops/lif/cpu.py``), forward saves the input itself
(``plif_forward_x``: x, v_init and k are kept by autograd, forward writes only the spikes)
and backward recomputes from it (``plif_backward_x``), for T <= ``recompute_max_steps``;
there, in fp32/fp64, every gradient is the saved path's bit for bit. At more steps, on
CUDA and in the contract-3 functions, forward saves one value per neuron and step in x's
dtype: h itself for fp32/fp64 (exact), d = h - v_threshold for fp16/bf16 (saturated, its
sign kept, so backward's spikes equal forward's); plus references to v_init ([*]) and k
(a scalar); nothing under no_grad. Backward recovers v_{t-1} from step t-1's saved value
(``v_from_saved`` in lif_math.h) and sums dL/dk inside the fused pass; autograd carries
it on to w through k = sigmoid(w).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ... import _native
from .._layout import (check_float, check_same_device, check_step_tensor, check_steps, compute_dtype, grad_like,
                       like_layout, surrogate_grad_like, time_major_dense)
from .. import _cpu_cache
from .._native_op import NativeOp
from ..lif.cpu import recomputes
from . import PLIFConfig

_LIB = torch.library.Library("tks_kernels", "FRAGMENT")
_LIB.define(
    "plif_forward(Tensor x, Tensor? v_init, Tensor k, bool decay_input, float v_threshold, float v_reset, "
    "bool soft_reset, int surrogate, float alpha, bool detach_reset, bool save_for_backward, bool return_v_seq, "
    "bool fire_at_threshold=True) -> (Tensor spikes, Tensor v_last, Tensor v_seq, Tensor saved)"
)
_LIB.define(
    "plif_backward(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq, Tensor saved, Tensor? v_init, "
    "Tensor k, bool decay_input, float v_threshold, float v_reset, bool soft_reset, int surrogate, float alpha, "
    "bool detach_reset, bool fire_at_threshold=True, Tensor? surrogate_grad=None) "
    "-> (Tensor grad_x, Tensor grad_v_init, Tensor grad_k)"
)

_LIB.define(
    "plif_forward_x(Tensor x, Tensor? v_init, Tensor k, bool decay_input, float v_threshold, float v_reset, "
    "bool soft_reset, int surrogate, float alpha, bool detach_reset, bool return_v_seq, "
    "bool fire_at_threshold=True) -> (Tensor spikes, Tensor v_last, Tensor v_seq)"
)
_LIB.define(
    "plif_backward_x(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq, Tensor x, Tensor? v_init, "
    "Tensor k, bool decay_input, float v_threshold, float v_reset, bool soft_reset, int surrogate, float alpha, "
    "bool detach_reset, bool fire_at_threshold=True) -> (Tensor grad_x, Tensor grad_v_init, Tensor grad_k)"
)


def check_k(k: torch.Tensor, x: torch.Tensor) -> None:
    """k: one element of the compute dtype (float32; float64 for float64 x) on x's device."""
    if k.numel() != 1 or k.dim() != 0:
        raise RuntimeError(f"tks_kernels: k (the decay 1/tau) must be a 0-dim tensor, got shape {tuple(k.shape)}")
    want = compute_dtype(x.dtype)
    if k.dtype != want:
        raise RuntimeError(f"tks_kernels: k must have the compute dtype {want} for x of dtype {x.dtype}, got {k.dtype}")
    if k.device != x.device:
        raise RuntimeError(f"tks_kernels: k is on {k.device} but x is on {x.device}")


def run_forward(x_in, v_init, k, decay_input, v_threshold, v_reset, soft_reset, save, return_v_seq,
                fire_at_threshold, launch: Callable[..., None]):
    """Checks, layout and outputs of plif_forward; ``launch(k, *args)`` runs the device's kernel."""
    check_float(x_in, "x")
    check_steps(x_in, "x")
    check_step_tensor(v_init, x_in, "v_init")
    check_k(k, x_in)
    x = time_major_dense(x_in)
    x0 = x[0]
    v0 = like_layout(v_init, x0) if v_init is not None else None
    spikes = _cpu_cache.empty_like(x)
    v_last = _cpu_cache.empty_like(x0)
    v_seq = _cpu_cache.empty_like(x) if return_v_seq else None
    saved = _cpu_cache.empty_like(x) if save else None
    if x.numel() > 0:
        launch(k, _native.dtype_code(x.dtype), x.data_ptr(), _native.ptr(v0), spikes.data_ptr(), v_last.data_ptr(),
               _native.ptr(v_seq), _native.ptr(saved), x.shape[0], x0.numel(), v_threshold, v_reset,
               _native.lif_flags(decay_input, soft_reset, False, fire_at_threshold))
    # Absent outputs are distinct empty tensors: a custom op's outputs may not alias.
    return (spikes, v_last, v_seq if return_v_seq else x.new_empty((0,)), saved if save else x.new_empty((0,)))


def run_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, decay_input, v_threshold, v_reset,
                 soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, surrogate_grad,
                 launch: Callable[..., torch.Tensor]):
    """Checks, layout and outputs of plif_backward; ``launch(k, *args)`` runs the device's
    kernel and returns grad_k."""
    check_float(saved, "saved")
    if saved.dim() < 1 or saved.shape[0] < 1:
        raise RuntimeError("tks_kernels: saved (plif_forward's fourth output) must be [T, *], got shape "
                           f"{tuple(saved.shape)}")
    if grad_spikes.shape != saved.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)} but the saved state has "
                           f"{tuple(saved.shape)}")
    check_k(k, saved)
    d = time_major_dense(saved)
    d0 = d[0]
    gs = like_layout(grad_spikes.to(d.dtype), d)
    gvl = grad_like(grad_v_last, d0, "grad_v_last")
    gvs = grad_like(grad_v_seq, d, "grad_v_seq")
    v0 = None
    if v_init is not None:
        if v_init.shape != d0.shape:
            raise RuntimeError(f"tks_kernels: v_init has shape {tuple(v_init.shape)}, expected {tuple(d0.shape)}")
        check_same_device(v_init, d, "v_init")
        v0 = like_layout(v_init.to(d.dtype), d0)
    sg = surrogate_grad_like(surrogate_grad, d)
    grad_x = _cpu_cache.empty_like(d)
    grad_v_init = _cpu_cache.empty_like(d0)
    if d.numel() == 0:
        return grad_x, grad_v_init, torch.zeros((), dtype=k.dtype, device=k.device)
    grad_k = launch(k, _native.dtype_code(d.dtype, "saved"), gs.data_ptr(), _native.ptr(gvl), _native.ptr(gvs),
                    d.data_ptr(), _native.ptr(v0), _native.ptr(sg), grad_x.data_ptr(), grad_v_init.data_ptr(),
                    d.shape[0], d0.numel(), v_threshold, v_reset,
                    _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold),
                    _native.SURROGATE_EXTERNAL if sg is not None else surrogate, alpha)
    return grad_x, grad_v_init, grad_k


def _cpu_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                 save_for_backward, return_v_seq, fire_at_threshold=True):
    lib = _native.cpu_lib

    def launch(k, dtype, x, v0, spikes, v_last, v_seq, saved, T, N, *rest):
        _native.check(lib, lib.tks_plif_forward_cpu(dtype, x, v0, spikes, v_last, v_seq, saved, T, N, k.item(),
                                                    *rest, torch.get_num_threads()))

    return run_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, save_for_backward,
                       return_v_seq, fire_at_threshold, launch)


def _cpu_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, decay_input, v_threshold, v_reset,
                  soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True, surrogate_grad=None):
    lib = _native.cpu_lib

    def launch(k, dtype, gs, gvl, gvs, d, v0, sg, grad_x, grad_v_init, T, N, *rest):
        out = _native.ctypes.c_double(0.0)
        _native.check(lib, lib.tks_plif_backward_cpu(dtype, gs, gvl, gvs, d, v0, sg, grad_x, grad_v_init,
                                                     _native.ctypes.byref(out), T, N, k.item(), *rest,
                                                     torch.get_num_threads()))
        return torch.tensor(out.value, dtype=k.dtype)

    return run_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, decay_input, v_threshold, v_reset,
                        soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, surrogate_grad, launch)


@torch.library.register_fake("tks_kernels::plif_forward")
def _plif_forward_fake(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                       save_for_backward, return_v_seq, fire_at_threshold=True):
    return (
        torch.empty_like(x),
        torch.empty_like(x[0]),
        torch.empty_like(x) if return_v_seq else x.new_empty((0,)),
        torch.empty_like(x) if save_for_backward else x.new_empty((0,)),
    )


@torch.library.register_fake("tks_kernels::plif_backward")
def _plif_backward_fake(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, *scalars, **kwargs):
    return torch.empty_like(saved), torch.empty_like(saved[0]), torch.empty_like(k)


def _setup_context(ctx, inputs, output):
    (x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     save, return_v_seq, *rest) = inputs
    if not save:
        raise RuntimeError("tks_kernels::plif_forward needs save_for_backward=True to be differentiated")
    ctx.save_for_backward(output[3], v_init, k)
    ctx.mark_non_differentiable(output[3])
    # Gradients of unused outputs stay None: no [T, *] zeros are made for them.
    ctx.set_materialize_grads(False)
    ctx.scalars = (decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   rest[0] if rest else True)
    ctx.has_v_seq = return_v_seq


def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_saved):
    saved, v_init, k = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(saved)
    grad_x, grad_v_init, grad_k = PLIF_BACKWARD(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, saved, v_init, k, *ctx.scalars
    )
    return (grad_x, grad_v_init if v_init is not None else None, grad_k) + (None,) * 10


PLIF_FORWARD = NativeOp(_LIB, "plif_forward", _setup_context, _backward)
PLIF_BACKWARD = NativeOp(_LIB, "plif_backward")
if _native.cpu_lib is not None:
    PLIF_FORWARD.register("cpu", _cpu_forward)
    PLIF_BACKWARD.register("cpu", _cpu_backward)


def run_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init, k, decay_input, v_threshold, v_reset,
                   soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True):
    """Checks, layout and outputs of plif_backward_x (CPU): x_in and v_init as forward got them."""
    check_float(x_in, "x")
    check_steps(x_in, "x")
    check_step_tensor(v_init, x_in, "v_init")
    check_k(k, x_in)
    if grad_spikes.shape != x_in.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)} but x has "
                           f"{tuple(x_in.shape)}")
    x = time_major_dense(x_in)
    x0 = x[0]
    v0 = like_layout(v_init, x0) if v_init is not None else None
    gs = like_layout(grad_spikes.to(x.dtype), x)
    gvl = grad_like(grad_v_last, x0, "grad_v_last")
    gvs = grad_like(grad_v_seq, x, "grad_v_seq")
    grad_x = _cpu_cache.empty_like(x)
    grad_v_init = _cpu_cache.empty_like(x0)
    if x.numel() == 0:
        return grad_x, grad_v_init, torch.zeros((), dtype=k.dtype, device=k.device)
    lib = _native.cpu_lib
    out = _native.ctypes.c_double(0.0)
    _native.check(lib, lib.tks_plif_backward_x_cpu(
        _native.dtype_code(x.dtype), gs.data_ptr(), _native.ptr(gvl), _native.ptr(gvs), x.data_ptr(), _native.ptr(v0),
        grad_x.data_ptr(), grad_v_init.data_ptr(), _native.ctypes.byref(out), x.shape[0], x0.numel(), k.item(),
        v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold), surrogate,
        alpha, torch.get_num_threads()))
    return grad_x, grad_v_init, torch.tensor(out.value, dtype=k.dtype)


def _cpu_forward_x(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   return_v_seq, fire_at_threshold=True):
    spikes, v_last, v_seq, _ = _cpu_forward(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate,
                                            alpha, detach_reset, False, return_v_seq, fire_at_threshold)
    return spikes, v_last, v_seq


@torch.library.register_fake("tks_kernels::plif_forward_x")
def _plif_forward_x_fake(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                         detach_reset, return_v_seq, fire_at_threshold=True):
    return (torch.empty_like(x), torch.empty_like(x[0]),
            torch.empty_like(x) if return_v_seq else x.new_empty((0,)))


@torch.library.register_fake("tks_kernels::plif_backward_x")
def _plif_backward_x_fake(grad_spikes, grad_v_last, grad_v_seq, x, v_init, k, *scalars, **kwargs):
    return torch.empty_like(x), torch.empty_like(x[0]), torch.empty_like(k)


def _setup_context_x(ctx, inputs, output):
    (x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     return_v_seq, *rest) = inputs
    ctx.save_for_backward(x, v_init, k)  # the inputs themselves: nothing new is kept
    ctx.set_materialize_grads(False)
    ctx.scalars = (decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   rest[0] if rest else True)
    ctx.has_v_seq = return_v_seq


def _backward_x(ctx, grad_spikes, grad_v_last, grad_v_seq):
    x, v_init, k = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(x)
    grad_x, grad_v_init, grad_k = PLIF_BACKWARD_X(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, x, v_init, k, *ctx.scalars
    )
    return (grad_x, grad_v_init if v_init is not None else None, grad_k) + (None,) * 9


PLIF_FORWARD_X = NativeOp(_LIB, "plif_forward_x", _setup_context_x, _backward_x)
PLIF_BACKWARD_X = NativeOp(_LIB, "plif_backward_x")
if _native.cpu_lib is not None:
    PLIF_FORWARD_X.register("cpu", _cpu_forward_x)
    PLIF_BACKWARD_X.register("cpu", run_backward_x)


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
               return_v_seq: bool):
    """Calls ``tks_kernels::plif_forward_x`` (CPU, T within the recomputing backward's
    buffer, a gradient needed: x is saved) or ``tks_kernels::plif_forward``, saving for
    backward only when a gradient is needed."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or k.requires_grad or (v_init is not None and v_init.requires_grad)
    )
    if needs_grad and recomputes(x):
        spikes, v_last, v_seq = PLIF_FORWARD_X(
            x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, return_v_seq, cfg.fire_at_threshold, grad=True,
        )
        return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)
    spikes, v_last, v_seq, _ = PLIF_FORWARD(
        x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, needs_grad, return_v_seq, cfg.fire_at_threshold, grad=needs_grad,
    )
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    return forward_op(x, v_init, k, cfg, return_v_seq)


# Any surrogate, fused (the generic autograd wrapper is in ops/plif/__init__.py).

def forward_saved(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                  return_v_seq: bool):
    """(spikes, v_last, v_seq or None, saved) with no autograd."""
    with torch.no_grad():
        spikes, v_last, v_seq, saved = PLIF_FORWARD(
            x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, True, return_v_seq, cfg.fire_at_threshold,
        )
    return spikes, v_last, v_seq if return_v_seq else None, saved


def backward_sg(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, sg, cfg: PLIFConfig):
    """(grad_x, grad_v_init, grad_k) with g'(h_t - v_threshold) = sg ([T, *], compute dtype)."""
    return PLIF_BACKWARD(
        grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
        cfg.soft_reset, cfg.surrogate_id, cfg.alpha, cfg.detach_reset, cfg.fire_at_threshold, sg,
    )


def saved_distance(saved: torch.Tensor, cfg: PLIFConfig) -> torch.Tensor:
    """d = h - v_threshold in the compute dtype: fp32/fp64 storage saves h, 16-bit saves d."""
    if saved.dtype in (torch.float32, torch.float64):
        return saved - cfg.v_threshold
    return saved.float()
