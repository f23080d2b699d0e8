"""Builds the native core, a plain shared library with a C interface and no torch
inside (see CMakeLists.txt), with CMake, and puts it in the package as
``tks_kernels/lib/libtks_kernels.so`` (+ ``libtks_kernels_cuda.so``). Nothing here
imports torch: one build serves every torch version.

Environment:
  TKS_CUDA=auto|0|1         CUDA kernels (default auto: when nvcc is found)
  TKS_CUDA_ARCHITECTURES    CUDA targets, e.g. "80;90" or "native" (default: from
                            TORCH_CUDA_ARCH_LIST, else "80;90")
  TKS_BUILD_TESTS=0|1       also build the C++ tests (ctest) in the build folder
  TKS_BUILD_DIR             the CMake build folder (default build/native-<config>);
                            kept between builds, so a rebuild compiles only what changed
  TKS_DEBUG=1               a debug build (-O0 -g) instead of Release
  MAX_JOBS                  parallel compile jobs (default: all cores)
"""
import hashlib
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBS = ("tks_kernels", "tks_kernels_cuda")


def _flag(name, default="auto"):
    value = os.environ.get(name, default).strip().lower()
    if value in ("", "auto"):
        return "AUTO"
    if value in ("1", "true", "yes", "on"):
        return "ON"
    if value in ("0", "false", "no", "off"):
        return "OFF"
    sys.exit(f"setup.py: {name} must be 0, 1 or auto, got {os.environ[name]!r}")


def _tool(name):
    """An executable from PATH, or from the PyPI package of that name (build isolation)."""
    path = shutil.which(name)
    if path is None:
        try:
            module = __import__(name)
            for attr in ("CMAKE_BIN_DIR", "BIN_DIR"):
                if hasattr(module, attr):
                    candidate = os.path.join(getattr(module, attr), name)
                    if os.path.exists(candidate):
                        path = candidate
        except ImportError:
            pass
    return path


def _install_file(src, dst):
    """Copy src to dst by a rename: a process that has the old library mapped keeps it
    (overwriting it in place would crash that process)."""
    tmp = f"{dst}.tmp{os.getpid()}"
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _lib_name(stem):
    return {"win32": f"{stem}.dll", "darwin": f"lib{stem}.dylib"}.get(sys.platform, f"lib{stem}.so")


class NativeLibrary(Extension):
    """The CMake project at the repository root (no sources for setuptools to compile)."""

    def __init__(self):
        super().__init__("tks_kernels.lib._native", sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        cmake = _tool("cmake")
        if cmake is None:
            sys.exit("setup.py: cmake was not found; `pip install cmake` (or install CMake >= 3.18)")
        ninja = _tool("ninja")
        cuda = _flag("TKS_CUDA")
        tests = "ON" if _flag("TKS_BUILD_TESTS", "0") == "ON" else "OFF"
        build_type = "Debug" if os.environ.get("TKS_DEBUG") == "1" else "Release"
        args = [f"-DCMAKE_BUILD_TYPE={build_type}", f"-DTKS_CUDA={cuda}", f"-DTKS_TESTS={tests}"]
        if os.environ.get("TKS_CUDA_ARCHITECTURES"):
            args.append(f"-DTKS_CUDA_ARCHITECTURES={os.environ['TKS_CUDA_ARCHITECTURES']}")
        if ninja:
            args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        # One folder per configuration (tools included: a build-isolation run has its
        # own cmake), kept between builds so unchanged sources are not recompiled.
        key = hashlib.sha1(repr((cmake, ninja, args, os.environ.get("TORCH_CUDA_ARCH_LIST"))).encode()).hexdigest()
        build_dir = os.environ.get("TKS_BUILD_DIR") or os.path.join(ROOT, "build", f"native-{key[:10]}")
        os.makedirs(build_dir, exist_ok=True)
        print(f"setup.py: building the native library in {build_dir} (TKS_CUDA={cuda}, {build_type})",
              file=sys.stderr)
        subprocess.check_call([cmake, "-S", ROOT, "-B", build_dir] + args)
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.check_call([cmake, "--build", build_dir, "-j", jobs])

        out_dir = self._package_lib_dir(inplace=self.inplace)
        os.makedirs(out_dir, exist_ok=True)
        for stem in LIBS:
            built = os.path.join(build_dir, _lib_name(stem))
            target = os.path.join(out_dir, _lib_name(stem))
            if os.path.exists(built):
                _install_file(built, target)
                print(f"setup.py: {target} ({os.path.getsize(target) / 1e6:.2f} MB)", file=sys.stderr)
            elif os.path.exists(target):
                os.remove(target)  # a stale CUDA library from an earlier configuration

    # The outputs are the libraries, not a Python extension module: tell setuptools
    # (wheel contents, and the copy into the source tree for `pip install -e .`).
    def _package_lib_dir(self, inplace):
        if inplace:
            build_py = self.get_finalized_command("build_py")
            return os.path.join(os.path.abspath(build_py.get_package_dir("tks_kernels")), "lib")
        return os.path.join(os.path.abspath(self.build_lib), "tks_kernels", "lib")

    def _lib_pairs(self):
        regular, inplace = self._package_lib_dir(False), self._package_lib_dir(True)
        return [(os.path.join(regular, _lib_name(s)), os.path.join(inplace, _lib_name(s))) for s in LIBS]

    def get_outputs(self):
        return [r for r, _ in self._lib_pairs() if os.path.exists(r)]

    def get_output_mapping(self):
        return {r: i for r, i in self._lib_pairs() if os.path.exists(r)}

    def copy_extensions_to_source(self):
        for regular, inplace in self._lib_pairs():
            if os.path.exists(regular):
                os.makedirs(os.path.dirname(inplace), exist_ok=True)
                _install_file(regular, inplace)
            elif os.path.exists(inplace):
                os.remove(inplace)

setup(ext_modules=[NativeLibrary()], cmdclass={"build_ext": CMakeBuild})
