"""Triton LIF on CUDA: forward (training and inference), backward and forward+backward,
fp32 and bf16, T in {4, 8, 32} up to 64M elements, beside SpikingJelly 2.0's Triton LIF.

Issue targets on H100/H200: at least 85% of a copy's bandwidth (``copy_frac``) forward
and backward on tensors of 256 MiB and more (the 64M-element fp32 shapes), and faster
than SpikingJelly on every shape. Runs only where the benchmarks' DEVICE is cuda.

Bytes a perfect kernel moves (n = bytes of one [T, *] tensor): training forward reads x
and writes spikes and the saved d (3n); inference forward 2n; backward reads grad_spikes
and d and writes grad_x (3n); forward+backward 6n.
"""
from __future__ import annotations

import os

# SpikingJelly 2.0 picks its CUDA LIF implementation when first imported: ask for the
# Triton one (its default order tries its native CUDA build first).
os.environ.setdefault("SJ_LIF_CUDA_IMPLEMENTATION", "triton")

import pytest  # noqa: E402
import torch  # noqa: E402

import tks_kernels  # noqa: E402
from tks_kernels.functional import lif_multistep  # noqa: E402
from tks_kernels.ops.lif import triton as lif_triton  # noqa: E402

from conftest import (  # noqa: E402
    DEVICE, GPU_LIF_SHAPES, SMOKE, TRITON_ON_CPU, has_module, run_case, saved_bytes, update_row,
)

pytestmark = [
    pytest.mark.skipif(DEVICE.type != "cuda" and not TRITON_ON_CPU,
                       reason="the Triton LIF benchmarks run on CUDA (or, smoke-tested, under the interpreter)"),
    pytest.mark.skipif(not tks_kernels.available_backends()["triton"][0],
                       reason=str(tks_kernels.available_backends()["triton"][1])),
]

SETTINGS = dict(tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False)
MODES = ["fwd", "infer", "bwd", "fwd+bwd"]
DTYPES = [torch.float32, torch.bfloat16]


def _nbytes(shape, dtype, mode):
    n = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
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


def _triton_forward(x):
    return lif_multistep(x, backend="triton", surrogate="sigmoid", **SETTINGS)[0]


def _spikingjelly_forward(dtype):
    """SpikingJelly 2.0's multi-step LIFNode with the same neuron; returns (forward, path).

    fp32 state runs its Triton kernel directly; with a bf16 input its default state is
    bf16, which it hands to its PyTorch reference, so bf16 uses its explicit neuron
    precision (bf16 storage, fp32 arithmetic), its Triton mixed-precision path."""
    from spikingjelly.activation_based import neuron, surrogate

    lif = neuron.LIFNode(surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m", **SETTINGS).to(DEVICE)
    path = "triton"
    if dtype != torch.float32:
        from spikingjelly.activation_based.precision import PrecisionConfig, prepare_model_for_precision

        lif = prepare_model_for_precision(lif, DEVICE, PrecisionConfig(neuron_storage="bf16")).model
        path = "triton (neuron_storage=bf16)"

    def forward(x):
        lif.reset()
        return lif(x)

    return forward, path


def _setup(impl, shape, dtype, mode):
    x = torch.randn(shape, device=DEVICE, dtype=torch.float32).add_(0.5).to(dtype).requires_grad_(mode != "infer")
    g = torch.randn(shape, device=DEVICE, dtype=dtype)
    info = {}
    if impl == "triton":
        forward = _triton_forward
    else:
        if not has_module("spikingjelly"):
            pytest.skip("spikingjelly is not installed")
        try:
            forward, info["path"] = _spikingjelly_forward(dtype)
            forward(x.detach()[:, :1].clone().requires_grad_(mode != "infer"))  # fails early if unsupported
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is skipped, with why
            pytest.skip(f"SpikingJelly's LIF does not run here: {type(exc).__name__}: {exc}")
    return x, g, forward, info


@pytest.mark.parametrize("shape", GPU_LIF_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["triton", "spikingjelly"])
def test_lif_triton(benchmark, impl, mode, dtype, shape):
    x, g, forward, info = _setup(impl, shape, dtype, mode)
    fn = _case(forward, x, g, mode)
    saved = saved_bytes(lambda: forward(x)) if mode != "infer" else None
    tensor_mib = torch.Size(shape).numel() * x.element_size() / 2**20
    row = run_case(
        benchmark, fn, name=f"lif {mode} {impl} {str(dtype)[6:]}", bytes_moved=_nbytes(shape, dtype, mode),
        saved=saved, group=f"lif-triton {mode} {str(dtype)[6:]} {shape}", impl=impl, shape=str(shape),
        tensor_MiB=round(tensor_mib), **info,
    )
    if impl == "triton" and mode in ("fwd", "bwd") and tensor_mib >= 256:
        update_row(benchmark, row, target="ok" if row["copy_frac"] >= 0.85 else "below 0.85 of copy")
    del x, g, fn
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


# (BLOCK, num_warps) around the chosen ones (fp32: 1024/4, bf16: 2048/4: two 16-byte
# accesses per thread), on a shape with few programs per SM (N = 2M, 256 MiB in fp32).
CONFIGS = [(512, 4), (1024, 4), (2048, 4), (2048, 8), (4096, 8)]
if SMOKE:
    CONFIGS = CONFIGS[:2]


@pytest.mark.parametrize("shape", [(2, 4, 512)] if SMOKE else [(32, 16, 131072)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", ["fwd", "bwd"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"block{c[0]}-warps{c[1]}")
def test_lif_triton_launch_configs(benchmark, monkeypatch, config, mode, dtype, shape):
    """Block size and warps sweep, to check (or retune) ``launch_config`` on the GPU
    (ops/_triton_launch.py; the name the LIF launch code calls is patched, raising if it
    moved)."""
    monkeypatch.setattr(lif_triton, "launch_config", lambda n, dt: config)
    x, g, forward, _ = _setup("triton", shape, dtype, mode)
    run_case(benchmark, _case(forward, x, g, mode), name=f"lif {mode} triton {str(dtype)[6:]} {config}",
             bytes_moved=_nbytes(shape, dtype, mode), group=f"lif-triton-configs {mode} {str(dtype)[6:]} {shape}",
             impl=f"block{config[0]}/warps{config[1]}", shape=str(shape),
             default=config == (1024 if dtype == torch.float32 else 2048, 4))
    del x, g
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
