"""Fused BN + LIF (ops/bn_lif, issue 16) against the separate layers on the CPU.

- a training step (forward, CE on the mean logits, backward, SGD) of ResNet-19 and VGGSNN
  with ``fuse_bn=True`` and ``False``: time, and the bytes saved for backward (distinct
  storages seen by ``saved_tensors_hooks``; the target is >= 20% fewer when fused);
- the BN + LIF pair alone (``SeqToANN(BatchNorm2d)`` + LIF vs the fused op), forward and
  backward. ``bytes`` there is what the fused design moves per element in fp32: forward
  12 (y for the statistics, y again, the spikes), backward 24 (y, dL/ds, dL/dx; then
  dL/dx, y, dL/dy).

- the same training steps interleaved (unfused, fused, fused, unfused, ...: both see the
  same machine load) with the ratio of their medians, and the BN + PLIF pair.

Both settings of a case run in the same process, one after the other; on the shared
machine compare ratios within one run (each row records the load average).
"""
from __future__ import annotations

import copy
import os
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tks_kernels
from tks_kernels import models
from tks_kernels.models.layers import SeqToANN, bn_lif_forward, make_lif

from conftest import DEVICE, RESULTS, ROUNDS, SMOKE, run_case, saved_bytes, update_row, write_row

pytestmark = pytest.mark.skipif(DEVICE.type != "cpu" or not tks_kernels.available_backends()["cpu"][0],
                                reason="the fused BN + LIF benchmark runs on the CPU backend")

B, T = (2, 2) if SMOKE else (8, 4)
MODEL_CASES = {
    "resnet19": dict(in_channels=3, input_size=8 if SMOKE else 32, width=0.125 if SMOKE else 0.25),
    "vggsnn": dict(in_channels=2, input_size=16 if SMOKE else 48, width=0.125 if SMOKE else 0.25),
}
PAIR_SHAPE = (2, 2, 8, 8, 8) if SMOKE else (4, 16, 64, 32, 32)  # [T, B, C, H, W]


def _model(name: str, fuse: bool):
    kw = dict(MODEL_CASES[name])
    size = kw.pop("input_size")
    torch.manual_seed(0)
    model = models.create(name, T=T, input_size=size, fuse_bn=fuse, **kw)
    x = torch.rand(B, kw["in_channels"], size, size)
    y = torch.randint(0, 10, (B,))
    return model, x, y


@pytest.mark.parametrize("fuse", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_train_step(benchmark, name, fuse):
    model, x, y = _model(name, fuse)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        loss = F.cross_entropy(model(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    saved = {}
    for f in (False, True):
        m, xx, _ = _model(name, f)
        saved[f] = saved_bytes(lambda: m(xx))
    row = run_case(benchmark, step, name=f"{name} train fuse_bn={fuse}", bytes_moved=0, saved=saved[fuse],
                   group=f"bn_lif {name} train", impl="fused" if fuse else "unfused",
                   shape=f"B={B} T={T} {MODEL_CASES[name]['input_size']}px width={MODEL_CASES[name]['width']}")
    fewer = 1 - saved[True] / saved[False]
    fields = {"best_ms": round(benchmark.stats.stats.min * 1e3, 3)}
    if fuse:
        fields.update({"saved_fewer": f"{fewer:.1%}", "target >=20% fewer saved": "met" if fewer >= 0.2 else "MISSED"})
    update_row(benchmark, row, **fields)
    if fuse:
        assert fewer > 0, "the fused model saves no fewer bytes"


@pytest.mark.parametrize("impl", ["unfused", "fused"])
def test_pair_fwd_bwd(benchmark, impl):
    T_, B_, C, H, W = PAIR_SHAPE
    torch.manual_seed(0)
    bn = SeqToANN(nn.BatchNorm2d(C))
    neuron = make_lif(models.PAPER_NEURON, "auto")
    y = torch.randn(T_, B_, C, H, W, requires_grad=True)
    gs = torch.randn(T_, B_, C, H, W)

    def run():
        if impl == "fused":
            s = bn_lif_forward(bn, neuron, y, fuse=True)
        else:
            s = neuron(bn(y))
        neuron.reset()
        s.backward(gs)
        y.grad = None
        bn[0].weight.grad = bn[0].bias.grad = None

    def fwd():
        s = bn_lif_forward(bn, neuron, y, fuse=True) if impl == "fused" else neuron(bn(y))
        neuron.reset()
        return s

    saved = saved_bytes(fwd)
    row = run_case(benchmark, run, name=f"bn+lif pair fwd+bwd {impl}", bytes_moved=36 * y.numel(), saved=saved,
                   group="bn_lif pair", impl=impl, shape="x".join(map(str, PAIR_SHAPE)))
    update_row(benchmark, row, threads=torch.get_num_threads(), load=_load())


def _load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_train_step_interleaved(benchmark, name):
    # fused and unfused steps alternate, so both see the same load; the ratio is of medians
    steps = {}
    for fuse in (False, True):
        model, x, y = _model(name, fuse)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model=model, opt=opt, x=x, y=y):
            loss = F.cross_entropy(model(x).mean(0), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[fuse] = step
    times = {False: [], True: []}
    order = [False, True]

    def pair():
        for fuse in order:
            t0 = time.perf_counter()
            steps[fuse]()
            times[fuse].append(time.perf_counter() - t0)
        order.reverse()

    pair()  # warm-up
    times[False].clear()
    times[True].clear()
    benchmark.pedantic(pair, rounds=max(ROUNDS, 3), iterations=1, warmup_rounds=0)
    med = {f: statistics.median(v) * 1e3 for f, v in times.items()}
    row = {"case": f"{name} train interleaved", "device": str(DEVICE), "median_ms": round(med[True], 3),
           "group": f"bn_lif {name} interleaved", "impl": "fused (median_ms) vs unfused",
           "shape": f"B={B} T={T} {MODEL_CASES[name]['input_size']}px width={MODEL_CASES[name]['width']}",
           "unfused_ms": round(med[False], 1), "fused_ms": round(med[True], 1),
           "fused_speedup": f"{med[False] / med[True]:.2f}x", "threads": torch.get_num_threads(), "load": _load()}
    benchmark.extra_info.update(row)
    RESULTS.append(row)
    write_row(row)


@pytest.mark.parametrize("impl", ["unfused", "fused"])
def test_plif_pair_fwd_bwd(benchmark, impl):
    T_, B_, C, H, W = PAIR_SHAPE
    torch.manual_seed(0)
    bn = SeqToANN(nn.BatchNorm2d(C))
    neuron = make_lif(dict(models.PAPER_NEURON, learnable_tau=True), "auto")
    y = torch.randn(T_, B_, C, H, W, requires_grad=True)
    gs = torch.randn(T_, B_, C, H, W)

    def run():
        s = bn_lif_forward(bn, neuron, y, fuse=impl == "fused")
        neuron.reset()
        s.backward(gs)
        y.grad = neuron.w.grad = None
        bn[0].weight.grad = bn[0].bias.grad = None

    row = run_case(benchmark, run, name=f"bn+plif pair fwd+bwd {impl}", bytes_moved=36 * y.numel(),
                   group="bn_plif pair", impl=impl, shape="x".join(map(str, PAIR_SHAPE)))
    update_row(benchmark, row, threads=torch.get_num_threads(), load=_load())
