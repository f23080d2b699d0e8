"""A ``torch.library`` op with native kernels, called without the dispatcher in eager mode.

Each native op (``tks_kernels::lif_forward`` and the rest) is defined with
``torch.library`` (schema, a kernel per device, fake implementation, autograd), which is
what ``torch.compile``, ``torch.library.opcheck``, export and dispatch modes see. A call
through the dispatcher into a Python kernel costs tens of microseconds, though, more than
a small LIF layer's kernel: so a plain eager call (real tensors, no tracing, no dispatch or
function mode) runs the same kernel function directly, and the same setup_context/backward
through an ``autograd.Function`` when a gradient is needed. Both routes run identical code.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from .._autograd import fast_apply


def _eager(t: torch.Tensor) -> bool:
    return (
        type(t) is torch.Tensor
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
    )


class NativeOp:
    """``op(*args, grad=...)``: the op ``tks_kernels::<name>`` (already defined on ``lib``)."""

    def __init__(self, lib: torch.library.Library, name: str, setup_context=None, backward=None) -> None:
        self.lib = lib
        self.name = name
        self.kernels: Dict[str, Callable] = {}
        self.function = None
        if backward is not None:
            kernels = self.kernels

            def forward(*args):
                return kernels[args[0].device.type](*args)

            self.function = type(f"{name}_function", (torch.autograd.Function,), {
                "forward": staticmethod(forward),
                "setup_context": staticmethod(setup_context),
                "backward": staticmethod(backward),
                "apply": classmethod(fast_apply),
            })
            torch.library.register_autograd(f"tks_kernels::{name}", backward, setup_context=setup_context)

    def register(self, device_type: str, kernel: Callable) -> None:
        """The kernel of one device type ("cpu", "cuda")."""
        self.lib.impl(self.name, kernel, device_type.upper())
        self.kernels[device_type] = kernel

    def __call__(self, *args, grad: bool = False):
        t = args[0]
        if _eager(t):
            kernel = self.kernels.get(t.device.type)
            if kernel is not None:
                return self.function.apply(*args) if grad else kernel(*args)
        return getattr(torch.ops.tks_kernels, self.name)(*args)
