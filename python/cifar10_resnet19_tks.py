"""CIFAR-10, ResNet-19 (BrainCog's, tdBN), T=4, trained with TKS as the authors' code does
(Zhao, Zeng, Dong, arXiv 2304.06540; train_main.py on BrainCog): AdamW with lr 5e-3 x
batch / 1024 and weight decay 0.01 on all but 1-D parameters and biases, 600 epochs of a
cosine stepped per epoch (5 warm-up epochs from 1e-6, floor 1e-5), temperature 3, alpha
0.7 (linear schedule), random crop, flip, RandAugment rand-m9-mstd0.5-inc1 and random
erasing 0.25 (timm's transforms: pip install timm torchvision).

    python python/cifar10_resnet19_tks.py /data/cifar10 [more tks-train options]

The data root holds cifar-10-batches-py (or its files). Under torchrun it trains with
DDP (--batch-size is per process). These are `tks-train --data cifar10`'s defaults;
extra options override them, e.g. --epochs 10 --out runs/try.
"""
import sys

from tks_kernels.train import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    root, extra = sys.argv[1], sys.argv[2:]
    sys.exit(main(["--data", "cifar10", "--data-root", root, "--loss", "tks", *extra]))
