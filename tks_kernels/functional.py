"""Function API: the fused ops without module state."""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import torch

from .neuron import detach_net, firing_of, reset_net
from .ops import lif as _lif

__all__ = ["lif_multistep", "tks_loss", "reset_net", "detach_net"]


def lif_multistep(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor] = None,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: Any = "sigmoid",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
    fire_at_threshold: bool = True,
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
        surrogate: derivative used for the spike in backward: one of
            ``tks_kernels.ops.lif.SURROGATES`` with ``alpha`` its sharpness (default per
            surrogate), or a surrogate object (``tks_kernels.surrogate``, SpikingJelly's,
            or any spiking ``nn.Module`` / ``autograd.Function`` / callable of
            x = h - v_threshold; those without a built-in derivative run fused with
            their derivative computed in one vectorised call).
        detach_reset: treat the spike as a constant inside the reset.
        fire_at_threshold: fire when ``h >= v_threshold`` (SpikingJelly's rule); False:
            ``h > v_threshold`` (BrainCog's, snnTorch's and the TKS paper's).
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.
        return_v_seq: also return the membrane after every step.

    Returns:
        ``(spikes [T, *], v_last [*])``, plus ``v_seq [T, *]`` when asked; all in x's dtype.
    """
    fn = None
    if not isinstance(surrogate, str):
        if alpha is not None:
            raise TypeError(f"alpha= goes with a surrogate name; set the alpha of surrogate={surrogate!r} itself")
        surrogate, alpha, fn = firing_of(surrogate)
    cfg = _lif.make_config(tau, decay_input, v_threshold, v_reset, surrogate, alpha, detach_reset, fire_at_threshold)
    if fn is not None:
        return _lif.lif_multistep_any(x, v_init, cfg, fn, backend=backend, return_v_seq=return_v_seq)
    return _lif.lif_multistep(x, v_init, cfg, backend=backend, return_v_seq=return_v_seq)


def tks_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    lam: float,
    temperature: float = 3.0,
    teacher: str = "sum",
    detach_teacher: bool = False,
    label_smoothing: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Temporal Knowledge Sharing loss ``(1 - lam) * L_ce + lam * L_soft`` (DESIGN.md).

    ``L_ce`` is the cross-entropy of the mean over steps; ``L_soft`` is tau² times the
    mean over steps and samples of the cross-entropy of each step's softmax against the
    teacher ``softmax(z / tau)``, where ``z`` sums the logits of the steps whose argmax is
    the label (a uniform teacher when none is). The fused backends compute the loss and
    dL/dlogits in one pass and keep the gradient for backward.

    Args:
        logits: ``[T, B, C]`` per-step outputs; float32/float64/float16/bfloat16.
        target: ``[B]`` int64 class indices, or ``[B, C]`` float class probabilities
            (mixup/cutmix: the hard loss uses them as soft targets, the selector their
            argmax).
        lam: weight of the soft loss, in [0, 1].
        temperature: the teacher's temperature tau (> 0); the student takes none.
        teacher: ``"sum"`` (the authors') or ``"mean"`` (divide by the number of correct steps).
        detach_teacher: no gradient through the teacher.
        label_smoothing: applied to the hard loss, as in ``F.cross_entropy``.
        backend: ``"auto"``, ``"torch"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.

    Returns:
        The loss, a 0-dim tensor in float32 (float64 for float64 logits).
    """
    from .ops import tks as _tks

    cfg = _tks.make_config(lam, temperature, teacher, detach_teacher, label_smoothing)
    return _tks.tks_loss(logits, target, cfg, backend=backend)[0]
