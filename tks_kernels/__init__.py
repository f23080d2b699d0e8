"""tks_kernels: fused LIF and TKS-loss kernels for training spiking neural networks.

Public API:
    LIF, reset_net                 -- the multi-step LIF layer (SpikingJelly drop-in)
    ParametricLIF                  -- LIF with a learnt time constant (SpikingJelly's PLIFNode)
    functional.lif_multistep       -- the same without state
    available_backends()           -- {name: (available, reason)}
"""
from ._backends import BACKENDS, available_backends
from . import functional
from .neuron import LIF, MemoryModule, ParametricLIF, reset_net
from .loss import MeanCELoss, TETLoss, TKSLoss
from . import models

__version__ = "0.1.0"

__all__ = ["BACKENDS", "LIF", "MemoryModule", "ParametricLIF", "available_backends", "functional", "reset_net",
           "TKSLoss", "TETLoss", "MeanCELoss"]
