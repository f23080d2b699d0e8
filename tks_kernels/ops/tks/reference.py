"""The TKS loss in plain PyTorch: the definition every kernel is tested against
(DESIGN.md, "The TKS loss"). Arithmetic in fp32 (fp64 for fp64 logits); autograd gives
the gradient, including the path through the teacher unless ``detach_teacher``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import TKSConfig


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def tks_loss_parts(logits: torch.Tensor, target: torch.Tensor, cfg: TKSConfig):
    """logits ``[T, B, C]``, target ``[B]`` int64 or ``[B, C]`` float -> ``(loss, ce, soft)``,
    0-dim tensors in the compute dtype, all differentiable (see :func:`tks_loss`)."""
    dtype = compute_dtype(logits.dtype)
    o = logits.to(dtype)
    soft_target = target.is_floating_point()
    tgt = target.to(dtype) if soft_target else target
    # The selector's class: the label, or the argmax of a mixup/cutmix target.
    label = target.argmax(-1) if soft_target else target

    # Hard loss: CE of the ensemble (mean over steps), PyTorch's own label smoothing.
    ce = F.cross_entropy(o.mean(0), tgt, label_smoothing=cfg.label_smoothing)

    # Selector m[t, b]: step t already answers sample b correctly (no gradient).
    m = (o.detach().argmax(-1) == label.unsqueeze(0)).to(dtype)  # [T, B]
    z = (m.unsqueeze(-1) * o).sum(0)  # [B, C]; all-wrong samples: z = 0, uniform teacher
    if cfg.teacher == "mean":
        z = z / m.sum(0).clamp_min(1).unsqueeze(-1)
    if cfg.detach_teacher:
        z = z.detach()
    q = torch.softmax(z / cfg.temperature, dim=-1)  # [B, C]

    # Soft loss: every step's student (no temperature) against the shared teacher.
    soft = -(q.unsqueeze(0) * torch.log_softmax(o, dim=-1)).sum(-1).mean()
    soft = soft * (cfg.temperature * cfg.temperature)
    loss = (1.0 - cfg.lam) * ce + cfg.lam * soft
    return loss, ce, soft


def tks_loss(logits: torch.Tensor, target: torch.Tensor, cfg: TKSConfig):
    """The backend interface: ``(loss, parts)``, parts = ``[ce, soft]`` detached."""
    loss, ce, soft = tks_loss_parts(logits, target, cfg)
    return loss, torch.stack((ce.detach(), soft.detach()))
