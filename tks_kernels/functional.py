"""Function API: the fused ops without module state."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from .ops import lif as _lif


def lif_multistep(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor] = None,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
    backend: str = "auto",
    return_v_seq: bool = False,
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Multi-step LIF neuron (SpikingJelly's parametrisation), all T steps in one kernel.

    Args:
        x: input current ``[T, *]``, time first; float32/float64/float16/bfloat16.
        v_init: membrane before step 0, shape ``x.shape[1:]``; default ``v_reset``
            (0 for soft reset).
        tau: membrane time constant (>= 1).
        decay_input: whether the input is divided by tau too.
        v_threshold: firing threshold.
        v_reset: the membrane after a spike (hard reset); ``None`` for soft reset
            (subtract v_threshold).
        surrogate: derivative used for the spike in backward, one of
            ``tks_kernels.ops.lif.SURROGATES``; ``alpha`` its sharpness (default per
            surrogate).
        detach_reset: treat the spike as a constant inside the reset.
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.
        return_v_seq: also return the membrane after every step.

    Returns:
        ``(spikes [T, *], v_last [*])``, plus ``v_seq [T, *]`` when asked; all in x's dtype.
    """
    cfg = _lif.make_config(tau, decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset)
    return _lif.lif_multistep(x, v_init, cfg, backend=backend, return_v_seq=return_v_seq)
