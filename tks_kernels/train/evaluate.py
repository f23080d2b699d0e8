"""Evaluation and reporting of ``tks-train``: test accuracy at several T, the printed
table, ``metrics.json`` and the accuracy-by-T plot."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

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


def binomial_se(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on n independent test samples."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n) if n else float("nan")


def plot_accuracy_by_T(curves: Dict[str, Dict[Any, float]], path: Path, title: str,
                       spread: Optional[Dict[str, Dict[Any, float]]] = None, test_samples: Optional[int] = None,
                       trained_T: Optional[int] = None) -> None:
    """One line per run: test accuracy against the number of steps used at test time.

    ``spread``: error bars (e.g. the standard deviation over seeds). The y-axis spans at
    least 20 points and a note gives the size of one test sample and the test set's
    binomial standard error, so a difference of a sample or two does not look large.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.8), dpi=120)
    lows, highs = [], []
    for name, acc in curves.items():
        ts = sorted(int(t) for t in acc)
        ys = [100.0 * _at(acc, t) for t in ts]
        err = [100.0 * _at(spread[name], t) for t in ts] if spread and name in spread else None
        ax.errorbar(ts, ys, yerr=err, marker="o", capsize=3, label=name + (" (mean ± s.d.)" if err else ""))
        lows.append(min(y - (e if err else 0.0) for y, e in zip(ys, err or [0.0] * len(ys))))
        highs.append(max(y + (e if err else 0.0) for y, e in zip(ys, err or [0.0] * len(ys))))
    lo, hi = min(lows), max(highs)
    if hi - lo < 20.0:  # never zoom in so far that one test sample fills the plot
        mid = (hi + lo) / 2
        lo, hi = mid - 10.0, mid + 10.0
    if hi > 100.0:
        lo, hi = lo - (hi - 100.0), 100.0
    ax.set_ylim(max(0.0, lo - 2.0), min(100.0, hi + 2.0) if hi < 100.0 else 100.5)
    if trained_T is not None:
        ax.axvline(trained_T, color="grey", lw=0.8, ls="--")
    if test_samples:
        worst = min(_at(acc, t) for acc in curves.values() for t in acc)
        ax.text(0.02, 0.02, f"{test_samples} test samples: one = {100.0 / test_samples:.2f} points, "
                f"s.e. <= {100.0 * binomial_se(worst, test_samples):.1f}", transform=ax.transAxes, fontsize=7)
    ax.set_xlabel("time steps T at test" + (" (dashed: training T)" if trained_T is not None else ""))
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(sorted({int(t) for acc in curves.values() for t in acc}))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _at(values: Dict[Any, float], t: int) -> float:
    return values[t] if t in values else values[str(t)]


def format_table(curves: Dict[str, Dict[Any, float]], spread: Optional[Dict[str, Dict[Any, float]]] = None,
                 test_samples: Optional[int] = None) -> str:
    """Accuracy in % by T (rows) and run (columns); with ``spread``, mean ± spread, and with
    both 'ce' and 'tks', their difference and the test set's binomial standard error."""
    names = list(curves)
    ts = sorted({int(t) for acc in curves.values() for t in acc})
    width = 15 if spread else 8
    diff = "ce" in curves and "tks" in curves
    head = "  T  " + "  ".join(f"{n:>{width}}" for n in names)
    if diff:
        head += f"  {'tks - ce':>{width}}" + ("  test s.e." if test_samples else "")
    lines = [head]

    def cell(acc, sd, t):
        if t not in acc and str(t) not in acc:
            return f"{'-':>{width}}"
        v = 100 * _at(acc, t)
        return f"{v:6.2f} ± {100 * _at(sd, t):5.2f}%" if sd is not None else f"{v:7.2f}%"

    for t in ts:
        row = f"{t:>3}  " + "  ".join(cell(curves[n], spread[n] if spread else None, t) for n in names)
        if diff:
            d = 100 * (_at(curves["tks"], t) - _at(curves["ce"], t))
            row += f"  {d:+{width - 1}.2f}%"
            if test_samples:
                row += f"  {100 * binomial_se(_at(curves['ce'], t), test_samples):9.2f}%"
        lines.append(row)
    return "\n".join(lines)
