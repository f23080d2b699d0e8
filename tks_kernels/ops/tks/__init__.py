"""The TKS loss: argument checks and dispatch to a backend.

``reference.py`` is the definition (DESIGN.md, "The TKS loss"); ``cpu.py``,
``triton.py`` and ``cuda.py`` are fused kernels that compute the loss and dL/dlogits
in one forward pass and keep the gradient, so backward only scales it. Every backend
module provides ``tks_loss(logits, target, cfg) -> (loss, parts)``: the 0-dim loss and
``parts = [ce, soft]`` (not differentiable), fp32 (fp64 for fp64 logits).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ... import _numbers
from ..._backends import BACKENDS, resolve_backend, triton_interpreted
from .._dispatch import backend_loader

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
TEACHERS = ("sum", "mean")
# The fused kernels keep per-step statistics (log-sum-exp, selector) of one sample
# in registers or a small local array.
MAX_T_FUSED = 64


class TKSConfig(NamedTuple):
    """The scalars of one TKS loss call (validated by :func:`make_config`)."""

    lam: float
    temperature: float
    teacher: str  # "sum" | "mean"
    detach_teacher: bool
    label_smoothing: float

    @property
    def teacher_mean(self) -> bool:
        return self.teacher == "mean"


def _real(name: str, value) -> float:
    if not _numbers.is_real(value):  # NumPy scalars too
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def make_config(lam, temperature=3.0, teacher="sum", detach_teacher=False, label_smoothing=0.0) -> TKSConfig:
    lam = _real("lam", lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1] (the weight of the soft loss), got {lam}")
    temperature = _real("temperature", temperature)
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be 'sum' or 'mean', got {teacher!r}")
    if not isinstance(detach_teacher, bool):
        raise TypeError(f"detach_teacher must be a bool, got {detach_teacher!r}")
    label_smoothing = _real("label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    return TKSConfig(lam, temperature, teacher, detach_teacher, label_smoothing)


def check_input(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Types, shapes and devices (the class range is :func:`check_target_range`)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"logits must be float32, float64, float16 or bfloat16, got dtype {logits.dtype}")
    if logits.dim() != 3:
        raise ValueError(f"logits must be [T, B, C] (steps, batch, classes), got shape {tuple(logits.shape)}")
    T, B, C = logits.shape
    if T < 1 or B < 1 or C < 1:
        raise ValueError(f"logits must be [T, B, C] with T, B, C >= 1, got shape {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != logits.device:
        raise ValueError(f"target must be on logits' device {logits.device}, got {target.device}")
    if target.is_floating_point():
        if target.shape != (B, C):
            raise ValueError(
                f"a floating target holds class probabilities and must be [B, C] = {[B, C]}, "
                f"got shape {tuple(target.shape)}"
            )
        if target.dtype not in FLOAT_DTYPES:
            raise TypeError(f"a floating target must be float32, float64, float16 or bfloat16, got {target.dtype}")
        return
    if target.dtype != torch.int64:
        raise TypeError(
            f"target must be int64 class indices [B] or floating class probabilities [B, C], got dtype {target.dtype}"
        )
    if target.shape != (B,):
        raise ValueError(f"integer target must be [B] = [{B}] class indices, got shape {tuple(target.shape)}")


def check_target_range(target: torch.Tensor, num_classes: int) -> None:
    """Class indices in [0, C). Reads the target's values (a device sync on a GPU), so
    it is skipped under torch.compile, where it would break the graph; there the GPU
    kernels turn an out-of-range sample's loss into NaN."""
    if target.is_floating_point() or torch.compiler.is_compiling():
        return
    lo, hi = torch.aminmax(target)
    if int(lo) < 0 or int(hi) >= num_classes:
        i = int(((target < 0) | (target >= num_classes)).nonzero()[0, 0])
        raise ValueError(
            f"target must hold classes in [0, {num_classes}) (C = logits.shape[2]); target[{i}] = {int(target[i])}"
        )


_MODULES: dict = {}
# backend_module(name): the module of backend ``name``. Those that can run here are
# imported with this package (bottom of the file): torch.compile cannot trace an import.
backend_module = backend_loader(__name__, _MODULES)


# (backend, device type) -> the backend a call runs with. Filled at import for what can
# run here (bottom of the file): torch.compile then reads a dict instead of tracing the
# availability checks, which import modules.
_RESOLVED: dict = {}


def _resolve(backend: str, device: torch.device) -> str:
    key = (backend, device.type)
    name = _RESOLVED.get(key)
    if name is None:
        name = resolve_backend(backend, device)
        _RESOLVED[key] = name
    return name


def pick_backend(backend: str, logits: torch.Tensor) -> str:
    T = logits.shape[0]
    if T > MAX_T_FUSED:
        if backend == "auto":
            return "torch"  # the only backend without a limit on T
        if backend in ("cpu", "triton", "cuda"):
            raise ValueError(f"backend={backend!r} supports T <= {MAX_T_FUSED} steps, got logits with T = {T}")
    return _resolve(backend, logits.device)


def tks_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TKSConfig, backend: str = "auto"):
    """Checked dispatch: ``(loss, parts)``, parts = ``[ce, soft]`` detached (for logging).
    See :func:`tks_kernels.functional.tks_loss`."""
    check_input(logits, target)
    name = pick_backend(backend, logits)
    if name != "cpu":  # the C++ CPU op checks the range itself, in one pass
        check_target_range(target, logits.shape[2])
    return backend_module(name).tks_loss(logits, target, cfg)


__all__ = ["BACKENDS", "MAX_T_FUSED", "TEACHERS", "TKSConfig", "check_input", "check_target_range", "make_config",
           "tks_loss"]


def _warm_up() -> None:
    """Import the backend modules and resolve the backends that can run here."""
    names = ["torch", "cpu", "cuda"]
    if torch.cuda.is_available() or triton_interpreted():
        names.append("triton")  # importing triton is slow: only where it can run
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for name in names:
        try:
            backend_module(name)
        except ImportError:  # triton missing: resolve_backend reports why when it is asked for
            continue
        for device in devices:
            for backend in (name, "auto"):
                try:
                    _resolve(backend, device)
                except (RuntimeError, ValueError):  # cannot run there: asked later, it says why
                    pass


_warm_up()
