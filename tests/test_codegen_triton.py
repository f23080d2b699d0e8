"""The Triton kernels compiled for an H100/H200 (sm_90) without a GPU, and what the
generated code would cost there (tests/triton_codegen.py compiles them with Triton's own
compiler and a CUDA target, specialised as the JIT would):

- no register spills (no stack frame, no local memory) in any variant;
- LIF/PLIF with N % 16 == 0: every global load and store of a [T, N] or [N] tensor is
  16 bytes wide (PTX ``.v4.b32``/``.v2.b64``, SASS ``LDG.E.128``/``STG.E.128``), or in
  the recomputing backward as wide as its elements per thread (``_vector_bytes``); the
  only narrower ones are PLIF's load of k and store of its dL/dk partial;
- LIF/PLIF: IEEE division (``div.rn``, never ``div.full``/``div.approx``), no FMA and
  no flush-to-zero in fp32/fp16/bf16 (launched with ``enable_fp_fusion=False``; spikes
  must equal the reference bit for bit), and fp32 LIF divides by a tau that is not a
  power of two with ``div.rn``;
- the recomputing backward (``_backward_x_kernel``) within 160 registers.

The figures of every variant are written to build/codegen/triton.json and printed with
``pytest -s``. Compiles are cached in build/triton-cache (a first run compiles about 75
variants, two processes in parallel).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "triton_codegen.py"
OUT = ROOT / "build" / "codegen" / "triton.json"
SHARDS = 2


def _nvidia_backend_reason():
    try:
        import triton
        from triton.backends import backends
    except ImportError as e:
        return f"triton not importable: {e}"
    if "nvidia" not in backends:
        return f"this Triton ({triton.__version__}) has no NVIDIA backend"
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (bin_dir / "ptxas").exists() and not shutil.which("ptxas"):
        return "no ptxas (neither Triton's bundled one nor on PATH)"
    if not (bin_dir / "cuobjdump").exists() and not shutil.which("cuobjdump"):
        return "no cuobjdump (neither Triton's bundled one nor on PATH)"
    return None


@pytest.fixture(scope="module")
def variants():
    reason = _nvidia_backend_reason()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_CACHE_DIR", str(ROOT / "build" / "triton-cache"))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # today's default, stated (silences 3.9's warning)
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "--shard", f"{i}/{SHARDS}"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(SHARDS)]
    results, meta = [], {}
    for p in procs:
        out, err = p.communicate(timeout=900)
        if p.returncode != 0 and "SKIP:" in (out + err):
            pytest.skip((out + err).split("SKIP:", 1)[1].strip().splitlines()[0])
        assert p.returncode == 0, f"triton_codegen.py failed:\n{err[-4000:]}"
        data = json.loads(out)
        meta = {k: v for k, v in data.items() if k != "variants"}
        results += data["variants"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({**meta, "variants": results}, indent=1))
    _print_table(results, meta)
    return results


def _print_table(results, meta):
    print(f"\nTriton {meta.get('triton')} -> sm_{meta.get('arch')}: {len(results)} variants")
    print(f"{'variant':58s} {'regs':>4s} {'stack':>5s} {'PTX ld/st bytes':>24s} {'div.rn':>6s} {'fma':>4s}")
    for v in sorted(results, key=lambda v: v["label"]):
        widths = f"{_fmt(v['ptx_ld'])} / {_fmt(v['ptx_st'])}"
        print(f"{v['label']:58s} {v['regs']:4d} {v['stack']:5d} {widths:>24s} {v['div_rn_f32']:6d} {v['fma']:4d}")


def _fmt(hist) -> str:
    return " ".join(f"{n}x{w}" for w, n in sorted(hist.items(), key=lambda kv: -int(kv[0])))


LIF_FAMILY = ("_forward_kernel", "_backward_kernel", "_backward_x_kernel")


def _lif_family(v) -> bool:
    return v["kernel"] in LIF_FAMILY


def test_every_kernel_compiles(variants):
    kernels = {v["kernel"] for v in variants}
    assert kernels == {*LIF_FAMILY, "_tks_loss_kernel"} | BN_LIF_KERNELS
    assert len(variants) >= 60, len(variants)
    for v in variants:
        assert v["num_warps"] >= 1 and v["regs"] > 0, v["label"]


def test_no_register_spills(variants):
    spilled = [f"{v['label']}: {v['regs']} registers, stack {v['stack']} B, local {v['local']} B"
               for v in variants if v["stack"] or v["local"]]
    assert not spilled, "register spills:\n" + "\n".join(spilled)


def _narrow_allowed(v, kind: str) -> dict:
    """Accesses below 16 bytes that an aligned LIF/PLIF variant may have: PLIF's scalar
    load of k (4 or 8 bytes) and, in backward, its 8-byte store of the dL/dk partial."""
    if not v["constexprs"].get("LEARN_TAU"):
        return {}
    k_bytes = "8" if v["constexprs"].get("IS_F64") else "4"
    if kind == "ld":
        return {k_bytes: 1}
    return {"8": 1} if v["kernel"] != "_forward_kernel" else {}


_ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2, "fp64": 8}


def _vector_bytes(v) -> str:
    """The access width of an aligned variant: the elements each thread holds, up to 16
    bytes. 16 everywhere but in the recomputing backward, which holds 4 elements per
    thread (2 for fp64, and for fp32 dividing by tau: ops/_triton_launch.py
    launch_config_x), so fp16/bf16 access 8 bytes there, and fp32 dividing by tau 8."""
    per_thread = v["constexprs"]["BLOCK"] // (32 * v["num_warps"])
    return str(min(16, per_thread * _ITEMSIZE[v["label"].split()[2]]))


def test_aligned_accesses_are_full_width(variants):
    aligned = [v for v in variants if _lif_family(v) and v["constexprs"].get("N_ALIGNED")]
    assert len(aligned) >= 40
    bad = []
    for v in aligned:
        width = _vector_bytes(v)
        for kind, ptx, sass in (("ld", v["ptx_ld"], v["sass_ldg"]), ("st", v["ptx_st"], v["sass_stg"])):
            allowed = _narrow_allowed(v, kind)
            for hist, name in ((ptx, "PTX"), (sass, "SASS")):
                narrow = {w: n for w, n in hist.items() if w != width}
                if width == "8" and "8" in allowed:  # PLIF's 8-byte partial among 8-byte stores
                    narrow = {w: n for w, n in hist.items() if w not in ("8", "16")}
                    allowed = {w: n for w, n in allowed.items() if w != "8"}
                if narrow != allowed:
                    bad.append(f"{v['label']}: {name} {kind} widths {hist} (allowed besides {width} B: {allowed})")
            if ptx.get(width, 0) == 0 or ptx.get(width) != sass.get(width):
                bad.append(f"{v['label']}: {kind} {width}-byte PTX {ptx.get(width, 0)} vs SASS {sass.get(width, 0)}")
    assert not bad, "\n".join(bad)


def test_ieee_division_and_no_contraction(variants):
    bad = []
    for v in variants:
        if not _lif_family(v):
            continue
        if v["div_inexact"]:
            bad.append(f"{v['label']}: {v['div_inexact']} div.full/div.approx")
        if v["enable_fp_fusion"]:
            bad.append(f"{v['label']}: launched with enable_fp_fusion=True")
        if not v["constexprs"].get("IS_F64"):  # fp64: libdevice's exp is built on FMAs
            if v["fma"] or v["ftz"]:
                bad.append(f"{v['label']}: {v['fma']} fma, {v['ftz']} .ftz in the PTX")
        c = v["constexprs"]
        lif_div = not c.get("LEARN_TAU") and c.get("DECAY_INPUT") and not c.get("TAU_POW2")
        if lif_div and not c.get("IS_F64") and v["div_rn_f32"] == 0:
            bad.append(f"{v['label']}: the division by tau is not div.rn.f32")
    assert not bad, "\n".join(bad)


BN_LIF_KERNELS = {"_bn_stats_kernel", "_combine_kernel", "_bn_lif_forward_kernel", "_bn_lif_backward_kernel",
                  "_bn_input_grad_kernel"}


def test_bn_lif_streams_are_16_bytes(variants):
    # Aligned steps (rows or channels a multiple of 16 elements): every [T, N] stream
    # (y, residual, spikes, gradients, the backward's scratch) moves in 16-byte accesses.
    # Narrower are only the per-channel vectors' loads (scale, shift, center, pc, qc, the
    # statistics' shift y_c: a few per tile; PLIF's k) and the two fp64 partial stores per
    # program (PLIF's backward: three, with its dL/dk partial per tile).
    mine = [v for v in variants if v["kernel"] in BN_LIF_KERNELS - {"_combine_kernel"}
            and "unaligned" not in v["label"]]
    assert len(mine) >= 30, len(mine)
    bad = []
    for v in mine:
        narrow_ld = sum(n for w, n in v["sass_ldg"].items() if w != "16")
        narrow_st = {w: n for w, n in v["sass_stg"].items() if w != "16"}
        partial_st = {"8": 2} if v["kernel"] in ("_bn_stats_kernel", "_bn_lif_backward_kernel") else {}
        if v["kernel"] == "_bn_lif_backward_kernel" and v["constexprs"].get("LEARN_TAU"):
            partial_st = {"8": 3}
        if narrow_ld > 8 or narrow_st != partial_st or not v["sass_ldg"].get("16"):
            bad.append(f"{v['label']} {v['kernel']}: SASS loads {v['sass_ldg']}, stores {v['sass_stg']}")
        if v["kernel"] != "_bn_stats_kernel" and not v["sass_stg"].get("16"):
            bad.append(f"{v['label']} {v['kernel']}: no 16-byte store ({v['sass_stg']})")
    assert not bad, "\n".join(bad)


def test_bn_lif_ieee_division_and_no_contraction(variants):
    # the forward and the recomputing backward must give the CPU kernel's spikes bit for bit
    bad = []
    for v in variants:
        if v["kernel"] not in ("_bn_lif_forward_kernel", "_bn_lif_backward_kernel", "_bn_input_grad_kernel"):
            continue
        if v["div_inexact"] or v["enable_fp_fusion"]:
            bad.append(f"{v['label']}: {v['div_inexact']} div.full/approx, fp fusion {v['enable_fp_fusion']}")
        if not v["constexprs"].get("IS_F64") and (v["fma"] or v["ftz"]):
            bad.append(f"{v['label']} {v['kernel']}: {v['fma']} fma, {v['ftz']} .ftz in the PTX")
        c = v["constexprs"]
        lif_div = not c.get("LEARN_TAU") and c.get("DECAY_INPUT") and not c.get("TAU_POW2")
        if v["kernel"] != "_bn_input_grad_kernel" and lif_div and not c.get("IS_F64") and v["div_rn_f32"] == 0:
            bad.append(f"{v['label']}: the division by tau is not div.rn.f32")
    assert not bad, "\n".join(bad)


def test_bn_lif_division_forms_and_plif_compiled(variants):
    """The fused BN + LIF kernels in both forms of the division by tau (tau = 2: the
    product by 1/tau; tau = 3: div.rn) and with the parametric LIF (LEARN_TAU), forward
    and backward; so the checks above (spills, widths, division) cover all three."""
    for kernel in ("_bn_lif_forward_kernel", "_bn_lif_backward_kernel"):
        mine = [v["constexprs"] for v in variants if v["kernel"] == kernel]
        forms = {bool(c.get("TAU_POW2")) for c in mine if not c.get("LEARN_TAU")}
        assert forms == {True, False}, (kernel, forms)
        assert any(c.get("LEARN_TAU") and not c.get("TAU_POW2") for c in mine), kernel


def test_division_by_tau_variants_compiled(variants):
    """Both forms of the division by tau are compiled and checked above: tau = 2 (a
    power of two: the product by 1/tau) and tau = 3 (div.rn), forward and both backwards."""
    lif = [v for v in variants if _lif_family(v) and not v["constexprs"].get("LEARN_TAU")]
    for kernel in LIF_FAMILY:
        forms = {bool(v["constexprs"].get("TAU_POW2")) for v in lif if v["kernel"] == kernel}
        assert forms == {True, False}, (kernel, forms)


def test_recompute_backward_register_budget(variants):
    """The recomputing backward keeps a chunk of fp32 membranes per element in registers:
    at most 160 registers per thread in every compiled variant (with no spills, above),
    so 4 warps keep at least 3 blocks resident per SM."""
    over = [f"{v['label']}: {v['regs']} registers" for v in variants
            if v["kernel"] == "_backward_x_kernel" and v["regs"] > 160]
    assert not over, "\n".join(over)
