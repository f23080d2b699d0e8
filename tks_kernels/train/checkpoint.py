"""Checkpoints of ``tks-train``: what is saved each epoch, how it is written, and how a
``--resume`` reads it back (the training options come from the checkpoint)."""
from __future__ import annotations

import argparse
import os
import random
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from .args import TRAINING_KEYS

CHECKPOINT = "checkpoint.pt"


def rng_state() -> Dict[str, Any]:
    """The generators a training step draws from (torch, CUDA, NumPy, Python)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Writes ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def checkpoint_path(path_or_folder: str) -> Path:
    """The checkpoint file of ``path_or_folder`` (a file, or a run folder holding one)."""
    path = Path(path_or_folder)
    if path.is_dir():
        path = path / CHECKPOINT
    return path


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """The dict :func:`save_checkpoint` wrote, on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def load_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple:
    """For ``--resume``: the checkpoint, and ``args`` with its training options replaced by
    the checkpoint's (a different value given on the command line is warned about)."""
    path = checkpoint_path(args.resume)
    if not path.is_file():
        raise SystemExit(f"tks-train: --resume {args.resume}: no checkpoint at {path}")
    ckpt = load_checkpoint(path)
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
