"""The CUDA LIF kernels (``csrc/cuda/lif_cuda_kernels.cuh`` in ``libtks_kernels_cuda``)
as the CUDA kernels of the ``tks_kernels::lif_forward`` / ``lif_backward`` and
``lif_forward_x`` / ``lif_backward_x`` ops that ``cpu.py`` defines: ``torch.library``
dispatches by the tensors' device, and the fake implementations and autograd registered
there serve both. Kernels run on the tensors' device and its current stream.

As on the CPU, a forward that needs a gradient saves x itself and writes only the spikes
when T <= ``recompute_max_steps_cuda(dtype)`` (32; 16 in fp64); backward then re-runs
the forward recurrence from x and the reverse one, no [T, *] buffer of d. One thread's
charges of 8 steps fit in 32 registers (fp32: four lanes, one 16-byte access per row;
fp16/bf16: four lanes, 8-byte accesses, the half-width tile; fp64, two lanes: 4 steps),
so the recurrence runs in chunks of 8 steps (the first chunk shorter when 8 does not
divide T): a first pass runs the forward recurrence through every chunk but the last
and keeps each chunk's start state in shared memory, then the chunks run in reverse,
each chunk's x rows loaded again and its charges recomputed.

The rule, in storage elements e moved per neuron and step (e = 4 bytes in fp32, 2 in
fp16/bf16), forward and backward together, without v_seq (its gradient adds e to both):

- saved distance: forward reads x, writes spikes and d (3e); backward reads d and
  grad_spikes, writes grad_x (3e): **6e** (24 B fp32);
- recompute, T <= 8: forward 2e (no d); backward reads x, grad_spikes, writes grad_x:
  **5e** (20 B);
- recompute in C = ceil(T / 8) chunks: the first pass re-reads the T - 8 rows before
  the last chunk: **(6 - 8/T) e**, e.g. 5.11e at T = 9, 5.5e at T = 16, 5.75e (23 B
  fp32) at T = 32 (fp64, chunks of 4: (6 - 4/T) e up to T = 16).

Chunks always move fewer bytes than the saved distance and allocate no d, but the gain
falls as 8/T while the backward runs the forward recurrence over 2T - 8 steps and keeps
one more start state in registers per chunk: so up to 4 chunks (T <= 32, 4% fewer bytes
at T = 32) the backward recomputes, beyond it the saved-distance path runs
(``lif_forward`` / ``lif_backward``, also the contract-3 functions). PLIF
(``ops/plif/cuda.py``) follows the same rule.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch

from ... import _native
from . import LIFConfig
from .._layout import check_float, check_step_tensor, check_steps, grad_like, like_layout, time_major_dense
from .cpu import (LIF_BACKWARD, LIF_BACKWARD_X, LIF_FORWARD, LIF_FORWARD_X, RECOMPUTE_MAX_STEPS, forward_op,
                  run_backward, run_forward)
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


_P, _I64, _D, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
# The recomputing backward's C functions (csrc/tks_capi.h); a library without them (a
# stale build) keeps the saved-d path.
_X_PROTOTYPES = {
    "tks_lif_backward_x_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _INT, _D, _P],
    "tks_plif_backward_x_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _INT, _INT, _D,
                                 _P],
    "tks_lif_recompute_max_steps_cuda": [_INT],
}


def _bind_recompute(lib) -> bool:
    if lib is None or not all(hasattr(lib, name) for name in _X_PROTOTYPES):
        return False
    for name, argtypes in _X_PROTOTYPES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = _I64 if name == "tks_lif_recompute_max_steps_cuda" else _INT
    return True


HAS_RECOMPUTE = _bind_recompute(_native.cuda_lib)
_MAX_STEPS = ({dtype: int(_native.cuda_lib.tks_lif_recompute_max_steps_cuda(code))
               for dtype, code in _native.DTYPE_CODES.items()} if HAS_RECOMPUTE else {})


def recompute_max_steps_cuda(dtype: torch.dtype) -> int:
    """The largest T for which the CUDA backward recomputes from x (0: never)."""
    return _MAX_STEPS.get(dtype, 0)


def layout_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init):
    """Checks and dense time-major views of the recomputing backward's inputs, and its
    outputs: (x, v0, gs, gvl, gvs, grad_x, grad_v_init)."""
    check_float(x_in, "x")
    check_steps(x_in, "x")
    check_step_tensor(v_init, x_in, "v_init")
    if grad_spikes.shape != x_in.shape:
        raise RuntimeError(f"tks_kernels: grad_spikes has shape {tuple(grad_spikes.shape)} but x has "
                           f"{tuple(x_in.shape)}")
    check_devices(x_in, grad_spikes=grad_spikes, grad_v_last=grad_v_last, grad_v_seq=grad_v_seq, v_init=v_init)
    x = time_major_dense(x_in)
    x0 = x[0]
    v0 = like_layout(v_init, x0) if v_init is not None else None
    gs = like_layout(grad_spikes.to(x.dtype), x)
    gvl = grad_like(grad_v_last, x0, "grad_v_last")
    gvs = grad_like(grad_v_seq, x, "grad_v_seq")
    return x, v0, gs, gvl, gvs, torch.empty_like(x), torch.empty_like(x0)


def _cuda_forward_x(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset, surrogate, alpha, detach_reset,
                    return_v_seq, fire_at_threshold=True):
    spikes, v_last, v_seq, _ = _cuda_forward(x, v_init, tau, decay_input, v_threshold, v_reset, soft_reset,
                                             surrogate, alpha, detach_reset, False, return_v_seq, fire_at_threshold)
    return spikes, v_last, v_seq


def _cuda_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init, tau, decay_input, v_threshold, v_reset,
                     soft_reset, surrogate, alpha, detach_reset, fire_at_threshold=True):
    lib = _native.cuda_lib
    x, v0, gs, gvl, gvs, grad_x, grad_v_init = layout_backward_x(grad_spikes, grad_v_last, grad_v_seq, x_in, v_init)
    if x.numel() > 0:
        with _on_device(x.device):
            _native.check(lib, lib.tks_lif_backward_x_cuda(
                _native.dtype_code(x.dtype), gs.data_ptr(), _native.ptr(gvl), _native.ptr(gvs), x.data_ptr(),
                _native.ptr(v0), grad_x.data_ptr(), grad_v_init.data_ptr(), x.shape[0], x[0].numel(), tau,
                v_threshold, v_reset, _native.lif_flags(decay_input, soft_reset, detach_reset, fire_at_threshold),
                surrogate, alpha, _native.cuda_stream(x.device)))
    return grad_x, grad_v_init


if _native.cuda_lib is not None:
    LIF_FORWARD.register("cuda", _cuda_forward)
    LIF_BACKWARD.register("cuda", _cuda_backward)
if HAS_RECOMPUTE:
    LIF_FORWARD_X.register("cuda", _cuda_forward_x)
    LIF_BACKWARD_X.register("cuda", _cuda_backward_x)
    RECOMPUTE_MAX_STEPS["cuda"] = recompute_max_steps_cuda


def lif_multistep(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, return_v_seq: bool = False):
    """x: [T, *] on a CUDA device -> spikes [T, *], v_last [*] (and v_seq [T, *])."""
    if x.device.type != "cuda":
        raise RuntimeError(f"the cuda LIF backend runs on CUDA tensors, but x is on {x.device}")
    return forward_op(x, v_init, cfg, return_v_seq)
