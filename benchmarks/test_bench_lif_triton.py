"""Triton LIF on CUDA: forward (training and inference), backward and forward+backward,
fp32 and bf16, T in {4, 8, 32} up to 64M elements, beside SpikingJelly 2.0's Triton LIF.

Issue targets on H100/H200: at least 85% of a copy's bandwidth (``copy_frac``) forward
and backward on tensors of 256 MiB and more (the 64M-element fp32 shapes), and faster
than SpikingJelly on every shape. Runs only where the benchmarks' DEVICE is cuda.

Bytes a perfect kernel moves (n = bytes of one [T, *] tensor), by the path training takes
(ops/lif/triton.py): recompute (T <= RECOMPUTE_MAX_STEPS, the default) forward reads x
and writes spikes (2n), backward reads grad_spikes and x (R times: 1 for one chunk, 1.5
for two) and writes grad_x ((2 + R) n); saved distance: forward 3n (x, spikes, d),
backward 3n (grad_spikes, d, grad_x); inference forward 2n.
``test_lif_triton_recompute_vs_saved`` times both paths in one run.
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


def _nbytes(shape, dtype, mode, recompute=None):
    n = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
    T = shape[0]
    if recompute is None:
        recompute = T <= lif_triton.RECOMPUTE_MAX_STEPS
    if recompute:
        chunks = -(-T // lif_triton.recompute_chunk(T))
        reads = (chunks + 1) / 2  # how often backward reads x, on average
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


# (BLOCK, num_warps) around the chosen ones (fp32: 1024/4, two 16-byte accesses per thread;
# bf16: 1024/4, one), on a shape with few programs per SM (N = 2M, 256 MiB in fp32).
CONFIGS = [(512, 4), (1024, 4), (2048, 4), (2048, 8), (4096, 8)]
# the recomputing backward's (launch_config_x: 512/4, 4 elements per thread)
X_CONFIGS = [(256, 2), (512, 4), (1024, 8), (1024, 4)]
if SMOKE:
    CONFIGS, X_CONFIGS = CONFIGS[:2], X_CONFIGS[:2]


@pytest.mark.parametrize("shape", [(2, 4, 512), (12, 4, 512)] if SMOKE else [(4, 64, 65536), (8, 32, 262144)],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", ["bwd", "fwd+bwd"])
@pytest.mark.parametrize("path", ["recompute", "saved"])
def test_lif_triton_recompute_vs_saved(benchmark, monkeypatch, path, mode, dtype, shape):
    """The recomputing backward against the saved-distance one, in one run (the rule,
    T <= RECOMPUTE_MAX_STEPS, is moved to force a path)."""
    monkeypatch.setattr(lif_triton, "RECOMPUTE_MAX_STEPS", 1 << 30 if path == "recompute" else 0)
    x, g, forward, _ = _setup("triton", shape, dtype, mode)
    saved = saved_bytes(lambda: forward(x))
    run_case(benchmark, _case(forward, x, g, mode), name=f"lif {mode} triton {str(dtype)[6:]} {path}",
             bytes_moved=_nbytes(shape, dtype, mode, recompute=path == "recompute"), saved=saved,
             group=f"lif-triton-recompute {mode} {str(dtype)[6:]} {shape}", impl=path, shape=str(shape))
    del x, g
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


@pytest.mark.parametrize("shape", [(2, 4, 512)] if SMOKE else [(8, 32, 262144)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("config", X_CONFIGS, ids=lambda c: f"block{c[0]}-warps{c[1]}")
def test_lif_triton_backward_x_configs(benchmark, monkeypatch, config, dtype, shape):
    """Block size and warps of the recomputing backward (``launch_config_x``)."""
    monkeypatch.setattr(lif_triton, "launch_config_x", lambda n, dt, chunk, ieee_div=False: config)
    x, g, forward, _ = _setup("triton", shape, dtype, "bwd")
    run_case(benchmark, _case(forward, x, g, "bwd"), name=f"lif bwd triton {str(dtype)[6:]} x {config}",
             bytes_moved=_nbytes(shape, dtype, "bwd"), group=f"lif-triton-x-configs {str(dtype)[6:]} {shape}",
             impl=f"block{config[0]}/warps{config[1]}", shape=str(shape), default=config == (512, 4))
    del x, g
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()


@pytest.mark.parametrize("shape", [(2, 4, 512)] if SMOKE else [(32, 16, 131072)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", ["fwd", "bwd"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"block{c[0]}-warps{c[1]}")
def test_lif_triton_launch_configs(benchmark, monkeypatch, config, mode, dtype, shape):
    """Block size and warps sweep, to check (or retune) ``launch_config`` on the GPU
    (ops/_triton_launch.py; the name the LIF launch code calls is patched, raising if it
    moved), for the forward and the saved-distance backward (the recompute rule is
    moved so that backward is the one timed)."""
    monkeypatch.setattr(lif_triton, "launch_config", lambda n, dt: config)
    monkeypatch.setattr(lif_triton, "RECOMPUTE_MAX_STEPS", 0)
    x, g, forward, _ = _setup("triton", shape, dtype, mode)
    run_case(benchmark, _case(forward, x, g, mode), name=f"lif {mode} triton {str(dtype)[6:]} {config}",
             bytes_moved=_nbytes(shape, dtype, mode), group=f"lif-triton-configs {mode} {str(dtype)[6:]} {shape}",
             impl=f"block{config[0]}/warps{config[1]}", shape=str(shape),
             default=config == (1024, 4))
    del x, g
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
