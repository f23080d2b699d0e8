"""SpikingJelly's own neuron classes running our fused kernels.

``from tks_kernels.spikingjelly import LIFNode`` is the whole port of a SpikingJelly
script: :class:`LIFNode` and :class:`ParametricLIFNode` are subclasses of
``spikingjelly.activation_based.neuron.LIFNode`` / ``ParametricLIFNode`` with the same
constructor (SpikingJelly 2.0's), so everything in SpikingJelly that checks
``isinstance`` (``functional.reset_net`` without warnings, ``set_step_mode``,
``memopt.checkpoint_module``, monitors, containers, ``to_functional_forward``) treats them
as its own. Single- and multi-step forwards, and the functional forwards SpikingJelly's
checkpointing replays, run our fused op (any surrogate: see :mod:`tks_kernels.neuron`).

Keyword-only extras: ``backend`` ('auto', 'torch', 'cpu', 'triton', 'cuda', or 'cupy'
for CUDA) and ``fire_at_threshold``. Importing this module needs SpikingJelly.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

try:
    from spikingjelly.activation_based import neuron as _sj_neuron
    from spikingjelly.activation_based import surrogate as _sj_surrogate
except ImportError as exc:  # pragma: no cover - exercised only without SpikingJelly
    raise ImportError(
        "tks_kernels.spikingjelly subclasses SpikingJelly's neurons and needs SpikingJelly "
        f"(pip install spikingjelly); importing it failed: {exc}. Without SpikingJelly use tks_kernels.LIF and "
        "tks_kernels.ParametricLIF, which take the same arguments."
    ) from exc

from .neuron import backend_name, run_lif, run_plif

__all__ = ["LIFNode", "ParametricLIFNode"]


class _Fused:
    """The forwards of SpikingJelly's LIF-family nodes through our fused op (mixed in
    before SpikingJelly's class; ``_run`` is the op of the node)."""

    def _run(self, x_seq: torch.Tensor, v: Any, return_v_seq: bool):  # pragma: no cover - subclasses
        raise NotImplementedError

    def _check_precision(self) -> None:
        if getattr(self, "_neuron_precision", None) is not None:
            raise NotImplementedError(
                f"{type(self).__name__}: SpikingJelly's neuron precision setting is not supported by the fused "
                f"kernels; they store in the input's dtype and compute in fp32 (fp64 for fp64 input)"
            )

    def single_step_functional_forward(self, inputs, states, **kwargs):
        self._check_precision()
        spikes, v = self._run(inputs[0].unsqueeze(0), states[0], False)
        return (spikes[0],), (v, *states[1:])

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        self._check_precision()
        spikes, v = self._run(inputs[0], states[0], False)
        return (spikes,), (v, *states[1:])

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        # SpikingJelly's BaseNode loops single steps when store_v_seq is set; the fused
        # op returns the membrane sequence itself.
        self._check_precision()
        # the kept membrane as it is: the op materialises it as SpikingJelly would
        out = self._run(x_seq, self._memories["v"], self.store_v_seq)
        self._memories["v"] = out[1]
        self.v_seq = out[2] if self.store_v_seq else None
        return out[0]

    @property
    def backend(self) -> str:
        return self.__dict__["_tks_backend"]

    @backend.setter
    def backend(self, value: Any) -> None:
        self.__dict__["_tks_backend"] = backend_name(value)

    def extra_repr(self) -> str:
        r = super().extra_repr() + f", backend={self.backend}"
        return r if self.fire_at_threshold else r + ", fire_at_threshold=False"


class LIFNode(_Fused, _sj_neuron.LIFNode):
    """SpikingJelly's ``neuron.LIFNode`` (same arguments and behaviour), fused."""

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: Any = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str = "auto",
        fire_at_threshold: bool = True,
    ) -> None:
        super().__init__(tau, decay_input, v_threshold, v_reset,
                         _sj_surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
                         detach_reset, step_mode, store_v_seq)
        self.backend = backend
        self.fire_at_threshold = bool(fire_at_threshold)

    def _run(self, x_seq, v, return_v_seq):
        return run_lif(self, x_seq, v, return_v_seq)


class ParametricLIFNode(_Fused, _sj_neuron.ParametricLIFNode):
    """SpikingJelly's ``neuron.ParametricLIFNode`` (same arguments, the parameter ``w``), fused."""

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: Any = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str = "auto",
        fire_at_threshold: bool = True,
    ) -> None:
        super().__init__(init_tau, decay_input, v_threshold, v_reset,
                         _sj_surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
                         detach_reset, step_mode, store_v_seq)
        self.backend = backend
        self.fire_at_threshold = bool(fire_at_threshold)

    def _run(self, x_seq, v, return_v_seq):
        return run_plif(self, x_seq, v, return_v_seq)
