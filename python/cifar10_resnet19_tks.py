"""CIFAR-10, ResNet-19 (tdBN), T=4, trained with TKS as in the paper (Zhao, Zeng, Dong,
arXiv 2304.06540): AdamW, lr 5e-3 x batch / 1024, weight decay 0.01, 600 epochs with a
cosine schedule after a linear warm-up, temperature 3, alpha 0.7 (linear schedule),
random crop and flip.

    python python/cifar10_resnet19_tks.py /data/cifar10 [more tks-train options]

The data root holds cifar-10-batches-py (or its files). Under torchrun it trains with
DDP (--batch-size is per process). Extra options override the defaults below, e.g.
--epochs 10 --out runs/try.
"""
import sys

from tks_kernels.train import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    root, extra = sys.argv[1], sys.argv[2:]
    sys.exit(main([
        "--data", "cifar10", "--data-root", root, "--model", "resnet19", "-T", "4",
        "--loss", "tks", "--alpha", "0.7", "--temperature", "3", "--schedule", "linear",
        "--epochs", "600", "--batch-size", "128", "--base-lr", "5e-3", "--weight-decay", "0.01",
        "--warmup-epochs", "5", "--augment",
        *extra,
    ]))
