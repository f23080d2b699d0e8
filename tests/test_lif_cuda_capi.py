"""The CUDA LIF library's recomputing-backward entry points, checked without a GPU: the
limit it reports and the binding reads (32 steps: four chunks of 8; fp64 16), and the
C API's refusals before any CUDA call (T beyond the limit, the external surrogate, bad
dtypes). Skipped when the CUDA library was not built; the kernels themselves are
tests/test_lif_cuda.py's (GPU) and tests/test_codegen_cuda.py's (compiled here).
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from tks_kernels import _native

# dummy host addresses: the C API checks them for null only and fails before any CUDA call
_BUF = ctypes.create_string_buffer(64)
_P = ctypes.addressof(_BUF)
# csrc/cuda/lif_cuda_kernels.cuh: kRecomputeSteps (8; fp64 4) x kRecomputeChunks (4)
MAX_STEPS = {torch.float32: 32, torch.float64: 16, torch.float16: 32, torch.bfloat16: 32}


@pytest.fixture(scope="module")
def lib():
    if _native.cuda_lib is None:
        pytest.skip(f"no CUDA library: {_native.CUDA_ERROR}")
    from tks_kernels.ops.lif import cuda as lif_cuda
    assert lif_cuda.HAS_RECOMPUTE, "the CUDA library lacks the recomputing backward"
    return _native.cuda_lib


def _error(lib, rc) -> str:
    assert rc == _native.ERR_VALUE, rc
    return lib.tks_last_error().decode()


def test_recompute_limit_is_four_chunks(lib):
    from tks_kernels.ops.lif import cuda as lif_cuda
    from tks_kernels.ops.lif.cpu import RECOMPUTE_MAX_STEPS
    for dtype, code in _native.DTYPE_CODES.items():
        assert lib.tks_lif_recompute_max_steps_cuda(code) == MAX_STEPS[dtype], dtype
        assert lif_cuda.recompute_max_steps_cuda(dtype) == MAX_STEPS[dtype], dtype
        assert RECOMPUTE_MAX_STEPS["cuda"](dtype) == MAX_STEPS[dtype], dtype
    assert lib.tks_lif_recompute_max_steps_cuda(4) == -1
    assert lib.tks_lif_recompute_max_steps_cuda(-1) == -1
    assert lif_cuda.recompute_max_steps_cuda(torch.int32) == 0


def _lif_x_args(**bad):
    a = dict(dtype=0, grad_spikes=_P, grad_v_last=None, grad_v_seq=None, x=_P, v_init=None, grad_x=_P,
             grad_v_init=_P, T=4, N=8, tau=2.0, v_threshold=1.0, v_reset=0.0, flags=_native.DECAY_INPUT,
             surrogate=0, alpha=4.0, stream=None)
    a.update(bad)
    return list(a.values())


def _plif_x_args(**bad):
    a = dict(dtype=0, grad_spikes=_P, grad_v_last=None, grad_v_seq=None, x=_P, v_init=None, k=_P, grad_x=_P,
             grad_v_init=_P, grad_k=_P, workspace=_P, T=4, N=8, v_threshold=1.0, v_reset=0.0,
             flags=_native.DECAY_INPUT, surrogate=0, alpha=4.0, stream=None)
    a.update(bad)
    return list(a.values())


@pytest.mark.parametrize("dtype", list(_native.DTYPE_CODES), ids=str)
@pytest.mark.parametrize("beyond", [1, 70])
def test_c_api_refuses_steps_beyond_the_limit(lib, dtype, beyond):
    T = MAX_STEPS[dtype] + beyond
    want = f"the recomputing backward takes T <= {MAX_STEPS[dtype]} steps for this dtype"
    code = _native.DTYPE_CODES[dtype]
    msg = _error(lib, lib.tks_lif_backward_x_cuda(*_lif_x_args(dtype=code, T=T)))
    assert want in msg and f"got {T}" in msg, msg
    msg = _error(lib, lib.tks_plif_backward_x_cuda(*_plif_x_args(dtype=code, T=T)))
    assert want in msg and f"got {T}" in msg, msg


@pytest.mark.parametrize("bad, match", [
    (dict(surrogate=_native.SURROGATE_EXTERNAL if hasattr(_native, "SURROGATE_EXTERNAL") else 100),
     "surrogate must be a built-in id"),
    (dict(dtype=7), "dtype"),
    (dict(x=None), "x must not be NULL"),
    (dict(T=0), "T (the number of steps) must be >= 1"),
])
def test_c_api_backward_x_checks_its_arguments(lib, bad, match):
    assert match in _error(lib, lib.tks_lif_backward_x_cuda(*_lif_x_args(**bad)))
    assert match in _error(lib, lib.tks_plif_backward_x_cuda(*_plif_x_args(**bad)))
