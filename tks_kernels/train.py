"""``tks-train``: train a spiking network with the TKS loss (or CE, or TET) and measure
its temporal generalisation (test accuracy at every T from 1 to the training T).

With no arguments it trains a spiking MLP on scikit-learn's digits (built in, no
download) with TKS at T=4 in about a minute on two CPU cores. ``--compare`` trains CE
and TKS from the same seed and plots both. Under ``torchrun`` it trains with DDP.

Outputs in ``--out`` (default ``runs/<time>``): ``checkpoint.pt`` (written atomically
every epoch; ``--resume`` continues from it with the same result as an uninterrupted
run), ``metrics.json`` (``final_accuracy``, ``accuracy_by_T``, per-epoch ``history``)
and ``accuracy_by_T.png``.

Programmatic use: ``main(argv) -> 0`` (the command), ``run(argv) -> Result``.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from . import data as _data
from . import models as _models

LOSSES = ("tks", "ce", "tet")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
PLOT = "accuracy_by_T.png"

# Per-data defaults for the options left unset. lr = base_lr * global batch / 1024 (the
# paper's linear scaling rule with base 5e-3); digits is tiny (22 steps an epoch), so its
# base is larger to train in a few epochs.
RECIPES: Dict[str, Dict[str, Any]] = {
    "digits": dict(model="mlp", epochs=12, batch_size=32, base_lr=0.32, warmup_epochs=1, augment=False),
    "cifar10": dict(model="resnet19", epochs=600, batch_size=128, base_lr=5e-3, warmup_epochs=5, augment=True),
    "cifar100": dict(model="resnet19", epochs=600, batch_size=128, base_lr=5e-3, warmup_epochs=5, augment=True),
    "imagenet": dict(model="sew_resnet34", epochs=100, batch_size=64, base_lr=5e-3, warmup_epochs=5, augment=True),
    "cifar10_dvs": dict(model="vggsnn", epochs=600, batch_size=64, base_lr=5e-3, warmup_epochs=5, augment=True),
    "ncaltech101": dict(model="vggsnn", epochs=600, batch_size=64, base_lr=5e-3, warmup_epochs=5, augment=True),
    "events_npz": dict(model="vggsnn", epochs=600, batch_size=64, base_lr=5e-3, warmup_epochs=5, augment=True),
}
# Options that decide the trained weights: a resumed run takes them from the checkpoint.
TRAINING_KEYS = (
    "model", "data", "data_root", "T", "loss", "alpha", "temperature", "schedule", "teacher", "detach_teacher",
    "label_smoothing", "tet_lambda", "tet_phi", "lr", "base_lr", "weight_decay", "warmup_epochs", "epochs",
    "batch_size", "amp", "backend", "loss_backend", "seed", "neuron", "width", "augment", "limit_train", "limit_test",
    "channels_last", "data_option",
)


# ----------------------------------------------------------------------------- arguments


def _key_value(text: str) -> tuple:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, [], False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tks-train",
        description="Train a spiking network with Temporal Knowledge Sharing and test it at every T.",
        formatter_class=_Formatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, choices=_models.MODELS,
                   help="default per data: mlp (digits), resnet19 (cifar), vggsnn (event data), sew_resnet34 (imagenet)")
    g.add_argument("--data", default="digits", choices=_data.DATASETS, help="data set")
    g.add_argument("--data-root", default=None, help="the data folder (not needed for digits)")
    g.add_argument("--data-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of tks_kernels.data.create, e.g. size=48 or cache_dir=/tmp/frames (repeatable)")
    g.add_argument("-T", "--T", type=int, default=4, help="time steps")
    g.add_argument("--width", type=float, default=None, help="channel-width multiplier of the model")
    g.add_argument("--neuron", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="LIF option over the paper's neuron (tau=2, v_threshold=0.5, ...), repeatable")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="data augmentation (default: on, except for digits)")
    g.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N samples only")
    g.add_argument("--limit-test", type=int, default=None, metavar="N", help="test on the first N samples only")

    g = p.add_argument_group("loss")
    g.add_argument("--loss", default="tks", choices=LOSSES, help="TKS, CE of the mean logits, or TET")
    g.add_argument("--alpha", type=float, default=0.7, help="TKS: the final weight of the soft loss")
    g.add_argument("--temperature", type=float, default=3.0, help="TKS: teacher temperature")
    g.add_argument("--schedule", default="linear", choices=("linear", "static"),
                   help="TKS: lambda = alpha*epoch/epochs (linear) or alpha (static)")
    g.add_argument("--teacher", default="sum", choices=("sum", "mean"), help="TKS: sum or mean of the correct steps' logits")
    g.add_argument("--detach-teacher", action="store_true", help="TKS: no gradient through the teacher")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the hard loss")
    g.add_argument("--tet-lambda", type=float, default=1e-3, help="TET: weight of the MSE regulariser")
    g.add_argument("--tet-phi", type=float, default=1.0, help="TET: the MSE regulariser's target value")
    g.add_argument("--compare", action="store_true", help="train ce and tks from the same seed and plot both")

    g = p.add_argument_group("optimisation (AdamW, linear warm-up then cosine)")
    g.add_argument("--epochs", type=int, default=None, help="default per data: 12 (digits), 600 (cifar, event data)")
    g.add_argument("--batch-size", type=int, default=None, help="per process; default per data: 32 (digits), 128 (cifar)")
    g.add_argument("--lr", type=float, default=None, help="default: base-lr * batch-size * processes / 1024")
    g.add_argument("--base-lr", type=float, default=None, help="default 5e-3 (the paper's), 0.32 for digits")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--warmup-epochs", type=float, default=None, help="default 1 (digits), 5 otherwise")

    g = p.add_argument_group("running")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CPU, fp16 autocast with GradScaler on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format for conv models")
    g.add_argument("--backend", default="auto", help="LIF and TKS-loss backend: auto, torch, cpu, triton, cuda")
    g.add_argument("--loss-backend", default=None, help="the TKS loss's backend, if not --backend's")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    g.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and augmentation")
    g.add_argument("--out", default=None, help="output folder (default: runs/<date-time>)")
    g.add_argument("--workers", type=int, default=None, help="data-loader processes (default 0 for digits, else 4)")
    g.add_argument("--resume", default=None, metavar="PATH", help="checkpoint file (or its folder) to continue from")
    g.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N epochs in total, as if interrupted (--resume continues)")
    g.add_argument("--eval-every", type=int, default=1, help="test every N epochs during training (0: only at the end)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    recipe = RECIPES[args.data]
    for key in ("model", "epochs", "batch_size", "base_lr", "warmup_epochs", "augment"):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    if args.workers is None:
        args.workers = 0 if args.data == "digits" else min(4, os.cpu_count() or 1)
    if args.T < 1:
        raise SystemExit(f"tks-train: -T must be >= 1, got {args.T}")
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("tks-train: --epochs and --batch-size must be >= 1")
    args.neuron = dict(args.neuron) if isinstance(args.neuron, list) else dict(args.neuron or {})
    args.data_option = dict(args.data_option) if isinstance(args.data_option, list) else dict(args.data_option or {})
    return args


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def _init_distributed(device_arg: Optional[str]) -> tuple:
    """torchrun sets RANK, WORLD_SIZE, LOCAL_RANK: NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def _broadcast(obj: Any, d: Dist) -> Any:
    if not d.on:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_sum(values: Sequence[float], d: Dist, device: torch.device) -> List[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if d.on:
        dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- pieces


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> Dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def make_loss(args: argparse.Namespace, name: str) -> nn.Module:
    from . import loss as _loss  # written alongside; imported late so the models need nothing from it

    if name == "tks":
        return _loss.TKSLoss(alpha=args.alpha, temperature=args.temperature, schedule=args.schedule,
                             epochs=args.epochs, teacher=args.teacher, detach_teacher=args.detach_teacher,
                             label_smoothing=args.label_smoothing, backend=args.loss_backend or args.backend)
    if name == "tet":
        return _loss.TETLoss(lamb=args.tet_lambda, means=args.tet_phi, label_smoothing=args.label_smoothing)
    return _loss.MeanCELoss(label_smoothing=args.label_smoothing)


def _datasets(args: argparse.Namespace, d: Dist):
    info = _data.info(args.data)
    kw = dict(args.data_option)
    if d.on and not d.main:
        dist.barrier()  # rank 0 writes the event-frame cache first; the others read it
    train_set = _data.create(args.data, args.data_root, train=True, T=args.T if info.is_event else None,
                             augment=bool(args.augment), **kw)
    test_set = _data.create(args.data, args.data_root, train=False, T=args.T if info.is_event else None,
                            augment=False, **kw)
    if d.on and d.main:
        dist.barrier()
    num_classes = info.num_classes or getattr(train_set, "num_classes", None)
    if args.limit_train is not None:
        train_set = Subset(train_set, range(min(args.limit_train, len(train_set))))
    if args.limit_test is not None:
        test_set = Subset(test_set, range(min(args.limit_test, len(test_set))))
    sample, _ = train_set[0]
    shape = tuple(sample.shape[1:] if info.is_event else sample.shape)  # (C, H, W)
    return train_set, test_set, num_classes, shape, info.is_event


def _build_model(args: argparse.Namespace, num_classes: int, shape: tuple) -> _models.SpikingModel:
    kw: Dict[str, Any] = {}
    if len(shape) == 3:
        kw["input_size"] = (shape[1], shape[2])
    if args.width is not None:
        kw["width"] = args.width
    return _models.create(args.model, num_classes=num_classes, in_channels=shape[0], T=args.T,
                          neuron=args.neuron or None, backend=args.backend, **kw)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def _autocast(args: argparse.Namespace, device: torch.device):
    if not args.amp:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _to_input(x: torch.Tensor, is_event: bool, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if is_event:
        x = x.transpose(0, 1)  # [B, T, ...] -> [T, B, ...]
        if channels_last:
            x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    elif channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, steps: Sequence[int], is_event: bool, device: torch.device,
             args: argparse.Namespace, d: Dist) -> Dict[int, float]:
    """Test accuracy (prediction: argmax of the logits averaged over steps) at each T in ``steps``.

    Static inputs are repeated t times; event sequences give their first t frames.
    Counts are summed over the ranks.
    """
    was_training = model.training
    model.eval()
    correct = [0] * len(steps)
    total = 0
    for x, y in loader:
        x = _to_input(x, is_event, device, args.channels_last)
        y = y.to(device)
        for i, t in enumerate(steps):
            with _autocast(args, device):
                logits = model(x[:t]) if is_event else model(x, T=t)
            correct[i] += int((logits.float().mean(0).argmax(-1) == y).sum())
        total += y.numel()
    model.train(was_training)
    sums = _all_sum(correct + [total], d, device)
    return {t: (c / sums[-1] if sums[-1] else 0.0) for t, c in zip(steps, sums[:-1])}


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json_atomic(obj: Any, path: Path) -> None:
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
    names = list(curves)
    ts = sorted({int(t) for acc in curves.values() for t in acc})
    lines = ["  T  " + "  ".join(f"{n:>8}" for n in names)]
    for t in ts:
        lines.append(f"{t:>3}  " + "  ".join(f"{100 * curves[n][t]:7.2f}%" if t in curves[n] else f"{'-':>8}"
                                             for n in names))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- one run


@dataclass
class Result:
    """What :func:`run` returns: the metrics written to metrics.json, the trained models
    (unwrapped) by loss name, the output folder, and whether the run stopped early."""

    metrics: Dict[str, Any]
    models: Dict[str, nn.Module] = field(default_factory=dict)
    out: Optional[Path] = None
    stopped: bool = False


def _train_one(args: argparse.Namespace, loss_name: str, out: Path, d: Dist, device: torch.device,
               resume: Optional[Dict[str, Any]] = None) -> tuple:
    log = print if d.main else (lambda *a, **k: None)
    _seed_all(args.seed)
    train_set, test_set, num_classes, shape, is_event = _datasets(args, d)
    if num_classes is None:
        raise SystemExit(f"tks-train: cannot tell the number of classes of {args.data}")
    model = _build_model(args, num_classes, shape).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    base = model

    world_batch = args.batch_size * d.world
    lr = args.lr if args.lr is not None else args.base_lr * world_batch / 1024
    sampler = DistributedSampler(train_set, num_replicas=d.world, rank=d.rank, shuffle=True, seed=args.seed,
                                 drop_last=False)
    drop_last = len(sampler) > args.batch_size
    steps_per_epoch = len(sampler) // args.batch_size if drop_last else math.ceil(len(sampler) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = min(total_steps, int(round(args.warmup_epochs * steps_per_epoch)))
    optimizer = torch.optim.AdamW(base.parameters(), lr=lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup_steps))
    scaler = torch.amp.GradScaler("cuda") if (args.amp and device.type == "cuda") else None
    criterion = make_loss(args, loss_name)

    start_epoch, history = 0, []
    if resume is not None:
        base.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler") is not None:
            scaler.load_state_dict(resume["scaler"])
        start_epoch, history = int(resume["epoch"]), list(resume.get("history", []))
        _set_rng_state(resume["rng"][min(d.rank, len(resume["rng"]) - 1)] if isinstance(resume["rng"], list)
                       else resume["rng"])
        log(f"resumed {loss_name} at epoch {start_epoch}/{args.epochs} from {args.resume}")

    model = base
    if d.on:
        model = nn.parallel.DistributedDataParallel(
            base, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    # DDP syncs buffers in every forward, so all ranks would have to run the same number
    # of test batches; testing needs no syncing: use the plain module under DDP.
    eval_model = base if d.on else model
    # Each rank tests its own share (rank, rank + world, ...): no padding, exact counts.
    test_share = Subset(test_set, range(d.rank, len(test_set), d.world)) if d.on else test_set
    test_loader = DataLoader(test_share, batch_size=2 * args.batch_size, shuffle=False,
                             num_workers=args.workers, pin_memory=device.type == "cuda")

    log(f"[{loss_name}] {args.model} on {args.data} (train {len(train_set)}, test {len(test_set)}), T={args.T}, "
        f"{sum(p.numel() for p in base.parameters()) / 1e6:.3f}M parameters, {d.world} process(es) on {device}, "
        f"lr {lr:.3g}, batch {args.batch_size}x{d.world}, {args.epochs} epochs, out {out}")
    stopped = False
    for epoch in range(start_epoch, args.epochs):
        if args.stop_after is not None and epoch >= args.stop_after:
            stopped = True
            break
        t0 = time.perf_counter()
        # Data order, augmentation and worker seeds are a function of (seed, epoch, rank)
        # only, so a resumed run sees exactly what an uninterrupted one would.
        es = _epoch_seed(args.seed, epoch, d.rank)
        _seed_all(es)
        sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(es)
        loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            drop_last=drop_last, generator=gen, pin_memory=device.type == "cuda")
        model.train()
        # Running sums stay on the device: reading them every step would wait for the GPU.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = _progress(loader, f"{loss_name} epoch {epoch + 1}/{args.epochs}", not d.main or args.no_progress)
        for step, (x, y) in enumerate(bar):
            x = _to_input(x, is_event, device, args.channels_last)
            y = y.to(device, non_blocking=True)
            with _autocast(args, device):
                logits = model(x)
            loss = criterion(logits.float(), y, epoch=epoch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
            n = y.numel()
            loss_sum += loss.detach() * n
            correct += (logits.detach().float().mean(0).argmax(-1) == y).sum()
            seen += n
            if step % 10 == 0 and hasattr(bar, "set_postfix") and not bar.disable:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%",
                                refresh=False)
        loss_sum, correct, seen = _all_sum([float(loss_sum), int(correct), seen], d, device)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"tks-train: the {loss_name} loss became {loss_sum} in epoch {epoch + 1}; "
                                     f"try a smaller --lr (now {lr:.3g})")
        if d.on:
            # DDP syncs buffers at the start of a forward, so each rank ends the epoch with
            # its own BN running statistics: take rank 0's, as the next forward would.
            for b in base.buffers():
                dist.broadcast(b, src=0)
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                 "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        last = epoch + 1 == args.epochs
        if args.eval_every and ((epoch + 1) % args.eval_every == 0 or last):
            entry["test_accuracy"] = evaluate(eval_model, test_loader, [args.T], is_event, device, args, d)[args.T]
        history.append(entry)
        log(f"[{loss_name}] epoch {epoch + 1}/{args.epochs}: loss {entry['train_loss']:.4f}, "
            f"train {100 * entry['train_accuracy']:.2f}%"
            + (f", test {100 * entry['test_accuracy']:.2f}%" if "test_accuracy" in entry else "")
            + f" ({entry['seconds']:.1f}s)")
        rng = _rng_state()
        rngs = [None] * d.world
        if d.on:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        if d.main:
            _save_atomic({
                "model": base.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch + 1,
                "rng": rngs, "args": vars(args), "loss": loss_name, "history": history,
            }, out / CHECKPOINT)

    metrics: Dict[str, Any] = {"model": args.model, "data": args.data, "loss": loss_name, "T": args.T,
                               "history": history}
    if stopped:
        log(f"[{loss_name}] stopped after epoch {args.stop_after} (--stop-after); continue with --resume {out / CHECKPOINT}")
        return metrics, base, True
    acc = evaluate(base, test_loader, list(range(1, args.T + 1)), is_event, device, args, d)
    metrics["final_accuracy"] = acc[args.T]
    metrics["accuracy_by_T"] = {str(t): a for t, a in acc.items()}
    metrics["test_samples"] = len(test_set)
    return metrics, base, False


def _progress(loader, desc: str, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return loader
    return tqdm(loader, desc=desc, disable=disable, leave=False, dynamic_ncols=True, mininterval=0.5)


# ----------------------------------------------------------------------------- entry points


def _load_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple:
    path = Path(args.resume)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise SystemExit(f"tks-train: --resume {args.resume}: no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
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


def _default_out() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / stamp
    i = 1
    while out.exists():
        out = Path("runs") / f"{stamp}-{i}"
        i += 1
    return str(out)


def run(argv: Optional[Sequence[str]] = None) -> Result:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, test at every T, write the outputs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ckpt = None
    if args.resume is not None:
        if args.compare:
            raise SystemExit("tks-train: --resume continues one run; resume each loss of a --compare run "
                             "on its own (--resume OUT/tks/checkpoint.pt)")
        args, ckpt = _load_resume(args, parser)
        args.compare = False
    args = _fill_defaults(args)
    d, device = _init_distributed(args.device)
    if device.type == "cpu" and d.on and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))
    out = Path(_broadcast(args.out or _default_out(), d))
    args.out = str(out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    if d.on:
        dist.barrier()

    t0 = time.perf_counter()
    losses = ["ce", "tks"] if args.compare else [ckpt["loss"] if ckpt else args.loss]
    runs: Dict[str, Dict[str, Any]] = {}
    trained: Dict[str, nn.Module] = {}
    stopped = False
    for name in losses:
        sub = out / name if args.compare else out
        if d.main:
            sub.mkdir(parents=True, exist_ok=True)
        metrics, model, stopped_one = _train_one(args, name, sub, d, device, resume=ckpt)
        stopped = stopped or stopped_one
        metrics["args"] = {k: v for k, v in vars(args).items()}
        metrics["wall_seconds"] = time.perf_counter() - t0
        runs[name], trained[name] = metrics, model
        if d.main and args.compare and not stopped_one:
            _write_json_atomic(metrics, sub / METRICS)
    wall = time.perf_counter() - t0
    if stopped:
        return Result(runs[losses[-1]], trained, out, True)

    curves = {name: {int(t): a for t, a in m["accuracy_by_T"].items()} for name, m in runs.items()}
    main_name = "tks" if args.compare else losses[0]
    metrics = dict(runs[main_name])
    metrics["wall_seconds"] = wall
    if args.compare:
        metrics["compare"] = losses
        for name in losses:
            metrics[name] = runs[name]
    if d.main:
        test_n = metrics.get("test_samples")
        print(f"\ntest accuracy by T (trained at T={args.T}; {args.model} on {args.data}, {test_n} test samples; "
              f"{wall:.1f}s)")
        print(format_table(curves))
        _write_json_atomic(metrics, out / METRICS)
        title = f"{args.model} on {args.data}, trained at T={args.T}"
        plot_accuracy_by_T(curves, out / PLOT, title)
        print(f"wrote {out / METRICS} and {out / PLOT}")
    if d.on:
        dist.barrier()
    return Result(metrics, trained, out, False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``tks-train`` command; returns the exit status."""
    try:
        run(argv)
    finally:
        if dist.is_available() and dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
