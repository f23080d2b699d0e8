"""Checkpoints of ``tks-train``: what is saved each epoch, how it is written, and how a
``--resume`` reads it back (the training options come from the checkpoint).

The file format is :mod:`tks_kernels.checkpoint`'s: checksummed, written atomically and
durably, read with ``weights_only=True`` (so the random-generator states are stored as
plain tensors and lists), refused when damaged or when it holds a NaN or infinite value.
"""
from __future__ import annotations

import argparse
import random
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from .. import checkpoint as _ckpt
from .args import LOSSES, TRAINING_KEYS

CHECKPOINT = "checkpoint.pt"
# What every checkpoint of tks-train holds (other keys, e.g. model metadata, may be added).
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "args", "loss", "history")

CheckpointError = _ckpt.CheckpointError


def rng_state() -> Dict[str, Any]:
    """The generators a training step draws from (torch, CUDA, NumPy, Python), as plain
    tensors, lists and numbers (what ``torch.load(weights_only=True)`` reads)."""
    np_state = np.random.get_state(legacy=False)
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": [int(version), [int(w) for w in words], gauss_next],
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restores what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": int(n["pos"])},
                         "has_gauss": int(n["has_gauss"]), "gauss": float(n["gauss"])})
    version, words, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(w) for w in words), gauss_next))


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Writes ``state`` to ``path`` (see :func:`tks_kernels.checkpoint.save`): refused,
    naming the first bad tensor, when a parameter or optimiser value is not finite; on a
    write error the previous file stays as it was. The replaced file is kept as
    ``checkpoint.prev.pt``."""
    _ckpt.save(path, state, keep_previous=True)


def checkpoint_path(path_or_folder: str) -> Path:
    """The checkpoint file of ``path_or_folder`` (a file, or a run folder holding one)."""
    path = Path(path_or_folder)
    if path.is_dir():
        path = path / CHECKPOINT
    return path


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """The dict :func:`save_checkpoint` wrote, on the CPU. Raises
    :class:`tks_kernels.checkpoint.CheckpointError` (one line naming the file) for a
    damaged, foreign or incomplete checkpoint or one holding a NaN or infinite value."""
    ckpt = _ckpt.load(path, map_location="cpu", required=REQUIRED_KEYS)
    problems = []
    if not isinstance(ckpt["args"], dict):
        problems.append(f"'args' is a {type(ckpt['args']).__name__}, not a dict")
    if isinstance(ckpt["epoch"], bool) or not isinstance(ckpt["epoch"], int) or ckpt["epoch"] < 0:
        problems.append(f"'epoch' is {ckpt['epoch']!r}, not a count of epochs")
    if ckpt["loss"] not in LOSSES:
        problems.append(f"'loss' is {ckpt['loss']!r}, not one of {', '.join(LOSSES)}")
    rngs = ckpt["rng"]
    if not isinstance(rngs, list) or not rngs or not all(
            isinstance(r, dict) and {"torch", "numpy", "python"} <= set(r) for r in rngs):
        problems.append("'rng' is not a list of generator states")
    if problems:
        raise CheckpointError(f"{path}: not a tks-train checkpoint: {'; '.join(problems)}", path)
    return ckpt


def load_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple:
    """For ``--resume``: the checkpoint, and ``args`` with its training options replaced by
    the checkpoint's (a different value given on the command line is warned about)."""
    path = checkpoint_path(args.resume)
    if not path.is_file():
        raise SystemExit(f"tks-train: --resume {args.resume}: no checkpoint at {path}")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"tks-train: --resume: {e}") from None
    saved = ckpt["args"]
    defaults = vars(parser.parse_args([]))
    for key in TRAINING_KEYS:
        given = getattr(args, key, None)
        if key in ("neuron", "data_option"):
            given = dict(given) if isinstance(given, list) else given
            default = {}
        else:
            default = defaults.get(key)
        if given is not None and given != default and given != saved.get(key):
            warnings.warn(f"--resume: ignoring {key}={given!r}; the checkpoint was trained with {saved.get(key)!r}")
        setattr(args, key, saved.get(key))
    if args.out is None:
        args.out = str(path.parent)
    return args, ckpt
