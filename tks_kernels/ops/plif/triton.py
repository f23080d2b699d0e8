"""The multi-step parametric LIF neuron in Triton: the LIF family's kernels of
``ops/lif/triton.py`` launched with ``LEARN_TAU=True`` (the decay k = 1/tau = sigmoid(w)
loaded from a 0-dim tensor in the compute type, and backward's dL/dk partial sums, one
fp64 slot per program, summed once in fp64 after the kernel: deterministic).

- Training with T <= ``RECOMPUTE_MAX_STEPS`` (default): forward keeps x, v_init and k
  themselves and writes only the spikes (``tks_kernels::plif_forward_x_triton``); backward
  recomputes the forward from x (``tks_kernels::plif_backward_x_triton``), its spikes
  and every v_{t-1} those of the forward in every dtype.
- Longer T and the contract-3 functions: forward saves one value per neuron and step, h
  itself for fp32/fp64 storage (exact), d = h - v_threshold for fp16/bf16 with its side
  of zero kept and saturated (``store_distance`` of ops/_triton_launch.py)
  (``tks_kernels::plif_forward_triton`` / ``plif_backward_triton``); backward recovers
  v_{t-1} from step t-1's saved value.
- ``fire_at_threshold`` (h >= v_threshold, else h > v_threshold) is a run-time flag.

Wrapped as ``torch.library.custom_op``s with fake implementations and autograd, for the
reasons given in ``ops/lif/triton.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._triton_launch import forward_outputs
from ..lif.triton import (
    SAVE_D,
    SAVE_H,
    SAVE_NOTHING,
    backward_x_outputs,
    check_k,
    recomputes,
    run_backward,
    run_backward_x,
    run_forward,
)
from . import PLIFConfig


def _check_k(k: torch.Tensor, x: torch.Tensor) -> torch.dtype:
    return check_k(k, x, "PLIF")


def _save_mode(x: torch.Tensor) -> int:
    """h for fp32/fp64 storage (exact), else the saturated, side-keeping d."""
    return SAVE_H if x.dtype in (torch.float32, torch.float64) else SAVE_D


@torch.library.custom_op("tks_kernels::plif_forward_triton", mutates_args=())
def plif_forward_triton(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    k: torch.Tensor,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    save_for_backward: bool,
    return_v_seq: bool,
    fire_at_threshold: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, *], k [] -> (spikes [T, *], v_last [*], v_seq [T, *] or [0], saved [T, *] or [0]).

    ``v_reset`` is the rest potential (0 for soft reset); ``surrogate``, ``alpha`` and
    ``detach_reset`` are only for the autograd formula. ``fire_at_threshold``: spikes on
    h >= v_threshold, else on h > v_threshold.
    """
    return run_forward(x, v_init, k, 1.0, decay_input, v_threshold, v_reset, soft_reset,
                       _save_mode(x) if save_for_backward else SAVE_NOTHING, return_v_seq, fire_at_threshold, "PLIF")


@plif_forward_triton.register_fake
def _plif_forward_triton_fake(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                              detach_reset, save_for_backward, return_v_seq, fire_at_threshold=True):
    _, _, spikes, v_last, v_seq, saved = forward_outputs(x, save_for_backward, return_v_seq)
    return spikes, v_last, v_seq, saved


@torch.library.custom_op("tks_kernels::plif_backward_triton", mutates_args=())
def plif_backward_triton(
    grad_spikes: Optional[torch.Tensor],
    grad_v_last: Optional[torch.Tensor],
    grad_v_seq: Optional[torch.Tensor],
    saved: torch.Tensor,
    v_init: Optional[torch.Tensor],
    k: torch.Tensor,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    fire_at_threshold: bool = True,
    sg: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of (spikes, v_last, v_seq) -> (grad_x [T, *], grad_v_init [*], grad_k []);
    a missing gradient counts as zero. ``saved`` is the forward's fourth output, ``v_init``
    the forward's (v_{-1} enters dL/dk). ``sg`` [T, *] in the compute dtype: g'(h_t -
    v_threshold) of any surrogate, used instead of ``surrogate``."""
    return run_backward(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, 1.0, decay_input, v_threshold,
                        v_reset, soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, sg, "PLIF")


@plif_backward_triton.register_fake
def _plif_backward_triton_fake(grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, *scalars, sg=None):
    grad_x, grad_v_init = backward_x_outputs(saved)
    return grad_x, grad_v_init, torch.empty_like(k)


def _setup_context(ctx, inputs, output):
    (x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     save, return_v_seq, fire_at_threshold) = inputs
    if not save:
        raise RuntimeError("tks_kernels::plif_forward_triton needs save_for_backward=True to be differentiated")
    ctx.save_for_backward(output[3], v_init, k)
    ctx.mark_non_differentiable(output[3])
    # Gradients of unused outputs stay None, so backward reads no zero tensors.
    ctx.set_materialize_grads(False)
    ctx.scalars = (decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset, fire_at_threshold)
    ctx.has_v_seq = return_v_seq


def _backward(ctx, grad_spikes, grad_v_last, grad_v_seq, _grad_saved):
    saved, v_init, k = ctx.saved_tensors
    grad_x, grad_v_init, grad_k = plif_backward_triton(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, saved, v_init, k, *ctx.scalars
    )
    return (grad_x, grad_v_init if v_init is not None else None, grad_k) + (None,) * 10


plif_forward_triton.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- recompute


@torch.library.custom_op("tks_kernels::plif_forward_x_triton", mutates_args=())
def plif_forward_x_triton(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    k: torch.Tensor,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    return_v_seq: bool,
    fire_at_threshold: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, *], k [] -> (spikes [T, *], v_last [*], v_seq [T, *] or [0]); differentiated,
    it keeps x, v_init and k themselves and backward recomputes from them."""
    spikes, v_last, v_seq, _ = run_forward(x, v_init, k, 1.0, decay_input, v_threshold, v_reset, soft_reset,
                                           SAVE_NOTHING, return_v_seq, fire_at_threshold, "PLIF")
    return spikes, v_last, v_seq


@plif_forward_x_triton.register_fake
def _plif_forward_x_triton_fake(x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha,
                                detach_reset, return_v_seq, fire_at_threshold=True):
    _, _, spikes, v_last, v_seq, _ = forward_outputs(x, False, return_v_seq)
    return spikes, v_last, v_seq


@torch.library.custom_op("tks_kernels::plif_backward_x_triton", mutates_args=())
def plif_backward_x_triton(
    grad_spikes: Optional[torch.Tensor],
    grad_v_last: Optional[torch.Tensor],
    grad_v_seq: Optional[torch.Tensor],
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    k: torch.Tensor,
    decay_input: bool,
    v_threshold: float,
    v_reset: float,
    soft_reset: bool,
    surrogate: int,
    alpha: float,
    detach_reset: bool,
    fire_at_threshold: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of (spikes, v_last, v_seq) -> (grad_x [T, *], grad_v_init [*], grad_k [])
    from the forward's own x, v_init and k (recomputed); a missing gradient counts as zero."""
    return run_backward_x(grad_spikes, grad_v_last, grad_v_seq, x, v_init, k, 1.0, decay_input, v_threshold,
                          v_reset, soft_reset, surrogate, alpha, detach_reset, fire_at_threshold, "PLIF")


@plif_backward_x_triton.register_fake
def _plif_backward_x_triton_fake(grad_spikes, grad_v_last, grad_v_seq, x, v_init, k, *scalars, **kwargs):
    grad_x, grad_v_init = backward_x_outputs(x)
    return grad_x, grad_v_init, torch.empty_like(k)


def _setup_context_x(ctx, inputs, output):
    (x, v_init, k, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
     return_v_seq, fire_at_threshold) = inputs
    ctx.save_for_backward(x, v_init, k)  # the inputs themselves: nothing new is kept
    ctx.set_materialize_grads(False)
    ctx.scalars = (decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset, fire_at_threshold)
    ctx.has_v_seq = return_v_seq


def _backward_x(ctx, grad_spikes, grad_v_last, grad_v_seq):
    x, v_init, k = ctx.saved_tensors
    grad_x, grad_v_init, grad_k = plif_backward_x_triton(
        grad_spikes, grad_v_last, grad_v_seq if ctx.has_v_seq else None, x, v_init, k, *ctx.scalars
    )
    return (grad_x, grad_v_init if v_init is not None else None, grad_k) + (None,) * 9


plif_forward_x_triton.register_autograd(_backward_x, setup_context=_setup_context_x)


# --------------------------------------------------------------------------- API


def forward_op(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
               return_v_seq: bool):
    """Training with T <= RECOMPUTE_MAX_STEPS: ``tks_kernels::plif_forward_x_triton`` (x is
    kept, backward recomputes); longer: ``tks_kernels::plif_forward_triton`` saving h or d;
    no gradient needed: the inference kernel, nothing kept."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or k.requires_grad or (v_init is not None and v_init.requires_grad)
    )
    args = (cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
            cfg.detach_reset)
    if needs_grad and recomputes(x):
        spikes, v_last, v_seq = plif_forward_x_triton(x, v_init, k, *args, return_v_seq, cfg.fire_at_threshold)
    else:
        spikes, v_last, v_seq, _ = plif_forward_triton(x, v_init, k, *args, needs_grad, return_v_seq,
                                                       cfg.fire_at_threshold)
    return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)


def plif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                   return_v_seq: bool = False):
    """x: [T, *] -> spikes [T, *], v_last [*] (and v_seq [T, *]), all in x's dtype."""
    return forward_op(x, v_init, k, cfg, return_v_seq)


# Any surrogate, fused (contracts.md section 3; the autograd wrapper is ops/plif/__init__.py).

def forward_saved(x: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, cfg: PLIFConfig,
                  return_v_seq: bool):
    """x [T, *], k [] -> (spikes, v_last, v_seq or None, saved), no autograd; saved is h
    for fp32/fp64 storage, else d = h - v_threshold (side of zero kept, saturated)."""
    with torch.no_grad():
        spikes, v_last, v_seq, saved = plif_forward_triton(
            x, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest, cfg.soft_reset, cfg.surrogate_id,
            cfg.alpha, cfg.detach_reset, True, return_v_seq, cfg.fire_at_threshold,
        )
    return spikes, v_last, v_seq if return_v_seq else None, saved


def backward_sg(grad_spikes: torch.Tensor, grad_v_last: Optional[torch.Tensor], grad_v_seq: Optional[torch.Tensor],
                saved: torch.Tensor, v_init: Optional[torch.Tensor], k: torch.Tensor, sg: torch.Tensor,
                cfg: PLIFConfig):
    """(grad_x [T, *], grad_v_init [*], grad_k [] in k's dtype) with g'(h_t - v_threshold)
    = sg ([T, *], compute dtype) in place of the built-in surrogate's; no autograd."""
    return plif_backward_triton(
        grad_spikes, grad_v_last, grad_v_seq, saved, v_init, k, cfg.decay_input, cfg.v_threshold, cfg.v_rest,
        cfg.soft_reset, cfg.surrogate_id, cfg.alpha, cfg.detach_reset, cfg.fire_at_threshold, sg,
    )


def saved_distance(saved: torch.Tensor, cfg: PLIFConfig) -> torch.Tensor:
    """d = h - v_threshold ([T, *], compute dtype): the kernel's own subtraction for the
    saved h of fp32/fp64 storage (v_threshold rounded to it first), the saved d itself
    for 16-bit storage."""
    if saved.dtype in (torch.float32, torch.float64):
        return saved - torch.tensor(cfg.v_threshold, dtype=saved.dtype, device=saved.device)
    return saved.float()
