"""Test configuration shared by every test file.

Without a GPU, Triton kernels run under the interpreter: TRITON_INTERPRET=1 must be
set before any kernel is defined, so it is set here, before tks_kernels is imported.
Tests marked ``gpu`` need a CUDA device and are skipped without one.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
