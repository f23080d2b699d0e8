"""The bounded cache of the CPU ops' output buffers (tks_kernels/ops/_cpu_cache.py): reuse,
every way a buffer stays referenced (views, NumPy, DLPack, autograd, storages), the limit,
disabling, two threads, fork, autograd taking a leaf's gradient as it is, every op on
reused buffers filled with NaN, and a training loop with the cache on and off.

The fixture lowers the size threshold to 1 KiB, so the tensors stay small."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tks_kernels
from tks_kernels import functional, models
from tks_kernels.ops import _cpu_cache as C
from tks_kernels.ops import bn_lif as B
from tks_kernels.ops.lif import cpu as lif_cpu
from tks_kernels.ops.lif import make_config
from tks_kernels.ops.plif import make_config as plif_make_config
from tks_kernels.ops.plif import plif_multistep

pytestmark = [
    pytest.mark.skipif(lif_cpu._native.cpu_lib is None, reason="the native CPU library did not load"),
    pytest.mark.skipif(C._use_count is None, reason="this torch has no torch._C._storage_Use_Count"),
]

SMALL = 1024  # the fixture's MIN_BYTES


@pytest.fixture
def cache(monkeypatch):
    monkeypatch.setattr(C, "MIN_BYTES", SMALL)
    previous = tks_kernels.set_cpu_cache_limit(64 << 20)
    C._CACHE.reset()
    yield C
    C._CACHE.reset()
    tks_kernels.set_cpu_cache_limit(previous)


def cached_ptrs():
    return {s.data_ptr() for entries in C._CACHE._by_size.values() for s in entries}


def lif(x, v_init=None, **kw):
    return functional.lif_multistep(x, v_init, backend="cpu", **kw)


def test_reuses_a_released_output(cache):
    x = torch.randn(4, 1024)  # 16 KiB
    s = lif(x)[0]
    p = s.data_ptr()
    assert p in cached_ptrs()
    want = s.clone()
    del s
    s = lif(x)[0]
    assert s.data_ptr() == p and torch.equal(s, want)
    other = lif(x)[0]  # s is alive: another buffer
    assert other.data_ptr() != p and torch.equal(other, want)
    info = tks_kernels.cpu_cache_info()
    assert info["hits"] >= 1 and info["held_bytes"] <= info["limit_bytes"]
    # spikes and v_last of the first call, then one more spikes buffer (v_last was dropped)
    assert info["allocations"] == 3 and info["buffers"] == 3 and info["hits"] == 3
    q = other.data_ptr()
    del s, other
    assert lif(x)[0].data_ptr() == q  # of two idle buffers, the one handed out last


def test_small_and_non_dense_outputs_bypass(cache):
    assert C.empty_like(torch.empty(8)).data_ptr() not in cached_ptrs()  # under MIN_BYTES
    t = torch.empty(64, 64)[:, ::2]  # not dense: torch.empty_like's strides, not cached
    out = C.empty_like(t)
    assert out.stride() == torch.empty_like(t).stride() and out.data_ptr() not in cached_ptrs()
    cl = torch.empty(2, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    out = C.empty_like(cl)  # dense, permuted: cached with x's strides
    assert out.stride() == cl.stride() and out.data_ptr() in cached_ptrs()


def _holders():
    def autograd_saved(s):
        w = torch.ones(s.shape[-1], requires_grad=True)
        return (s * w).sum()  # mul saves s for w's gradient

    def typed_storage(s):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return s.storage()

    return {
        "view": lambda s: s[1:],
        "reshaped": lambda s: s.view(-1),
        "numpy": lambda s: s.numpy(),
        "dlpack_capsule": lambda s: torch.utils.dlpack.to_dlpack(s),
        "numpy_from_dlpack": lambda s: np.from_dlpack(s),
        "untyped_storage": lambda s: s.untyped_storage(),
        "typed_storage": typed_storage,
        "tensor_on_storage": lambda s: torch.empty(0).set_(s.untyped_storage(), 0, s.shape, s.stride()),
        "autograd_saved": autograd_saved,
        "list_of_steps": lambda s: list(s.unbind(0)),
    }


@pytest.mark.parametrize("holder", list(_holders()))
def test_referenced_buffer_is_not_reused(cache, holder):
    x, x2 = torch.randn(4, 1024), torch.randn(4, 1024) + 0.5
    s = lif(x)[0]
    p, want = s.data_ptr(), s.clone()
    h = _holders()[holder](s)
    del s
    s2 = lif(x2)[0]
    assert s2.data_ptr() != p
    # what the holder sees is intact
    if holder == "dlpack_capsule":
        h = torch.utils.dlpack.from_dlpack(h)
    if holder in ("untyped_storage", "typed_storage"):
        seen = torch.empty(0).set_(h if holder == "untyped_storage" else h._untyped_storage, 0, want.shape)
        assert torch.equal(seen, want)
        del seen
    elif holder == "autograd_saved":
        h.backward()  # frees the graph and its saved s
    elif holder == "list_of_steps":
        assert torch.equal(torch.stack(h), want)
    elif holder == "view":
        assert torch.equal(h, want[1:])
    else:
        assert torch.equal(torch.as_tensor(h).reshape(want.shape), want)
    del h
    s3 = lif(x)[0]  # (s2 alive)
    assert s3.data_ptr() == p  # free again once the holder is gone


def test_shared_memory_buffer_is_not_reused(cache):
    # torch.multiprocessing moves a tensor it sends to shared memory; the receiver may
    # still map it after every reference here is gone.
    x = torch.randn(4, 1024)
    s = lif(x)[0]
    s.share_memory_()  # the data moves to a new shared block; glibc may hand the old one out again
    shared = s.data_ptr()
    del s
    held = tks_kernels.cpu_cache_info()["held_bytes"]
    s2 = lif(x)[0]
    assert s2.data_ptr() != shared
    assert shared not in cached_ptrs()
    assert tks_kernels.cpu_cache_info()["held_bytes"] == held  # the shared one out, a new one in


def test_limit_bounds_what_is_held(cache):
    step = 16 << 10  # spikes of [4, 1024] fp32 (v_last: 4 KiB)
    limit = 3 * step
    tks_kernels.set_cpu_cache_limit(limit)
    x = torch.randn(4, 1024)
    want = lif(x)[0].clone()
    outs = [lif(x) for _ in range(8)]  # all alive
    info = tks_kernels.cpu_cache_info()
    assert info["held_bytes"] <= limit and info["bypasses"] > 0 and info["idle_bytes"] == 0
    assert all(torch.equal(o[0], want) for o in outs)
    assert len({o[0].data_ptr() for o in outs}) == len(outs)
    del outs
    info = tks_kernels.cpu_cache_info()
    assert info["idle_bytes"] == info["held_bytes"] > 0
    # A new size: idle buffers go, least recently used first, to make room.
    y = torch.randn(4, 2048)  # 32 KiB spikes
    s = lif(y)[0]
    assert s.data_ptr() in cached_ptrs() and tks_kernels.cpu_cache_info()["held_bytes"] <= limit
    assert tks_kernels.set_cpu_cache_limit(0) == limit
    assert tks_kernels.cpu_cache_info()["held_bytes"] == 32 << 10  # only s's buffer, in use
    del s
    tks_kernels.empty_cpu_cache()
    assert tks_kernels.cpu_cache_info()["held_bytes"] == 0
    assert lif(y)[0].data_ptr() not in cached_ptrs()  # off


def test_empty_cpu_cache_keeps_buffers_in_use(cache):
    x = torch.randn(4, 1024)
    s, v = lif(x)
    lif(x)
    tks_kernels.empty_cpu_cache()
    assert cached_ptrs() == {s.data_ptr(), v.data_ptr()}


def test_bad_limits():
    for bad in (-1, 1.5, "1", True, None):
        with pytest.raises(ValueError, match="limit_bytes"):
            tks_kernels.set_cpu_cache_limit(bad)


def test_limit_from_environment(monkeypatch):
    for value, want in (("0", 0), ("1.5", 3 << 19), ("", C.DEFAULT_LIMIT_BYTES), ("512", 512 << 20)):
        monkeypatch.setenv(C.ENV_VAR, value)
        assert C._limit_from_env() == want
    for bad in ("-1", "abc", "inf", "nan"):
        monkeypatch.setenv(C.ENV_VAR, bad)
        with pytest.raises(ValueError, match=f"TKS_KERNELS_CPU_CACHE_MB.*{bad!r}"):
            C._limit_from_env()
    monkeypatch.delenv(C.ENV_VAR)
    assert C._limit_from_env() == C.DEFAULT_LIMIT_BYTES == 256 << 20


def test_disabled_by_environment_at_import():
    code = ("import torch, tks_kernels\n"
            "from tks_kernels import functional\n"
            "s, _ = functional.lif_multistep(torch.randn(8, 1 << 18), backend='cpu')\n"
            "print(tks_kernels.cpu_cache_info())")
    env = dict(os.environ, TKS_KERNELS_CPU_CACHE_MB="0")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    info = eval(res.stdout.strip().splitlines()[-1])
    assert info["limit_bytes"] == 0 and info["held_bytes"] == 0 and info["allocations"] == 0


def test_two_threads(cache):
    xs = [torch.randn(4, 512 * (i + 1), requires_grad=True) for i in range(2)]
    gs = [torch.randn_like(x) for x in xs]
    want = []
    for x, g in zip(xs, gs):
        s, _ = lif(x)
        want.append((s.detach().clone(), torch.autograd.grad(s, x, g)[0].clone()))
    errors = []
    barrier = threading.Barrier(2)

    def hammer(i):
        try:
            barrier.wait()
            keep = None
            for it in range(60):
                s, _ = lif(xs[i])
                (gx,) = torch.autograd.grad(s, xs[i], gs[i])
                if not (torch.equal(s, want[i][0]) and torch.equal(gx, want[i][1])):
                    errors.append((i, it))
                if keep is not None and not torch.equal(keep, want[i][0]):
                    errors.append((i, it, "kept output changed"))
                keep = s if it % 3 == 0 else None  # some outputs outlive the next call
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert tks_kernels.cpu_cache_info()["hits"] > 100


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_starts_empty(cache):
    x = torch.randn(4, 1024)
    want = lif(x)[0].clone()
    s = lif(x)[0]
    p = s.data_ptr()
    del s  # an idle buffer in the parent
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "use of fork() may lead to deadlocks"
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        code = 1
        try:
            torch.set_num_threads(1)
            empty = tks_kernels.cpu_cache_info()["buffers"] == 0
            s = lif(x)[0]
            code = 0 if empty and torch.equal(s, want) and s.data_ptr() in cached_ptrs() else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    got = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert got == bytes([0])
    assert lif(x)[0].data_ptr() == p  # the parent's cache is as it was


def test_leaf_gradient_is_the_backward_output(cache):
    x = torch.randn(4, 1024, requires_grad=True)
    g = torch.randn(4, 1024)
    ptrs = []
    for _ in range(3):
        s, _ = lif(x)
        s.backward(g)
        # AccumulateGrad kept grad_x itself (a copy would come from torch's allocator)
        assert x.grad.data_ptr() in cached_ptrs()
        ptrs.append(x.grad.data_ptr())
        x.grad = None
        del s
    # spikes and grad_x share one size: the steps take turns on the same two buffers
    assert len(set(ptrs)) == 2 and ptrs[0] == ptrs[2]


def _poison_idle():
    n = 0
    for entries in C._CACHE._by_size.values():
        for i in range(len(entries)):
            if C._is_idle(entries, i):
                torch.empty(0, dtype=torch.uint8).set_(entries[i]).fill_(0xFF)  # NaN in every float dtype
                n += 1
    return n


def _leaves(*ts):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in ts]


def _grads(outs, leaves):
    gen = torch.Generator().manual_seed(3)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum() for o in outs)
    present = [t for t in leaves if t is not None]
    return list(torch.autograd.grad(loss, present))


def _case_lif(saved_d, dtype, no_grad=False):
    def run():
        x, v0 = _leaves(torch.randn(5, 3, 128, dtype=dtype), torch.rand(3, 128, dtype=dtype))
        if no_grad:
            with torch.no_grad():
                return list(lif(x, v0, return_v_seq=True))
        outs = lif(x, v0, return_v_seq=True, v_reset=None, decay_input=False)
        return [o.detach() for o in outs] + _grads(outs, [x, v0])
    return run, saved_d


def _case_plif(saved_d, dtype):
    def run():
        x, v0, w = _leaves(torch.randn(5, 3, 128, dtype=dtype), torch.rand(3, 128, dtype=dtype),
                           torch.tensor(-0.3))
        outs = plif_multistep(x, v0, w, plif_make_config(), backend="cpu", return_v_seq=True)
        return [o.detach() for o in outs] + _grads(outs, [x, v0, w])
    return run, saved_d


def _case_bn(plif, dtype):
    def run():
        y, r, v0, w, b = _leaves(torch.randn(3, 2, 4, 8, 8, dtype=dtype) + 0.3, torch.randn(3, 2, 4, 8, 8, dtype=dtype),
                                 torch.rand(2, 4, 8, 8, dtype=dtype), torch.rand(4, dtype=dtype) + 0.5,
                                 torch.randn(4, dtype=dtype) * 0.3)
        bn = B.BNArgs(w, b, torch.zeros(4, dtype=dtype), torch.ones(4, dtype=dtype), True, 0.1, 1e-5)
        if plif:
            pw = torch.tensor(-0.2, requires_grad=True)
            outs = B.bn_plif(y, bn, plif_make_config(), pw, r, v0, backend="cpu")
            leaves = [y, r, v0, w, b, pw]
        else:
            outs = B.bn_lif(y, bn, make_config(), r, v0, backend="cpu")
            leaves = [y, r, v0, w, b]
        return [o.detach() for o in outs] + _grads(outs, leaves)
    return run, False


CASES = {
    "lif": _case_lif(False, torch.float32),
    "lif_bf16": _case_lif(False, torch.bfloat16),
    "lif_fp64": _case_lif(False, torch.float64),
    "lif_saved_d": _case_lif(True, torch.float32),
    "lif_saved_d_fp16": _case_lif(True, torch.float16),
    "lif_no_grad": _case_lif(False, torch.float32, no_grad=True),
    "plif": _case_plif(False, torch.float32),
    "plif_saved_d": _case_plif(True, torch.float32),
    "plif_bf16": _case_plif(False, torch.bfloat16),
    "bn_lif": _case_bn(False, torch.float32),
    "bn_lif_bf16": _case_bn(False, torch.bfloat16),
    "bn_plif": _case_bn(True, torch.float32),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_output_is_written_on_a_reused_buffer(cache, monkeypatch, name):
    run, saved_d = CASES[name]
    if saved_d:
        monkeypatch.setattr(lif_cpu, "_MAX_STEPS", {})  # the saved-distance path, as at T > 4096

    def seeded():
        torch.manual_seed(7)
        return run()

    monkeypatch.setattr(C, "MIN_BYTES", 1 << 62)
    want = [t.clone() for t in seeded()]
    monkeypatch.setattr(C, "MIN_BYTES", SMALL)
    del_ = seeded()
    del del_
    assert _poison_idle() > 0
    hits = tks_kernels.cpu_cache_info()["hits"]
    got = seeded()
    assert tks_kernels.cpu_cache_info()["hits"] > hits
    for i, (a, e) in enumerate(zip(got, want)):
        assert not torch.isnan(a).any(), f"output {i} kept NaN from the reused buffer"
        assert a.dtype == e.dtype and torch.equal(a, e), f"output {i}"


def test_training_loss_curve_same_with_and_without_cache(cache, monkeypatch):
    def train():
        torch.manual_seed(0)
        model = models.create("cnn", num_classes=5, in_channels=1, T=3, input_size=8, width=0.5, backend="cpu")
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        gen = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(6):
            x = torch.rand(8, 1, 8, 8, generator=gen) * 2
            y = torch.randint(0, 5, (8,), generator=gen)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x).mean(0), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    monkeypatch.setattr(C, "MIN_BYTES", 1 << 62)
    off = train()
    monkeypatch.setattr(C, "MIN_BYTES", SMALL)
    on = train()
    assert tks_kernels.cpu_cache_info()["hits"] > 0
    assert on == off
    assert len(set(on)) > 1  # it trained
