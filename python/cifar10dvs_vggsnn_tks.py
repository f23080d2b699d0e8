"""CIFAR10-DVS, VGGSNN (TET's), T=10 frames at 48x48, trained with TKS as the authors' code
does (Zhao, Zeng, Dong, arXiv 2304.06540; train_main.py on BrainCog): frames in 10 equal
time bins (tonic's), resized bilinearly with align_corners=True; RandomCrop(48, 4), flip
and RandomRotation(15); per class the first 90% of the files train and the last 10% test;
AdamW with lr 5e-3 x batch / 1024 and weight decay 0.01 on all but 1-D parameters and
biases, 600 epochs of a cosine stepped per epoch (5 warm-up epochs from 1e-6, floor
1e-5), temperature 3, alpha 0.7 (linear schedule).

    python python/cifar10dvs_vggsnn_tks.py /data/CIFAR10-DVS [more tks-train options]

The data root holds the 10 class folders of .aedat files; frames are integrated once
and cached next to it (pass --data-option cache_dir=PATH to put them elsewhere). These
are `tks-train --data cifar10_dvs`'s defaults; extra options override them.
"""
import sys

from tks_kernels.train import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    root, extra = sys.argv[1], sys.argv[2:]
    sys.exit(main(["--data", "cifar10_dvs", "--data-root", root, "--loss", "tks", *extra]))
