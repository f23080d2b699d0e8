"""CIFAR10-DVS, VGGSNN (TET's), T=10 frames at 48x48, trained with TKS as in the paper
(Zhao, Zeng, Dong, arXiv 2304.06540): AdamW, lr 5e-3 x batch / 1024, weight decay 0.01,
600 epochs with a cosine schedule after a linear warm-up, temperature 3, alpha 0.7
(linear schedule), random flip and roll of the frames.

    python python/cifar10dvs_vggsnn_tks.py /data/CIFAR10-DVS [more tks-train options]

The data root holds the 10 class folders of .aedat files; frames are integrated once
and cached next to it (pass --data-option cache_dir=PATH to put them elsewhere). 90/10
per-class split (--data-option split_seed=None: the first 10% of each class as the
test set, the split of TEBN). Extra options override the defaults below.
"""
import sys

from tks_kernels.train import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    root, extra = sys.argv[1], sys.argv[2:]
    sys.exit(main([
        "--data", "cifar10_dvs", "--data-root", root, "--model", "vggsnn", "-T", "10",
        "--data-option", "size=48",
        "--loss", "tks", "--alpha", "0.7", "--temperature", "3", "--schedule", "linear",
        "--epochs", "600", "--batch-size", "64", "--base-lr", "5e-3", "--weight-decay", "0.01",
        "--warmup-epochs", "5", "--augment",
        *extra,
    ]))
