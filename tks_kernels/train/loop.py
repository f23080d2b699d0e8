"""The training loop of ``tks-train``: builds the data, model, loss and optimiser from the
arguments, trains one loss (or CE and TKS for ``--compare``), checkpoints every epoch and
tests at every T at the end."""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from .._backends import backends_line
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .. import data as _data
from .. import models as _models
from .. import checkpoint as _ckpt
from . import distributed as _dist
from . import guards as _guards
from .args import build_parser, default_out, fill_defaults
from .checkpoint import CHECKPOINT, checkpoint_path, load_resume, rng_state, save_checkpoint, set_rng_state
from .distributed import Dist
from .evaluate import METRICS, PLOT, autocast, evaluate, format_table, plot_accuracy_by_T, to_input, write_json_atomic


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loss(args: argparse.Namespace, name: str) -> nn.Module:
    from .. import loss as _loss  # written alongside; imported late so the models need nothing from it

    if name == "tks":
        return _loss.TKSLoss(alpha=args.alpha, temperature=args.temperature, schedule=args.schedule,
                             epochs=int(getattr(args, "schedule_epochs", None) or args.epochs), teacher=args.teacher, detach_teacher=args.detach_teacher,
                             label_smoothing=args.label_smoothing, backend=args.loss_backend or args.backend)
    if name == "tet":
        return _loss.TETLoss(lamb=args.tet_lambda, means=args.tet_phi, label_smoothing=args.label_smoothing)
    return _loss.MeanCELoss(label_smoothing=args.label_smoothing)


def _datasets(args: argparse.Namespace, d: Dist):
    info = _data.info(args.data)
    kw = dict(args.data_option)
    if d.on and not d.main:
        _dist.barrier(d)  # rank 0 writes the event-frame cache first; the others read it
    try:
        train_set = _data.create(args.data, args.data_root, train=True, T=args.T if info.is_event else None,
                                 augment=bool(args.augment), **kw)
    except ImportError as e:  # an optional package the recipe's augmentation needs
        raise SystemExit(f"tks-train: {e}") from None
    test_set = _data.create(args.data, args.data_root, train=False, T=args.T if info.is_event else None,
                            augment=False, **kw)
    if d.main:
        _dist.barrier(d)
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
    kw.update(getattr(args, "model_option", None) or {})
    return _models.create(args.model, num_classes=num_classes, in_channels=shape[0], T=args.T,
                          neuron=args.neuron or None, backend=args.backend, **kw)


def model_config(args: argparse.Namespace, num_classes: int, shape: tuple) -> Dict[str, Any]:
    """What ``tks-eval`` needs to rebuild the model, as plain Python values."""
    kw: Dict[str, Any] = {}
    if len(shape) == 3:
        kw["input_size"] = [int(shape[1]), int(shape[2])]
    if args.width is not None:
        kw["width"] = float(args.width)
    kw.update(getattr(args, "model_option", None) or {})
    return {"name": args.model, "num_classes": int(num_classes), "in_channels": int(shape[0]), "T": int(args.T),
            "neuron": _models.neuron_options(args.neuron or None), "options": kw,
            "data": args.data, "is_event": bool(_data.info(args.data).is_event)}


def cosine_lr(t: float, base_lr: float, epochs: float, warmup_epochs: float, warmup_lr: float,
              min_lr: float) -> float:
    """The learning rate at epoch ``t`` (fractional with ``--lr-interval step``), as timm's
    ``CosineLRScheduler`` (t_initial=epochs, warmup_t, warmup_lr_init, lr_min; warm-up not a
    prefix, one cycle): linear from ``warmup_lr`` for ``warmup_epochs``, then
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / epochs)) / 2``, then ``min_lr``."""
    if t < warmup_epochs:
        return warmup_lr + t * (base_lr - warmup_lr) / warmup_epochs
    if t >= epochs:
        return min_lr
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / epochs))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, decay_1d: bool = False) -> torch.optim.AdamW:
    """AdamW; as timm's ``create_optimizer`` (the authors'), 1-D parameters (batch norm,
    learnt neuron constants) and biases get no weight decay unless ``decay_1d``."""
    if decay_1d or weight_decay == 0:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                              {"params": decay, "weight_decay": weight_decay}], lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, lr: float,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per training step; with ``--lr-interval epoch`` the value changes only at
    epoch boundaries, as timm's scheduler stepped per epoch."""
    epochs = float(getattr(args, "schedule_epochs", None) or args.epochs)

    def factor(step: int) -> float:
        t = step // steps_per_epoch if args.lr_interval == "epoch" else step / steps_per_epoch
        value = cosine_lr(float(t), lr, epochs, float(args.warmup_epochs), args.warmup_lr, args.min_lr)
        return value / lr if lr > 0 else 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Result:
    """What :func:`run` returns: the metrics written to metrics.json, the trained models
    (unwrapped) by loss name, the output folder, and whether the run stopped early."""

    metrics: Dict[str, Any]
    models: Dict[str, nn.Module] = field(default_factory=dict)
    out: Optional[Path] = None
    stopped: bool = False


def train_one(args: argparse.Namespace, loss_name: str, out: Path, d: Dist, device: torch.device,
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
    optimizer = build_optimizer(base, lr, args.weight_decay, bool(getattr(args, "decay_1d", False)))
    scheduler = build_scheduler(optimizer, args, lr, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if (args.amp and device.type == "cuda") else None
    criterion = make_loss(args, loss_name)
    # With a GradScaler, overflowing fp16 gradients are expected (the step is skipped).
    watch = _guards.NonFiniteWatch(base, check_grads=scaler is None)
    progress = _guards.PROGRESS
    progress.loss, progress.epochs, progress.epoch, progress.checkpoint = loss_name, args.epochs, None, None

    start_epoch, history = 0, []
    if resume is not None:
        base.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler") is not None:
            scaler.load_state_dict(resume["scaler"])
        start_epoch, history = int(resume["epoch"]), list(resume.get("history", []))
        set_rng_state(resume["rng"][min(d.rank, len(resume["rng"]) - 1)] if isinstance(resume["rng"], list)
                       else resume["rng"])
        log(f"resumed {loss_name} at epoch {start_epoch}/{args.epochs} from {args.resume}")
        progress.checkpoint, progress.saved_epoch = checkpoint_path(args.resume), start_epoch

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
    log(f"[{loss_name}] {backends_line(args.backend, args.loss_backend or args.backend, device)}")
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
        watch.start_epoch()
        progress.epoch = epoch + 1
        epoch_lr = optimizer.param_groups[-1]["lr"]
        # Running sums stay on the device: reading them every step would wait for the GPU.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = _progress(loader, f"{loss_name} epoch {epoch + 1}/{args.epochs}", not d.main or args.no_progress)
        for step, (x, y) in enumerate(bar):
            x = to_input(x, is_event, device, args.channels_last)
            y = y.to(device, non_blocking=True)
            with autocast(args, device):
                logits = model(x)
            loss = criterion(logits.float(), y, epoch=epoch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                watch.after_backward()  # device-side flags only: no sync
                optimizer.step()
            scheduler.step()
            n = y.numel()
            loss_sum += loss.detach() * n
            correct += (logits.detach().float().mean(0).argmax(-1) == y).sum()
            seen += n
            if step % 10 == 0 and hasattr(bar, "set_postfix") and not bar.disable:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%",
                                refresh=False)
        loss_sum, correct, seen = _dist.all_sum([float(loss_sum), int(correct), seen], d, device)
        kept = (f"; the last checkpoint is {progress.checkpoint} (epoch {progress.saved_epoch})"
                if progress.checkpoint is not None else "")
        watch.check(epoch + 1, loss_name, base, optimizer, hint=f"{kept}; try a smaller --lr (now {lr:.3g})")
        if not math.isfinite(loss_sum):
            raise _guards.TrainingStopped(f"the {loss_name} loss became {loss_sum} in epoch {epoch + 1}{kept}; "
                                          f"try a smaller --lr (now {lr:.3g})")
        _dist.sync_buffers_from_rank0(base, d)
        entry = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                 "lr": epoch_lr, "seconds": time.perf_counter() - t0}
        last = epoch + 1 == args.epochs
        if args.eval_every and ((epoch + 1) % args.eval_every == 0 or last):
            entry["test_accuracy"] = evaluate(eval_model, test_loader, [args.T], is_event, device, args, d)[args.T]
        history.append(entry)
        log(f"[{loss_name}] epoch {epoch + 1}/{args.epochs}: loss {entry['train_loss']:.4f}, "
            f"train {100 * entry['train_accuracy']:.2f}%"
            + (f", test {100 * entry['test_accuracy']:.2f}%" if "test_accuracy" in entry else "")
            + f" ({entry['seconds']:.1f}s)")
        rngs = _dist.gather_objects(rng_state(), d)
        if d.main:
            save_checkpoint({
                "model": base.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch + 1,
                "rng": rngs, "args": vars(args), "loss": loss_name, "history": history,
                "model_config": model_config(args, num_classes, shape),
            }, out / CHECKPOINT)
        progress.checkpoint, progress.saved_epoch = out / CHECKPOINT, epoch + 1

    metrics: Dict[str, Any] = {"model": args.model, "data": args.data, "loss": loss_name, "T": args.T,
                               "history": history}
    if stopped:
        log(f"[{loss_name}] stopped after epoch {args.stop_after} (--stop-after); continue with --resume {out / CHECKPOINT}")
        return metrics, base, True
    acc = evaluate(base, test_loader, list(range(1, args.T + 1)), is_event, device, args, d)
    metrics["final_accuracy"] = acc[args.T]
    metrics["accuracy_by_T"] = {str(t): a for t, a in acc.items()}
    metrics["test_samples"] = len(test_set)
    distinct = getattr(getattr(test_set, "dataset", test_set), "distinct_samples", None)
    if distinct is not None and not isinstance(test_set, Subset):
        metrics["test_distinct_samples"] = int(distinct)
    return metrics, base, False


def _progress(loader, desc: str, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return loader
    return tqdm(loader, desc=desc, disable=disable, leave=False, dynamic_ncols=True, mininterval=0.5)


@_guards.remove_empty_dirs_on_failure
def run(argv: Optional[Sequence[str]] = None) -> Result:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, test at every T, write the outputs."""
    _guards.PROGRESS.reset()
    parser = build_parser()
    args = parser.parse_args(argv)
    ckpt = None
    if args.resume is not None:
        if args.compare:
            raise SystemExit("tks-train: --resume continues one run; resume each loss of a --compare run "
                             "on its own (--resume OUT/tks/checkpoint.pt)")
        args, ckpt = load_resume(args, parser)
        args.compare, args.seeds = False, 1
        done = int(ckpt["epoch"])
        if args.stop_after is not None and args.stop_after <= done:
            raise SystemExit(f"tks-train: --stop-after {args.stop_after}: {checkpoint_path(args.resume)} is already "
                             f"at epoch {done}; give a later epoch")
        if args.extend_epochs is not None:
            if isinstance(args.extend_epochs, bool) or args.extend_epochs < 1:
                raise SystemExit(f"tks-train: --extend-epochs must be >= 1, got {args.extend_epochs}")
            # The lr and TKS schedules keep their length: the extra epochs run at the floor.
            args.schedule_epochs = args.schedule_epochs or args.epochs
            args.epochs = done + args.extend_epochs
        elif done >= args.epochs:
            out = Path(args.out)
            print(f"tks-train: {checkpoint_path(args.resume)} is a finished run ({done} of {args.epochs} epochs); "
                  f"nothing to do, {out / METRICS} is left as it is. To train more epochs pass --extend-epochs N.")
            metrics = json.loads((out / METRICS).read_text()) if (out / METRICS).is_file() else {}
            return Result(metrics, {}, out, False)
    elif args.extend_epochs is not None:
        raise SystemExit("tks-train: --extend-epochs continues a run: give it with --resume PATH")
    args = fill_defaults(args)
    _guards.check_device(args.device)
    d, device = _dist.init_distributed(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif device.type == "cpu" and d.on and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))
    out = Path(_dist.broadcast_object(args.out or default_out(), d))
    args.out = str(out)
    if d.main:
        _guards.make_dirs(out)
    _dist.barrier(d)

    t0 = time.perf_counter()
    losses = ["ce", "tks"] if args.compare else [ckpt["loss"] if ckpt else args.loss]
    seeds = [args.seed + k for k in range(args.seeds)]
    runs: Dict[str, List[Dict[str, Any]]] = {}
    trained: Dict[str, nn.Module] = {}
    stopped = False
    several = args.compare or len(seeds) > 1
    for name in losses:
        runs[name] = []
        for seed in seeds:
            sub = out / name if args.compare else out
            sub = sub / f"seed{seed}" if len(seeds) > 1 else sub
            if d.main:
                _guards.make_dirs(sub)
            # Each (loss, seed) is a run of its own: its checkpoint resumes as a single run.
            one = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": 1, "compare": False, "loss": name,
                                        "out": str(sub)})
            metrics, model, stopped_one = train_one(one, name, sub, d, device, resume=ckpt)
            stopped = stopped or stopped_one
            metrics["args"] = {k: v for k, v in vars(one).items()}
            metrics["wall_seconds"] = time.perf_counter() - t0
            runs[name].append(metrics)
            trained[name] = model
            if d.main and several and not stopped_one:
                write_json_atomic(metrics, sub / METRICS)
    wall = time.perf_counter() - t0
    if stopped:
        return Result(runs[losses[-1]][-1], trained, out, True)

    summary = {name: summarise(ms) for name, ms in runs.items()}
    main_name = "tks" if args.compare else losses[0]
    if several:
        metrics = {k: v for k, v in runs[main_name][0].items() if k not in ("history", "wall_seconds")}
        metrics.update(summary[main_name])
        metrics["args"] = {k: v for k, v in vars(args).items()}
        metrics["seeds"] = seeds
        for name in losses:
            metrics[name] = {**summary[name], "runs": runs[name]}
        if args.compare:
            metrics["compare"] = losses
    else:
        metrics = dict(runs[main_name][0])
    metrics["wall_seconds"] = wall
    if d.main:
        test_n = metrics.get("test_samples")
        distinct = metrics.get("test_distinct_samples", test_n)
        what = f"{test_n} test samples" if distinct == test_n else f"{test_n} test samples of {distinct} images"
        spread = f", mean and spread over seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else ""
        print(f"\ntest accuracy by T (trained at T={args.T}; {args.model} on {args.data}, {what}{spread}; "
              f"{wall:.1f}s)")
        print(format_table({n: s["accuracy_by_T"] for n, s in summary.items()},
                           {n: s["accuracy_by_T_std"] for n, s in summary.items()} if len(seeds) > 1 else None,
                           test_samples=distinct))
        write_json_atomic(metrics, out / METRICS)
        title = f"{args.model} on {args.data}, trained at T={args.T}" + (f", {len(seeds)} seeds" if len(seeds) > 1
                                                                          else "")
        plot_accuracy_by_T({n: s["accuracy_by_T"] for n, s in summary.items()}, out / PLOT, title,
                           spread={n: s["accuracy_by_T_std"] for n, s in summary.items()} if len(seeds) > 1
                           else None, test_samples=distinct, trained_T=args.T)
        print(f"wrote {out / METRICS} and {out / PLOT}")
    _dist.barrier(d)
    return Result(metrics, trained, out, False)


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and sample standard deviation (0 for one run) over runs of ``accuracy_by_T``
    and ``final_accuracy``; keys are the T as strings, as in metrics.json."""
    ts = sorted({int(t) for r in runs for t in r["accuracy_by_T"]})
    by_t = {t: np.array([r["accuracy_by_T"][str(t)] for r in runs], dtype=np.float64) for t in ts}
    mean = {str(t): float(v.mean()) for t, v in by_t.items()}
    std = {str(t): float(v.std(ddof=1)) if len(v) > 1 else 0.0 for t, v in by_t.items()}
    last = str(ts[-1])
    return {"accuracy_by_T": mean, "accuracy_by_T_std": std, "final_accuracy": mean[last],
            "final_accuracy_std": std[last]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``tks-train`` command; returns the exit status (1: stopped with a message,
    130: interrupted by Ctrl-C, each reported in one line without a traceback)."""
    try:
        run(argv)
    except KeyboardInterrupt:
        print(_guards.interrupted_message(), file=sys.stderr)
        return 130
    except (_guards.TrainingStopped, _ckpt.CheckpointError) as e:
        print(f"tks-train: {e}", file=sys.stderr)
        return 1
    finally:
        _dist.shutdown()
    return 0
