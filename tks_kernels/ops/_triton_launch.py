"""What the Triton kernels of the LIF family (``ops/lif/triton.py``, ``ops/plif/triton.py``)
share on the host and in the kernels: scalars passed as bit patterns, the [T, N] layout,
the launch configuration, the device checks and the output allocation.
"""
from __future__ import annotations

import contextlib
import struct
from typing import Tuple

import torch
import triton
import triton.language as tl

from .._backends import triton_interpreted

# Whether the kernels were defined for the interpreter (TRITON_INTERPRET=1 must be set
# before tks_kernels is imported for them to run on CPU tensors).
INTERPRETED = triton_interpreted()


@triton.jit
def scalar(bits, IS_F64: tl.constexpr):
    """The compute-type float whose bit pattern is ``bits`` (see ``scalar_bits``)."""
    if IS_F64:
        return bits.to(tl.int64).to(tl.float64, bitcast=True)
    else:
        return bits.to(tl.int32).to(tl.float32, bitcast=True)


_INTERPRETED = tl.constexpr(INTERPRETED)


@triton.jit
def trip_count(n):
    """The run-time scalar n as a loop bound: ``for t in range(trip_count(T))``.
    Compiled, n itself (T stays a run-time argument: no recompile per length). Under the
    interpreter a Python int: there every scalar argument is a 1-element array, and
    triton 3.6's interpreter takes range()'s bound with int(array), which numpy >= 2.4
    refuses ("only 0-dimensional arrays can be converted to Python scalars")."""
    if _INTERPRETED:
        return int(n.handle.data.reshape(-1)[0])  # plain Python: the interpreter runs it as such
    else:
        return n


@triton.jit
def widen(q, dt: tl.constexpr):
    """A loaded saved distance q (storage type) in the compute type dt, exactly.
    Under the interpreter bf16 goes through its bits: the interpreter's bf16 -> fp32
    conversion flushes subnormals to zero, which would turn the saved distance's
    smallest subnormal (``store_distance``) into a zero of the wrong meaning. On the
    GPU the conversion is exact as it is."""
    if _INTERPRETED and q.dtype == tl.bfloat16:
        return (q.to(tl.int16, bitcast=True).to(tl.int32) << 16).to(tl.float32, bitcast=True).to(dt)
    else:
        return q.to(dt)


@triton.jit
def fires(d, fire_at):
    """Whether a neuron at distance d = h - v_threshold fires: d >= 0 when ``fire_at``
    (a run-time 0/1: both rules share one compiled kernel), else d > 0. NaN: no spike.
    The forward compares h with v_threshold directly; the two agree because
    fl(h - vth) is 0 only when h == vth (no flush-to-zero)."""
    return tl.where(d == 0.0, fire_at != 0, d > 0.0)


@triton.jit
def store_distance(ptr, offs, d, mask, fire_at, D_MAX: tl.constexpr, NARROW: tl.constexpr):
    """Store the saved distance d (compute type) at ``ptr + offs`` in the pointer's type.

    NARROW (fp16/bf16 storage): d keeps what backward's ``fires`` reads from it.
    - A d that would round (or, under the interpreter, truncate) to a zero of the wrong
      side is stored as the smallest subnormal of its sign (bits 0x8001 / 0x0001): a
      negative d when firing at the threshold (-0 >= 0 would read as a spike), a positive
      d under the strict rule (+0 > 0 would read as no spike). d == 0 stays 0.
    - A finite |d| above the type's largest finite D_MAX is stored as +-D_MAX instead of
      overflowing to inf (inf would give NaN gradients where the reference has 0);
      an infinite or NaN d (from an infinite or NaN input) is stored as it is.
    """
    st = ptr.dtype.element_ty
    if NARROW:
        big = (tl.abs(d) > D_MAX) & (tl.abs(d) <= 3.4028234663852886e38)  # finite, too large
        d = tl.where(big, tl.where(d > 0.0, D_MAX, -D_MAX), d)
        q = d.to(st)
        r = q.to(d.dtype)
        at = fire_at != 0
        lost = tl.where(at, (d < 0.0) & ~(r < 0.0), (d > 0.0) & ~(r > 0.0))
        tiny = tl.where(at, tl.full(d.shape, -32767, tl.int16), tl.full(d.shape, 1, tl.int16))
        q = tl.where(lost, tiny.to(st, bitcast=True), q)
    else:
        q = d.to(st)
    tl.store(ptr + offs, q, mask=mask)


def distance_max(dtype: torch.dtype) -> float:
    """D_MAX of ``store_distance``: the largest finite value of a 16-bit storage type
    (unused for fp32/fp64 storage)."""
    return torch.finfo(dtype).max if dtype in (torch.float16, torch.bfloat16) else 0.0


def scalar_bits(value: float, dtype: torch.dtype) -> int:
    """Bit pattern (as a signed integer) of ``value`` in the kernel's compute type,
    rounded to nearest as PyTorch rounds a Python float scalar."""
    if dtype == torch.float64:
        return struct.unpack("<q", struct.pack("<d", value))[0]
    return struct.unpack("<i", struct.pack("<f", value))[0]


def launch_config(n: int, dtype: torch.dtype) -> Tuple[int, int]:
    """(BLOCK, num_warps). On the GPU (memory-bound kernels, H100/H200): fp32 and fp64
    two 16-byte accesses per thread and tensor, fp16/bf16 one (8 elements: two took the
    bf16 backward to 116 registers with sigmoid, one takes it to 64; forward 64 -> 40;
    sm_90 compile, tests/test_codegen_triton.py); when n is not a multiple of 16 (no
    vector access possible) four elements per thread: each scalar access carries its own
    64-bit address, and 16 of them per thread took the 16-bit PLIF forward to 255
    registers and a stack spill. Under the interpreter one large block, as every
    program costs Python time."""
    if INTERPRETED:
        return max(16, min(triton.next_power_of_2(max(n, 1)), 4096)), 1
    if n % 16:
        return 4 * 32 * 4, 4
    if dtype.itemsize == 2:
        return 8 * 32 * 4, 4  # 1024
    elems_16b = 16 // dtype.itemsize
    return 2 * elems_16b * 32 * 4, 4  # fp32: 1024, fp64: 512


def launch_config_k(n: int, dtype: torch.dtype) -> Tuple[int, int]:
    """(BLOCK, num_warps) of PLIF's saved-distance backward (``_backward_kernel`` with
    LEARN_TAU), which also carries v_{t-1}, the saved value two steps ahead and its dL/dk
    sum: ``launch_config``'s elements per thread halved down to one 16-byte access (fp32
    512, fp64 256; fp16/bf16 keep 1024), unaligned n 2 per thread. At launch_config's,
    Triton 3.6 compiled the erf (fp32) and the unaligned fp64 variants for sm_90 with 2
    registers spilled (8 B of stack); Triton 3.9 did not."""
    block, warps = launch_config(n, dtype)
    if INTERPRETED:
        return block, warps
    if n % 16 or block // (32 * warps) * dtype.itemsize > 16:
        block //= 2
    return block, warps


def launch_config_x(n: int, dtype: torch.dtype, chunk: int, ieee_div: bool = False) -> Tuple[int, int]:
    """(BLOCK, num_warps) of the recomputing backward (``_backward_x_kernel``), which
    keeps ``chunk`` compute-type membranes per element in registers and has a chunk's
    loads in flight at once: 4 warps, 4 elements per thread (16 bytes of fp32; fp16/bf16
    access 8 bytes at a time), 2 for fp64, for n not a multiple of 16 (scalar accesses,
    each with its own address), and for fp32 with ``ieee_div`` (LIF dividing by a tau that
    is not a power of two: the IEEE division's slow-path call made ptxas keep a stack
    frame at 4). Compiled for sm_90, tests/test_codegen_triton.py: no spills, at most
    160 registers."""
    if INTERPRETED:
        return launch_config(n, dtype)
    narrow = dtype == torch.float64 or n % 16 or (ieee_div and dtype == torch.float32)
    per_thread = 2 if narrow else 4
    return per_thread * 32 * 4, 4


def is_dense(sizes, strides) -> bool:
    """Whether a tensor of these sizes/strides covers its memory exactly (any order)."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(sizes, strides) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def time_major_dense(x: torch.Tensor) -> torch.Tensor:
    """x itself when its steps are dense and time is outermost in memory (contiguous,
    channels_last per step, ...), so it can be read as [T, N]; else a contiguous copy.
    Runs on fake tensors too, so the fake outputs get the real ones' strides."""
    if x.numel() == 0:
        return x
    step = x.numel() // x.shape[0]
    if (x.shape[0] == 1 or x.stride(0) == step) and is_dense(x.shape[1:], x.stride()[1:]):
        return x
    return x.contiguous()


def like_layout(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t in ref's dtype with exactly ref's strides (a copy only when they differ)."""
    t = t.to(ref.dtype)
    if t.stride() == ref.stride() or ref.numel() <= 1:
        return t
    return torch.empty_like(ref).copy_(t)


def sg_like(sg: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """sg (compute dtype) with exactly d's strides, so the kernels index both as [T, N]
    (a copy only when they differ)."""
    if sg.stride() == d.stride() or d.numel() <= 1:
        return sg
    return torch.empty_strided(d.shape, d.stride(), dtype=sg.dtype, device=sg.device).copy_(sg)


def check_device(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and INTERPRETED:
        return
    if t.device.type == "cpu":
        raise RuntimeError(
            "tks_kernels Triton kernels: CPU tensors run only under the Triton interpreter; set "
            "TRITON_INTERPRET=1 before tks_kernels is imported, or use a CUDA tensor"
        )
    raise RuntimeError(f"tks_kernels Triton kernels: tensors must be on a CUDA device, got {t.device}")


def on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def forward_outputs(x: torch.Tensor, save_for_backward: bool, return_v_seq: bool):
    xd = time_major_dense(x)
    x0 = xd[0]
    none = x.new_empty((0,))
    spikes = torch.empty_like(xd)
    v_last = torch.empty_like(x0)
    v_seq = torch.empty_like(xd) if return_v_seq else none
    d_saved = torch.empty_like(xd) if save_for_backward else x.new_empty((0,))
    return xd, x0, spikes, v_last, v_seq, d_saved
