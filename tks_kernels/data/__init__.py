"""Data sets for SNN training: create(name, root, ...) -> torch Dataset, info(name).

Static images ('digits', 'cifar10', 'cifar100', 'imagenet') give (x [C, H, W], y);
event data ('cifar10_dvs', 'ncaltech101', 'events_npz') give (x [T, 2, H, W], y),
integrated by event count and cached on disk. Imports nothing else from tks_kernels.
"""

from .events import (Events, EventFrames, integrate_by_count, read_aedat, read_atis_bin,
                     read_events_npz, resize_frames)
from .registry import DATASETS, DatasetInfo, create, info, options
from .static import ImageTensorDataset, read_cifar_batch
from .splits import stratified_split

__all__ = [
    "DATASETS", "DatasetInfo", "create", "info", "options",
    "Events", "EventFrames", "integrate_by_count", "read_aedat", "read_atis_bin",
    "read_events_npz", "resize_frames", "ImageTensorDataset", "read_cifar_batch",
    "stratified_split",
]
