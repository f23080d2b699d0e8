"""SpikingJelly 2.0's model-zoo modules, loaded for the tests where CI installs
SpikingJelly with ``--no-deps``: its ``model/__init__.py`` imports every model (some need
h5py), and the zoo files import torchvision only for ``load_state_dict_from_url``
(pretrained weights, unused here). Missing ones are stood in for while the zoo files
load, and removed again afterwards, so no other test sees them."""
from __future__ import annotations

import importlib
import os
import sys
import types
from types import ModuleType

import torch

PACKAGE = "spikingjelly.activation_based.model"


def _stand_ins() -> dict:
    mods = {}
    try:
        importlib.import_module("torchvision")
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.__path__ = []
        utils = types.ModuleType("torchvision._internally_replaced_utils")
        utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        mods.update({"torchvision": tv, "torchvision._internally_replaced_utils": utils})
    try:
        importlib.import_module("h5py")
    except ImportError:
        mods["h5py"] = types.ModuleType("h5py")
    return mods


def load(name: str) -> ModuleType:
    """``spikingjelly.activation_based.model.<name>`` (e.g. "spiking_resnet")."""
    full = f"{PACKAGE}.{name}"
    if full in sys.modules:
        return sys.modules[full]
    try:
        return importlib.import_module(full)
    except ImportError:
        pass
    import spikingjelly.activation_based as ab

    stand_ins = _stand_ins()
    bare = PACKAGE not in sys.modules
    if bare:  # the package without its __init__ (which imports every model)
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [os.path.join(os.path.dirname(ab.__file__), "model")]
        pkg.__package__ = PACKAGE
        stand_ins[PACKAGE] = pkg
    sys.modules.update(stand_ins)
    try:
        return importlib.import_module(full)
    finally:
        for key in stand_ins:
            sys.modules.pop(key, None)


def load_monitor() -> ModuleType:
    """``spikingjelly.activation_based.monitor``, which imports tensorboard's SummaryWriter
    at the top (for its GPU monitor only): a stand-in while it loads when tensorboard is absent."""
    full = "spikingjelly.activation_based.monitor"
    try:
        return importlib.import_module(full)
    except ImportError:
        pass
    tb = types.ModuleType("torch.utils.tensorboard")

    class SummaryWriter:  # never used by the monitors the tests run
        def __init__(self, *args, **kwargs):
            raise RuntimeError("tensorboard is not installed")

    tb.SummaryWriter = SummaryWriter
    sys.modules["torch.utils.tensorboard"] = tb
    try:
        return importlib.import_module(full)
    finally:
        sys.modules.pop("torch.utils.tensorboard", None)
