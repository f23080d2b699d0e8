"""Which backends can run here, and which one a call gets.

Backends: ``torch`` (the plain-PyTorch reference, any device), ``cpu`` (C++ kernels in
the native library ``libtks_kernels``), ``triton`` (Triton kernels; CUDA tensors, or CPU
tensors under ``TRITON_INTERPRET=1``) and ``cuda`` (CUDA kernels in ``libtks_kernels_cuda``).
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Dict, Tuple

import torch

from . import _native

BACKENDS = ("torch", "cpu", "triton", "cuda")


def extension_error() -> str | None:
    """Why the native CPU library did not load, or None when it did."""
    return _native.CPU_ERROR


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    try:
        importlib.import_module("triton")
    except Exception as exc:  # noqa: BLE001
        return f"triton does not import ({type(exc).__name__}: {exc})"
    return None


def _status(name: str) -> Tuple[bool, str]:
    if name == "torch":
        return True, "plain PyTorch reference; runs on any device"
    if name == "cpu":
        if _native.CPU_ERROR is not None:
            return False, f"the native CPU library did not load: {_native.CPU_ERROR}"
        return True, f"C++ kernels ({_native.cpu_lib._name}), OpenMP threads over neurons"
    if name == "cuda":
        if _native.CUDA_ERROR is not None:
            return False, _native.CUDA_ERROR
        if not torch.cuda.is_available():
            return False, "no CUDA device is available"
        return True, f"CUDA kernels ({_native.cuda_lib._name})"
    if name == "triton":
        err = _triton_import_error()
        if err is not None:
            return False, err
        if torch.cuda.is_available():
            return True, "Triton kernels on CUDA tensors"
        if triton_interpreted():
            return True, "Triton kernels run by the interpreter on CPU tensors (TRITON_INTERPRET=1; slow, for tests)"
        return False, "no CUDA device, and TRITON_INTERPRET=1 is not set"
    raise ValueError(f"unknown backend {name!r}")


def available_backends() -> Dict[str, Tuple[bool, str]]:
    """``{name: (available, reason)}`` for every backend."""
    return {name: _status(name) for name in BACKENDS}


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend a call on ``device`` runs with; raises if ``backend`` cannot run there.
    Under torch.func transforms (vmap, grad, jacrev, ...) only the reference runs: the
    kernels take real tensors, not functorch's wrappers."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if torch._C._are_functorch_transforms_active():
        if backend in ("auto", "torch"):
            return "torch"
        raise RuntimeError(f"backend={backend!r} does not run under torch.func transforms (vmap, grad, jacrev, ...): "
                           f"its kernels take real tensors; use backend='auto' or 'torch' (the plain-PyTorch "
                           f"reference) inside them")
    if backend == "auto":
        if device.type == "cuda":
            order = ("triton", "cuda", "torch")
        elif device.type == "cpu":
            order = ("cpu", "torch")
        else:
            order = ("torch",)
        for name in order:
            if _status(name)[0]:
                return name
        return "torch"
    ok, reason = _status(backend)
    if not ok:
        raise RuntimeError(f"backend={backend!r} cannot run here: {reason}")
    if backend == "cpu" and device.type != "cpu":
        raise RuntimeError(f"backend='cpu' runs on CPU tensors, but the input is on {device}")
    if backend == "cuda" and device.type != "cuda":
        raise RuntimeError(f"backend='cuda' runs on CUDA tensors, but the input is on {device}")
    if backend == "triton" and device.type != "cuda" and not (device.type == "cpu" and triton_interpreted()):
        raise RuntimeError(
            f"backend='triton' runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), but the input is on {device}"
        )
    return backend


def backends_line(neuron_backend: str, loss_backend: str, device: torch.device) -> str:
    """Which kernels a run uses, and why (``available_backends()``), for ``tks-train`` to
    print at the start of every run: a fallback to the plain-PyTorch reference is said
    there, not discovered later."""
    status = available_backends()
    parts = []
    for what, asked in (("neurons", neuron_backend), ("loss", loss_backend)):
        name = resolve_backend(asked, device)
        parts.append(f"{what}: {name} ({status[name][1]})")
    native = status["cpu"]
    if device.type == "cpu" and not native[0]:
        parts.append(f"fused CPU kernels unavailable: {native[1]}")
    return "backends: " + "; ".join(parts)
