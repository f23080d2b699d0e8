"""tks_kernels: fused LIF and TKS-loss kernels for training spiking neural networks.

Public API:
    LIF, reset_net                 -- the multi-step LIF layer (SpikingJelly drop-in)
    ParametricLIF                  -- LIF with a learnt time constant (SpikingJelly's PLIFNode)
    functional.lif_multistep       -- the same without state
    available_backends()           -- {name: (available, reason)}
"""
import warnings as _warnings

from ._version import __version__
from . import _native
from ._backends import BACKENDS, available_backends
from . import functional
from .neuron import LIF, MemoryModule, ParametricLIF, reset_net
from .loss import MeanCELoss, TETLoss, TKSLoss
from . import models

if _native.CPU_ERROR is not None:
    # Once per process (import runs once): the package still works on the plain-PyTorch
    # reference, but the user asked for fused kernels and must know they are missing.
    _warnings.warn(
        f"tks_kernels: the fused CPU kernels are unavailable ({_native.CPU_ERROR}). Every op falls back to the "
        "plain-PyTorch reference under backend='auto'; backend='cpu' raises. "
        "tks_kernels.available_backends() lists what runs.",
        RuntimeWarning,
        stacklevel=2,
    )

__all__ = ["__version__", "BACKENDS", "LIF", "MemoryModule", "ParametricLIF", "available_backends", "functional", "reset_net",
           "TKSLoss", "TETLoss", "MeanCELoss"]
