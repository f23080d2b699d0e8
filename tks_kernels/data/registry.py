"""The one entry point the training command uses: create(name, root, ...) and info(name)."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch.utils.data import Dataset

from .. import _numbers
from . import events, static


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set before reading it.

    input_shape: one sample without T: (C, H, W) for static images, (2, H, W) for event
    frames at the default size (size= changes H, W). num_classes is None where it is the
    number of class folders found (events_npz). default_T: the usual number of time
    steps (static images are repeated over T by the model, not by the data set).
    """
    name: str
    num_classes: Optional[int]
    input_shape: tuple[int, ...]
    is_event: bool
    default_T: int


_INFO = {
    "digits": DatasetInfo("digits", 10, (1, 8, 8), False, 4),
    "digits_spikes": DatasetInfo("digits_spikes", 10, (1, 8, 8), True, 8),
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), False, 4),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), False, 4),
    "imagenet": DatasetInfo("imagenet", 1000, (3, 224, 224), False, 4),
    "cifar10_dvs": DatasetInfo("cifar10_dvs", 10, (2, 48, 48), True, 10),
    "ncaltech101": DatasetInfo("ncaltech101", 101, (2, 48, 48), True, 10),
    "events_npz": DatasetInfo("events_npz", None, (2, 48, 48), True, 10),
}
DATASETS: tuple[str, ...] = tuple(_INFO)


def _digits(root, train, T, augment, **kw):
    return static.digits(train, augment=augment, **kw)


def _digits_spikes(root, train, T, augment, **kw):
    return static.digits_spikes(train, T=T, augment=augment, **kw)


def _cifar10(root, train, T, augment, **kw):
    return static.cifar("cifar10", root, train, augment=augment, **kw)


def _cifar100(root, train, T, augment, **kw):
    return static.cifar("cifar100", root, train, augment=augment, **kw)


def _imagenet(root, train, T, augment, **kw):
    return static.imagenet(root, train, augment=augment, **kw)


def _event(builder: Callable) -> Callable:
    def build(root, train, T, augment, **kw):
        return builder(root, train, T=T, augment=augment, **kw)
    return build


_BUILDERS: dict[str, Callable] = {
    "digits": _digits, "digits_spikes": _digits_spikes, "cifar10": _cifar10,
    "cifar100": _cifar100, "imagenet": _imagenet,
    "cifar10_dvs": _event(events.cifar10_dvs), "ncaltech101": _event(events.ncaltech101),
    "events_npz": _event(events.events_npz),
}
# The functions whose keyword-only arguments are a data set's options.
_OPTIONS_OF = {"digits": static.digits, "digits_spikes": static.digits_spikes, "cifar10": static.cifar,
               "cifar100": static.cifar,
               "imagenet": static.imagenet, "cifar10_dvs": events.cifar10_dvs,
               "ncaltech101": events.ncaltech101, "events_npz": events.events_npz}


def _check_name(name: str) -> None:
    if name not in _INFO:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")


def info(name: str) -> DatasetInfo:
    """Number of classes, input shape of one sample, whether it is event data, default T."""
    _check_name(name)
    return _INFO[name]


def options(name: str) -> tuple[str, ...]:
    """The extra keyword arguments create(name, ...) accepts for this data set."""
    _check_name(name)
    params = inspect.signature(_OPTIONS_OF[name]).parameters.values()
    fixed = {"T", "augment"}
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in fixed)


def create(name: str, root: Optional[os.PathLike | str] = None, *, train: bool = True,
           T: Optional[int] = None, augment: bool = False, **kwargs: Any) -> Dataset:
    """Build the train (train=True) or test split of a data set.

    Static data sets give (x float32 [C, H, W], y int64 []), event data sets
    (x float32 [T, 2, H, W], y int64 []). T: frames per event sample (default
    info(name).default_T); ignored by static data sets, but checked. root: the data
    folder (not needed for 'digits'). kwargs: options(name), e.g. size=, cache_dir=,
    test_fraction=, split_seed= for event data, sensor_size=(H, W) for 'events_npz'.
    """
    _check_name(name)
    if T is not None and (not _numbers.is_integer(T) or T <= 0):  # NumPy integers too
        raise ValueError(f"T must be a positive integer number of time steps, got T={T!r}")
    T = None if T is None else int(T)
    allowed = options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"create({name!r}) got unknown options {', '.join(unknown)}; "
                        f"it takes: {', '.join(allowed) or 'none'}")
    if root is None and name not in ("digits", "digits_spikes"):
        raise ValueError(f"create({name!r}) needs root=, the folder that holds the data "
                         f"(only 'digits' ships with scikit-learn)")
    info_ = _INFO[name]
    if T is None:
        T = info_.default_T
    return _BUILDERS[name](root, train, T, augment, **kwargs)
