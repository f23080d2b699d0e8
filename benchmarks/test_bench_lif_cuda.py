"""CUDA LIF kernels (``backend="cuda"``): forward (training and inference), backward
and forward+backward, fp32 and bf16, on the GPU shapes up to 64M elements, beside the
plain-PyTorch reference (fp32, the 256 MiB shapes). Runs only where the benchmarks'
DEVICE is cuda and the extension was built with its CUDA kernels.

Bytes a perfect kernel moves (n = bytes of one [T, *] tensor), as in the Triton file:
training forward reads x and writes spikes and the saved d (3n); inference forward 2n;
backward reads grad_spikes and d and writes grad_x (3n); forward+backward 6n. Where the
backward recomputes (T <= ``recompute_max_steps_cuda``, 32): forward 2n, backward reads
x (2 - 8/T times beyond one chunk of 8 steps) and grad_spikes and writes grad_x
(ops/lif/cuda.py's rule). ``test_lif_cuda_recompute_vs_saved`` times both paths in one run.
Target: ``copy_frac`` >= 0.85 forward and backward on tensors of 256 MiB and more.
"""
from __future__ import annotations

import pytest
import torch

import tks_kernels
from tks_kernels.functional import lif_multistep

from conftest import DEVICE, GPU_LIF_SHAPES, run_case, saved_bytes, update_row

pytestmark = [
    pytest.mark.skipif(DEVICE.type != "cuda", reason="the CUDA LIF benchmarks run on CUDA"),
    pytest.mark.skipif(not tks_kernels.available_backends()["cuda"][0],
                       reason=str(tks_kernels.available_backends()["cuda"][1])),
]

SETTINGS = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False, surrogate="sigmoid")
MODES = ["fwd", "infer", "bwd", "fwd+bwd"]
DTYPES = [torch.float32, torch.bfloat16]


def _nbytes(shape, dtype, mode, recompute=None):
    n = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
    T = shape[0]
    if recompute is None:
        from tks_kernels.ops.lif.cuda import recompute_max_steps_cuda
        recompute = T <= recompute_max_steps_cuda(dtype)
    if recompute:
        reads = 1.0 if T <= 8 else 2.0 - 8.0 / T  # how often backward reads x (chunks of 8 steps)
        return int({"fwd": 2 * n, "bwd": (2 + reads) * n, "fwd+bwd": (4 + reads) * n, "infer": 2 * n}[mode])
    return {"fwd": 3 * n, "bwd": 3 * n, "fwd+bwd": 6 * n, "infer": 2 * n}[mode]


def _case(forward, x, g, mode):
    """The timed callable for ``mode``, given forward(x) -> spikes."""
    if mode == "infer":
        def infer():
            with torch.no_grad():
                forward(x)
        return infer
    if mode == "fwd":
        return lambda: forward(x)
    if mode == "bwd":
        s = forward(x)
        return lambda: torch.autograd.grad(s, x, g, retain_graph=True)
    return lambda: torch.autograd.grad(forward(x), x, g)


def _forward(impl):
    def forward(x):
        return lif_multistep(x, backend=impl, **SETTINGS)[0]
    return forward


def _tensor_mib(shape, dtype):
    return torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size() / 2**20


@pytest.mark.parametrize("shape", GPU_LIF_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["cuda", "torch"])
def test_lif_cuda(benchmark, impl, mode, dtype, shape):
    tensor_mib = _tensor_mib(shape, dtype)
    if impl == "torch" and (dtype != torch.float32 or tensor_mib < 256):
        pytest.skip("the reference runs on the fp32 256 MiB shapes only")
    x = torch.randn(shape, device=DEVICE, dtype=torch.float32).add_(0.5).to(dtype).requires_grad_(mode != "infer")
    g = torch.randn(shape, device=DEVICE, dtype=dtype)
    forward = _forward(impl)
    fn = _case(forward, x, g, mode)
    saved = saved_bytes(lambda: forward(x)) if mode != "infer" else None
    dt = str(dtype)[6:]
    row = run_case(
        benchmark, fn, name=f"lif {mode} {impl} {dt}", bytes_moved=_nbytes(shape, dtype, mode), saved=saved,
        group=f"lif-cuda {mode} {dt} {shape}", impl=impl, mode=mode, dtype=dt, shape=str(shape),
        tensor_MiB=round(tensor_mib),
    )
    if impl == "cuda" and mode in ("fwd", "bwd") and tensor_mib >= 256:
        update_row(benchmark, row, target="ok" if row["copy_frac"] >= 0.85 else "below 0.85 of copy")
    del x, g, fn
    torch.cuda.empty_cache()


@pytest.mark.parametrize("shape", [(8, 32, 262144), (16, 16, 262144), (32, 8, 262144)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("path", ["recompute", "saved"])
def test_lif_cuda_recompute_vs_saved(benchmark, monkeypatch, path, dtype, shape):
    """Forward + backward, the recomputing backward (one, two and four chunks of 8 steps)
    against the saved-distance one in one run (the rule is moved to force a path)."""
    from tks_kernels.ops.lif import cpu as lif_cpu
    monkeypatch.setitem(lif_cpu.RECOMPUTE_MAX_STEPS, "cuda", (lambda dt: 1 << 30) if path == "recompute" else
                        (lambda dt: 0))
    x = torch.randn(shape, device=DEVICE, dtype=torch.float32).add_(0.5).to(dtype).requires_grad_()
    g = torch.randn(shape, device=DEVICE, dtype=dtype)
    forward = _forward("cuda")
    saved = saved_bytes(lambda: forward(x))
    dt = str(dtype)[6:]
    run_case(benchmark, _case(forward, x, g, "fwd+bwd"), name=f"lif fwd+bwd cuda {dt} {path}",
             bytes_moved=_nbytes(shape, dtype, "fwd+bwd", recompute=path == "recompute"), saved=saved,
             group=f"lif-cuda-recompute fwd+bwd {dt} {shape}", impl=path, mode="fwd+bwd", dtype=dt,
             shape=str(shape))
    del x, g
    torch.cuda.empty_cache()
