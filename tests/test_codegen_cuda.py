"""The CUDA kernels (csrc/cuda/*.cu, no torch) compiled for sm_90 with nvcc directly, and
what the generated code would cost on an H100/H200 without running it:

- registers and spills of every kernel from ``ptxas -v``: no spill stores or loads;
- the vector paths (template argument ``Vec`` = true of the LIF-family kernels,
  ``neuron_{forward,backward,backward_x}_kernel``, LIF and PLIF): every global load and
  store of a [T, N] or [N] tensor is 128 bits wide in the SASS (``LDG.E.128``/
  ``STG.E.128``, grad_x included), 64 bits in the recomputing backward of 2-byte types
  (its half-width tile: four lanes, so 8 steps' charges fit 32 registers); the only
  narrower ones allowed are PLIF's scalar load of k and its store of the block's dL/dk
  partial;
- the backward kernels' flags (template argument FlagSet): the general instance (0) for
  every combination, SpikingJelly's defaults and the TKS paper's neuron compiled with
  constants on the vector path of fp32/fp16/bf16 with a built-in surrogate, nothing more
  (a bounded number of kernels), each time loop at most 0.85 of the general one's; every
  backward kernel within 128 registers (two blocks of 256 threads per SM) and no spills;
- division: no ``div.full``/``div.approx`` in the PTX of the LIF-family kernels; the fp32
  LIF kernels divide by tau through lif::div_tau_rcp (two explicit ``fma`` per division
  and ``div.rn.f32`` only on its guarded fallback); built with ``-fmad=false``, so no other
  ``fma`` in the PTX of the kernels whose math has no exp (forward, and backward with the
  atan, piecewise_quadratic, soft_sign and super_spike surrogates: the library's expf is
  itself made of FMAs);
- the SASS instruction count of every kernel and of its largest loop (the backward's time
  loop; the recomputing backward's chunk loop) in build/codegen/cuda.json and the summary.

Flags: ``nvcc -arch=sm_90 -O3 -std=c++17 -fmad=false -Xptxas -v -I csrc -keep``. The
outputs are cached in build/codegen/cuda/ under a hash of the sources, headers, flags
and nvcc version (a first run compiles the files in parallel, a few minutes on two
cores). The figures of every kernel go to build/codegen/cuda.json (``pytest -s`` prints
a summary).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CACHE = ROOT / "build" / "codegen" / "cuda"
FLAGS = ["-arch=sm_90", "-O3", "-std=c++17", "-fmad=false", "-Xptxas", "-v", "-I", str(CSRC)]
TYPES = {"f": "fp32", "d": "fp64", "13__nv_bfloat16": "bf16", "6__half": "fp16"}
# Known faults of today's kernels, found by these tests, for csrc/cuda's owner to fix.
# Each group must still show its fault (the test fails once it is fixed: then remove it
# here), and every kernel outside these groups must pass. (Issue 15 emptied both: the
# backward stores are explicit st.global.v4, and the backward kernels declare one block
# per SM, so ptxas no longer caps them at 48-80 registers and spills.)
KNOWN_NARROW: set = set()
KNOWN_SPILLS: set = set()
# Surrogate kinds whose derivative has no exp (csrc/lif_math.h): atan, piecewise_quadratic,
# soft_sign, super_spike.
NO_EXP_KINDS = {1, 2, 4, 5}


def _nvcc():
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton  # ships one with its NVIDIA backend
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


def _key(nvcc: str, src: Path) -> str:
    h = hashlib.sha256()
    h.update(subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.encode())
    h.update(" ".join(FLAGS).encode())
    for p in sorted(CSRC.rglob("*")):
        if p.suffix in (".h", ".cuh") or p == src:
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _compile(nvcc: str, src: Path):
    """(ptxas log, PTX, object path) of one .cu, from the cache when it is there."""
    out = CACHE / f"{src.stem}-{_key(nvcc, src)}"
    obj, log, ptx = out / f"{src.stem}.o", out / "ptxas.log", out / f"{src.stem}.ptx"
    if not (obj.exists() and log.exists() and ptx.exists()):
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        r = subprocess.run([nvcc, *FLAGS, "-c", str(src), "-o", str(tmp / obj.name), "-keep", "-keep-dir", str(tmp)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"nvcc failed on {src.name}:\n{r.stderr[-4000:]}"
        (tmp / "ptxas.log").write_text(r.stderr)
        for f in tmp.iterdir():  # keep only what is read
            if f.name not in (obj.name, "ptxas.log", ptx.name):
                f.unlink()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return log.read_text(), ptx.read_text(), obj


def _parse_ptxas(log: str):
    """mangled kernel name -> {regs, stack, spill_stores, spill_loads}."""
    info, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for 'sm_90", line)
        if m:
            cur = info.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["regs"] = int(m.group(1))
    return info


def _parse_sass(sass: str):
    """mangled kernel name -> {"LDG": {bytes: n}, "STG": {bytes: n}, "instructions": n,
    "loop": instructions of its largest loop (from a backward branch's target to it)}."""
    out, cur, addrs = {}, None, {}
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = out.setdefault(m.group(1), {"LDG": {}, "STG": {}, "instructions": 0, "loop": 0})
            addrs[m.group(1)] = cur_addrs = []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(\S.*?);", line)
        if cur is not None and m and " NOP" not in " " + m.group(2):
            cur["instructions"] += 1
            addr = int(m.group(1), 16)
            cur_addrs.append(addr)
            b = re.search(r"\bBRA\b.*?0x([0-9a-f]+)\s*$", m.group(2))
            if b and int(b.group(1), 16) < addr:
                target = int(b.group(1), 16)
                cur["loop"] = max(cur["loop"], sum(1 for a in cur_addrs if a >= target))
        m = re.search(r"\b(LDG|STG)\.E((?:\.[A-Z0-9_]+)*)", line)
        if m and cur is not None:
            w = re.search(r"\.(128|64|U16|S16|U8|S8)\b", m.group(2))
            nbytes = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}[w.group(1)] if w else 4
            cur[m.group(1)][nbytes] = cur[m.group(1)].get(nbytes, 0) + 1
    return out


def _parse_ptx(ptx: str):
    """mangled kernel name -> counts of div.rn.f32, inexact divisions and fma in its body."""
    out = {}
    parts = re.split(r"\.entry\s+(\S+)\(", ptx)
    for name, body in zip(parts[1::2], parts[2::2]):
        body = body.split(".entry", 1)[0]
        out[name] = {"div_rn_f32": len(re.findall(r"\bdiv\.rn\.f32\b", body)),
                     "div_inexact": len(re.findall(r"\bdiv\.(?:full|approx)\.", body)),
                     "fma": len(re.findall(r"\bfma\.", body))}
    return out


def _describe(mangled: str):
    """(kernel, storage type, template integer/bool arguments) from the mangled name."""
    # <length><identifier> with the identifier ending in _kernel; the length may follow
    # other digits (a namespace hash), so every suffix of a digit run is tried
    # other digits (a namespace hash), so every suffix of a digit run is tried, and of
    # two readings ending at the same place the shorter name wins
    found = None
    for num in re.finditer(r"\d+", mangled):
        for i in range(len(num.group())):
            start, length = num.end(), int(num.group()[i:])
            name = mangled[start:start + length]
            if name.endswith("_kernel") and re.match(r"[A-Za-z_]\w*$", name) and (
                    found is None or start + length > found[0] + len(found[1])
                    or (start + length == found[0] + len(found[1]) and start > found[0])):
                found = (start, name)
    if found is None:
        return mangled, None, []
    start, name = found
    m = re.match(r"I(f|d|13__nv_bfloat16|6__half)((?:L[bi]\d+E)*)E", mangled[start + len(name):])
    if not m:
        return name, None, []
    return name, TYPES[m.group(1)], [int(v) for v in re.findall(r"L[bi](\d+)E", m.group(2))]


@pytest.fixture(scope="module")
def kernels():
    nvcc, cuobjdump = _nvcc(), _cuobjdump()
    if not nvcc:
        pytest.skip("nvcc not found")
    if not cuobjdump:
        pytest.skip("cuobjdump not found (neither the CUDA toolkit's nor Triton's bundled one)")
    sources = sorted((CSRC / "cuda").glob("*.cu"))
    assert sources, "no csrc/cuda/*.cu"
    with ThreadPoolExecutor(max_workers=min(len(sources), max(2, os.cpu_count() or 2))) as pool:
        built = list(pool.map(lambda s: (s, *_compile(nvcc, s)), sources))
    result = []
    for src, log, ptx, obj in built:
        ptxas = _parse_ptxas(log)
        sass = _parse_sass(subprocess.run([cuobjdump, "-sass", str(obj)], capture_output=True, text=True,
                                          check=True).stdout)
        ptx_info = _parse_ptx(ptx)
        for mangled, res in ptxas.items():
            kernel, dtype, args = _describe(mangled)
            result.append({"file": src.name, "kernel": kernel, "dtype": dtype, "args": args, "mangled": mangled,
                           **res, **sass.get(mangled, {"LDG": {}, "STG": {}}), **ptx_info.get(mangled, {})})
    (CACHE.parent / "cuda.json").write_text(json.dumps(result, indent=1))
    _summary(result)
    return result


def _summary(result):
    print(f"\nCUDA kernels for sm_90: {len(result)}")
    groups = {}
    for k in result:
        vec = k["args"][1] if len(k["args"]) > 1 and k["kernel"] != "tks_loss_kernel" else None
        g = groups.setdefault((k["kernel"], k["dtype"], vec), [])
        g.append(k)
    print(f"{'kernel':24s} {'dtype':5s} {'vec':5s} {'n':>3s} {'regs':>9s} {'spills':>6s} {'LDG bytes':>16s} "
          f"{'STG bytes':>16s}")
    for (kernel, dtype, vec), ks in sorted(groups.items(), key=lambda kv: str(kv[0])):
        regs = sorted(k.get("regs", 0) for k in ks)
        spills = sum(k.get("spill_stores", 0) + k.get("spill_loads", 0) for k in ks)
        ldg = sorted({w for k in ks for w in k["LDG"]}, reverse=True)
        stg = sorted({w for k in ks for w in k["STG"]}, reverse=True)
        print(f"{kernel:24s} {str(dtype):5s} {str(vec):5s} {len(ks):3d} {regs[0]:4d}-{regs[-1]:<4d} {spills:6d} "
              f"{str(ldg):>16s} {str(stg):>16s}")


LIF_FAMILY = ("neuron_forward_kernel", "neuron_backward_kernel", "neuron_backward_x_kernel")
LIF_BACKWARD = ("neuron_backward_kernel", "neuron_backward_x_kernel")
# lif_cuda_kernels.cuh's flag sets: kFlagsFixed | decay_input (1) | soft reset (2) |
# detach_reset (4) | fire at the threshold (8) | grad_v_seq given (16); 0 reads them at run time.
FLAGS_RUNTIME = 0
FLAGS_SPIKINGJELLY = 32 | 1 | 8
FLAGS_PAPER = 32 | 1 | 4
FIXED_FLAG_SETS = {FLAGS_SPIKINGJELLY, FLAGS_PAPER}
BUILT_IN_KINDS = set(range(7))
EXTERNAL_KIND = 100


def _lif_family(k) -> bool:
    return k["kernel"] in LIF_FAMILY


def _learn(k) -> bool:
    """PLIF (template argument Learn) rather than LIF."""
    return bool(k["args"][2])


def _kind(k) -> int:
    """The surrogate of a backward kernel: template <S, V, Vec, Learn, Kind, FlagSet> (args
    are the integer ones: V, Vec, Learn, Kind, FlagSet)."""
    return k["args"][3]


def _flags(k) -> int:
    return k["args"][4]


def _vec_bytes(k) -> int:
    """The width of a vector path's accesses: 16 bytes, 8 in the recomputing backward of
    2-byte types (its half-width tile)."""
    return 8 if k["kernel"] == "neuron_backward_x_kernel" and k["dtype"] in ("bf16", "fp16") else 16


def test_every_kernel_compiles(kernels):
    found = {(k["kernel"], _learn(k)) for k in kernels if _lif_family(k)}
    assert {(name, learn) for name in LIF_FAMILY for learn in (False, True)} <= found, found
    names = {k["kernel"] for k in kernels}
    assert {"plif_grad_k_kernel", "tks_loss_kernel"} <= names, names
    assert all("regs" in k for k in kernels)


def _check_known(failing: dict, known: set, what: str):
    """failing: (kernel, dtype) -> messages. Fails on a fault outside ``known`` and on
    a known group that no longer shows it."""
    new = {g: m for g, m in failing.items() if g not in known}
    fixed = sorted(g for g in known if g not in failing)
    assert not new, f"{what}:\n" + "\n".join(m for ms in new.values() for m in ms)
    assert not fixed, f"fixed, remove from the known faults ({what}): {fixed}"


def test_no_register_spills(kernels):
    failing = {}
    for k in kernels:
        if k.get("spill_stores") or k.get("spill_loads"):
            failing.setdefault((k["kernel"], k["dtype"]), []).append(
                f"{k['kernel']}<{k['dtype']}, {k['args']}>: {k['regs']} registers, {k['spill_stores']} B spill "
                f"stores, {k['spill_loads']} B spill loads")
    _check_known(failing, KNOWN_SPILLS, "register spills")


def test_vector_paths_are_128_bit(kernels):
    vec = [k for k in kernels if _lif_family(k) and k["args"][1] == 1]
    assert len(vec) >= 100, len(vec)
    assert {_vec_bytes(k) for k in vec} == {8, 16}
    failing = {}
    for k in vec:
        scalar = 8 if k["dtype"] == "fp64" else 4
        width = _vec_bytes(k)
        # PLIF: the load of k; its backward also stores the block's fp64 partial of dL/dk
        # (8 bytes: on the half-width tile it counts with the 8-byte stores).
        allowed_ld = {scalar: 1} if _learn(k) else {}
        allowed_st = {8: 1} if _learn(k) and k["kernel"] != "neuron_forward_kernel" and width != 8 else {}
        narrow_ld = {w: n for w, n in k["LDG"].items() if w != width}
        narrow_st = {w: n for w, n in k["STG"].items() if w != width}
        if not k["LDG"].get(width) or not k["STG"].get(width) or any(
                n > allowed_st.get(w, 0) for w, n in narrow_st.items()) or any(
                n > allowed_ld.get(w, 0) for w, n in narrow_ld.items()):
            failing.setdefault((k["kernel"], k["dtype"]), []).append(
                f"{k['kernel']}<{k['dtype']}, {k['args']}>: LDG {k['LDG']}, STG {k['STG']} (vector width {width})")
    _check_known(failing, KNOWN_NARROW, "global accesses below the vector width on a vector path")


def test_division_and_no_contraction(kernels):
    bad = []
    for k in kernels:
        if not _lif_family(k) or "fma" not in k:
            continue
        label = f"{k['kernel']}<{k['dtype']}, {k['args']}>"
        if k["div_inexact"]:
            bad.append(f"{label}: {k['div_inexact']} div.full/div.approx")
        lif_fp32 = not _learn(k) and k["dtype"] != "fp64"
        if k["kernel"] == "neuron_forward_kernel" and lif_fp32 and not (k["fma"] and k["div_rn_f32"]):
            bad.append(f"{label}: the division by tau is not div_tau_rcp (fma {k['fma']}, div.rn {k['div_rn_f32']})")
        no_exp = k["kernel"] == "neuron_forward_kernel" or _kind(k) in NO_EXP_KINDS
        # div_tau_rcp: two fma and one guarded div.rn.f32 per division (the backward's
        # 1 - 1/tau is one more div.rn.f32); any other fma would be contraction.
        allowed = 2 * k["div_rn_f32"] if lif_fp32 else 0
        if no_exp and k["fma"] > allowed:
            bad.append(f"{label}: {k['fma']} fma in the PTX for {k['div_rn_f32']} div.rn.f32 (built with -fmad=false)")
    assert not bad, "\n".join(bad)


def test_backward_flag_sets(kernels):
    """The general instance for every dtype, path, model and surrogate; the fixed flag sets
    exactly where fixed_flags_compiled says (so the kernel count, and the compile time,
    stay bounded); and the constants fold: each fixed instance's time loop at most 0.85
    of the general instance's (measured: 0.46-0.77), the whole kernel smaller too."""
    general, fixed = {}, {}
    for k in kernels:
        if k["kernel"] not in LIF_BACKWARD:
            continue
        key = (k["kernel"], k["dtype"], k["args"][1], _learn(k), _kind(k))
        (general if _flags(k) == FLAGS_RUNTIME else fixed.setdefault(key, {}))[
            key if _flags(k) == FLAGS_RUNTIME else _flags(k)] = k
    kinds = {"neuron_backward_kernel": BUILT_IN_KINDS | {EXTERNAL_KIND}, "neuron_backward_x_kernel": BUILT_IN_KINDS}
    want_general = {(name, dt, vec, learn, kind) for name in LIF_BACKWARD for dt in TYPES.values() for vec in (0, 1)
                    for learn in (False, True) for kind in kinds[name]}
    assert set(general) == want_general, sorted(set(general) ^ want_general)
    want_fixed = {(name, dt, 1, learn, kind) for name in LIF_BACKWARD for dt in ("fp32", "fp16", "bf16")
                  for learn in (False, True) for kind in BUILT_IN_KINDS}
    assert set(fixed) == want_fixed, sorted(set(fixed) ^ want_fixed)
    assert all(set(sets) == FIXED_FLAG_SETS for sets in fixed.values()), fixed
    assert len(general) + sum(len(v) for v in fixed.values()) == 240 + 2 * 84
    bad = []
    for key, sets in fixed.items():
        g = general[key]
        for flag_set, k in sets.items():
            if k["instructions"] >= g["instructions"] or k["loop"] > 0.85 * g["loop"]:
                bad.append(f"{key} set {flag_set}: SASS {k['instructions']} (loop {k['loop']}) vs the general "
                           f"{g['instructions']} (loop {g['loop']})")
    assert not bad, "\n".join(bad)


def test_backward_registers(kernels):
    # __launch_bounds__(256, 1) lets ptxas take 255; the kernels stay within 128 (two
    # blocks per SM) and spill nothing (test_no_register_spills).
    over = [f"{k['kernel']}<{k['dtype']}, {k['args']}>: {k['regs']}" for k in kernels
            if k["kernel"] in LIF_BACKWARD and k["regs"] > 128]
    assert not over, "\n".join(over)


def test_report_bf16_counts(kernels):
    """The issue-15 figures: registers, SASS instructions and those of the time loop (the
    recomputing backward: its chunk loop) of the fp32 and bf16 LIF and PLIF kernels on the
    vector path (sigmoid, atan, piecewise_quadratic; forward, and backward per flag set),
    printed with -s."""
    rows = []
    for k in kernels:
        if _lif_family(k) and k["dtype"] in ("bf16", "fp32") and k["args"][1] == 1:
            if k["kernel"] == "neuron_forward_kernel" or _kind(k) in (0, 1, 2):
                rows.append((k["dtype"], k["kernel"], k["args"], k["regs"], k["instructions"], k["loop"]))
    assert rows
    for row in sorted(rows):
        print("%-4s %-26s %-24s regs %3d  SASS instructions %5d  loop %5d" % row)


# The fused BN + LIF / PLIF kernels (csrc/cuda/bn_lif_cuda.cu): template <S, VT, Vec[, Learn
# (PLIF)][, Kind]> (Learn: the forward and backward kernels).
BN_LIF_STREAMING = ("bn_lif_forward_kernel", "bn_lif_backward_kernel", "bn_input_grad_kernel", "bn_stats_kernel")
BN_LIF_NEURON = ("bn_lif_forward_kernel", "bn_lif_backward_kernel")


def _bn_learn(k) -> bool:
    return k["kernel"] in BN_LIF_NEURON and bool(k["args"][2])


def test_bn_lif_kernels_compile(kernels):
    names = {k["kernel"] for k in kernels if k["file"] == "bn_lif_cuda.cu"}
    assert set(BN_LIF_STREAMING) | {"bn_stats_finalize_kernel", "bn_lif_sums_kernel", "plif_grad_k_kernel"} <= names, \
        names
    # every dtype x (vector, scalar) x (LIF, PLIF) [x 7 surrogates]
    assert len([k for k in kernels if k["kernel"] == "bn_lif_forward_kernel"]) == 4 * 2 * 2
    assert len([k for k in kernels if k["kernel"] == "bn_lif_backward_kernel"]) == 4 * 2 * 2 * 7
    assert {_bn_learn(k) for k in kernels if k["kernel"] in BN_LIF_NEURON} == {False, True}


def test_bn_lif_vector_paths_are_128_bit(kernels):
    # Vec: every [T, N] / [N] stream is read and written 16 bytes at a time; narrower are
    # only the per-channel vectors' gathers (4 or 8 bytes), PLIF's load of k (4 or 8), the
    # statistics' shift (one storage element per channel) and the fp64 column partials and
    # PLIF's dL/dk partial (8 bytes).
    vec = [k for k in kernels if k["kernel"] in BN_LIF_STREAMING and len(k["args"]) >= 2 and k["args"][1] == 1]
    assert len(vec) == 4 * (2 + 2 * 7 + 1 + 1), len(vec)
    bad = []
    for k in vec:
        elem = {"fp32": 4, "fp64": 8, "bf16": 2, "fp16": 2}[k["dtype"]]
        narrow_ld = {w for w in k["LDG"] if w != 16}
        narrow_st = {w for w in k["STG"] if w != 16}
        allowed_ld = {4, 8} | ({elem} if k["kernel"] == "bn_stats_kernel" else set())
        allowed_st = {8} if k["kernel"] in ("bn_stats_kernel", "bn_lif_backward_kernel") else set()
        if not k["LDG"].get(16) or narrow_ld - allowed_ld or narrow_st - allowed_st or (
                k["kernel"] != "bn_stats_kernel" and not k["STG"].get(16)):
            bad.append(f"{k['kernel']}<{k['dtype']}, {k['args']}>: LDG {k['LDG']}, STG {k['STG']}")
    assert not bad, "\n".join(bad)


def test_bn_lif_division_and_no_contraction(kernels):
    # as the LIF family: the fp32 LIF kernels divide by tau through lif::div_tau_rcp (two
    # fma and a guarded div.rn.f32 per division), PLIF's multiply by k (its forward has no
    # division at all), and no other fma where the math has no exp (-fmad=false)
    bad = []
    for k in kernels:
        if k["kernel"] not in BN_LIF_STREAMING or "fma" not in k:
            continue
        label = f"{k['kernel']}<{k['dtype']}, {k['args']}>"
        if k["div_inexact"]:
            bad.append(f"{label}: {k['div_inexact']} div.full/div.approx")
        lif_fp32 = k["kernel"] in BN_LIF_NEURON and not _bn_learn(k) and k["dtype"] != "fp64"
        if k["kernel"] == "bn_lif_forward_kernel":
            if lif_fp32 and not (k["fma"] and k["div_rn_f32"]):
                bad.append(f"{label}: the division by tau is not div_tau_rcp (fma {k['fma']}, div.rn "
                           f"{k['div_rn_f32']})")
            if _bn_learn(k) and k["div_rn_f32"]:
                bad.append(f"{label}: {k['div_rn_f32']} div.rn.f32 in PLIF's forward (it multiplies by k)")
        no_exp = k["kernel"] in ("bn_lif_forward_kernel", "bn_input_grad_kernel") or (
            k["kernel"] == "bn_lif_backward_kernel" and k["args"][-1] in NO_EXP_KINDS)
        allowed = 2 * k["div_rn_f32"] if lif_fp32 else 0
        if no_exp and k["fma"] > allowed:
            bad.append(f"{label}: {k['fma']} fma in the PTX for {k['div_rn_f32']} div.rn.f32 (built with -fmad=false)")
    assert not bad, "\n".join(bad)


def test_report_bn_lif_counts(kernels):
    """Registers and SASS instructions of the fused BN + LIF / PLIF forward and backward
    kernels (sigmoid, atan, piecewise_quadratic) per dtype and path, printed with -s."""
    rows = []
    for k in kernels:
        if k["kernel"] in BN_LIF_NEURON and (k["kernel"] == "bn_lif_forward_kernel" or k["args"][-1] in (0, 1, 2)):
            rows.append((k["kernel"], k["dtype"], k["args"], k["regs"], k["instructions"]))
    assert len(rows) == 4 * 2 * 2 * (1 + 3)
    for row in sorted(rows):
        print("%-22s %-4s %-16s regs %3d  SASS instructions %5d" % row)
