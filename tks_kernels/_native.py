"""The native core: ``libtks_kernels`` (CPU kernels) and ``libtks_kernels_cuda`` (CUDA
kernels), plain shared libraries with a C interface (``csrc/tks_capi.h``) and no torch
inside, loaded here with ctypes. One build serves every torch version; the ops that
wrap them are ``torch.library`` custom ops defined in ``ops/<op>/cpu.py`` / ``cuda.py``.

The libraries are looked for in ``tks_kernels/lib/`` inside the package (where
``pip install .`` and ``pip install -e .`` put them), or only in ``$TKS_KERNELS_LIB_DIR``
when that is set.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

import torch

ABI_VERSION = 2  # csrc/tks_capi.h's TKS_ABI_VERSION (2: the recomputing CPU backward)

OK, ERR_VALUE, ERR_RUNTIME = 0, 1, 2
SURROGATE_EXTERNAL = 100
DECAY_INPUT, SOFT_RESET, DETACH_RESET, FIRE_AT_THRESHOLD = 1, 2, 4, 8
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_D = ctypes.c_double
_INT = ctypes.c_int

# Argument types of every exported function (csrc/tks_capi.h).
_CPU_PROTOTYPES = {
    "tks_lif_forward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _INT],
    "tks_lif_backward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _INT, _D, _INT],
    "tks_plif_forward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _INT],
    "tks_plif_backward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, ctypes.POINTER(_D), _I64, _I64, _D, _D, _D,
                              _INT, _INT, _D, _INT],
    "tks_lif_recompute_max_steps_cpu": [_INT],
    "tks_lif_backward_x_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _INT, _D, _INT],
    "tks_plif_backward_x_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, ctypes.POINTER(_D), _I64, _I64, _D, _D, _D,
                                _INT, _INT, _D, _INT],
    "tks_loss_forward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _D, _D, _D, _INT,
                             _INT, _INT],
    "tks_convert_f16": [_P, _P, _I64, _INT],
    "tks_convert_bf16": [_P, _P, _I64, _INT],
    "tks_bn_lif_forward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _D, _D, _D, _INT, _INT],
    "tks_bn_lif_backward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64,
                                _D, _D, _D, _INT, _INT, _D, _INT, _INT],
    "tks_bn_stats_cpu": [_INT, _P, _P, _P, _I64, _I64, _I64, _I64, _INT],
    "tks_bn_plif_forward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _D, _D, _D, _INT, _INT],
    "tks_bn_plif_backward_cpu": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64,
                                 _I64, _D, _D, _D, _INT, _INT, _D, _INT, _INT],
}
_CUDA_PROTOTYPES = {
    "tks_lif_forward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _P],
    "tks_lif_backward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _D, _INT, _INT, _D, _P],
    "tks_plif_forward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _INT, _P],
    "tks_plif_backward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _D, _D, _INT, _INT,
                               _D, _P],
    "tks_loss_forward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _I64, _D, _D, _D, _INT,
                              _INT, _P],
    "tks_bn_stats_cuda": [_INT, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _P],
    "tks_bn_lif_forward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _D, _D, _D, _INT, _P],
    "tks_bn_lif_backward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64,
                                 _I64, _D, _D, _D, _INT, _INT, _D, _INT, _P],
    "tks_bn_plif_forward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _D, _D, _INT, _P],
    "tks_bn_plif_backward_cuda": [_INT, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _I64,
                                  _I64, _I64, _D, _D, _INT, _INT, _D, _INT, _P],
}

# Return types other than int (the error code).
_RESTYPES = {"tks_lif_recompute_max_steps_cpu": _I64}

_FIX = ("reinstall with `pip install .` (or `pip install -e .` in a checkout); it builds the native "
        "library with CMake and a C++ compiler, no torch needed at build time")


def _lib_dirs():
    env = os.environ.get("TKS_KERNELS_LIB_DIR")
    if env:  # only there: a user who names a folder means that build
        return [env]
    return [os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")]


def _lib_file(stem: str) -> Optional[str]:
    name = {"win32": f"{stem}.dll", "darwin": f"lib{stem}.dylib"}.get(sys.platform, f"lib{stem}.so")
    for d in _lib_dirs():
        path = os.path.join(d, name)
        if os.path.exists(path):
            return path
    return None


def _load(stem: str, prototypes: dict, with_workspace: bool = False):
    """(library, None) or (None, why it did not load)."""
    path = _lib_file(stem)
    if path is None:
        where = " or ".join(_lib_dirs())
        return None, f"lib{stem} was not found in {where}"
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        return None, f"{path} did not load ({exc})"
    try:
        lib.tks_abi_version.restype = _INT
        version = lib.tks_abi_version()
        if version != ABI_VERSION:
            return None, f"{path} has ABI version {version}, this package needs {ABI_VERSION} (a stale build)"
        lib.tks_last_error.restype = ctypes.c_char_p
        for name, argtypes in prototypes.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = _RESTYPES.get(name, _INT)
        if with_workspace:
            lib.tks_plif_backward_cuda_workspace.argtypes = [_INT, _I64]
            lib.tks_plif_backward_cuda_workspace.restype = _I64
            lib.tks_bn_lif_workspace_cuda.argtypes = [_INT, _I64, _I64, _I64, _I64, _INT]
            lib.tks_bn_lif_workspace_cuda.restype = _I64
    except AttributeError as exc:
        return None, f"{path} lacks a function ({exc}; a stale build)"
    return lib, None


cpu_lib, CPU_ERROR = _load("tks_kernels", _CPU_PROTOTYPES)
if CPU_ERROR is not None:
    CPU_ERROR += "; " + _FIX
cuda_lib, CUDA_ERROR = _load("tks_kernels_cuda", _CUDA_PROTOTYPES, with_workspace=True)
if CUDA_ERROR is not None and _lib_file("tks_kernels_cuda") is None:
    CUDA_ERROR = ("the CUDA kernels were not built (no nvcc at build time; build with nvcc on PATH or CUDA_HOME "
                  "set, TKS_CUDA=1 to require them)")


def check(lib, rc: int) -> None:
    """Raises the C call's error (ValueError or RuntimeError, with its message)."""
    if rc == OK:
        return
    message = lib.tks_last_error().decode("utf-8", "replace")
    raise (ValueError if rc == ERR_VALUE else RuntimeError)(message)


def ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    """The data pointer of t, or None (NULL) for an absent tensor."""
    return None if t is None else t.data_ptr()


def dtype_code(dtype: torch.dtype, name: str = "x") -> int:
    code = DTYPE_CODES.get(dtype)
    if code is None:
        raise TypeError(f"tks_kernels: {name} must be float32, float64, float16 or bfloat16, got {dtype}")
    return code


def lif_flags(decay_input: bool, soft_reset: bool, detach_reset: bool, fire_at_threshold: bool) -> int:
    return ((DECAY_INPUT if decay_input else 0) | (SOFT_RESET if soft_reset else 0)
            | (DETACH_RESET if detach_reset else 0) | (FIRE_AT_THRESHOLD if fire_at_threshold else 0))


def cuda_stream(device: torch.device) -> int:
    """The raw cudaStream_t of device's current stream."""
    return torch.cuda.current_stream(device).cuda_stream
