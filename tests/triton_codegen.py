"""Compile the Triton kernels for an NVIDIA GPU without one, and measure the generated code.

Run as a script (by tests/test_codegen_triton.py, in a process without TRITON_INTERPRET):
the real host code of every Triton op (``lif_forward_triton``, ``plif_backward_triton``,
``tks_loss_triton``, ...) is called on CPU tensors with the kernel launches intercepted;
each launch is specialised exactly as Triton's JIT would (its own binder: the same
constexprs, 16-byte alignment attributes and options, e.g. ``enable_fp_fusion=False``)
and compiled for the target with ``triton.compile``. Triton's cache (``TRITON_CACHE_DIR``,
build/triton-cache by default) makes a second run fast.

Per variant it reports, as JSON on stdout: registers, stack and local memory (spills)
from ``cuobjdump -res-usage``; global loads/stores by width from the PTX and the SASS;
divisions (``div.rn`` vs ``div.full``/``div.approx``), FMAs and flush-to-zero forms in
the PTX.

    python tests/triton_codegen.py [--arch 90] [--quick]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("tests/triton_codegen.py compiles the kernels: run it without TRITON_INTERPRET")
os.environ.setdefault("TRITON_CACHE_DIR", str(ROOT / "build" / "triton-cache"))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import triton  # noqa: E402

from tks_kernels.ops.bn_lif import triton as bn_lif_triton  # noqa: E402
from tks_kernels.ops.lif import triton as lif_triton  # noqa: E402
from tks_kernels.ops.plif import triton as plif_triton  # noqa: E402
from tks_kernels.ops.tks import triton as tks_triton  # noqa: E402


def _compile_api():
    """(GPUTarget, ASTSource, make_backend, create_function_from_signature) of this
    Triton, or a SystemExit naming what is missing."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource, make_backend
        from triton.runtime.jit import create_function_from_signature
    except ImportError as e:  # pragma: no cover - depends on the Triton version
        sys.exit(f"SKIP: this Triton ({triton.__version__}) lacks the compile API used here: {e}")
    return GPUTarget, ASTSource, make_backend, create_function_from_signature


def _tool(name: str) -> str:
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(bundled) if bundled.exists() else name


# ----------------------------------------------------------------------------- launches

class Recorder:
    """Replaces each kernel's ``run`` so a launch records its arguments instead."""

    def __init__(self, kernels):
        self.launches: List[tuple] = []
        for k in kernels:
            k.run = self._run_for(k)

    def _run_for(self, kernel):
        def run(*args, grid, warmup, **kwargs):
            self.launches.append((kernel, args, kwargs, self.label))
        return run

    label = ""


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
# N = 4096: the aligned (N % 16 == 0) kernels, whose accesses must be 16 bytes wide;
# N = 37: the unaligned ones (only compiled and checked for spills).
SIZES = {"aligned": 4096, "unaligned": 37}


def _lif_calls(quick: bool):
    """(label, thunk) for the LIF ops: a base configuration in every dtype and alignment;
    each option flipped from it for fp32 aligned (forward and backward, every surrogate)
    and bf16 aligned (backward: atan, piecewise_quadratic, tau=3). ``bwd`` is the
    saved-distance backward, ``bwdx`` the recomputing one (T = 8: one full chunk). The
    same for PLIF; TKS in four configurations."""
    base_f = dict(decay_input=True, soft_reset=False, v_init=True, save=True, v_seq=False, tau=2.0)
    flips_f = [dict(decay_input=False), dict(soft_reset=True), dict(v_init=False), dict(save=False),
               dict(v_seq=True), dict(tau=3.0)]
    base_b = dict(decay_input=True, soft_reset=False, surrogate=0, gs=True, gl=True, gq=False, sg=False, tau=2.0)
    flips_b = [dict(decay_input=False), dict(soft_reset=True), dict(gq=True), dict(gs=False), dict(gl=False),
               dict(sg=True), dict(tau=3.0)]
    flips_b += [dict(surrogate=s) for s in range(1, 7)]
    base_x = dict(decay_input=True, soft_reset=False, surrogate=0, gs=True, gl=True, gq=False, v_init=True, tau=2.0)
    flips_x = [dict(decay_input=False), dict(soft_reset=True), dict(gq=True), dict(gs=False), dict(gl=False),
               dict(v_init=False), dict(tau=3.0)] + [dict(surrogate=s) for s in range(1, 7)]
    for dname, size in itertools.product(DTYPES, SIZES):
        full = size == "aligned" and dname in ("fp32", "bf16") and not quick
        for o in [base_f] + ([{**base_f, **f} for f in flips_f if dname == "fp32" or "tau" in f] if full else []):
            yield f"lif fwd {dname} {size} {_opts(o, base_f)}", _lif_fwd(DTYPES[dname], SIZES[size], o)
        # every surrogate in fp32; sigmoid (the base), atan and piecewise_quadratic in bf16
        for base, flips, kind, fn in ((base_b, flips_b, "bwd", _lif_bwd), (base_x, flips_x, "bwdx", _lif_bwdx)):
            chosen = [f for f in flips if dname == "fp32" or f.get("surrogate") in (1, 2) or "tau" in f]
            for o in [base] + ([{**base, **f} for f in chosen] if full else []):
                yield f"lif {kind} {dname} {size} {_opts(o, base)}", fn(DTYPES[dname], SIZES[size], o)


def _plif_calls(quick: bool):
    base_f = dict(decay_input=True, soft_reset=False, v_init=True, save=True, v_seq=False)
    flips_f = [dict(decay_input=False), dict(soft_reset=True), dict(v_init=False), dict(save=False),
               dict(v_seq=True)]
    base_b = dict(decay_input=True, soft_reset=False, surrogate=0, gs=True, gl=True, gq=False, v_init=True, sg=False)
    flips_b = [dict(decay_input=False), dict(soft_reset=True), dict(gq=True), dict(gs=False), dict(gl=False),
               dict(v_init=False), dict(surrogate=6), dict(sg=True)]
    base_x = dict(decay_input=True, soft_reset=False, surrogate=0, gs=True, gl=True, gq=False, v_init=True)
    flips_x = [dict(decay_input=False), dict(soft_reset=True), dict(gq=True), dict(v_init=False),
               dict(surrogate=1), dict(surrogate=2), dict(surrogate=6)]
    for dname, size in itertools.product(DTYPES, SIZES):
        full = size == "aligned" and dname in ("fp32", "bf16") and not quick
        for o in [base_f] + ([{**base_f, **f} for f in flips_f] if full and dname == "fp32" else []):
            yield f"plif fwd {dname} {size} {_opts(o, base_f)}", _plif_fwd(DTYPES[dname], SIZES[size], o)
        for o in [base_b] + ([{**base_b, **f} for f in flips_b] if full and dname == "fp32" else []):
            yield f"plif bwd {dname} {size} {_opts(o, base_b)}", _plif_bwd(DTYPES[dname], SIZES[size], o)
        for o in [base_x] + ([{**base_x, **f} for f in flips_x] if full else []):
            yield f"plif bwdx {dname} {size} {_opts(o, base_x)}", _plif_bwdx(DTYPES[dname], SIZES[size], o)


def _tks_calls(quick: bool):
    for dname, C, labels, grad in [("fp32", 100, True, True), ("bf16", 1000, False, True), ("fp32", 10, True, False),
                                   ("fp64", 100, True, True)][: 1 if quick else None]:
        yield f"tks {dname} C={C} {'labels' if labels else 'probs'}{' grad' if grad else ''}", \
            _tks(DTYPES[dname], C, labels, grad)


def _opts(o, base) -> str:
    diff = {k: v for k, v in o.items() if base[k] != v}
    return ",".join(f"{k}={v}" for k, v in diff.items()) or "base"


def _lif_fwd(dtype, N, o):
    def call():
        x = torch.zeros(4, N, dtype=dtype)
        v0 = torch.zeros(N, dtype=dtype) if o["v_init"] else None
        lif_triton.lif_forward_triton(x, v0, o["tau"], o["decay_input"], 1.0, 0.0, o["soft_reset"], 0, 4.0, False,
                                      o["save"], o["v_seq"], True)
    return call


def _lif_bwd(dtype, N, o):
    def call():
        d = torch.zeros(4, N, dtype=dtype)
        g = torch.zeros_like(d)
        lif_triton.lif_backward_triton(g if o["gs"] else None, g[0] if o["gl"] else None, g if o["gq"] else None,
                                       d, o["tau"], o["decay_input"], 1.0, 0.0, o["soft_reset"], o["surrogate"], 4.0,
                                       False, True, _sg(d) if o["sg"] else None)
    return call


# T of the recomputing backward's compiles: one full chunk of the most steps
X_STEPS = lif_triton.RECOMPUTE_CHUNK


def _lif_bwdx(dtype, N, o):
    def call():
        x = torch.zeros(X_STEPS, N, dtype=dtype)
        g = torch.zeros_like(x)
        lif_triton.lif_backward_x_triton(g if o["gs"] else None, g[0] if o["gl"] else None, g if o["gq"] else None,
                                         x, g[0] if o["v_init"] else None, o["tau"], o["decay_input"], 1.0, 0.0,
                                         o["soft_reset"], o["surrogate"], 4.0, False, True)
    return call


def _sg(d):
    """A g' tensor for the any-surrogate backward: [T, N] in the compute dtype."""
    return torch.zeros(d.shape, dtype=torch.float64 if d.dtype == torch.float64 else torch.float32)


def _k(dtype):
    return torch.tensor(0.5, dtype=torch.float64 if dtype == torch.float64 else torch.float32)


def _plif_fwd(dtype, N, o):
    def call():
        x = torch.zeros(4, N, dtype=dtype)
        v0 = torch.zeros(N, dtype=dtype) if o["v_init"] else None
        plif_triton.plif_forward_triton(x, v0, _k(dtype), o["decay_input"], 1.0, 0.0, o["soft_reset"], 0, 4.0, False,
                                        o["save"], o["v_seq"], True)
    return call


def _plif_bwd(dtype, N, o):
    def call():
        q = torch.zeros(4, N, dtype=dtype)
        g = torch.zeros_like(q)
        plif_triton.plif_backward_triton(g if o["gs"] else None, g[0] if o["gl"] else None, g if o["gq"] else None,
                                         q, g[0] if o["v_init"] else None, _k(dtype), o["decay_input"], 1.0, 0.0,
                                         o["soft_reset"], o["surrogate"], 4.0, False, True,
                                         _sg(q) if o["sg"] else None)
    return call


def _plif_bwdx(dtype, N, o):
    def call():
        x = torch.zeros(X_STEPS, N, dtype=dtype)
        g = torch.zeros_like(x)
        plif_triton.plif_backward_x_triton(g if o["gs"] else None, g[0] if o["gl"] else None,
                                           g if o["gq"] else None, x, g[0] if o["v_init"] else None, _k(dtype),
                                           o["decay_input"], 1.0, 0.0, o["soft_reset"], o["surrogate"], 4.0, False,
                                           True)
    return call


def _tks(dtype, C, labels, grad):
    def call():
        logits = torch.zeros(4, 8, C, dtype=dtype)
        target = torch.zeros(8, dtype=torch.int64) if labels else torch.zeros(8, C)
        tks_triton.tks_loss_triton(logits, target, 0.5, 3.0, False, False, 0.0, grad)
    return call


# Steps of the fused BN + LIF op: NCHW with whole rows per tile (32x32), NCHW with many
# rows per tile (4x4), channels_last (C = 64); unaligned: 7x7 rows, 10 channels.
BN_LIF_SHAPES = {"nchw": ((4, 8, 16, 32, 32), False), "nchw4x4": ((4, 8, 64, 4, 4), False),
                 "cl": ((4, 8, 64, 8, 8), True), "nchw7x7 unaligned": ((4, 8, 16, 7, 7), False),
                 "cl10 unaligned": ((4, 8, 10, 8, 8), True)}


def _bn_lif_calls(quick: bool):
    """(label, thunk, launches) for the fused BN + LIF op: statistics, forward and
    backward per layout and dtype; for fp32 NCHW each option flipped from the base
    (residual, v_init, grad_v_last, batch statistics, tau = 3: the division) and every
    surrogate. The same for the parametric LIF (``bn_plif``: LEARN_TAU), with the
    charge and reset flips and, in bf16, its base."""
    base_f = dict(decay_input=True, soft_reset=False, res=True, v_init=True, tau=2.0, plif=False)
    flips_f = [dict(decay_input=False), dict(soft_reset=True), dict(res=False), dict(v_init=False), dict(tau=3.0)]
    base_b = dict(decay_input=True, soft_reset=False, surrogate=0, res=True, v_init=True, gl=True, batch_stats=True,
                  tau=2.0, plif=False)
    flips_b = [dict(decay_input=False), dict(soft_reset=True), dict(res=False), dict(v_init=False), dict(gl=False),
               dict(batch_stats=False), dict(tau=3.0)] + [dict(surrogate=k) for k in range(1, 7)]
    flips_p = [dict(decay_input=False), dict(soft_reset=True), dict(v_init=False)]
    for dname in ("fp32", "bf16", "fp16", "fp64"):
        for lname, (shape, cl) in BN_LIF_SHAPES.items():
            if (quick and lname != "nchw") or (dname in ("fp16", "fp64") and lname not in ("nchw", "cl10 unaligned")):
                continue
            full = not quick and dname == "fp32" and lname == "nchw"
            yield f"bn_lif stats {dname} {lname}", _bn_stats(DTYPES[dname], shape, cl), 2
            for o in [base_f] + ([{**base_f, **f} for f in flips_f] if full else []):
                yield f"bn_lif fwd {dname} {lname} {_opts(o, base_f)}", _bn_fwd(DTYPES[dname], shape, cl, o), 1
            for o in [base_b] + ([{**base_b, **f} for f in flips_b] if full else []):
                yield (f"bn_lif bwd {dname} {lname} {_opts(o, base_b)}", _bn_bwd(DTYPES[dname], shape, cl, o),
                       3 if o["batch_stats"] else 2)
            if dname in ("fp32", "bf16") and lname in ("nchw", "cl", "nchw7x7 unaligned"):
                pf, pb = {**base_f, "plif": True}, {**base_b, "plif": True}
                for o in [pf] + ([{**pf, **f} for f in flips_p] if full else []):
                    yield f"bn_plif fwd {dname} {lname} {_opts(o, pf)}", _bn_fwd(DTYPES[dname], shape, cl, o), 1
                for o in [pb] + ([{**pb, **f} for f in flips_p] if full else []):
                    yield f"bn_plif bwd {dname} {lname} {_opts(o, pb)}", _bn_bwd(DTYPES[dname], shape, cl, o), 3


def _bn_tensor(dtype, shape, cl):
    y = torch.zeros(shape, dtype=dtype)
    if cl:
        y = y.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    return y


def _bn_vec(dtype, C):
    return torch.zeros(C, dtype=torch.float64 if dtype == torch.float64 else torch.float32)


def _bn_stats(dtype, shape, cl):
    def call():
        bn_lif_triton.bn_stats_triton(_bn_tensor(dtype, shape, cl))
    return call


def _bn_fwd(dtype, shape, cl, o):
    def call():
        y = _bn_tensor(dtype, shape, cl)
        v = _bn_vec(dtype, shape[2])
        # the PLIF op takes the decay k (a 0-dim tensor) where the LIF op takes tau
        op, decay = ((bn_lif_triton.bn_plif_forward_triton, torch.tensor(0.5, dtype=v.dtype)) if o["plif"]
                     else (bn_lif_triton.bn_lif_forward_triton, o["tau"]))
        op(y, y if o["res"] else None, v, v, y[0] if o["v_init"] else None, decay, o["decay_input"], 1.0, 0.0,
           o["soft_reset"], True)
    return call


def _bn_bwd(dtype, shape, cl, o):
    def call():
        y = _bn_tensor(dtype, shape, cl)
        v = _bn_vec(dtype, shape[2])
        op, decay = ((bn_lif_triton.bn_plif_backward_triton, torch.tensor(0.5, dtype=v.dtype)) if o["plif"]
                     else (bn_lif_triton.bn_lif_backward_triton, o["tau"]))
        op(y, y[0] if o["gl"] else None, y, y if o["res"] else None, v, v, v, v, y[0] if o["v_init"] else None, decay,
           o["decay_input"], 1.0, 0.0, o["soft_reset"], False, True, o["surrogate"], 4.0, o["batch_stats"])
    return call


def record(quick: bool):
    # CPU tensors stand in for CUDA ones: only their dtype, shape and alignment matter
    for mod, name in ((lif_triton, "check_device"), (tks_triton, "_check_device"), (bn_lif_triton, "check_device")):
        setattr(mod, name, lambda t: None)
    rec = Recorder([lif_triton._forward_kernel, lif_triton._backward_kernel, lif_triton._backward_x_kernel,
                    tks_triton._tks_loss_kernel, bn_lif_triton._bn_stats_kernel, bn_lif_triton._combine_kernel,
                    bn_lif_triton._bn_lif_forward_kernel, bn_lif_triton._bn_lif_backward_kernel,
                    bn_lif_triton._bn_input_grad_kernel])
    for label, call in itertools.chain(_lif_calls(quick), _plif_calls(quick), _tks_calls(quick)):
        rec.label = label
        n = len(rec.launches)
        call()
        assert len(rec.launches) == n + 1, f"{label}: expected one launch, got {len(rec.launches) - n}"
    for label, call, launches in _bn_lif_calls(quick):
        rec.label = label
        n = len(rec.launches)
        call()
        assert len(rec.launches) == n + launches, f"{label}: expected {launches} launches, got {len(rec.launches) - n}"
    return rec.launches


# ----------------------------------------------------------------------------- measure

_PTX_GLOBAL = re.compile(r"\b(ld|st)\.global((?:\.[A-Za-z0-9_:]+)*)\s")
# one SASS instruction line of ``cuobjdump -sass``: "/*0a30*/  FADD R3, R2, R5 ;"
_SASS_INSTR = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+[^;]+;", re.M)
_SASS_GLOBAL = re.compile(r"\b(LDG|STG)\.E((?:\.[A-Z0-9_]+)*)")


def _ptx_width(mods: str) -> int:
    """Bytes of one PTX global access from its modifiers (.v4.b32 -> 16)."""
    vec = re.search(r"\.v(\d)", mods)
    bits = re.search(r"\.[bfsu](8|16|32|64)\b", mods)
    return (int(vec.group(1)) if vec else 1) * (int(bits.group(1)) // 8 if bits else 4)


def _sass_width(mods: str) -> int:
    m = re.search(r"\.(64|128|U8|S8|U16|S16)\b", mods)
    if not m:
        return 4
    return {"64": 8, "128": 16, "U8": 1, "S8": 1, "U16": 2, "S16": 2}[m.group(1)]


def measure(ck, workdir: Path) -> Dict:
    ptx = ck.asm["ptx"]
    cubin = workdir / f"{ck.metadata.name}.cubin"
    cubin.write_bytes(ck.asm["cubin"])
    usage = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    sass = subprocess.run([_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    ptx_acc = {"ld": {}, "st": {}}
    for op, mods in _PTX_GLOBAL.findall(ptx):
        w = _ptx_width(mods)
        ptx_acc[op][w] = ptx_acc[op].get(w, 0) + 1
    sass_acc = {"LDG": {}, "STG": {}}
    for op, mods in _SASS_GLOBAL.findall(sass):
        w = _sass_width(mods)
        sass_acc[op][w] = sass_acc[op].get(w, 0) + 1
    return {
        "regs": int(m.group(1)), "stack": int(m.group(2)), "local": int(m.group(4)),
        "ptx_ld": ptx_acc["ld"], "ptx_st": ptx_acc["st"], "sass_ldg": sass_acc["LDG"], "sass_stg": sass_acc["STG"],
        "div_rn_f32": len(re.findall(r"\bdiv\.rn\.f32\b", ptx)),
        "div_inexact": len(re.findall(r"\bdiv\.(?:full|approx)\.", ptx)),
        "fma": len(re.findall(r"\bfma\.", ptx)),
        "ftz": len(re.findall(r"\.ftz\b", ptx)),
        "sass_instrs": len(_SASS_INSTR.findall(sass)),
    }


def compile_all(launches, arch: int, shard=(0, 1)):
    GPUTarget, ASTSource, make_backend, create_function_from_signature = _compile_api()
    target = GPUTarget("cuda", arch, 128 if arch >= 90 else 64)
    backend = make_backend(target)
    results, seen = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kernel, args, kwargs, label) in enumerate(launches):
            if i % shard[1] != shard[0]:
                continue
            binder = create_function_from_signature(kernel.signature, kernel.params, backend)
            bound, spec, opts = binder(*args, **kwargs)
            options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, opts)
            key = (kernel.__name__, repr(sorted(signature.items())), repr(sorted(constexprs.items())),
                   repr(sorted(attrs.items())), repr(sorted(options.__dict__.items())))
            if key in seen:
                results.append({**seen[key], "label": label})
                continue
            ck = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                options=options.__dict__)
            info = measure(ck, Path(tmp))
            info.update(kernel=kernel.__name__, label=label, num_warps=options.num_warps,
                        enable_fp_fusion=options.enable_fp_fusion,
                        constexprs={str(kernel.arg_names[p[0]]): v for p, v in constexprs.items()})
            info["constexprs"] = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
                                  for k, v in info["constexprs"].items()}
            seen[key] = info
            results.append(info)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--quick", action="store_true", help="the base variant of each kernel and dtype only")
    ap.add_argument("--shard", default="0/1", help="I/N: compile every N-th launch from the I-th (parallel runs)")
    ap.add_argument("--match", default="", help="only the variants whose label matches this regular expression")
    args = ap.parse_args(argv)
    i, n = (int(v) for v in args.shard.split("/"))
    launches = [launch for launch in record(args.quick) if re.search(args.match, launch[3])]
    results = compile_all(launches, args.arch, (i, n))
    json.dump({"triton": triton.__version__, "arch": args.arch, "variants": results}, sys.stdout)


if __name__ == "__main__":
    main()
