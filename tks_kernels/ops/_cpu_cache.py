"""A bounded cache of the CPU ops' own large output buffers.

Why: a large CPU tensor (at least 32 MiB, glibc's largest mmap threshold; smaller ones
whenever glibc has trimmed its heap) comes from PyTorch's CPU allocator as freshly mapped
memory, and the kernel zeroes every page on its first touch. For the fused LIF kernels,
which move a few bytes per neuron and step, the faults were most of the time: LIF forward
[8, 32, 32768] fp32 (32 MiB outputs, 2 threads, idle machine) took 12.8 ms at default
settings and 5.4 ms with glibc keeping freed memory (``mallopt``), ``clear_page`` 24% of
its samples. Reusing our own output buffers skips the faults without touching the
process-wide allocator (``mallopt`` would change every library's memory behaviour).

What is cached: ``torch.UntypedStorage`` objects, never tensors. Each output is a NEW
tensor set on a cached storage (``torch.empty(0).set_(storage, 0, size, stride)``), so the
tensor's own reference count is what a fresh ``torch.empty`` would give it: autograd's
AccumulateGrad still takes a leaf's first gradient as it is, without a copy.

When a buffer is reused: only when nothing but the cache refers to it: its StorageImpl
has one reference (``torch._C._storage_Use_Count``: the cache's storage object; every
tensor on it, view, ``.numpy()`` array, DLPack export or tensor saved by autograd holds
one more) and the storage object has no Python reference but the cache's (a user's
``t.untyped_storage()`` returns that same object, which the first count does not see).
A storage moved to shared memory (``share_memory_()``, as ``torch.multiprocessing``
does to send a tensor) is never reused: another process may still map it. Reuse needs the
same byte size exactly; of several idle buffers, the most recently handed out goes first
(the likeliest to be still in the CPU's caches). Every op that takes its outputs from here
writes every element of them, so no stale value is visible (tests/test_cpu_cache.py
checks each op on buffers filled with NaN).

Bounds: only outputs of at least ``MIN_BYTES`` (1 MiB; smaller blocks come from glibc's
heap, already warm) are cached, and the bytes held (buffers in use and idle) stay within
a limit: ``TKS_KERNELS_CPU_CACHE_MB`` at import (default 256; 0 disables the cache), then
``tks_kernels.set_cpu_cache_limit(bytes)``. At the limit, idle buffers are released
least recently used first; when the buffers in use alone fill it, an output comes from
PyTorch's allocator as without the cache. ``tks_kernels.empty_cpu_cache()`` releases the
idle buffers (as ``torch.cuda.empty_cache()``); ``tks_kernels.cpu_cache_info()`` reports.

Thread-safe (one lock; a buffer is handed out with its tensor made under the lock) and
fork-safe (a forked child, such as a DataLoader worker, starts with an empty cache and
never reuses the parent's buffers).
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Dict, List, Sequence

import torch

ENV_VAR = "TKS_KERNELS_CPU_CACHE_MB"
MIN_BYTES = 1 << 20
DEFAULT_LIMIT_BYTES = 256 << 20

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _python_refs(entries: list, i: int) -> int:
    return sys.getrefcount(entries[i])


# The Python references _python_refs sees to a storage that only the cache's list holds
# (the list's and the call's own): measured, not assumed, as interpreters differ.
_ONLY_CACHE_REFS = _python_refs([torch.UntypedStorage(0)], 0)


def _is_idle(entries: list, i: int) -> bool:
    """Whether nothing but the cache refers to the storage entries[i]: no other Python
    reference to the storage object (a user's ``t.untyped_storage()`` is this object) and
    no other reference to its StorageImpl (tensors, views, NumPy arrays, DLPack exports,
    autograd's saved tensors). The caller holds no reference to it either."""
    return _python_refs(entries, i) == _ONLY_CACHE_REFS and _use_count(entries[i]._cdata) == 1


def _limit_from_env() -> int:
    value = os.environ.get(ENV_VAR)
    if value is None or value.strip() == "":
        return DEFAULT_LIMIT_BYTES
    try:
        mb = float(value)
    except ValueError:
        mb = -1.0
    if not mb >= 0 or mb == float("inf"):
        raise ValueError(f"tks_kernels: {ENV_VAR} must be a number of MiB >= 0 (0 disables the CPU output cache), "
                         f"got {value!r}")
    return int(mb * (1 << 20))


class _Cache:
    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self.limit = limit if _use_count is not None else 0
        self._clear()

    def _clear(self) -> None:
        self._by_size: Dict[int, List[torch.UntypedStorage]] = {}
        self._last_use: Dict[int, int] = {}  # id(storage) -> tick of its last hand-out
        self._tick = 0
        self.held = 0
        self.hits = self.allocations = self.bypasses = 0

    def reset(self) -> None:
        """Forgets every buffer, in use or idle (the cache's references only: tensors on
        them live on) and the counts. Run in a forked child, where the lock may have been
        held by a parent thread at the fork: so a new lock."""
        self._lock = threading.Lock()
        self._clear()

    def _take(self, nbytes: int):
        """An idle storage of exactly nbytes, or None; the most recently handed out first
        (the likeliest to be freed last, so still in the CPU's caches). Under the lock."""
        entries = self._by_size.get(nbytes)
        if not entries:
            return None
        for i in range(len(entries) - 1, -1, -1):  # entries are in hand-out order
            if not _is_idle(entries, i):
                continue
            if entries[i].is_shared():
                # moved to shared memory (torch.multiprocessing sends a tensor so): another
                # process may still map it, which no reference count here shows. Not reused.
                self._drop(entries[i], nbytes)
                return self._take(nbytes)
            if entries[i].nbytes() == nbytes:  # (else a user resized it through a tensor on it)
                entries.append(entries.pop(i))
                return entries[-1]
        return None

    def _drop(self, s: torch.UntypedStorage, nbytes: int) -> None:
        entries = self._by_size[nbytes]
        del entries[next(i for i, e in enumerate(entries) if e is s)]  # by identity
        if not entries:
            del self._by_size[nbytes]
        del self._last_use[id(s)]
        self.held -= nbytes

    def _release_idle(self, need: int) -> None:
        """Releases idle storages, least recently used first, until need more bytes fit
        (need < 0: all of them). Under the lock."""
        idle = []
        for nbytes, entries in self._by_size.items():
            for i in range(len(entries)):
                if _is_idle(entries, i):
                    idle.append((self._last_use[id(entries[i])], nbytes, entries[i]))
        idle.sort(key=lambda e: e[0])
        for _, nbytes, s in idle:
            if need >= 0 and self.held + need <= self.limit:
                break
            self._drop(s, nbytes)
        del idle

    def empty_strided(self, size: Sequence[int], stride: Sequence[int], dtype: torch.dtype,
                      nbytes: int) -> torch.Tensor:
        with self._lock:
            s = self._take(nbytes)
            if s is not None:
                self.hits += 1
            elif nbytes > self.limit:
                self.bypasses += 1
            else:
                if self.held + nbytes > self.limit:
                    self._release_idle(nbytes)
                if self.held + nbytes > self.limit:
                    self.bypasses += 1
                else:
                    s = torch.UntypedStorage(nbytes)
                    self._by_size.setdefault(nbytes, []).append(s)  # hand-out order: last
                    self.held += nbytes
                    self.allocations += 1
            if s is None:
                return torch.empty_strided(size, stride, dtype=dtype)
            self._tick += 1
            self._last_use[id(s)] = self._tick
            # The tensor is made before the lock is let go: from here on the storage is in use.
            return torch.empty(0, dtype=dtype).set_(s, 0, size, stride)

    def set_limit(self, limit: int) -> int:
        with self._lock:
            previous = self.limit
            self.limit = limit if _use_count is not None else 0
            # Buffers in use stay until their tensors are freed; only idle ones can go now.
            if self.held > self.limit:
                self._release_idle(0)
            return previous

    def empty(self) -> None:
        with self._lock:
            self._release_idle(-1)

    def info(self) -> dict:
        with self._lock:
            idle = 0
            entries = 0
            for nbytes, lst in self._by_size.items():
                entries += len(lst)
                idle += nbytes * sum(_is_idle(lst, i) for i in range(len(lst)))
            return {"limit_bytes": self.limit, "held_bytes": self.held, "idle_bytes": idle, "buffers": entries,
                    "hits": self.hits, "allocations": self.allocations, "bypasses": self.bypasses}


_CACHE = _Cache(_limit_from_env())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_CACHE.reset)


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(x)`` for the CPU kernels' outputs: the same size, strides and
    dtype, its memory from the cache when x is CPU, dense (non-overlapping, no gaps, as
    the ops' ``time_major_dense`` tensors are) and at least ``MIN_BYTES``. The contents
    are undefined, as with ``torch.empty_like``: the caller writes every element."""
    nbytes = x.numel() * x.element_size()
    if nbytes < MIN_BYTES or _CACHE.limit < nbytes or x.device.type != "cpu" or x.layout != torch.strided:
        return torch.empty_like(x)
    if not x.is_contiguous():
        from ._layout import _dense

        if not _dense(x.shape, x.stride()):
            return torch.empty_like(x)
    return _CACHE.empty_strided(x.shape, x.stride(), x.dtype, nbytes)


def set_cpu_cache_limit(limit_bytes: int) -> int:
    """Sets the most bytes the CPU output cache holds (buffers in use and idle; 0 turns it
    off) and returns the previous limit. Idle buffers above the new limit are freed now;
    buffers in use count until their tensors are freed. The default is
    ``TKS_KERNELS_CPU_CACHE_MB`` MiB at import (256 when unset)."""
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes < 0:
        raise ValueError(f"tks_kernels: set_cpu_cache_limit needs limit_bytes, an int >= 0, got {limit_bytes!r}")
    return _CACHE.set_limit(limit_bytes)


def empty_cpu_cache() -> None:
    """Frees every idle buffer of the CPU output cache (as ``torch.cuda.empty_cache()`` does
    for CUDA's caching allocator). Buffers whose tensors are alive are kept; the limit is
    unchanged."""
    _CACHE.empty()


def cpu_cache_info() -> dict:
    """The CPU output cache's state: ``limit_bytes``, ``held_bytes`` (in use and idle),
    ``idle_bytes``, ``buffers``, and the counts since import (or the last fork) of
    ``hits`` (outputs on a reused buffer), ``allocations`` (new buffers) and
    ``bypasses`` (outputs left to PyTorch's allocator because the limit was reached)."""
    return _CACHE.info()
