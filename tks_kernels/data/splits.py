"""Fixed-seed, per-class train/test splits that do not depend on the machine or library versions."""

from __future__ import annotations

import re
from typing import Optional

import numpy as np


def stratified_split(labels: np.ndarray, test_fraction: float,
                     seed: Optional[int] = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices per class into (train, test), each sorted ascending.

    labels: int [N]. Each class gives round(n_c * test_fraction) samples to the test set.
    seed=None takes the first samples of each class (in the given order) as the test set,
    which on CIFAR10-DVS files in natural order is the usual TEBN split (0-99 test).
    Otherwise the classes are shuffled with NumPy's legacy RandomState, whose stream is
    frozen, so the split is identical on every machine and NumPy version.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction!r}")
    labels = np.asarray(labels)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if seed is not None:
            # One generator per class, seeded by (seed, class): a change in one class
            # leaves the split of the others as it was.
            idx = idx[np.random.RandomState([int(seed), int(c)]).permutation(len(idx))]
        n_test = int(np.floor(len(idx) * test_fraction + 0.5))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(train or [empty])).astype(np.int64),
            np.sort(np.concatenate(test or [empty])).astype(np.int64))


def ordered_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices per class in the given order: the first
    ``round((1 - test_fraction) * n_c)`` of class c train, the rest test (BrainCog's
    CIFAR10-DVS and N-Caltech101 splits, with Python's round). Each sorted ascending."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction!r}")
    labels = np.asarray(labels)
    portion = 1.0 - test_fraction
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_train = round(len(idx) * portion)
        train.append(idx[:n_train])
        test.append(idx[n_train:])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(train or [empty])).astype(np.int64),
            np.sort(np.concatenate(test or [empty])).astype(np.int64))


def natural_key(name: str) -> tuple:
    """Sort key that orders 'x_2' before 'x_10' (file names of event data sets)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
