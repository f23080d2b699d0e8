"""``tks-train``: train a spiking network with the TKS loss (or CE, or TET) and measure
its temporal generalisation (test accuracy at every T from 1 to the training T).

With no arguments it is the demo: a spiking MLP on scikit-learn's digits as Bernoulli
spike trains (built in, no download), trained at T=8 with CE and with TKS from 3 seeds
each and tested at every T' <= 8 (under a minute on two CPU cores). ``--data cifar10``
etc. follow the TKS authors' recipe (see README.md for what differs). ``--compare``
trains CE and TKS from the same seeds, ``--seeds N`` reports mean and spread. Under
``torchrun`` it trains with DDP. ``tks_eval`` tests a checkpoint at any T.

Outputs in ``--out`` (default ``runs/<time>``): ``checkpoint.pt`` (written atomically
every epoch; ``--resume`` continues from it with the same result as an uninterrupted
run), ``metrics.json`` (``final_accuracy``, ``accuracy_by_T``, per-epoch ``history``)
and ``accuracy_by_T.png``. With ``--compare``/``--seeds`` each (loss, seed) run has its
own folder (``OUT/tks/seed0``), resumable on its own.

Programmatic use: ``main(argv) -> 0`` (the command), ``run(argv) -> Result``.

One concern a module: :mod:`.args` (options and per-data recipes), :mod:`.loop` (the
training loop), :mod:`.evaluate` (accuracy by T, table, metrics.json, plot),
:mod:`.distributed` (DDP helpers), :mod:`.checkpoint` (save, load, resume).
"""
from .args import LOSSES, RECIPES, TRAINING_KEYS, build_parser
from .checkpoint import CHECKPOINT
from .evaluate import METRICS, PLOT, evaluate, format_table, plot_accuracy_by_T
from .loop import Result, build_optimizer, build_scheduler, cosine_lr, main, make_loss, model_config, run

__all__ = ["CHECKPOINT", "LOSSES", "METRICS", "PLOT", "RECIPES", "TRAINING_KEYS", "Result", "build_parser",
           "build_optimizer", "build_scheduler", "cosine_lr", "evaluate", "format_table", "main", "make_loss",
           "model_config", "plot_accuracy_by_T", "run"]
