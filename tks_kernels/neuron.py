"""Neuron layers: drop-ins for SpikingJelly's stateful neurons."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .ops import lif as _lif


class MemoryModule(nn.Module):
    """A layer with state across calls (the membrane ``v``), cleared by :meth:`reset`."""

    def reset(self) -> None:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


def reset_net(net: nn.Module) -> None:
    """Reset the state of every neuron in ``net`` (call between samples/batches)."""
    for m in net.modules():
        if isinstance(m, MemoryModule):
            m.reset()


class LIF(MemoryModule):
    """Leaky integrate-and-fire neuron, SpikingJelly's ``LIFNode`` parameters.

    ``step_mode="m"``: input ``[T, *]``, all steps in one fused kernel; ``"s"``: input
    ``[*]``, one step per call. The membrane ``self.v`` carries over between calls
    (gradients flow through it into earlier calls) until :meth:`reset`.

    Args: as :func:`tks_kernels.functional.lif_multistep`, plus ``store_v_seq``: keep
    the membrane after every step in ``self.v_seq`` (multi-step mode).
    """

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
    ) -> None:
        super().__init__()
        self.cfg = _lif.make_config(tau, decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset)
        if step_mode not in ("m", "s"):
            raise ValueError(f"step_mode must be 'm' (multi-step, [T, *]) or 's' (single step, [*]); got {step_mode!r}")
        if backend != "auto" and backend not in _lif.BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, _lif.BACKENDS))}; got {backend!r}")
        self.step_mode = step_mode
        self.backend = backend
        self.store_v_seq = bool(store_v_seq)
        self.v: Union[float, torch.Tensor] = self.cfg.v_rest
        self.v_seq: Optional[torch.Tensor] = None

    # SpikingJelly's attribute names, read-only views of the config
    tau = property(lambda self: self.cfg.tau)
    decay_input = property(lambda self: self.cfg.decay_input)
    v_threshold = property(lambda self: self.cfg.v_threshold)
    v_reset = property(lambda self: self.cfg.v_reset)
    detach_reset = property(lambda self: self.cfg.detach_reset)
    surrogate = property(lambda self: self.cfg.surrogate)
    alpha = property(lambda self: self.cfg.alpha)

    def reset(self) -> None:
        self.v = self.cfg.v_rest
        self.v_seq = None

    def _v_init(self, x0: torch.Tensor) -> Optional[torch.Tensor]:
        v = self.v
        if not isinstance(v, torch.Tensor):
            return None if v == self.cfg.v_rest else torch.full_like(x0, float(v))
        if v.shape != x0.shape:
            raise ValueError(
                f"the membrane kept from the previous call (lif.v, the v_init of this call) has shape "
                f"{tuple(v.shape)} but this input needs {tuple(x0.shape)}; call lif.reset() or "
                f"tks_kernels.reset_net(model) between batches"
            )
        if v.device != x0.device:
            raise ValueError(f"the membrane kept from the previous call (lif.v) is on {v.device} but the input is on {x0.device}; call reset()")
        return v.to(x0.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            if not isinstance(x, torch.Tensor) or x.dim() < 1:
                raise ValueError(f"single-step mode takes x of shape [*] with at least one dimension, got {getattr(x, 'shape', x)}")
            x = x.unsqueeze(0)
        else:
            _lif.check_input(x, None)
        v_init = self._v_init(x[0])
        want_seq = self.store_v_seq and self.step_mode == "m"
        out = _lif.lif_multistep(x, v_init, self.cfg, backend=self.backend, return_v_seq=want_seq)
        spikes, self.v = out[0], out[1]
        if want_seq:
            self.v_seq = out[2]
        return spikes[0] if self.step_mode == "s" else spikes

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"tau={c.tau}, decay_input={c.decay_input}, v_threshold={c.v_threshold}, v_reset={c.v_reset}, "
            f"surrogate={c.surrogate}(alpha={c.alpha}), detach_reset={c.detach_reset}, "
            f"step_mode={self.step_mode}, backend={self.backend}"
        )
