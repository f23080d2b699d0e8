"""``apply`` for this package's ``torch.autograd.Function`` classes (the native ops'
eager route, the reference's spike function, the surrogate modules)."""
from __future__ import annotations

import torch


def fast_apply(cls, *args):
    """``torch.autograd.Function.apply`` without its per-call ``inspect.signature`` (about
    25 us, which binds default arguments): autograd's own C++ apply, which calls forward
    and then setup_context as the Python one does. Callers pass every argument of forward.
    Under functorch transforms (vmap, grad, ...), the Python apply, which these transforms
    need. Use as ``apply = classmethod(fast_apply)`` in a Function with setup_context."""
    if torch._C._are_functorch_transforms_active():
        return torch.autograd.Function.apply.__func__(cls, *args)
    return super(torch.autograd.Function, cls).apply(*args)
