"""The native LIF kernels (``libtks_kernels``: CPU; ``libtks_kernels_cuda``: CUDA) as the
``torch.library`` custom ops ``tks_kernels::lif_forward`` / ``lif_backward``, with fake
implementations and autograd, so ``torch.compile(fullgraph=True)`` traces through them.
This module defines the ops and their CPU kernels; ``cuda.py`` registers the CUDA ones.

On the CPU, forward saves the input itself (``lif_forward_x``: autograd keeps x and
v_init, nothing new is allocated, forward writes only the spikes) and backward
recomputes from it (``lif_backward_x``: per block of neurons the forward recurrence runs
again, the same code and arithmetic, so backward's spikes are forward's in every dtype,
then the reverse recurrence). That moves 20 bytes per neuron and step in fp32 instead of
24 and leaves one fresh [T, *] output fewer to fault in. The recomputing backward keeps
a block's charges for all T steps in a per-thread buffer, so it takes
T <= ``recompute_max_steps(dtype)`` (4096 in fp32, 2048 in fp64); at more steps, on
CUDA, and in the contract-3 functions, forward saves d = h - v_threshold per neuron and
step in x's dtype (``lif_forward`` / ``lif_backward``); in fp16/bf16 it saturates at the
dtype's largest finite value and keeps its sign (so backward's spikes equal forward's
under both firing rules). Either way 4 bytes per neuron and step are saved in fp32, 2 in
fp16/bf16, nothing when no gradient is needed.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ... import _native
from .._layout import (check_float, check_step_tensor, check_steps, grad_like, like_layout, surrogate_grad_like,
                       time_major_dense)
from .. import _cpu_cache
from .._native_op import NativeOp
from . import LIFConfig

_LIB = torch.library.Library("tks_kernels", "FRAGMENT")
_LIB.define(
    "lif_forward(Tensor x, Tensor? v_init, float tau, bool decay_input, float v_threshold, float v_reset, "
    "bool soft_reset, int surrogate, float alpha, bool detach_reset, bool save_for_backward, bool return_v_seq, "
    "bool fire_at_threshold=True) -> (Tensor spikes, Tensor v_last, Tensor v_seq, Tensor d_saved)"
)
_LIB.define(
    "lif_backward(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq, Tensor d_saved, float tau, "
    "bool decay_input, float v_threshold, float v_reset, bool soft_reset, int surrogate, float alpha, "
    "bool detach_reset, bool fire_at_threshold=True, Tensor? surrogate_grad=None) -> (Tensor grad_x, Tensor grad_v_init)"
)

_LIB.define(
    "lif_forward_x(Tensor x, Tensor? v_init, float tau, bool decay_input, float v_threshold, float v_reset, "
    "bool soft_reset, int surrogate, float alpha, bool detach_reset, bool return_v_seq, "
    "bool fire_at_threshold=True) -> (Tensor spikes, Tensor v_last, Tensor v_seq)"
)
_LIB.define(
    "lif_backward_x(Tensor grad_spikes, Tensor? grad_v_last, Tensor? grad_v_seq, Tensor x, Tensor? v_init, "
    "float tau, bool decay_input, float v_threshold, float v_reset, bool soft_reset, int surrogate, float alpha, "
    "bool detach_reset, bool fire_at_threshold=True) -> (Tensor grad_x, Tensor grad_v_init)"
)

# The largest T per dtype for which the recomputing backward's buffer holds a block's charges.
_MAX_STEPS = ({dtype: int(_native.cpu_lib.tks_lif_recompute_max_steps_cpu(code))
               for dtype, code in _native.DTYPE_CODES.items()} if _native.cpu_lib is not None else {})


def recompute_max_steps(dtype: torch.dtype) -> int:
    """The largest T for which the CPU backward recomputes from x (0: never)."""
    return _MAX_STEPS.get(dtype, 0)


# Device type -> the largest T of its recomputing backward, by dtype (cuda.py adds "cuda").
RECOMPUTE_MAX_STEPS: dict = {"cpu": recompute_max_steps}


def recomputes(x: torch.Tensor) -> bool:
    """Whether a forward of x saves x and the backward recomputes from it: T within the
    device's recomputing backward (see the module docstring), else the saved-d path."""
    max_steps = RECOMPUTE_MAX_STEPS.get(x.device.type)
    return max_steps is not None and x.dim() >= 1 and 1 <= x.shape[0] <= max_steps(x.dtype)


# launch(dtype_code, *pointers, T, N, flags): the device's C function, partially applied.
Launch = Callable[..., None]


def run_forward(x_in, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, save, return_v_seq,
                fire_at_threshold, launch: Launch):
    """Checks, layout and outputs of lif_forward; ``launch`` runs the device's kernel."""
    check_float(x_in, "x")
    check_steps(x_in, "x")
    check_step_tensor(v_init, x_in, "v_init")
    x = time_major_dense(x_in)
    x0 = x[0]
    v0 = like_layout(v_init, x0) if v_init is not None else None
    spikes = _cpu_cache.empty_like(x)
    v_last = _cpu_cache.empty_like(x0)
    v_seq = _cpu_cache.empty_like(x) if return_v_seq else None
    d_saved = _cpu_cache.empty_like(x) if save else None
    if x.numel() > 0:
        launch(_native.dtype_code(x.dtype), x.data_ptr(), _native.ptr(v0), spikes.data_ptr(), v_last.data_ptr(),
               _native.ptr(v_seq), _native.ptr(d_saved), x.shape[0], x0.numel(), tau, v_threshold, v_reset,
               _native.lif_flags(decay_input, soft_reset, False, fire_at_threshold))
    # Absent outputs are distinct empty tensors: a custom op's outputs may not alias.
    return (spikes, v_last, v_seq if return_v_seq else x.new_empty((0,)),
            d_saved if save else x.new_empty((0,)))


def run_backward(grad_spikes, grad_v_last, grad_v_seq, d_saved, tau, decay_input, v_threshold, v_reset, soft_reset,
                 surrogate, alpha, detach_reset, fire_at_threshold, surrogate_grad, launch: Launch):
    """Checks, layout and outputs of lif_backward; ``launch`` runs the device's kernel."""
    check_float(d_saved, "d_saved")
    check_steps(d_saved, "d_saved")
    if grad_spikes.shape != d_saved.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)} but the saved state has "
                           f"{tuple(d_saved.shape)}")
    d = time_major_dense(d_saved)
    d0 = d[0]
    gs = like_layout(grad_spikes.to(d.dtype), d)
    gvl = grad_like(grad_v_last, d0, "grad_v_last")
    gvs = grad_like(grad_v_seq, d, "grad_v_seq")
    sg = surrogate_grad_like(surrogate_grad, d)
    grad_x = _cpu_cache.empty_like(d)
    grad_v_init = _cpu_cache.empty_like(d0)
    if d.numel() > 0:
        launch(_native.dtype_code(d.dtype, "d_saved"), gs.data_ptr(), _native.ptr(gvl), _native.ptr(gvs),
               d.data_ptr(), _native.ptr(sg), grad_x.data_ptr(), grad_v_init.data_ptr(), d.shape[0], d0.numel(),
               tau, v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold),
               _native.SURROGATE_EXTERNAL if sg is not None else surrogate, alpha)
    return grad_x, grad_v_init


def _cpu_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                 save_for_backward, return_v_seq, fire_at_threshold=True):
    lib = _native.cpu_lib

    def launch(*args):
        _native.check(lib, lib.tks_lif_forward_cpu(*args, torch.get_num_threads()))

    return run_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, save_for_backward,
                       return_v_seq, fire_at_threshold, launch)


def _cpu_backward(grad_spikes, grad_v_last, grad_v_seq, d_saved, tau, decay_input, v_threshold, v_reset, soft_reset,
                  surrogate, alpha, detach_reset, fire_at_threshold=True, surrogate_grad=None):
    lib = _native.cpu_lib

    def launch(*args):
        _native.check(lib, lib.tks_lif_backward_cpu(*args, torch.get_num_threads()))

    return run_backward(grad_spikes, grad_v_last, grad_v_seq, d_saved, tau, decay_input, v_threshold, v_reset,
                        soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, surrogate_grad, launch)


@torch.library.register_fake("tks_kernels::lif_forward")
def _lif_forward_fake(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                      save_for_backward, return_v_seq, fire_at_threshold=True):
    return (
        torch.empty_like(x),
        torch.empty_like(x[0]),
        torch.empty_like(x) if return_v_seq else x.new_empty((0,)),
        torch.empty_like(x) if save_for_backward else x.new_empty((0,)),
    )


@torch.library.register_fake("tks_kernels::lif_backward")
def _lif_backward_fake(grad_spikes, grad_v_last, grad_v_seq, d_saved, *scalars, **kwargs):
    return torch.empty_like(d_saved), torch.empty_like(d_saved[0])


def _setup_context(ctx, inputs, output):
    (x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     save, return_v_seq, *rest) = inputs
    if not save:
        raise RuntimeError("tks_kernels::lif_forward needs save_for_backward=True to be differentiated")
    ctx.save_for_backward(output[3])
    ctx.set_materialize_grads(False)  # no zero-filled gradients for unused outputs
    fire_at_threshold = rest[0] if rest else True
    ctx.scalars = (tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   fire_at_threshold)
    ctx.has_v_seq = return_v_seq
    ctx.has_v_init = v_init is not None


def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_d_saved):
    (d_saved,) = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(d_saved)
    grad_x, grad_v_init = LIF_BACKWARD(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, d_saved, *ctx.scalars
    )
    return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * 11


LIF_FORWARD = NativeOp(_LIB, "lif_forward", _setup_context, _backward)
LIF_BACKWARD = NativeOp(_LIB, "lif_backward")
if _native.cpu_lib is not None:
    LIF_FORWARD.register("cpu", _cpu_forward)
    LIF_BACKWARD.register("cpu", _cpu_backward)


def run_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init, tau, decay_input, v_threshold, v_reset,
                   soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True):
    """Checks, layout and outputs of lif_backward_x (CPU): x_in and v_init as forward got them."""
    check_float(x_in, "x")
    check_steps(x_in, "x")
    check_step_tensor(v_init, x_in, "v_init")
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
    if x.numel() > 0:
        lib = _native.cpu_lib
        _native.check(lib, lib.tks_lif_backward_x_cpu(
            _native.dtype_code(x.dtype), gs.data_ptr(), _native.ptr(gvl), _native.ptr(gvs), x.data_ptr(),
            _native.ptr(v0), grad_x.data_ptr(), grad_v_init.data_ptr(), x.shape[0], x0.numel(), tau, v_threshold,
            v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold), surrogate, alpha,
            torch.get_num_threads()))
    return grad_x, grad_v_init


def _cpu_forward_x(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   return_v_seq, fire_at_threshold=True):
    spikes, v_last, v_seq, _ = _cpu_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate,
                                            alpha, detach_reset, False, return_v_seq, fire_at_threshold)
    return spikes, v_last, v_seq


@torch.library.register_fake("tks_kernels::lif_forward_x")
def _lif_forward_x_fake(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                        detach_reset, return_v_seq, fire_at_threshold=True):
    return (torch.empty_like(x), torch.empty_like(x[0]),
            torch.empty_like(x) if return_v_seq else x.new_empty((0,)))


@torch.library.register_fake("tks_kernels::lif_backward_x")
def _lif_backward_x_fake(grad_spikes, grad_v_last, grad_v_seq, x, v_init, *scalars, **kwargs):
    return torch.empty_like(x), torch.empty_like(x[0])


def _setup_context_x(ctx, inputs, output):
    (x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     return_v_seq, *rest) = inputs
    # The input itself is what backward needs: autograd keeps it (no copy), and its
    # version counter refuses a backward after x was changed in place.
    ctx.save_for_backward(x, v_init)
    ctx.set_materialize_grads(False)
    fire_at_threshold = rest[0] if rest else True
    ctx.scalars = (tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                   fire_at_threshold)
    ctx.has_v_seq = return_v_seq
    ctx.has_v_init = v_init is not None


def _backward_x(ctx, grad_spikes, grad_v_last, grad_v_seq):
    x, v_init = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(x)
    grad_x, grad_v_init = LIF_BACKWARD_X(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, x, v_init, *ctx.scalars
    )
    return (grad_x, grad_v_init if ctx.has_v_init else None) + (None,) * 10


LIF_FORWARD_X = NativeOp(_LIB, "lif_forward_x", _setup_context_x, _backward_x)
LIF_BACKWARD_X = NativeOp(_LIB, "lif_backward_x")
if _native.cpu_lib is not None:
    LIF_FORWARD_X.register("cpu", _cpu_forward_x)
    LIF_BACKWARD_X.register("cpu", run_backward_x)


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool):
    """Calls ``tks_kernels::lif_forward_x`` (CPU, T within the recomputing backward's
    buffer, a gradient needed: x is saved) or ``tks_kernels::lif_forward`` (d is saved
    when a gradient is needed)."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (v_init is not None and v_init.requires_grad))
    if needs_grad and recomputes(x):
        spikes, v_last, v_seq = LIF_FORWARD_X(
            x, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, return_v_seq, cfg.fire_at_threshold, grad=True,
        )
        return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)
    spikes, v_last, v_seq, _ = LIF_FORWARD(
        x, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
        cfg.alpha, cfg.detach_reset, needs_grad, return_v_seq, cfg.fire_at_threshold, grad=needs_grad,
    )
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    return forward_op(x, v_init, cfg, return_v_seq)


# Any surrogate, fused (the generic autograd wrapper is in ops/lif/__init__.py): the
# forward as above, saving d; the backward kernel reads g' = sg instead of computing it.

def forward_saved(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool):
    """(spikes, v_last, v_seq or None, saved) with no autograd; saved is d = h - v_threshold."""
    with torch.no_grad():
        spikes, v_last, v_seq, saved = LIF_FORWARD(
            x, v_init, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, True, return_v_seq, cfg.fire_at_threshold,
        )
    return spikes, v_last, v_seq if return_v_seq else None, saved


def backward_sg(grad_spikes, grad_v_last, grad_v_seq, saved, sg, cfg: LIFConfig):
    """(grad_x, grad_v_init) with g'(h_t - v_threshold) = sg ([T, *], compute dtype)."""
    return LIF_BACKWARD(
        grad_spikes, grad_v_last, grad_v_seq, saved, cfg.tau, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
        cfg.soft_reset, cfg.surrogate_id, cfg.alpha, cfg.detach_reset, cfg.fire_at_threshold, sg,
    )


def saved_distance(saved: torch.Tensor, cfg: LIFConfig) -> torch.Tensor:
    """d = h - v_threshold from what forward saved, in the compute dtype."""
    return saved.to(torch.float64 if saved.dtype == torch.float64 else torch.float32)
