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


@pytest.hookimpl(trylast=True)  # after -m / -k deselection, so shards split what runs
def pytest_collection_modifyitems(config, items):
    # TKS_TEST_SHARD=i/n keeps the i-th of n contiguous slices of the selected tests:
    # benchmarks/gpu_check.sh runs a file as n processes at once (neighbouring cases
    # share Triton variants, so slices compile few of the same ones twice).
    shard = os.environ.get("TKS_TEST_SHARD")
    if shard:
        i, n = (int(v) for v in shard.split("/"))
        lo, hi = len(items) * i // n, len(items) * (i + 1) // n
        config.hook.pytest_deselected(items=items[:lo] + items[hi:])
        items[:] = items[lo:hi]
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
