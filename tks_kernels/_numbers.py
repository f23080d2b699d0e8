"""Argument checks for numbers: Python numbers and NumPy scalars alike (``np.float32(2.0)``,
``np.int64(3)``), never bools, and errors that name the argument and the value."""
from __future__ import annotations

import math
import numbers

__all__ = ["is_real", "is_integer", "real", "integer"]


def is_real(value) -> bool:
    """A real number: int, float, a NumPy integer or floating scalar; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value) -> bool:
    """An integer: int or a NumPy integer scalar; not a bool (nor a float such as 3.0)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def real(name: str, value, *, finite: bool = True) -> float:
    """``value`` as a Python float; TypeError unless a real number, ValueError (naming
    ``name``) for NaN or infinity when ``finite``."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    out = float(value)
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def integer(name: str, value) -> int:
    """``value`` as a Python int; TypeError unless an integer (int or NumPy integer)."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    return int(value)
