"""Backend modules of an op package and the choice of one for a call.

An op package (``ops/lif``, ``ops/plif``, ...) holds one module per backend:
``reference.py`` for ``torch``, ``cpu.py``, ``triton.py`` and ``cuda.py``.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable, Dict

import torch

from .._backends import resolve_backend


def backend_loader(package: str, modules: Dict[str, ModuleType]) -> Callable[[str], ModuleType]:
    """``backend_module(name)``: the module of backend ``name`` in ``package``, imported
    on first use and kept in ``modules`` (the dispatch reads it there, untraced)."""

    def backend_module(name: str) -> ModuleType:
        """The module implementing backend ``name`` (imported on first use)."""
        if name not in modules:
            modules[name] = importlib.import_module(f"{package}.{'reference' if name == 'torch' else name}")
        return modules[name]

    return backend_module


def constant_resolver(backend_module: Callable[[str], ModuleType]) -> Callable[[str, str], str]:
    """``resolve(backend, device_type)``: the backend a call runs with, its module imported."""

    def resolve(backend: str, device_type: str) -> str:
        # Runs eagerly even under torch.compile (its result is a constant of the graph), so
        # the availability checks and the import stay out of the traced code.
        name = resolve_backend(backend, torch.device(device_type))
        backend_module(name)
        return name

    return assume_constant_result(resolve)


def assume_constant_result(fn: Callable) -> Callable:
    """``torch.compiler.assume_constant_result(fn)`` without importing ``torch._dynamo`` at
    ``import tks_kernels`` (1.3 s): that function only marks fn with the attribute that
    Dynamo reads when it meets the call. When Dynamo is already loaded, its own API is used."""
    import sys

    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True  # what torch._dynamo.decorators.assume_constant_result sets
    return fn
