"""Losses over per-step SNN outputs ``[T, B, C]``: TKS and the two usual baselines.

All three take ``forward(logits [T, B, C], target, epoch=None)``, so a training loop
can swap them:

- :class:`TKSLoss`: Temporal Knowledge Sharing (Zhao, Zeng, Dong 2023; DESIGN.md), fused.
- :class:`TETLoss`: Temporal Efficient Training (Deng et al., ICLR 2022): the mean over
  steps of each step's CE, plus an MSE pulling every output towards ``means``.
- :class:`MeanCELoss`: the plain CE of the mean over steps.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import _numbers
from .ops import tks as _tks

SCHEDULES = ("linear", "static", "constant")


class TKSLossParts(NamedTuple):
    """What :meth:`TKSLoss.forward` returns with ``return_parts=True``. ``ce`` and
    ``soft`` are detached (for logging); only ``loss`` carries the gradient."""

    loss: torch.Tensor
    ce: torch.Tensor
    soft: torch.Tensor
    lam: float


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name}: logits must be [T, B, C] (steps, batch, classes), got {shape}")


class TKSLoss(nn.Module):
    """``(1 - lam) * CE(mean_t o_t, y) + lam * tau² * CE_soft(o_t, teacher)``.

    Args:
        alpha: the schedule's parameter (the paper's 0.7), in [0, 1].
        temperature: the teacher's temperature tau (> 0).
        schedule: as the authors' ``train_main.py``: ``"linear"`` (their default):
            ``lam = alpha * epoch / epochs`` (``epochs`` required, ``epoch`` passed to every
            call); ``"static"`` (their ``--staticalpha``): ``loss = alpha * CE + (1 - alpha)
            * soft``, i.e. ``lam = 1 - alpha``; ``"constant"``: ``lam = alpha``, the soft
            loss weighted by alpha at every epoch.
        epochs: the number of training epochs E, for the linear schedule.
        teacher, detach_teacher, label_smoothing, backend: as
            :func:`tks_kernels.functional.tks_loss`.

    ``forward(logits [T, B, C], target [B] int64 or [B, C] float, epoch=None,
    return_parts=False)`` returns the 0-dim loss, or :class:`TKSLossParts`.
    """

    def __init__(
        self,
        alpha: float = 0.7,
        temperature: float = 3.0,
        schedule: str = "linear",
        epochs: Optional[int] = None,
        teacher: str = "sum",
        detach_teacher: bool = False,
        label_smoothing: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be 'linear', 'static' or 'constant', got {schedule!r}")
        if schedule == "linear":
            if epochs is None:
                raise ValueError("schedule='linear' needs epochs (lam = alpha * epoch / epochs), got epochs=None")
            if not _numbers.is_integer(epochs) or epochs < 1:
                raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        # Checks alpha as a lam and every other option once, here.
        _tks.make_config(alpha, temperature, teacher, detach_teacher, label_smoothing)
        if backend != "auto" and backend not in _tks.BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, _tks.BACKENDS))}; got {backend!r}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.schedule = schedule
        self.epochs = None if epochs is None else int(epochs)
        self.teacher = teacher
        self.detach_teacher = detach_teacher
        self.label_smoothing = float(label_smoothing)
        self.backend = backend

    def lam(self, epoch: Optional[float] = None) -> float:
        """The soft loss's weight at ``epoch`` (linear: clamped to [0, alpha])."""
        if self.schedule == "static":
            return 1.0 - self.alpha
        if self.schedule == "constant":
            return self.alpha
        if epoch is None:
            raise ValueError("TKSLoss(schedule='linear') needs the epoch: call loss(logits, target, epoch=e)")
        if not _numbers.is_real(epoch) or not math.isfinite(epoch) or epoch < 0:  # NaN would give lam NaN
            raise ValueError(f"epoch must be a number >= 0, got {epoch!r}")
        return self.alpha * min(float(epoch), float(self.epochs)) / self.epochs

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: Optional[float] = None,
                return_parts: bool = False):
        lam = self.lam(epoch)
        cfg = _tks.TKSConfig(lam, self.temperature, self.teacher, self.detach_teacher, self.label_smoothing)
        loss, parts = _tks.tks_loss(logits, target, cfg, backend=self.backend)
        if return_parts:
            ce, soft = parts.unbind(0)
            return TKSLossParts(loss, ce, soft, lam)
        return loss

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, temperature={self.temperature}, schedule={self.schedule!r}, "
                f"epochs={self.epochs}, teacher={self.teacher!r}, detach_teacher={self.detach_teacher}, "
                f"label_smoothing={self.label_smoothing}, backend={self.backend!r}")


class TETLoss(nn.Module):
    """``(1 - lamb) * mean_t CE(o_t, y) + lamb * MSE(o, means)`` (Deng et al. 2022).

    Defaults are those of the authors' training script: ``means=1.0``, ``lamb=1e-3``.
    ``target``: ``[B]`` int64 or ``[B, C]`` float probabilities. ``epoch`` is ignored.
    """

    def __init__(self, lamb: float = 1e-3, means: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not _numbers.is_real(lamb) or not 0.0 <= lamb <= 1.0:
            raise ValueError(f"lamb must be a number in [0, 1], got {lamb!r}")
        if not _numbers.is_real(means) or not math.isfinite(means):
            raise TypeError(f"means must be a finite real number, got {means!r}")
        self.lamb = float(lamb)
        self.means = float(means)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: Optional[float] = None) -> torch.Tensor:
        _check_logits("TETLoss", logits)
        T, B, C = logits.shape
        # All steps' CE in one call: the mean over T*B equals the mean over steps of
        # each step's batch mean.
        flat_target = target.repeat(T, *([1] * (target.dim() - 1)))
        ce = F.cross_entropy(logits.reshape(T * B, C), flat_target, label_smoothing=self.label_smoothing)
        if self.lamb == 0.0:
            return ce
        mse = (logits - self.means).square().mean()
        return (1.0 - self.lamb) * ce + self.lamb * mse

    def extra_repr(self) -> str:
        return f"lamb={self.lamb}, means={self.means}, label_smoothing={self.label_smoothing}"


class MeanCELoss(nn.Module):
    """``CE(mean_t o_t, y)``: the usual SNN classification loss. ``epoch`` is ignored."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, epoch: Optional[float] = None) -> torch.Tensor:
        _check_logits("MeanCELoss", logits)
        return F.cross_entropy(logits.mean(0), target, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


__all__ = ["MeanCELoss", "SCHEDULES", "TETLoss", "TKSLoss", "TKSLossParts"]
