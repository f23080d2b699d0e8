"""Builds tks_kernels._C: the CPU kernels always, the CUDA kernels when torch has CUDA
and nvcc is found.

Environment:
  TKS_BUILD_EXTENSION=0   build no extension at all (pure-Python package; the
                          `cpu`/`cuda` backends then report why they are missing)
  TKS_BUILD_CUDA=0|1      force the CUDA part off or on (default: auto)
  TORCH_CUDA_ARCH_LIST    CUDA targets (default "8.0;9.0" when no GPU can be asked)
  MAX_JOBS                parallel compile jobs (ninja)
"""
import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    sys.exit(f"setup.py: {name} must be 0, 1 or auto, got {os.environ[name]!r}")


def _cuda_home():
    """The CUDA toolkit root: CUDA_HOME, else the folder above the nvcc on PATH (when it
    holds the headers: /usr/local/bin/nvcc may be a wrapper), else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime_api.h")):
            return home
    return None


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extensions():
    if _flag("TKS_BUILD_EXTENSION") is False:
        print("setup.py: TKS_BUILD_EXTENSION=0, building no extension", file=sys.stderr)
        return [], {}
    import torch
    from torch.utils import cpp_extension

    want_cuda = _flag("TKS_BUILD_CUDA")
    cuda_home = _cuda_home()
    has_cuda_torch = torch.version.cuda is not None
    if want_cuda is None:
        with_cuda = has_cuda_torch and cuda_home is not None
    else:
        with_cuda = want_cuda
        if with_cuda and not (has_cuda_torch and cuda_home):
            sys.exit(
                "setup.py: TKS_BUILD_CUDA=1 but "
                + ("torch has no CUDA" if not has_cuda_torch else "nvcc was not found (set CUDA_HOME)")
            )
    cpu_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    torch_sources = [
        s for s in _rel(glob.glob(os.path.join(ROOT, "csrc", "torch", "*.cpp"))) if "cuda" not in os.path.basename(s)
    ]
    # -fno-trapping-math lets the compiler if-convert (vectorise) the threshold compare;
    # no FP-exception semantics are relied on, and results do not change.
    # -ffp-contract=off: no a*b+c fused into an FMA behind our back (the CUDA side's
    # -fmad=false), so the kernels round exactly as the PyTorch reference does.
    cxx_flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-DNDEBUG"]
    kwargs = dict(
        name="tks_kernels._C",
        sources=torch_sources + cpu_sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
    if with_cuda:
        os.environ["CUDA_HOME"] = cuda_home
        cpp_extension.CUDA_HOME = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        cuda_sources = _rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
        cuda_sources += [
            s for s in _rel(glob.glob(os.path.join(ROOT, "csrc", "torch", "*.cpp"))) if "cuda" in os.path.basename(s)
        ]
        kwargs["sources"] += cuda_sources
        kwargs["extra_compile_args"] = {
            "cxx": cxx_flags + ["-DTKS_WITH_CUDA"],
            # -fmad=false: the kernels' spikes must equal the reference's bit for bit.
            "nvcc": ["-O3", "-fmad=false", "-DTKS_WITH_CUDA", "-lineinfo"],
        }
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        ext = cpp_extension.CppExtension(**kwargs)
    print(f"setup.py: building tks_kernels._C (cuda={'on' if with_cuda else 'off'})", file=sys.stderr)
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
