"""Evaluation and reporting of ``tks-train``: test accuracy at several T, the printed
table, ``metrics.json`` and the accuracy-by-T plot."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from .distributed import Dist, all_sum

METRICS = "metrics.json"
PLOT = "accuracy_by_T.png"


def autocast(args: argparse.Namespace, device: torch.device):
    """``--amp``: fp16 autocast on CUDA, bf16 elsewhere; a no-op without it."""
    if not args.amp:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_input(x: torch.Tensor, is_event: bool, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A loader's batch as the model takes it: event batches ``[B, T, C, H, W]`` become
    ``[T, B, C, H, W]``; static ones stay ``[B, ...]``."""
    x = x.to(device, non_blocking=True)
    if is_event:
        x = x.transpose(0, 1)  # [B, T, ...] -> [T, B, ...]
        if channels_last:
            x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    elif channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def prefix_mean_logits(logits: torch.Tensor, steps: Sequence[int]) -> Dict[int, torch.Tensor]:
    """logits ``[T, B, C]`` -> for each t in ``steps`` (1 <= t <= T) the mean of the first t
    steps' logits, ``[B, C]`` (one cumulative sum, in fp32)."""
    csum = logits.float().cumsum(0)
    return {t: csum[t - 1] / t for t in steps}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, steps: Sequence[int], is_event: bool, device: torch.device,
             args: argparse.Namespace, d: Dist) -> Dict[int, float]:
    """Test accuracy (prediction: argmax of the logits averaged over steps) at each T in ``steps``.

    One forward of max(steps) steps per batch: the models are causal in time (step t's
    output depends on steps <= t only; batch norm uses its running statistics in eval
    mode), so the first t steps of that forward are a t-step run. Static inputs are
    repeated; event sequences give their first frames. Counts are summed over the ranks.
    """
    steps = sorted({int(t) for t in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be positive numbers of time steps, got {steps}")
    longest = steps[-1]
    was_training = model.training
    model.eval()
    correct = [0] * len(steps)
    total = 0
    for x, y in loader:
        x = to_input(x, is_event, device, args.channels_last)
        y = y.to(device)
        if is_event and x.shape[0] < longest:
            raise ValueError(f"cannot test at T={longest}: the event samples have {x.shape[0]} frames")
        with autocast(args, device):
            logits = model(x[:longest]) if is_event else model(x, T=longest)
        means = prefix_mean_logits(logits, steps)
        for i, t in enumerate(steps):
            correct[i] += int((means[t].argmax(-1) == y).sum())
        total += y.numel()
    model.train(was_training)
    sums = all_sum(correct + [total], d, device)
    return {t: (c / sums[-1] if sums[-1] else 0.0) for t, c in zip(steps, sums[:-1])}


def write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def plot_accuracy_by_T(curves: Dict[str, Dict[int, float]], path: Path, title: str) -> None:
    """One line per run: test accuracy against the number of steps used at test time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    for name, acc in curves.items():
        ts = sorted(int(t) for t in acc)
        ax.plot(ts, [100.0 * acc[t] for t in ts], marker="o", label=name)
    ax.set_xlabel("time steps T at test")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(sorted({int(t) for acc in curves.values() for t in acc}))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def format_table(curves: Dict[str, Dict[int, float]]) -> str:
    """Accuracy in % by T (rows) and run (columns)."""
    names = list(curves)
    ts = sorted({int(t) for acc in curves.values() for t in acc})
    lines = ["  T  " + "  ".join(f"{n:>8}" for n in names)]
    for t in ts:
        lines.append(f"{t:>3}  " + "  ".join(f"{100 * curves[n][t]:7.2f}%" if t in curves[n] else f"{'-':>8}"
                                             for n in names))
    return "\n".join(lines)
