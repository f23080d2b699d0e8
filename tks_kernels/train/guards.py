"""What keeps a ``tks-train`` run from going silently wrong: a watch for NaN/inf in the
gradients and parameters, the device check, the Ctrl-C message, and the removal of an
output folder a failed run left empty."""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .. import checkpoint as _ckpt


class TrainingStopped(Exception):
    """Training stopped for a reason the user can act on; ``tks-train`` prints the message
    as one line and exits with status 1."""


# ----------------------------------------------------------------------------- NaN / inf


class NonFiniteWatch:
    """Finds the first NaN or infinite gradient (per step) and parameter or optimiser
    value (per epoch) without reading anything back from the device during the epoch.

    ``after_backward()``, once a step before the optimiser step, adds one fused norm of
    all gradients (a NaN/inf anywhere in a tensor makes its norm non-finite) to per-tensor
    device flags and notes the step; ``check(...)`` at the end of the epoch reads them
    with one sync and raises :class:`TrainingStopped` naming the first bad tensor, the
    step and the epoch, before the epoch's checkpoint is written.

    With a GradScaler (fp16 autocast) an overflowing step is skipped by design, so only
    the parameters are checked.
    """

    def __init__(self, model: nn.Module, check_grads: bool = True) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.check_grads = check_grads and bool(self.params)
        self._bad: Optional[torch.Tensor] = None    # bool [len(params)], on the device
        self._first: Optional[torch.Tensor] = None  # int64 []: first bad step, -1 if none
        self._index_cache: Dict[tuple, torch.Tensor] = {}
        self.step = 0

    def start_epoch(self) -> None:
        self._bad = self._first = None
        self.step = 0

    def after_backward(self) -> None:
        if self.check_grads:
            which = tuple(i for i, p in enumerate(self.params) if p.grad is not None)
            if which:
                grads = [self.params[i].grad for i in which]
                device = grads[0].device
                if any(g.device != device for g in grads):  # model split over devices: norms per device
                    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()).to(device) for g in grads])
                else:
                    norms = torch.stack(torch._foreach_norm([g.detach() for g in grads]))
                bad_now = ~torch.isfinite(norms)
                if self._bad is None:
                    self._bad = torch.zeros(len(self.params), dtype=torch.int32, device=device)
                    self._first = torch.full((), -1, dtype=torch.int64, device=device)
                idx = self._index_cache.get(which)
                if idx is None:
                    idx = self._index_cache.setdefault(which, torch.tensor(which, dtype=torch.int64, device=device))
                self._bad.index_add_(0, idx, bad_now.to(torch.int32))
                self._first = torch.where((self._first < 0) & bad_now.any(), self.step, self._first)
        self.step += 1

    def check(self, epoch: int, loss_name: str, model: nn.Module, optimizer: torch.optim.Optimizer,
              hint: str = "") -> None:
        """Raise :class:`TrainingStopped` if a gradient of this epoch or any parameter,
        buffer or optimiser value is NaN or infinite (``epoch`` counts from 1)."""
        grad_msg = ""
        if self._bad is not None:
            flags = torch.cat([self._bad.to(torch.int64), self._first.view(1)]).tolist()  # the one sync
            bad, first = flags[:-1], flags[-1]
            if any(bad):
                names = [n for n, b in zip(self.names, bad) if b]
                more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
                grad_msg = f"the gradient of {names[0]}{more} became NaN or infinite first at step {first + 1}"
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()["state"]}
        bad_value = _ckpt.first_nonfinite(state)
        if not grad_msg and bad_value is None:
            return
        parts = [p for p in (grad_msg, f"{bad_value} is NaN or infinite" if bad_value else "") if p]
        raise TrainingStopped(f"non-finite values in epoch {epoch} of the {loss_name} run: {'; '.join(parts)}; "
                              f"stopped before saving this epoch{hint}")


# ----------------------------------------------------------------------------- arguments

# (dest, lowest, highest, lowest allowed?, highest allowed?); None: no bound. Every value
# must also be finite; an option left at None is skipped.
_NUMBER_RULES = (
    ("T", 1, None, True, True), ("epochs", 1, None, True, True), ("batch_size", 1, None, True, True),
    ("limit_train", 1, None, True, True), ("limit_test", 1, None, True, True), ("stop_after", 1, None, True, True),
    ("extend_epochs", 1, None, True, True), ("eval_every", 0, None, True, True), ("workers", 0, None, True, True),
    ("seed", 0, 2**63 - 1, True, True),
    ("alpha", 0.0, 1.0, True, True), ("temperature", 0.0, None, False, True),
    ("label_smoothing", 0.0, 1.0, True, False), ("tet_lambda", 0.0, 1.0, True, True), ("tet_phi", None, None, True, True),
    ("lr", 0.0, None, False, True), ("base_lr", 0.0, None, False, True), ("weight_decay", 0.0, None, True, True),
    ("warmup_epochs", 0.0, None, True, True), ("warmup_lr", 0.0, None, True, True), ("min_lr", 0.0, None, True, True),
    ("width", 0.0, None, False, True),
)


def _flag(dest: str) -> str:
    return "-T" if dest == "T" else "--" + dest.replace("_", "-")


def _range_text(lo, hi, lo_in: bool, hi_in: bool) -> str:
    if hi is None:
        return f">= {lo}" if lo_in else f"> {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def check_arguments(args) -> None:
    """Refuse, naming each option and its value, every number outside its meaning: NaN or
    infinite values, negative counts and rates, ``--limit-train 0``, ``--stop-after 0``,
    ``--label-smoothing`` outside [0, 1), ... (``SystemExit`` with one line)."""
    problems = []
    for dest, lo, hi, lo_in, hi_in in _NUMBER_RULES:
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"{_flag(dest)} must be a finite number, got {value!r}")
            continue
        below = lo is not None and (value < lo if lo_in else value <= lo)
        above = hi is not None and (value > hi if hi_in else value >= hi)
        if below or above:
            problems.append(f"{_flag(dest)} must be {_range_text(lo, hi, lo_in, hi_in)}, got {value!r}")
    if problems:
        raise SystemExit("tks-train: " + "; ".join(problems))


# ----------------------------------------------------------------------------- device


def check_device(device_arg: Optional[str]) -> None:
    """``--device``: a clear error for a name torch does not know or a device that is not
    there (CUDA asked for without CUDA, an index past the last GPU)."""
    if device_arg is None:
        return
    try:
        device = torch.device(device_arg)
    except (RuntimeError, ValueError, TypeError):
        raise SystemExit(f"tks-train: --device {device_arg!r} is not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise SystemExit(f"tks-train: --device {device_arg}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SystemExit(f"tks-train: --device {device_arg}: there are only {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1})")
    elif device.type != "cpu":
        module = getattr(torch, device.type, None)
        available = getattr(module, "is_available", None)
        if available is None or not available():
            raise SystemExit(f"tks-train: --device {device_arg}: {device.type} is not available here; "
                             f"use --device cpu")


# ----------------------------------------------------------------------------- interrupts


class Progress:
    """Where the run is, for the Ctrl-C message."""

    def __init__(self) -> None:
        self.loss: Optional[str] = None
        self.epoch: Optional[int] = None     # the epoch running, from 1
        self.epochs: Optional[int] = None
        self.checkpoint: Optional[Path] = None
        self.saved_epoch: Optional[int] = None

    def reset(self) -> None:
        self.__init__()


PROGRESS = Progress()


def interrupted_message() -> str:
    """One line for Ctrl-C: where it stopped and what to resume from."""
    p = PROGRESS
    where = f" in epoch {p.epoch}/{p.epochs} of the {p.loss} run" if p.epoch is not None else ""
    if p.checkpoint is not None:
        return (f"tks-train: interrupted{where}; the checkpoint of epoch {p.saved_epoch} is {p.checkpoint}: "
                f"continue with --resume {p.checkpoint}")
    return f"tks-train: interrupted{where}; no epoch had finished, so there is no checkpoint to resume from"


# ----------------------------------------------------------------------------- output folders

_created: List[List[Path]] = []


def make_dirs(path: Path) -> None:
    """``mkdir -p path``, remembering the folders it made so that a failed run can remove
    them again if they stayed empty (see :func:`remove_empty_dirs_on_failure`)."""
    path = Path(path)
    new = []
    p = path
    while not p.exists() and p != p.parent:
        new.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    if _created:
        _created[-1].extend(new)  # deepest first


def _remove_if_empty(folders: Sequence[Path]) -> None:
    for folder in sorted(set(folders), key=lambda f: len(f.parts), reverse=True):
        try:
            os.rmdir(folder)  # only succeeds on an empty folder
        except OSError:
            pass


def remove_empty_dirs_on_failure(fn: Callable) -> Callable:
    """Decorator: when ``fn`` raises, the folders :func:`make_dirs` created during the call
    are removed if they are still empty (a failed run leaves no empty ``runs/<time>/``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _created.append([])
        try:
            return fn(*args, **kwargs)
        except BaseException:
            _remove_if_empty(_created[-1])
            raise
        finally:
            _created.pop()

    return wrapper
