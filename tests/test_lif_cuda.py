"""The CUDA LIF kernels against the reference (``backend="torch"`` on the same device):
every option, dtype, size, alignment and layout, and every gradient.

Spikes must equal the reference's bit for bit in every dtype. fp32/fp64 membranes and
gradients agree to 1e-5 relative to their largest magnitude (membranes are in fact
bit-exact: same expression order, -fmad=false). fp16/bf16 membranes are within one
rounding step of the reference, which computes in fp32 and casts; their gradients are
within a few rounding steps (the saved-distance backward, T above the recomputing limit,
reads d in the storage type, lif_math.h's keep_sign, where the reference has the exact
fp32 value). The recomputing backward (T <= 32, fp64 16, in chunks of 8 steps, 4 in fp64) must
equal the saved-distance one bit for bit in fp32/fp64, LIF and PLIF, dL/dk included, for
the fixed flag sets (SpikingJelly's defaults, the TKS paper's neuron) and the general
instance alike, and its spikes must equal the forward's.

GPU tests (``-m gpu``): skipped without a CUDA device. With a device, a missing
CUDA build fails rather than skips.
"""
from __future__ import annotations

import importlib
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tks_kernels
from tks_kernels.functional import lif_multistep
from tks_kernels.ops.lif import SURROGATES

# The backend and device under test (the CPU kernels can stand in to check the tests).
BACKEND = "cuda"
DEVICE = "cuda"

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
RESETS = [0.0, -0.25, None]  # hard reset to 0, hard reset to -0.25, soft reset
# Largest error allowed, relative to the largest magnitude of the reference tensor.
MEMBRANE_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
GRAD_TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 4 * 2.0**-10, torch.bfloat16: 4 * 2.0**-7}


@pytest.fixture(autouse=True)
def _backend_available():
    ok, reason = tks_kernels.available_backends()[BACKEND]
    assert ok, f"the {BACKEND} backend should run here: {reason}"


def _id(value):
    return str(value).replace("torch.", "")


def random_input(shape, dtype=torch.float32, scale=1.5, offset=0.3, seed=0):
    """Currents around the threshold, made on the CPU so every backend sees the same."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale + offset).to(device=DEVICE, dtype=dtype)


def run(x, v_init, backend, *, grads=True, seed=1, **opts):
    """Forward with every output, then backward from random weights on all three.

    Returns (spikes, v_last, v_seq, grad_x, grad_v_init)."""
    x = x.detach().clone().requires_grad_(grads)
    v0 = None if v_init is None else v_init.detach().clone().requires_grad_(grads)
    s, v, vs = lif_multistep(x, v0, backend=backend, return_v_seq=True, **opts)
    if not grads:
        return s, v, vs, None, None
    g = torch.Generator().manual_seed(seed)

    def w(t):
        return torch.randn(t.shape, generator=g).to(device=t.device, dtype=t.dtype)

    loss = (s * w(s)).sum() + (v * w(v)).sum() + (vs * w(vs)).sum()
    inputs = (x,) if v0 is None else (x, v0)
    grad = torch.autograd.grad(loss, inputs)
    return s, v, vs, grad[0], (grad[1] if v0 is not None else None)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| in fp64 (0 for empty tensors)."""
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def assert_within_rounding_step(a: torch.Tensor, b: torch.Tensor, name: str):
    """|a - b| <= one rounding step of b's dtype (b is the fp32 reference, cast)."""
    info = torch.finfo(b.dtype)
    a, b = a.double(), b.double()
    bad = (a - b).abs() > info.eps * b.abs() + info.smallest_normal
    assert not bad.any(), f"{name}: {int(bad.sum())} values differ by more than a rounding step, e.g. {a[bad][:4]} vs {b[bad][:4]}"


def assert_matches_reference(x, v_init, *, grads=True, **opts):
    got = run(x, v_init, BACKEND, grads=grads, **opts)
    ref = run(x, v_init, "torch", grads=grads, **opts)
    dtype = x.dtype
    for t in got:
        assert t is None or (t.dtype == dtype and t.device == x.device)
    assert torch.equal(got[0], ref[0]), f"spikes differ from the reference ({dtype}, {opts})"
    for name, a, b in zip(("v_last", "v_seq"), got[1:3], ref[1:3]):
        assert a.shape == b.shape
        if dtype in MEMBRANE_TOL:
            assert rel_err(a, b) <= MEMBRANE_TOL[dtype], f"{name}: {rel_err(a, b):.3g} ({dtype}, {opts})"
        else:
            assert_within_rounding_step(a, b, name)
    for name, a, b in zip(("grad_x", "grad_v_init"), got[3:], ref[3:]):
        if a is None and b is None:
            continue
        assert a.shape == b.shape
        err = rel_err(a, b)
        assert err <= GRAD_TOL[dtype], f"{name}: relative error {err:.3g} > {GRAD_TOL[dtype]:.3g} ({dtype}, {opts})"
    return got, ref


# --- options x dtypes -----------------------------------------------------------------

OPTIONS = [
    dict(surrogate=s, v_reset=r, decay_input=d, detach_reset=dr)
    for s, r, d, dr in itertools.product(SURROGATES, RESETS, (True, False), (True, False))
]


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_option_and_dtype_matches_reference(opts, dtype):
    # N = 3 * 40 = 120: a multiple of 8, so this runs the vectorised kernels.
    x = random_input((6, 3, 40), dtype)
    v0 = random_input((3, 40), dtype, scale=0.5, offset=0.0, seed=1)
    assert_matches_reference(x, v0, tau=2.5, v_threshold=0.8, **opts)
    assert_matches_reference(x, None, tau=2.5, v_threshold=0.8, **opts)


@pytest.mark.parametrize("tau", [1.0, 1.5, 2.0, 3.0, 7.3, 100.0], ids=_id)
@pytest.mark.parametrize("v_threshold", [-0.3, 0.5, 1.0, 1.7], ids=_id)
def test_scalars(tau, v_threshold):
    # tau = 3, 7.3: 1/tau is not exact, so a reciprocal multiply would flip spikes.
    x = random_input((8, 2, 512))
    for v_reset in (0.0, 0.3, None):
        assert_matches_reference(x, None, tau=tau, v_threshold=v_threshold, v_reset=v_reset)
        assert_matches_reference(x, None, tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=False)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("alpha", [0.5, 3.0], ids=_id)
def test_surrogate_alpha(surrogate, alpha):
    x = random_input((5, 256))
    assert_matches_reference(x, None, surrogate=surrogate, alpha=alpha, v_threshold=0.6)


def test_fp32_membrane_bit_exact():
    # Same expressions in the same order and no FMA: not merely close.
    x = random_input((16, 4, 1000))
    for opts in (dict(), dict(v_reset=None), dict(decay_input=False, v_reset=-0.25, tau=3.0)):
        got = run(x, None, BACKEND, grads=False, **opts)
        ref = run(x, None, "torch", grads=False, **opts)
        for a, b in zip(got[:3], ref[:3]):
            assert torch.equal(a, b), opts


# --- sizes, alignment, layout -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize(
    "shape",
    [(1, 5), (1, 1), (7, 1), (3, 1001), (5, 7), (2, 3, 5), (4, 4096), (4, 4100), (3, 2, 2050), (2, 66000)],
    ids=_id,
)
def test_odd_sizes_and_one_step(shape, dtype):
    # N not a multiple of 4 (fp32) / 8 (fp16, bf16) / 2 (fp64) takes the strided path.
    x = random_input(shape, dtype)
    v0 = random_input(shape[1:], dtype, scale=0.5, seed=2)
    assert_matches_reference(x, v0)
    assert_matches_reference(x, None, v_reset=None, surrogate="atan")


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("offset", [1, 2, 3], ids=_id)
def test_misaligned_pointers(dtype, offset):
    # Contiguous tensors whose data starts `offset` elements into their storage: the
    # op takes them as they are, so the kernels see pointers that are not 16-byte
    # aligned (for N a multiple of the vector width, too).
    T, N = 5, 1024
    x = random_input(T * N + offset, dtype)[offset:].view(T, N)
    v0 = random_input(N + offset, dtype, scale=0.5, seed=3)[offset:]
    assert x.data_ptr() % 16 != 0 or x.element_size() * offset % 16 == 0
    assert_matches_reference(x, v0)
    assert_matches_reference(x, v0, v_reset=None, detach_reset=True)


def test_sliced_last_dim():
    x = random_input((4, 3, 33))[..., 1:]  # N = 96 but not dense: the wrapper copies
    v0 = random_input((3, 33), seed=4)[..., 1:]
    assert not x.is_contiguous()
    assert_matches_reference(x, v0)
    for dtype in (torch.float16, torch.bfloat16):
        assert_matches_reference(x.to(dtype), v0.to(dtype), v_reset=None)


def test_non_contiguous_layouts():
    base = random_input((4, 2, 6, 5, 3))  # [T, B, C, H, W]
    cases = {
        "transposed": base.transpose(3, 4),
        "time-strided": random_input((8, 2, 6, 5, 3))[::2],
        "channels_last": base.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2)),
        "time-not-outermost": random_input((2, 4, 6, 5, 3)).transpose(0, 1),
        "expanded": random_input((4, 1, 6, 5, 3)).expand(4, 2, 6, 5, 3),
    }
    for name, x in cases.items():
        v0 = random_input(x.shape[1:], scale=0.5, seed=5).transpose(-1, -2).contiguous().transpose(-1, -2)
        assert_matches_reference(x, v0, v_reset=None)
        assert_matches_reference(x, None)


def test_channels_last_keeps_layout():
    x = random_input((4 * 2, 6, 5, 3)).contiguous(memory_format=torch.channels_last).unflatten(0, (4, 2))
    s, v = lif_multistep(x, backend=BACKEND)
    assert s.stride() == x.stride(), "spikes should keep the input's memory layout (no copy)"


@pytest.mark.parametrize("shape", [(4, 0), (3, 0, 5), (1, 0)], ids=_id)
def test_zero_neurons(shape):
    x = random_input(shape)
    got = run(x, random_input(shape[1:]), BACKEND)
    assert got[0].shape == shape and got[1].shape == shape[1:] and got[2].shape == shape
    assert got[3].shape == shape and got[4].shape == shape[1:]
    with torch.no_grad():
        s, v = lif_multistep(x, backend=BACKEND)
    assert s.shape == shape and v.shape == shape[1:]


# --- gradients -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("which", ["spikes", "v_last", "v_seq", "spikes+v_last"])
@pytest.mark.parametrize("has_v_init", [True, False], ids=["v_init", "no_v_init"])
def test_partial_gradients(which, has_v_init, dtype):
    # Only some outputs in the loss: the others' gradients arrive as None.
    x0 = random_input((5, 2, 72), dtype)
    v00 = random_input((2, 72), dtype, scale=0.5, seed=6) if has_v_init else None
    results = {}
    for backend in (BACKEND, "torch"):
        x = x0.clone().requires_grad_()
        v0 = None if v00 is None else v00.clone().requires_grad_()
        out = lif_multistep(x, v0, backend=backend, return_v_seq=(which == "v_seq"), surrogate="piecewise_exp")
        s, v, vs = out if len(out) == 3 else (*out, None)
        w = torch.linspace(-1, 1, s.numel(), device=DEVICE).view_as(s).to(dtype)
        loss = {
            "spikes": lambda: (s * w).sum(),
            "v_last": lambda: (v * w[0]).sum(),
            "v_seq": lambda: (vs * w).sum(),
            "spikes+v_last": lambda: (s * w).sum() + v.sum(),
        }[which]()
        inputs = (x,) if v0 is None else (x, v0)
        results[backend] = torch.autograd.grad(loss, inputs)
    for a, b in zip(results[BACKEND], results["torch"]):
        assert rel_err(a, b) <= GRAD_TOL[dtype], which


def test_gradient_through_a_network():
    # Two layers and a loss: the backward of one LIF feeds the next one's.
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 32).to(DEVICE)
    x0 = random_input((6, 4, 32))
    grads = {}
    for backend in (BACKEND, "torch"):
        x = x0.clone().requires_grad_()
        s1, _ = lif_multistep(lin(x), backend=backend, tau=2.0, surrogate="atan")
        s2, v2 = lif_multistep(lin(s1), backend=backend, v_reset=None, detach_reset=True)
        loss = (s2.mean(0) - 0.5).square().sum() + v2.square().sum()
        grads[backend] = torch.autograd.grad(loss, (x, lin.weight))
    for a, b in zip(grads[BACKEND], grads["torch"]):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=_id)
def test_saved_distance_keeps_its_sign(dtype):
    # Step 2's h lies a hair below the threshold: h - v_threshold rounds to zero in the
    # storage type, so without keep_sign backward would see a spike forward did not fire.
    # fp16: h = 0.25 - 2^-25 (x = [-2^-24, 0.25]); bf16: h = -2^-134 (x = [-2^-133, 0]).
    if dtype == torch.float16:
        xs, vth = [-(2.0**-24), 0.25], 0.25
    else:
        xs, vth = [-(2.0**-133), 0.0], 0.0
    x = torch.tensor(xs, dtype=dtype, device=DEVICE).view(2, 1).expand(2, 16).contiguous()
    opts = dict(tau=2.0, decay_input=False, v_threshold=vth, v_reset=0.0)
    _, _, _, d_saved = torch.ops.tks_kernels.lif_forward(x, None, 2.0, False, vth, 0.0, False, 0, 4.0, False, True, False)
    assert (d_saved[1] < 0).all(), d_saved[1]
    got, ref = assert_matches_reference(x, None, **opts)
    assert (got[0] == 0).all()
    # The v_last path through step 2 carries (1 - s) = 1; a flipped spike would make it 0.
    x = x.clone().requires_grad_()
    _, v = lif_multistep(x, backend=BACKEND, **opts)
    (g,) = torch.autograd.grad(v.sum(), x)
    x_ref = x.detach().clone().requires_grad_()
    _, v_ref = lif_multistep(x_ref, backend="torch", **opts)
    (g_ref,) = torch.autograd.grad(v_ref.sum(), x_ref)
    assert rel_err(g, g_ref) <= GRAD_TOL[dtype], (g, g_ref)


def test_nan_and_inf_as_reference():
    x = random_input((5, 40))
    x[1, 3] = float("nan")
    x[2, 7] = float("inf")
    x[3, 9] = -float("inf")
    for opts in (dict(), dict(v_reset=None), dict(decay_input=False, v_reset=-0.2)):
        got = run(x, None, BACKEND, **opts)
        ref = run(x, None, "torch", **opts)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


# --- what is saved -------------------------------------------------------------------------

class _RecordLifForward(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.tks_kernels.lif_forward.default:
            self.calls.append((args, out))
        return out


def _saved_bytes(fn):
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_saves_one_value_per_neuron_step(dtype):
    T, N = 8, 3000
    x = random_input((T, N), dtype).requires_grad_()
    saved = _saved_bytes(lambda: lif_multistep(x, backend=BACKEND, return_v_seq=True))
    assert saved == T * N * x.element_size(), f"saved {saved} bytes for {T * N} neuron-steps"


def test_no_grad_saves_nothing():
    T, N = 8, 4096
    x = random_input((T, N)).requires_grad_()
    with torch.no_grad():
        assert _saved_bytes(lambda: lif_multistep(x, backend=BACKEND)) == 0
        with _RecordLifForward() as rec:
            lif_multistep(x, backend=BACKEND)
    assert _saved_bytes(lambda: lif_multistep(x.detach(), backend=BACKEND)) == 0
    (args, out), = rec.calls
    assert args[10] is False, "save_for_backward should be False under no_grad"
    assert out[3].numel() == 0 and out[2].numel() == 0
    if torch.device(DEVICE).type == "cuda":
        # Inference allocates its two outputs and nothing else.
        with torch.no_grad():
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            s, v = lif_multistep(x, backend=BACKEND)
            torch.cuda.synchronize()
            extra = torch.cuda.max_memory_allocated() - before
        assert extra <= s.nbytes + v.nbytes + 4096, f"inference allocated {extra} bytes"


# --- device, stream, compile ---------------------------------------------------------------

def test_runs_on_the_current_stream():
    if torch.device(DEVICE).type != "cuda":
        pytest.skip("streams are CUDA's")
    x = random_input((16, 1 << 16))
    ref = run(x, None, "torch", grads=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x2 = x * 1.0  # produced on the side stream
        got = run(x2, None, BACKEND, grads=True)
    side.synchronize()
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    x = random_input((4, 1000)).to("cuda:1")
    with torch.cuda.device(0):
        got = run(x, None, BACKEND)
    ref = run(x, None, "torch")
    assert all(t.device == x.device for t in got if t is not None)
    assert torch.equal(got[0], ref[0])
    assert rel_err(got[3], ref[3]) <= 1e-5


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    x = random_input((4, 2, 64)).requires_grad_()

    def f(x):
        s, v = lif_multistep(x * 2.0, tau=2.0, backend=BACKEND)
        return (s * x).sum() + v.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))
    (g1,) = torch.autograd.grad(compiled(x), x)
    (g2,) = torch.autograd.grad(f(x), x)
    torch.testing.assert_close(g1, g2)


def test_saved_state_equals_cpu_kernels():
    # The CUDA and CPU kernels share lif_math.h: the same saved distances, bit for bit.
    if not tks_kernels.available_backends()["cpu"][0] or BACKEND == "cpu":
        pytest.skip("needs the CPU kernels too")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = random_input((6, 2, 515), dtype)
        args = (2.0, True, 0.7, 0.0, False, 0, 4.0, False, True, True)
        out = torch.ops.tks_kernels.lif_forward(x, None, *args)
        out_cpu = torch.ops.tks_kernels.lif_forward(x.cpu(), None, *args)
        for a, b in zip(out, out_cpu):
            assert torch.equal(a.cpu(), b), dtype


def test_int64_indexing():
    # More than 2^31 elements: offsets t * N + n overflow 32 bits.
    if torch.device(DEVICE).type != "cuda":
        pytest.skip("large tensors are for the GPU")
    T, N = 3, (1 << 30) + 8
    free, _ = torch.cuda.mem_get_info()
    if free < 4 * T * N * 2:
        pytest.skip("not enough device memory")
    x = torch.empty((T, N), dtype=torch.float16, device=DEVICE)
    tail = random_input((T, 4096), torch.float16)
    x[:, -4096:] = tail
    x[:, :-4096] = 0.5
    with torch.no_grad():
        s, v = lif_multistep(x, backend=BACKEND, v_threshold=0.6)
        s_ref, v_ref = lif_multistep(tail, backend="torch", v_threshold=0.6)
    assert torch.equal(s[:, -4096:], s_ref)
    assert torch.equal(v[-4096:], v_ref)
    del s, v, x
    torch.cuda.empty_cache()


# --- the recomputing backward (issue 15) ----------------------------------------------------
# With a gradient needed and T <= the device's recompute_max_steps(dtype), forward saves x
# and backward re-runs the forward recurrence from it (lif_forward_x / lif_backward_x, and
# the plif_ ones); beyond, the saved-distance path runs.

def _max_steps(dtype) -> int:
    from tks_kernels.ops.lif.cpu import RECOMPUTE_MAX_STEPS
    fn = RECOMPUTE_MAX_STEPS.get(torch.device(DEVICE).type)
    return fn(dtype) if fn is not None else 0


class _RecordOps(TorchDispatchMode):
    """Names of the tks_kernels ops dispatched."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "tks_kernels":
            self.names.append(func._opname)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_recompute_within_its_steps_and_saved_distance_beyond(dtype):
    T = _max_steps(dtype)
    assert T >= 4, f"the {DEVICE} backend has no recomputing backward for {dtype}"
    for steps, forward, backward in ((T, "lif_forward_x", "lif_backward_x"), (T + 1, "lif_forward", "lif_backward")):
        if steps > 64:
            continue  # the CPU standing in: its limit is thousands of steps
        x = random_input((steps, 3, 257), dtype).requires_grad_()
        with _RecordOps() as rec:
            s, v = lif_multistep(x, backend=BACKEND, tau=3.0)
            (s.sum() + v.sum()).backward()
        assert rec.names == [forward, backward], rec.names
        assert _saved_bytes(lambda: lif_multistep(x, backend=BACKEND)) == x.nbytes
        # Against the reference at the limit and beyond it.
        assert_matches_reference(random_input((steps, 2, 129), dtype), random_input((2, 129), dtype, seed=3),
                                 tau=3.0, v_reset=None if steps % 2 else -0.25)


RECOMPUTE_OPTIONS = [
    dict(surrogate=s, soft=soft, decay_input=d, detach=dr, fire_at_threshold=f, tau=tau)
    for (s, (soft, tau)), d, dr, f in itertools.product(
        itertools.product(range(len(SURROGATES)), ((True, 2.0), (False, 3.0), (False, 1.7))), (True, False),
        (True, False), (True, False))
]


def _op_args(o):
    return (o["decay_input"], 0.6, 0.0 if o["soft"] else -0.2, o["soft"], o["surrogate"], 2.5, o["detach"],
            o["fire_at_threshold"])


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_recompute_equals_saved_distance_backward(dtype):
    # fp32/fp64: d is saved exactly, so both backwards give the same bits; fp16/bf16: the
    # recomputing one sees the unrounded d, within the gradient tolerance of the other.
    T = min(_max_steps(dtype), 8)
    x = random_input((T, 1030), dtype, offset=0.5)
    v0 = random_input((1030,), dtype, seed=2)
    x[:, :7] = 0.6  # ties with the threshold: the firing rule matters
    gs, gvl, gvs = (random_input(t.shape, dtype, seed=i) for i, t in enumerate((x, v0, x), start=4))
    for o in RECOMPUTE_OPTIONS:
        a = _op_args(o)
        tau = o["tau"]
        s, _, _, d = torch.ops.tks_kernels.lif_forward(x, v0, tau, a[0], a[1], a[2], a[3], a[4], a[5], a[6], True,
                                                       True, a[7])
        s_x, _, _ = torch.ops.tks_kernels.lif_forward_x(x, v0, tau, a[0], a[1], a[2], a[3], a[4], a[5], a[6], True,
                                                        a[7])
        assert torch.equal(s, s_x), o
        saved = torch.ops.tks_kernels.lif_backward(gs, gvl, gvs, d, tau, *a)
        recomputed = torch.ops.tks_kernels.lif_backward_x(gs, gvl, gvs, x, v0, tau, *a)
        for name, p, q in zip(("grad_x", "grad_v_init"), recomputed, saved):
            if dtype in (torch.float32, torch.float64):
                assert torch.equal(p, q), f"{name} {o}"
            else:
                assert rel_err(p, q) <= GRAD_TOL[dtype], f"{name} {rel_err(p, q):.3g} {o}"


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_plif_recompute_equals_saved_backward(dtype):
    # PLIF saves h in fp32/fp64: both backwards give the same bits, dL/dk included (the same
    # per-thread order of the sum and the same fixed tree over blocks).
    T = min(_max_steps(dtype), 8)
    x = random_input((T, 2 * 1031), dtype, offset=0.5)
    v0 = random_input((2 * 1031,), dtype, seed=2)
    gs, gvl, gvs = (random_input(t.shape, dtype, seed=i) for i, t in enumerate((x, v0, x), start=4))
    importlib.import_module(f"tks_kernels.ops.plif.{BACKEND}")  # defines and registers the plif ops
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    for o in RECOMPUTE_OPTIONS[::3]:
        a = _op_args(o)
        k = torch.tensor(1.0 / o["tau"], dtype=cdt, device=DEVICE)
        s, _, _, saved = torch.ops.tks_kernels.plif_forward(x, v0, k, a[0], a[1], a[2], a[3], a[4], a[5], a[6], True,
                                                            False, a[7])
        s_x, _, _ = torch.ops.tks_kernels.plif_forward_x(x, v0, k, a[0], a[1], a[2], a[3], a[4], a[5], a[6], False,
                                                         a[7])
        assert torch.equal(s, s_x), o
        want = torch.ops.tks_kernels.plif_backward(gs, gvl, gvs, saved, v0, k, *a)
        got = torch.ops.tks_kernels.plif_backward_x(gs, gvl, gvs, x, v0, k, *a)
        for name, p, q in zip(("grad_x", "grad_v_init", "grad_k"), got, want):
            if dtype in (torch.float32, torch.float64):
                assert torch.equal(p, q), f"{name} {o}"
            else:
                assert rel_err(p, q) <= 4 * GRAD_TOL[dtype], f"{name} {rel_err(p, q):.3g} {o}"
        # Deterministic: a second run gives the same dL/dk.
        again = torch.ops.tks_kernels.plif_backward_x(gs, gvl, gvs, x, v0, k, *a)
        assert torch.equal(again[2], got[2])


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_plif_recompute_matches_reference(dtype):
    from tks_kernels.ops import plif as plif_ops
    T = _max_steps(dtype)
    if T > 64:
        T = 8
    x0 = random_input((T, 3, 515), dtype)
    v00 = random_input((3, 515), dtype, seed=2)
    results = {}
    for backend in (BACKEND, "torch"):
        x = x0.clone().requires_grad_()
        v0 = v00.clone().requires_grad_()
        w = torch.tensor(0.3, device=DEVICE, requires_grad=True)
        cfg = plif_ops.make_config(v_reset=None, decay_input=True)
        s, v = plif_ops.plif_multistep(x, v0, w, cfg, backend=backend)
        loss = (s * x0).sum() + v.float().sum()
        results[backend] = (s, *torch.autograd.grad(loss, (x, v0, w)))
    got, ref = results[BACKEND], results["torch"]
    assert torch.equal(got[0], ref[0])
    tol = {torch.float32: 1e-4, torch.float64: 1e-9}.get(dtype, 8 * GRAD_TOL.get(dtype, 0.0))
    for name, a, b in zip(("grad_x", "grad_v_init", "grad_w"), got[1:], ref[1:]):
        assert rel_err(a, b) <= tol, f"{name}: {rel_err(a, b):.3g}"


# --- the recomputing backward in chunks, and its flag sets (issue 15) ------------------------
# Up to 32 steps the CUDA backward recomputes (chunks of 8: T = 9, 16, 17 run two or three
# chunks with a short first one, 32 four), at 33 the saved-distance path runs (fp64:
# chunks of 4, up to 16 steps; 17 and beyond take the saved path). The
# backward kernels have instances with the flags as constants for SpikingJelly's defaults
# and the TKS paper's neuron (vector path, no grad_v_seq); every other combination runs
# the general instance: FLAG_CASES takes both of each.

STEPS_ACROSS_LIMITS = [1, 4, 5, 8, 9, 16, 17, 32, 33]
FLAG_CASES = [
    # (soft, decay_input, detach, fire_at_threshold, grad_v_seq given)
    (False, True, False, True, False),   # SpikingJelly's defaults: the fixed instance
    (False, True, True, False, False),   # the TKS paper's neuron: the fixed instance
    (False, True, False, True, True),    # with grad_v_seq: the general one
    (True, True, False, True, False),    # soft reset: general
    (False, False, True, True, False),   # general
    (True, False, False, False, True),   # general
]


def _flag_args(case, surrogate):
    soft, di, detach, at, _ = case
    return (di, 0.6, 0.0 if soft else -0.2, soft, surrogate, 2.5, detach, at)


def _chunk_inputs(T, N, dtype):
    x = random_input((T, N), dtype, offset=0.5)
    x[:, :7] = 0.6  # ties with the threshold: the firing rule matters
    v0 = random_input((N,), dtype, seed=2)
    gs, gvl, gvs = (random_input(t.shape, dtype, seed=i) for i, t in enumerate((x, v0, x), start=4))
    return x, v0, gs, gvl, gvs


def _cpu(t):
    return None if t is None else t.cpu()


@pytest.mark.parametrize("T", STEPS_ACROSS_LIMITS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_recompute_in_chunks_equals_saved_and_cpu(T, dtype):
    # Within the limit: the recomputing backward equals the saved-distance one bit for bit
    # in fp32/fp64 (to the gradient tolerance in 16-bit, where d is saved rounded) and the
    # CPU kernels' recomputing backward to the tolerance; beyond it the C API refuses it.
    # N = 1032: the vector path (4 | N); 517: the strided one.
    limit = _max_steps(dtype)
    tau = 3.0 if T % 2 else 2.0
    for N in (1032, 517):
        x, v0, gs, gvl, gvs_all = _chunk_inputs(T, N, dtype)
        for i, case in enumerate(FLAG_CASES):
            gvs = gvs_all if case[4] else None
            a = _flag_args(case, (i + T) % len(SURROGATES))
            s, _, _, d = torch.ops.tks_kernels.lif_forward(x, v0, tau, *a[:7], True, False, a[7])
            if T > limit:
                with pytest.raises(RuntimeError, match=f"got {T}"):
                    torch.ops.tks_kernels.lif_backward_x(gs, gvl, gvs, x, v0, tau, *a)
                continue
            s_x, _, _ = torch.ops.tks_kernels.lif_forward_x(x, v0, tau, *a[:7], False, a[7])
            assert torch.equal(s, s_x), case
            saved = torch.ops.tks_kernels.lif_backward(gs, gvl, gvs, d, tau, *a)
            got = torch.ops.tks_kernels.lif_backward_x(gs, gvl, gvs, x, v0, tau, *a)
            cpu = torch.ops.tks_kernels.lif_backward_x(gs.cpu(), gvl.cpu(), _cpu(gvs), x.cpu(), v0.cpu(), tau, *a)
            for name, p, q, c in zip(("grad_x", "grad_v_init"), got, saved, cpu):
                if dtype in (torch.float32, torch.float64):
                    assert torch.equal(p, q), f"{name} T={T} N={N} {case}"
                else:
                    assert rel_err(p, q) <= GRAD_TOL[dtype], f"{name} {rel_err(p, q):.3g} T={T} N={N} {case}"
                assert rel_err(p.cpu(), c) <= GRAD_TOL[dtype], f"{name} vs CPU {rel_err(p.cpu(), c):.3g} T={T} {case}"


@pytest.mark.parametrize("T", STEPS_ACROSS_LIMITS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_backward_spikes_equal_forward(T, dtype):
    # detach_reset, hard reset, dL/ds = 0, dL/dv_seq = dL/dv_last = 1: dL/dh_t =
    # (dL/dv_t + 1) * (1 - s_t) with dL/dv_t >= 0, so grad_x_t is 0 exactly where the
    # backward's s_t is 1. Its spikes, read off grad_x, must equal the forward's at every
    # T (the recomputing path up to its limit, the saved distance beyond), ties included.
    x0 = random_input((T, 1032), dtype, offset=0.5)
    x0[:, :9] = 0.6
    for at in (True, False):
        x = x0.clone().requires_grad_()
        s, v, vs = lif_multistep(x, backend=BACKEND, return_v_seq=True, tau=2.0, v_threshold=0.6, v_reset=-0.2,
                                 detach_reset=True, fire_at_threshold=at)
        (v.float().sum() + vs.float().sum()).backward()
        assert torch.equal((x.grad == 0).to(dtype), s), f"T={T} fire_at_threshold={at}"
        s_ref, _ = lif_multistep(x0, backend="torch", tau=2.0, v_threshold=0.6, v_reset=-0.2, fire_at_threshold=at)
        assert torch.equal(s, s_ref)


def _grads_without_v_seq(x, v_init, backend, **opts):
    """Spikes and the gradients of x and v_init of a loss on spikes and v_last only (no
    grad_v_seq: the backward's fixed flag sets can run)."""
    x = x.detach().clone().requires_grad_()
    v0 = None if v_init is None else v_init.detach().clone().requires_grad_()
    s, v = lif_multistep(x, v0, backend=backend, **opts)
    g = torch.Generator().manual_seed(1)
    ws, wv = (torch.randn(t.shape, generator=g).to(device=t.device, dtype=t.dtype) for t in (s, v))
    grads = torch.autograd.grad((s * ws).sum() + (v * wv).sum(), (x,) if v0 is None else (x, v0))
    return (s, *grads)


@pytest.mark.parametrize("T", [1, 5, 8, 9, 17, 32])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_recompute_in_chunks_matches_reference(T, dtype):
    # Through autograd (lif_forward_x / lif_backward_x): SpikingJelly's defaults and the
    # paper's neuron without v_seq (the fixed flag sets on the vector path, N = 1032), and
    # with v_seq and a general combination (assert_matches_reference asks for v_seq).
    x, v0 = random_input((T, 2, 516), dtype), random_input((2, 516), dtype, seed=3)
    configs = [(v0, dict(tau=2.0, v_threshold=0.7)),
               (None, dict(tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True, surrogate="piecewise_quadratic",
                           alpha=2.0, fire_at_threshold=False))]
    for v_init, opts in configs:
        got, ref = _grads_without_v_seq(x, v_init, BACKEND, **opts), _grads_without_v_seq(x, v_init, "torch", **opts)
        assert torch.equal(got[0], ref[0]), f"spikes T={T} {opts}"
        for a, b in zip(got[1:], ref[1:]):
            assert rel_err(a, b) <= GRAD_TOL[dtype], f"{rel_err(a, b):.3g} T={T} {opts}"
        assert_matches_reference(x, v_init, **opts)
    assert_matches_reference(x, v0, tau=3.0, v_reset=None, decay_input=False, surrogate="atan")


@pytest.mark.parametrize("T", STEPS_ACROSS_LIMITS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_plif_recompute_in_chunks(T, dtype):
    # PLIF: the recomputing backward equals the saved-value one bit for bit in fp32/fp64,
    # dL/dk included (the same per-thread order of the sum, the same fixed tree over
    # blocks), the CPU kernels to the tolerance, and dL/dk is the same on a second run.
    importlib.import_module(f"tks_kernels.ops.plif.{BACKEND}")  # defines and registers the plif ops
    limit = _max_steps(dtype)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    for N in (2 * 1032, 517):
        x, v0, gs, gvl, gvs_all = _chunk_inputs(T, N, dtype)
        for i, case in enumerate(FLAG_CASES[::2] + FLAG_CASES[1:2]):
            gvs = gvs_all if case[4] else None
            a = _flag_args(case, (2 * i + T) % len(SURROGATES))
            k = torch.tensor(1.0 / (2.0 + i), dtype=cdt, device=DEVICE)
            s, _, _, saved = torch.ops.tks_kernels.plif_forward(x, v0, k, *a[:7], True, False, a[7])
            if T > limit:
                with pytest.raises(RuntimeError, match=f"got {T}"):
                    torch.ops.tks_kernels.plif_backward_x(gs, gvl, gvs, x, v0, k, *a)
                continue
            s_x, _, _ = torch.ops.tks_kernels.plif_forward_x(x, v0, k, *a[:7], False, a[7])
            assert torch.equal(s, s_x), case
            want = torch.ops.tks_kernels.plif_backward(gs, gvl, gvs, saved, v0, k, *a)
            got = torch.ops.tks_kernels.plif_backward_x(gs, gvl, gvs, x, v0, k, *a)
            cpu = torch.ops.tks_kernels.plif_backward_x(gs.cpu(), gvl.cpu(), _cpu(gvs), x.cpu(), v0.cpu(), k.cpu(), *a)
            for name, p, q, c in zip(("grad_x", "grad_v_init", "grad_k"), got, want, cpu):
                if dtype in (torch.float32, torch.float64):
                    assert torch.equal(p, q), f"{name} T={T} N={N} {case}"
                else:
                    assert rel_err(p, q) <= 4 * GRAD_TOL[dtype], f"{name} {rel_err(p, q):.3g} T={T} {case}"
                tol = 1e-4 if name == "grad_k" and dtype == torch.float32 else 4 * GRAD_TOL[dtype]
                assert rel_err(p.cpu(), c) <= tol, f"{name} vs CPU {rel_err(p.cpu(), c):.3g} T={T} {case}"
            again = torch.ops.tks_kernels.plif_backward_x(gs, gvl, gvs, x, v0, k, *a)
            assert torch.equal(again[2], got[2]), "dL/dk differs between two runs"
