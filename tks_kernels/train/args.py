"""Arguments of ``tks-train`` and the per-data recipes that fill the options left unset."""
from __future__ import annotations

import argparse
import ast
import datetime
import os
from pathlib import Path
from typing import Any, Dict

from .. import data as _data
from .. import models as _models
from .guards import check_arguments

LOSSES = ("tks", "ce", "tet")

# Per-data defaults for the options left unset: the TKS authors' recipe (train_main.py on
# BrainCog; README.md lists every difference). lr = base_lr * global batch / 1024 (their
# linear scaling rule, base 5e-3); digits is tiny (22 steps an epoch), so its base is
# larger to train in a few epochs. data_options go to tks_kernels.data.create under the
# --data-option values given.
_DVS = dict(frames_by="time", resize_mode="align_corners", augment_policy="crop_flip_rotate", split="ordered")
_PAPER = dict(lr_interval="epoch", compare=False, seeds=1)
RECIPES: Dict[str, Dict[str, Any]] = {
    # The built-in demo: CE and TKS from 3 seeds each on digits as Bernoulli spike trains,
    # trained at T=8 and tested at every T' <= 8 (a minute or two on two CPU cores).
    "digits_spikes": dict(model="mlp", T=8, epochs=8, batch_size=32, base_lr=0.32, warmup_epochs=1, augment=False,
                          data_options={}, lr_interval="step", compare=True, seeds=3, threads=1),
    "digits": dict(model="mlp", T=4, epochs=12, batch_size=32, base_lr=0.32, warmup_epochs=1, augment=False,
                   data_options={}, lr_interval="step", compare=False, seeds=1, threads=1),
    "cifar10": dict(model="resnet19", T=4, epochs=600, batch_size=128, base_lr=5e-3, warmup_epochs=5, augment=True,
                    data_options=dict(augment_policy="randaugment"), **_PAPER),
    "cifar100": dict(model="resnet19", T=4, epochs=600, batch_size=128, base_lr=5e-3, warmup_epochs=5,
                     augment=True, data_options=dict(augment_policy="randaugment"), **_PAPER),
    "imagenet": dict(model="sew_resnet34", T=4, epochs=100, batch_size=64, base_lr=5e-3, warmup_epochs=5,
                     augment=True, data_options=dict(color_jitter=0.4), **_PAPER),
    "cifar10_dvs": dict(model="vggsnn", T=10, epochs=600, batch_size=64, base_lr=5e-3, warmup_epochs=5,
                        augment=True, data_options=_DVS, **_PAPER),
    # BrainCog's N-Caltech101 loader has its augmentations commented out
    "ncaltech101": dict(model="vggsnn", T=10, epochs=600, batch_size=64, base_lr=5e-3, warmup_epochs=5,
                        augment=False, data_options={k: v for k, v in _DVS.items() if k != "augment_policy"},
                        **_PAPER),
    "events_npz": dict(model="vggsnn", T=10, epochs=600, batch_size=64, base_lr=5e-3, warmup_epochs=5,
                       augment=True, data_options=_DVS, **_PAPER),
}
# Options that decide the trained weights: a resumed run takes them from the checkpoint.
TRAINING_KEYS = (
    "model", "data", "data_root", "T", "loss", "alpha", "temperature", "schedule", "teacher", "detach_teacher",
    "label_smoothing", "tet_lambda", "tet_phi", "lr", "base_lr", "weight_decay", "warmup_epochs", "epochs",
    "batch_size", "amp", "backend", "loss_backend", "seed", "neuron", "width", "augment", "limit_train", "limit_test",
    "channels_last", "data_option", "model_option", "warmup_lr", "min_lr", "lr_interval", "decay_1d", "schedule_epochs",
)


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
    g.add_argument("--data", default="digits_spikes", choices=_data.DATASETS,
                   help="data set; the default, built in, is the demo: scikit-learn's digits as Bernoulli spike "
                        "trains, CE against TKS from 3 seeds")
    g.add_argument("--data-root", default=None, help="the data folder (not needed for digits)")
    g.add_argument("--data-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of tks_kernels.data.create, e.g. size=48 or cache_dir=/tmp/frames (repeatable)")
    g.add_argument("-T", "--T", type=int, default=None, help="time steps (default per data: 4, 10 for event data)")
    g.add_argument("--width", type=float, default=None, help="channel-width multiplier of the model")
    g.add_argument("--model-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of tks_kernels.models.create, e.g. style=tdbn for resnet19 (repeatable)")
    g.add_argument("--neuron", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="LIF option over the paper's neuron (tau=2, v_threshold=0.5, ...), repeatable")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="data augmentation (default: on, except for digits)")
    g.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N samples only")
    g.add_argument("--limit-test", type=int, default=None, metavar="N", help="test on the first N samples only")

    g = p.add_argument_group("loss")
    g.add_argument("--loss", default=None, choices=LOSSES, help="TKS (default), CE of the mean logits, or TET")
    g.add_argument("--alpha", type=float, default=0.7,
                   help="TKS: linear: the final weight of the soft loss; static: the weight of CE")
    g.add_argument("--temperature", type=float, default=3.0, help="TKS: teacher temperature")
    g.add_argument("--schedule", default="linear", choices=("linear", "static", "constant"),
                   help="TKS, as the authors' code: soft weight alpha*epoch/epochs (linear, their default); "
                        "alpha*CE + (1-alpha)*soft (static, their --staticalpha); soft weight alpha (constant)")
    g.add_argument("--teacher", default="sum", choices=("sum", "mean"), help="TKS: sum or mean of the correct steps' logits")
    g.add_argument("--detach-teacher", action="store_true", help="TKS: no gradient through the teacher")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of the hard loss")
    g.add_argument("--tet-lambda", type=float, default=1e-3, help="TET: weight of the MSE regulariser")
    g.add_argument("--tet-phi", type=float, default=1.0, help="TET: the MSE regulariser's target value")
    g.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                   help="train ce and tks from the same seeds and plot both (default: on for the digits_spikes "
                        "demo unless --loss is given)")
    g.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="train each loss from N seeds (--seed, --seed + 1, ...) and report mean and spread "
                        "(default: 3 for the digits_spikes demo, else 1)")

    g = p.add_argument_group("optimisation (AdamW; linear warm-up, then cosine, as timm's CosineLRScheduler)")
    g.add_argument("--epochs", type=int, default=None, help="default per data: 12 (digits), 600 (cifar, event data)")
    g.add_argument("--batch-size", type=int, default=None, help="per process; default per data: 32 (digits), 128 (cifar)")
    g.add_argument("--lr", type=float, default=None, help="default: base-lr * batch-size * processes / 1024")
    g.add_argument("--base-lr", type=float, default=None, help="default 5e-3 (the paper's), 0.32 for digits")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--decay-1d", action=argparse.BooleanOptionalAction, default=False,
                   help="weight decay on 1-D parameters (BN, neuron) and biases too; "
                        "default: not, as timm's optimiser factory")
    g.add_argument("--warmup-epochs", type=float, default=None, help="default 1 (digits), 5 otherwise")
    g.add_argument("--warmup-lr", type=float, default=1e-6, help="the learning rate the warm-up starts from")
    g.add_argument("--min-lr", type=float, default=1e-5, help="the floor of the cosine")
    g.add_argument("--lr-interval", default=None, choices=("epoch", "step"),
                   help="the learning rate changes once an epoch (timm's, the authors'; the paper recipes) "
                        "or every step (the digits recipes)")

    g = p.add_argument_group("running")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CPU, fp16 autocast with GradScaler on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format for conv models")
    g.add_argument("--backend", default="auto", help="LIF and TKS-loss backend: auto, torch, cpu, triton, cuda")
    g.add_argument("--loss-backend", default=None, help="the TKS loss's backend, if not --backend's")
    g.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads (torch.set_num_threads); default 1 for the digits recipes, whose "
                        "layers are too small to share, else torch's default")
    g.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and augmentation")
    g.add_argument("--out", default=None, help="output folder (default: runs/<date-time>)")
    g.add_argument("--workers", type=int, default=None, help="data-loader processes (default 0 for digits, else 4)")
    g.add_argument("--resume", default=None, metavar="PATH", help="checkpoint file (or its folder) to continue from")
    g.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N epochs in total, as if interrupted (--resume continues)")
    g.add_argument("--extend-epochs", type=int, default=None, metavar="N",
                   help="with --resume: train N epochs beyond the checkpoint's last one; the lr and TKS "
                        "schedules keep the original length, so the extra epochs run at --min-lr")
    g.add_argument("--eval-every", type=int, default=1, help="test every N epochs during training (0: only at the end)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    recipe = RECIPES[args.data]
    for key in ("model", "T", "epochs", "batch_size", "base_lr", "warmup_epochs", "augment", "lr_interval"):
        if getattr(args, key, None) is None:
            setattr(args, key, recipe[key])
    if getattr(args, "compare", None) is None:
        args.compare = bool(recipe["compare"]) and getattr(args, "loss", None) is None
    if getattr(args, "loss", None) is None:
        args.loss = "tks"
    if getattr(args, "seeds", None) is None:
        args.seeds = int(recipe["seeds"])
    if getattr(args, "threads", None) is None:
        args.threads = recipe.get("threads")
    if args.threads is not None and (isinstance(args.threads, bool) or args.threads < 1):
        raise SystemExit(f"tks-train: --threads must be >= 1, got {args.threads}")
    if isinstance(args.seeds, bool) or not isinstance(args.seeds, int) or args.seeds < 1:
        raise SystemExit(f"tks-train: --seeds must be >= 1, got {args.seeds}")
    if args.workers is None:
        args.workers = 0 if args.data in ("digits", "digits_spikes") else min(4, os.cpu_count() or 1)
    check_arguments(args)  # every number within its meaning, naming the option (-T, --epochs, ...)
    args.neuron = dict(args.neuron) if isinstance(args.neuron, list) else dict(args.neuron or {})
    given = dict(args.data_option) if isinstance(args.data_option, list) else dict(args.data_option or {})
    # A resumed run's options are complete already; only a fresh run gets the recipe's.
    args.data_option = given if getattr(args, "resume", None) else {**recipe["data_options"], **given}
    mo = getattr(args, "model_option", None)
    args.model_option = dict(mo) if isinstance(mo, list) else dict(mo or {})
    if getattr(args, "schedule_epochs", None) is None:
        args.schedule_epochs = args.epochs
    return args


def default_out() -> str:
    """A fresh ``runs/<date-time>`` folder name."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / stamp
    i = 1
    while out.exists():
        out = Path("runs") / f"{stamp}-{i}"
        i += 1
    return str(out)
