"""Neuron layers: drop-ins for SpikingJelly's stateful neurons."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .ops import lif as _lif
from .ops import plif as _plif


class MemoryModule(nn.Module):
    """A layer with state across calls (the membrane ``v``), cleared by :meth:`reset`."""

    def reset(self) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


def reset_net(net: nn.Module) -> None:
    """Reset the state of every neuron in ``net`` (call between samples/batches)."""
    for m in net.modules():
        if isinstance(m, MemoryModule):
            m.reset()


class BaseNode(MemoryModule):
    """What the neurons share: the membrane ``self.v`` kept between calls (gradients flow
    through it into earlier calls) until :meth:`reset`, the step modes, the backend, and
    the option attributes of ``self.cfg``. A subclass sets ``self.cfg`` and implements
    :meth:`_multistep`.

    ``step_mode="m"``: input ``[T, *]``, all steps in one fused kernel; ``"s"``: input
    ``[*]``, one step per call. ``store_v_seq``: keep the membrane after every step in
    ``self.v_seq`` (multi-step mode).
    """

    _name = "neuron"  # how error messages call an instance

    def __init__(self, v_rest: float, step_mode: str, backend: str, store_v_seq: bool) -> None:
        super().__init__()
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode must be 'm' (multi-step, [T, *]) or 's' (single step, [*]); got {step_mode!r}")
        if backend != "auto" and backend not in _lif.BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, _lif.BACKENDS))}; got {backend!r}")
        self.step_mode = step_mode
        self.backend = backend
        self.store_v_seq = bool(store_v_seq)
        self._v_rest = v_rest
        self.v: Union[float, torch.Tensor] = v_rest
        self.v_seq: Optional[torch.Tensor] = None

    # SpikingJelly's attribute names, read-only views of the config
    decay_input = property(lambda self: self.cfg.decay_input)
    v_threshold = property(lambda self: self.cfg.v_threshold)
    v_reset = property(lambda self: self.cfg.v_reset)
    detach_reset = property(lambda self: self.cfg.detach_reset)
    surrogate = property(lambda self: self.cfg.surrogate)
    alpha = property(lambda self: self.cfg.alpha)

    def reset(self) -> None:
        self.v = self._v_rest
        self.v_seq = None

    def _v_init(self, x0: torch.Tensor) -> Optional[torch.Tensor]:
        v = self.v
        if not isinstance(v, torch.Tensor):
            return None if v == self._v_rest else torch.full_like(x0, float(v))
        if v.shape != x0.shape:
            raise ValueError(
                f"the membrane kept from the previous call ({self._name}.v, the v_init of this call) has shape "
                f"{tuple(v.shape)} but this input needs {tuple(x0.shape)}; call {self._name}.reset() or "
                f"tks_kernels.reset_net(model) between batches"
            )
        if v.device != x0.device:
            raise ValueError(
                f"the membrane kept from the previous call ({self._name}.v) is on {v.device} but the input is on "
                f"{x0.device}; call reset()"
            )
        return v.to(x0.dtype)

    def _multistep(self, x: torch.Tensor, v_init: Optional[torch.Tensor], return_v_seq: bool):
        """x [T, *] -> (spikes, v_last[, v_seq]) with this neuron's options."""
        raise NotImplementedError  # pragma: no cover

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            if not isinstance(x, torch.Tensor) or x.dim() < 1:
                raise ValueError(f"single-step mode takes x of shape [*] with at least one dimension, got {getattr(x, 'shape', x)}")
            x = x.unsqueeze(0)
        else:
            _lif.check_input(x, None)
        v_init = self._v_init(x[0])
        want_seq = self.store_v_seq and self.step_mode == "m"
        out = self._multistep(x, v_init, want_seq)
        spikes, self.v = out[0], out[1]
        if want_seq:
            self.v_seq = out[2]
        return spikes[0] if self.step_mode == "s" else spikes


class LIF(BaseNode):
    """Leaky integrate-and-fire neuron, SpikingJelly's ``LIFNode`` parameters.

    ``step_mode="m"``: input ``[T, *]``, all steps in one fused kernel; ``"s"``: input
    ``[*]``, one step per call. The membrane ``self.v`` carries over between calls
    (gradients flow through it into earlier calls) until :meth:`reset`.

    Args: as :func:`tks_kernels.functional.lif_multistep`, plus ``store_v_seq``: keep
    the membrane after every step in ``self.v_seq`` (multi-step mode).
    """

    _name = "lif"

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: str = "sigmoid",
        alpha: Optional[float] = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        backend: str = "auto",
        store_v_seq: bool = False,
        *,
        fire_at_threshold: bool = True,
    ) -> None:
        cfg = _lif.make_config(tau, decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset,
                               fire_at_threshold)
        super().__init__(cfg.v_rest, step_mode, backend, store_v_seq)
        self.cfg = cfg

    tau = property(lambda self: self.cfg.tau)

    def _multistep(self, x: torch.Tensor, v_init: Optional[torch.Tensor], return_v_seq: bool):
        return _lif.lif_multistep(x, v_init, self.cfg, backend=self.backend, return_v_seq=return_v_seq)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"tau={c.tau}, decay_input={c.decay_input}, v_threshold={c.v_threshold}, v_reset={c.v_reset}, "
            f"surrogate={c.surrogate}(alpha={c.alpha}), detach_reset={c.detach_reset}, "
            f"step_mode={self.step_mode}, backend={self.backend}"
        )


class ParametricLIF(BaseNode):
    """Parametric LIF neuron (PLIF; Fang et al., ICCV 2021), SpikingJelly's
    ``ParametricLIFNode``: a LIF neuron whose time constant is learnt, one per layer.

    ``1/tau = k = sigmoid(w)`` with ``w`` a scalar ``nn.Parameter`` (in the state_dict),
    initialised to ``-log(init_tau - 1)``. Charge, multiplying by k:
    ``h = v + (x - (v - v_reset)) * k`` (``decay_input``) or ``h = v - (v - v_reset) * k + x``;
    fire and reset as :class:`LIF`. The fused backward sums dL/dk over every neuron and
    step in the same pass, so ``w`` trains at no extra pass over the data.

    Input ``[T, *]`` (``step_mode="m"``) or ``[*]`` (``"s"``); state as :class:`LIF`.

    Args:
        init_tau: the initial time constant, > 1.
        decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset, step_mode,
        backend, store_v_seq: as :class:`LIF`.
    """

    _name = "plif"

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: str = "sigmoid",
        alpha: Optional[float] = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        backend: str = "auto",
        store_v_seq: bool = False,
        *,
        fire_at_threshold: bool = True,
    ) -> None:
        cfg = _plif.make_config(decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset, fire_at_threshold)
        w0 = _plif.init_w(init_tau)
        super().__init__(cfg.v_rest, step_mode, backend, store_v_seq)
        self.cfg = cfg
        self.init_tau = float(init_tau)
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float32))

    @property
    def tau(self) -> float:
        """The current time constant, 1 / sigmoid(w)."""
        with torch.no_grad():
            return 1.0 / torch.sigmoid(self.w.detach().double()).item()

    def _multistep(self, x: torch.Tensor, v_init: Optional[torch.Tensor], return_v_seq: bool):
        return _plif.plif_multistep(x, v_init, self.w, self.cfg, backend=self.backend, return_v_seq=return_v_seq)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"init_tau={self.init_tau}, tau={self.tau:.4g}, decay_input={c.decay_input}, v_threshold={c.v_threshold}, "
            f"v_reset={c.v_reset}, surrogate={c.surrogate}(alpha={c.alpha}), detach_reset={c.detach_reset}, "
            f"step_mode={self.step_mode}, backend={self.backend}"
        )
