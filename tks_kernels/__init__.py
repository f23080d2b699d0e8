"""tks_kernels: fused LIF and TKS-loss kernels for training spiking neural networks.

Public API:
    LIF, ParametricLIF             -- drop-ins for SpikingJelly's LIFNode / ParametricLIFNode
                                      (its constructor; step_mode "s" by default, "m" fuses all
                                      steps into one kernel)
    reset_net, detach_net          -- clear / detach the state of every neuron in a model
    surrogate                      -- surrogate-gradient classes (SpikingJelly's names)
    functional.lif_multistep       -- the multi-step LIF without state
    functional.tks_loss, TKSLoss   -- the Temporal Knowledge Sharing loss
    available_backends()           -- {name: (available, reason)}
    set_cpu_cache_limit, empty_cpu_cache, cpu_cache_info
                                   -- the bounded cache of the CPU ops' large output buffers
                                      (TKS_KERNELS_CPU_CACHE_MB, default 256; 0: off)
    tks_kernels.spikingjelly       -- subclasses of SpikingJelly's own nodes (needs SpikingJelly)
"""
import warnings as _warnings

from ._version import __version__
from . import _native
from ._backends import BACKENDS, available_backends
from . import functional
from . import surrogate
from .neuron import LIF, MemoryModule, ParametricLIF, detach_net, reset_net
from .loss import MeanCELoss, TETLoss, TKSLoss
from . import models
from .ops._cpu_cache import cpu_cache_info, empty_cpu_cache, set_cpu_cache_limit

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

__all__ = ["__version__", "BACKENDS", "LIF", "MemoryModule", "ParametricLIF", "available_backends", "detach_net",
           "functional", "reset_net", "surrogate", "TKSLoss", "TETLoss", "MeanCELoss", "cpu_cache_info", "empty_cpu_cache",
           "set_cpu_cache_limit"]
