"""``tks-eval CHECKPOINT [-T 1 2 4 8 16]``: test a model ``tks-train`` saved at any number
of time steps, beyond the training T too, in one forward per batch (the models are causal
in time: the first t steps of a longer run are a t-step run).

Writes a table to stdout and, in ``--out`` (default ``<run folder>/eval``), ``metrics.json``
(``accuracy_by_T``, the checkpoint, its epoch and training T) and ``accuracy_by_T.png``;
the run's own ``metrics.json`` is never touched. The checkpoint's ``model_config`` says
how to rebuild the model (name, classes, input channels and size, neuron, options).

Programmatic use: ``main(argv) -> 0``, ``run(argv) -> metrics dict``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Subset

from .. import data as _data
from .. import models as _models
from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from .distributed import Dist
from .evaluate import METRICS, PLOT, evaluate, format_table, plot_accuracy_by_T, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tks-eval", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("checkpoint", help="a tks-train checkpoint.pt, or the run folder holding one")
    p.add_argument("-T", "--T", type=int, nargs="+", default=None, metavar="T",
                   help="time steps to test at (default: 1 .. 2 x the training T)")
    p.add_argument("--data-root", default=None, help="the data folder, if not the one the run trained on")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="event data: integrate the test recordings into N frames (default: the training T); "
                        "every T must be <= N")
    p.add_argument("--batch-size", type=int, default=256, help="test batch size")
    p.add_argument("--limit-test", type=int, default=None, metavar="N", help="the first N test samples only")
    p.add_argument("--backend", default="auto", help="LIF backend: auto, torch, cpu, triton, cuda")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--workers", type=int, default=0, help="data-loader processes")
    p.add_argument("--out", default=None, help="output folder (default: <run folder>/eval)")
    return p


def _fail(message: str) -> "SystemExit":
    return SystemExit(f"tks-eval: {message}")


def rebuild_model(ckpt: Dict[str, Any], backend: str = "auto") -> _models.SpikingModel:
    """The trained model of a checkpoint, from its ``model_config``, with its weights."""
    cfg = ckpt.get("model_config")
    if not isinstance(cfg, dict):
        raise _fail("the checkpoint has no model_config (it was written before tks-eval existed); "
                    "train again, or build the model with tks_kernels.models.create and load ckpt['model']")
    model = _models.create(cfg["name"], num_classes=cfg["num_classes"], in_channels=cfg["in_channels"], T=cfg["T"],
                           neuron=cfg.get("neuron"), backend=backend, **dict(cfg.get("options") or {}))
    model.load_state_dict(ckpt["model"])
    return model


def run(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Parse ``argv``, test the checkpoint at every T asked, write the outputs; returns the metrics."""
    opts = build_parser().parse_args(argv)
    path = checkpoint_path(opts.checkpoint)
    if not path.is_file():
        raise _fail(f"no checkpoint at {path}")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise _fail(str(e)) from None
    model = rebuild_model(ckpt, opts.backend)
    cfg, saved = ckpt["model_config"], ckpt["args"]
    train_T = int(cfg["T"])
    steps = sorted(set(opts.T)) if opts.T else list(range(1, 2 * train_T + 1))
    if steps[0] < 1:
        raise _fail(f"-T takes positive numbers of time steps, got {opts.T}")
    is_event = bool(cfg.get("is_event"))
    frames = opts.frames if opts.frames is not None else train_T
    if is_event and steps[-1] > frames:
        raise _fail(f"-T {steps[-1]}: the event samples are integrated into {frames} frames; "
                    f"pass --frames {steps[-1]} (or more) to integrate them into more")
    try:
        test_set = _data.create(cfg.get("data", saved.get("data")), opts.data_root or saved.get("data_root"),
                                train=False, T=frames if is_event else None, augment=False,
                                **dict(saved.get("data_option") or {}))
    except (OSError, ValueError, ImportError) as e:
        raise _fail(f"cannot read the test set: {e}") from None
    if opts.limit_test is not None:
        if opts.limit_test < 1:
            raise _fail(f"--limit-test must be >= 1, got {opts.limit_test}")
        test_set = Subset(test_set, range(min(opts.limit_test, len(test_set))))
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    loader = DataLoader(test_set, batch_size=opts.batch_size, shuffle=False, num_workers=opts.workers)
    run_args = argparse.Namespace(amp=opts.amp, channels_last=False)
    acc = evaluate(model, loader, steps, is_event, device, run_args, Dist())

    out = Path(opts.out) if opts.out else path.parent / "eval"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"checkpoint": str(path), "epoch": int(ckpt["epoch"]), "model": cfg["name"], "data": cfg.get("data"),
               "loss": ckpt.get("loss"), "trained_T": train_T, "test_samples": len(test_set),
               "accuracy_by_T": {str(t): a for t, a in acc.items()}}
    if is_event:
        metrics["frames"] = frames
    name = str(ckpt.get("loss", "model"))
    print(f"test accuracy by T ({cfg['name']} on {cfg.get('data')}, trained at T={train_T} for "
          f"{metrics['epoch']} epochs, {len(test_set)} test samples)")
    print(format_table({name: acc}))
    write_json_atomic(metrics, out / METRICS)
    plot_accuracy_by_T({name: acc}, out / PLOT, f"{cfg['name']} on {cfg.get('data')}, trained at T={train_T}")
    print(f"wrote {out / METRICS} and {out / PLOT}")
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``tks-eval`` command; returns the exit status."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
