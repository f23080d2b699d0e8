"""The native core (csrc/, tks_kernels/_native.py): a torch-free library bound with
ctypes. Its storage conversions against PyTorch's, bit for bit; the options the C
interface adds (strict firing rule, saturated 16-bit saved distance, external surrogate
derivative, soft-target gradient); threads; loading and its failure modes."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import tks_kernels
from tks_kernels import _native
from tks_kernels import functional as F
from tks_kernels.ops import lif as lif_ops
from tks_kernels.ops import plif as plif_ops
from tks_kernels.ops.lif import cpu as lif_cpu
from tks_kernels.ops.lif import reference as lif_ref
from tks_kernels.ops.plif import cpu as plif_cpu
from tks_kernels.ops.plif import reference as plif_ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CPU = tks_kernels.available_backends()["cpu"][0]
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="the native CPU library did not load")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd="/",
                          timeout=300)


# ---------------------------------------------------------------------------------- build


def test_csrc_includes_no_torch():
    bad = []
    for folder, _, files in os.walk(os.path.join(ROOT, "csrc")):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if re.match(r"\s*#\s*include\s*[<\"](torch|ATen|c10|caffe2|pybind11|Python\.h)", line):
                        bad.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert not bad, "torch headers in csrc/:\n" + "\n".join(bad)


@needs_cpu
@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf is not installed")
def test_library_does_not_link_torch():
    out = subprocess.run(["readelf", "-d", _native.cpu_lib._name], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", out)
    assert needed, out
    assert not [n for n in needed if re.search(r"torch|c10|python", n)], needed


def test_import_does_not_load_dynamo():
    r = _run("import sys, tks_kernels; print('torch._dynamo' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@needs_cpu
def test_one_openmp_runtime_in_the_process():
    # The library links libgomp by soname: inside a torch process it is torch's runtime
    # (one thread pool), not a second copy that would compete for the cores. (A fresh
    # process: other packages, scikit-learn for one, bring OpenMP runtimes of their own.)
    code = (
        "import re, torch, tks_kernels\n"
        "from tks_kernels import functional as F\n"
        "F.lif_multistep(torch.randn(4, 1 << 16), backend='cpu')\n"
        "maps = open('/proc/self/maps').read().splitlines()\n"
        "print(sorted({l.split()[-1] for l in maps if re.search(r'lib(g|i)?omp[^/]*\\.so', l)}))\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    runtimes = eval(r.stdout.strip())
    assert len(runtimes) == 1, runtimes


def test_missing_library_warns_and_says_why(tmp_path):
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import tks_kernels\n"
        "msgs = [str(x.message) for x in w if 'fused CPU kernels are unavailable' in str(x.message)]\n"
        "print(len(msgs)); print(msgs[0] if msgs else '')\n"
        "ok, why = tks_kernels.available_backends()['cpu']\n"
        "print(ok); print(why)\n"
        "import torch\n"
        "from tks_kernels import functional as F\n"
        "try:\n"
        "    F.lif_multistep(torch.zeros(2, 3), backend='cpu')\n"
        "except RuntimeError as e:\n"
        "    print('raised', e)\n"
        "s, v = F.lif_multistep(torch.ones(2, 3) * 3)\n"
        "print('auto', s.sum().item())\n"
    )
    r = _run(code, TKS_KERNELS_LIB_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "1", r.stdout  # warned exactly once
    assert "pip install" in lines[1] and str(tmp_path) in lines[1]
    assert lines[2] == "False" and "libtks_kernels was not found" in lines[3]
    assert any(line.startswith("raised backend='cpu' cannot run here") for line in lines)
    assert "auto 6.0" in lines  # the reference still runs


@needs_cpu
def test_c_errors_become_python_exceptions():
    x = torch.randn(3, 5)
    _, _, _, d = torch.ops.tks_kernels.lif_forward(x, None, 2.0, True, 1.0, 0.0, False, 0, 4.0, False, True, False)
    with pytest.raises(ValueError, match=r"surrogate id must be in \[0, 7\) or 100, got 99"):
        torch.ops.tks_kernels.lif_backward(torch.ones_like(d), None, None, d, 2.0, True, 1.0, 0.0, False, 99, 4.0,
                                           False)
    with pytest.raises(RuntimeError, match="x must be float32, float64, float16 or bfloat16"):
        torch.ops.tks_kernels.lif_forward(x.int(), None, 2.0, True, 1.0, 0.0, False, 0, 4.0, False, True, False)


# ---------------------------------------------------------------------------- conversions


def _convert(fn, values: torch.Tensor, to_16: bool) -> torch.Tensor:
    out = torch.empty(values.shape, dtype=torch.int16 if to_16 else torch.float32)
    _native.check(_native.cpu_lib, fn(values.data_ptr(), out.data_ptr(), values.numel(), int(to_16)))
    return out


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_to_float_is_exact_for_every_value(dtype):
    fn = _native.cpu_lib.tks_convert_f16 if dtype == torch.float16 else _native.cpu_lib.tks_convert_bf16
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    ours = _convert(fn, bits, to_16=False)
    theirs = bits.view(dtype).float()
    nan = theirs.isnan()
    assert torch.equal(ours.isnan(), nan)
    assert torch.equal(ours[~nan].view(torch.int32), theirs[~nan].view(torch.int32))


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float_to_16bit_rounds_as_pytorch(dtype):
    fn = _native.cpu_lib.tks_convert_f16 if dtype == torch.float16 else _native.cpu_lib.tks_convert_bf16
    g = torch.Generator().manual_seed(0)
    random_bits = torch.randint(-(1 << 31), 1 << 31, (1 << 21,), generator=g, dtype=torch.int64).to(torch.int32)
    # Every 16-bit value, the midpoints between neighbours (ties to even) and one ulp
    # either side of them, around the subnormal and overflow boundaries too.
    all16 = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype).float()
    all16 = all16[all16.isfinite()].sort().values.unique()
    mids = (all16[:-1].double() + all16[1:].double()) / 2
    near = torch.cat([mids, torch.nextafter(mids, torch.tensor(-float("inf"), dtype=torch.float64)),
                      torch.nextafter(mids, torch.tensor(float("inf"), dtype=torch.float64))]).float()
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 65504.0, 65519.99, 65520.0, 1e-8, -1e-8,
                             5.96e-8, 2.98e-8, 3.4e38, -3.4e38, 1.0e-40, 9.2e-41])
    values = torch.cat([random_bits.view(torch.float32), all16, near, specials])
    ours = _convert(fn, values, to_16=True)
    theirs = values.to(dtype).view(torch.int16)
    nan = values.isnan()
    assert torch.equal(ours[~nan], theirs[~nan])
    assert ours[nan].view(dtype).isnan().all()


# ------------------------------------------------------------------------ firing and saving


def _lif_case(dtype, at_threshold, backend, soft=False, plif=False):
    """Constant input that lands h exactly on the threshold at step 0 (h = x/tau = 1)."""
    x = torch.full((5, 3, 7), 2.0, dtype=dtype)
    x[:, 1] = torch.linspace(1.5, 2.5, 7, dtype=dtype)
    x = x.requires_grad_()
    if plif:
        cfg = plif_ops.make_config(True, 1.0, None if soft else 0.0, "atan", None, False, at_threshold)
        w = torch.zeros((), requires_grad=True)  # k = sigmoid(0) = 1/2 exactly
        k = plif_ops.decay_factor(w, dtype)
        mod = plif_ref if backend == "torch" else plif_cpu
        s, v = mod.plif_multistep(x, None, k, cfg)
        extra = (w,)
    else:
        cfg = lif_ops.make_config(2.0, True, 1.0, None if soft else 0.0, "atan", None, False, at_threshold)
        mod = lif_ref if backend == "torch" else lif_cpu
        s, v = mod.lif_multistep(x, None, cfg)
        extra = ()
    gs = torch.linspace(-1, 1, s.numel(), dtype=dtype).reshape(s.shape)
    grads = torch.autograd.grad((s * gs).sum() + v.float().sum(), (x,) + extra)
    return s, v, grads


@needs_cpu
@pytest.mark.parametrize("plif", [False, True])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("at_threshold", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fire_at_threshold_on_exact_ties(dtype, at_threshold, soft, plif):
    s, v, g = _lif_case(dtype, at_threshold, "cpu", soft, plif)
    s_ref, v_ref, g_ref = _lif_case(dtype, at_threshold, "torch", soft, plif)
    assert torch.equal(s, s_ref)
    # The tie decides step 0: it fires only under the >= rule.
    assert bool(s[0, 0, 0] == (1 if at_threshold else 0))
    torch.testing.assert_close(v, v_ref)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype in (torch.float16, torch.bfloat16) else {}
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b.to(a.dtype), **tol)


@needs_cpu
@pytest.mark.parametrize("at_threshold", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_saved_distance_saturates_instead_of_overflowing(dtype, at_threshold):
    big = torch.finfo(dtype).max
    # h - v_threshold goes past the dtype's largest finite value while x, v and the
    # outputs stay finite (and fp32 arithmetic does not overflow): float16 accumulates
    # over steps (decay_input=False); bfloat16's max is near float32's, so one step.
    steps = 4 if dtype == torch.float16 else 1
    x = torch.tensor([[0.9, -0.9, 0.5, -0.5, 0.0]], dtype=torch.float32).repeat(steps, 1) * big
    x = x.to(dtype).requires_grad_()
    # detach_reset: the gradient stays finite, so a NaN or inf can only come from the saved d.
    kw = dict(tau=2.0, decay_input=False, v_threshold=-0.5 * big, v_reset=None, surrogate="sigmoid",
              detach_reset=True, fire_at_threshold=at_threshold)
    s, v = F.lif_multistep(x, backend="cpu", **kw)
    s_ref, v_ref = F.lif_multistep(x, backend="torch", **kw)
    assert torch.equal(s, s_ref)
    (g,) = torch.autograd.grad(s.float().sum(), x)
    (g_ref,) = torch.autograd.grad(s_ref.float().sum(), x)
    assert g.isfinite().all(), g
    torch.testing.assert_close(g, g_ref)


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_saved_distance_keeps_a_positive_sign_for_the_strict_rule(dtype):
    # h - v_threshold = 2^-30 > 0: below the dtype's smallest subnormal for float16; the
    # strict rule fires, and backward must still see a positive distance.
    vth = 1.0
    x = torch.full((1, 8), 2.0 * (vth + 2.0 ** -30), dtype=torch.float32)
    saved_d = torch.ops.tks_kernels.lif_forward(x.to(dtype), None, 2.0, True, vth, 0.0, False, 0, 4.0, False, True,
                                                False, False)[3]
    h = x[0, 0].item() / 2
    if h > vth:  # representable in the input dtype: the tie did not collapse
        assert (saved_d > 0).all(), saved_d


# ------------------------------------------------------------------- external surrogate


@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("surrogate", lif_ops.SURROGATES)
def test_lif_external_surrogate_equals_built_in(dtype, surrogate):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(6, 4, 33, generator=g) * 1.5).to(dtype)
    v0 = torch.randn(4, 33, generator=g).to(dtype)
    cfg = lif_ops.make_config(1.7, False, 0.6, None, surrogate, None, True, False)
    spikes, v_last, v_seq, saved = lif_cpu.forward_saved(x, v0, cfg, True)
    gs = torch.randn(spikes.shape, generator=g).to(dtype)
    gvl = torch.randn(v_last.shape, generator=g).to(dtype)
    gvs = torch.randn(v_seq.shape, generator=g).to(dtype)
    d = lif_cpu.saved_distance(saved, cfg)
    sg = lif_ref.surrogate_grad(d, surrogate, cfg.alpha)
    ext = lif_cpu.backward_sg(gs, gvl, gvs, saved, sg, cfg)
    built_in = torch.ops.tks_kernels.lif_backward(gs, gvl, gvs, saved, cfg.tau, cfg.decay_input, cfg.v_threshold,
                                                  cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
                                                  cfg.detach_reset, cfg.fire_at_threshold)
    for a, b in zip(ext, built_in):
        tol = dict(rtol=2e-2, atol=2e-2) if dtype in (torch.float16, torch.bfloat16) else dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, b, **tol)


@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_plif_external_surrogate_equals_built_in(dtype):
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 3, 40, generator=g) * 1.5).to(dtype)
    v0 = torch.randn(3, 40, generator=g).to(dtype)
    k = torch.tensor(0.37, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    cfg = plif_ops.make_config(True, 0.8, -0.1, "erf", 1.3, False, True)
    spikes, v_last, _, saved = plif_cpu.forward_saved(x, v0, k, cfg, False)
    gs = torch.randn(spikes.shape, generator=g).to(dtype)
    d = plif_cpu.saved_distance(saved, cfg)
    sg = lif_ref.surrogate_grad(d, cfg.surrogate, cfg.alpha)
    ext = plif_cpu.backward_sg(gs, None, None, saved, v0, k, sg, cfg)
    built_in = torch.ops.tks_kernels.plif_backward(gs, None, None, saved, v0, k, cfg.decay_input, cfg.v_threshold,
                                                   cfg.v_rest, cfg.soft_reset, cfg.surrogate_id, cfg.alpha,
                                                   cfg.detach_reset, cfg.fire_at_threshold)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype in (torch.float16, torch.bfloat16) else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(ext, built_in):
        torch.testing.assert_close(a, b, **tol)


# ----------------------------------------------------------------------------- threads


@needs_cpu
def test_results_do_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3 * 4096 + 17, generator=g, requires_grad=True)
    w = torch.tensor(0.3, requires_grad=True)
    logits = torch.randn(4, 300, 10, generator=g, requires_grad=True)
    y = torch.randint(0, 10, (300,), generator=g)
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            s, v = F.lif_multistep(x, backend="cpu")
            p = plif_ops.plif_multistep(x, None, w, plif_ops.make_config(), backend="cpu")[0]
            loss = F.tks_loss(logits, y, lam=0.5, backend="cpu")
            grads = torch.autograd.grad(s.sum() + p.sum() + v.sum() + loss, (x, w, logits))
            results.append((s, v, p, loss) + grads)
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------- TKS target


@needs_cpu
@pytest.mark.parametrize("logits_grad", [True, False])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_tks_soft_target_gradient(dtype, label_smoothing, logits_grad):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 6, 5, generator=g).to(dtype).requires_grad_(logits_grad)
    target = torch.softmax(torch.randn(6, 5, generator=g), -1).to(dtype).requires_grad_()
    kw = dict(lam=0.4, temperature=2.0, label_smoothing=label_smoothing)
    inputs = (logits, target) if logits_grad else (target,)
    got = torch.autograd.grad(F.tks_loss(logits, target, backend="cpu", **kw), inputs)
    want = torch.autograd.grad(F.tks_loss(logits, target, backend="torch", **kw), inputs)
    tol = dict(rtol=2e-2, atol=2e-3) if dtype == torch.bfloat16 else {}
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


# ---------------------------------------------------------------------------- packaging


def test_version_license_and_typing_marker_in_one_place():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        pyproject = f.read()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "tks_kernels._version.__version__" }' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+", tks_kernels.__version__)
    assert 'license = { text = "Apache-2.0" }' in pyproject
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        assert "Apache License" in f.read(200)
    assert os.path.exists(os.path.join(os.path.dirname(tks_kernels.__file__), "py.typed"))
    # The build needs no torch: the native library does not include it.
    requires = re.search(r"requires = \[(.*?)\]", pyproject).group(1)
    assert "torch" not in requires


def test_tks_train_prints_the_backends():
    from tks_kernels._backends import backends_line

    line = backends_line("auto", "auto", torch.device("cpu"))
    assert line.startswith("backends: neurons: ")
    assert ("neurons: cpu" in line) == HAS_CPU
