"""Build of asr_kd and its native extension ``asr_kd._C``.

    pip install --no-build-isolation -e .        # what scripts/install.sh runs (torch must be installed)
    python setup.py build_ext --inplace          # rebuild asr_kd/_C*.so in place

The extension is built from ``csrc/*.cpp`` (-O3, OpenMP so that ``at::parallel_for`` runs in
parallel). No ``-std`` is passed: BuildExtension adds the standard the installed torch headers
require (C++20 for the pinned torch 2.13, whose headers use C++20 features; C++17 for older
torch). CUDA sources (``csrc/cuda/*.cu`` and the launchers ``csrc/cuda/*.cpp``) are added, with
``-DASR_KD_WITH_CUDA``, when torch was built with CUDA and nvcc / CUDA_HOME is found.

Environment:
    ASR_KD_WITH_CUDA=0|1   force the CUDA part off / on (on without nvcc is an error; on with a
                           CPU-only torch compiles and links the CUDA sources, a build check)
    MAX_JOBS               parallel compile jobs (torch.utils.cpp_extension)
    TORCH_CUDA_ARCH_LIST   CUDA architectures, e.g. "8.0;9.0" (default when building with a CPU
                           torch: 7.5;8.0;9.0)
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    with open(os.path.join(ROOT, "asr_kd", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', f.read(), re.M)
    if m is None:
        raise RuntimeError("__version__ not found in asr_kd/__init__.py")
    return m.group(1)


def find_cuda_home() -> str | None:
    """CUDA toolkit root holding include/cuda_runtime.h: $CUDA_HOME, $CUDA_PATH, the parent of the
    nvcc on PATH (which may be a wrapper script), or /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


def want_cuda(cuda_home: str | None, torch_cuda: str | None) -> bool:
    flag = os.environ.get("ASR_KD_WITH_CUDA", "").strip().lower()
    if flag in ("0", "false", "off", "no"):
        return False
    if flag in ("1", "true", "on", "yes"):
        if cuda_home is None:
            raise RuntimeError("ASR_KD_WITH_CUDA=1 but no CUDA toolkit (nvcc / CUDA_HOME) was found")
        return True
    return torch_cuda is not None and cuda_home is not None


def rel(paths: list[str]) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extensions_and_cmdclass():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension
    except ImportError:  # metadata-only invocations (e.g. egg_info without torch)
        print("asr_kd setup: torch not importable, building without asr_kd._C", file=sys.stderr)
        return [], {}

    cuda_home = CUDA_HOME or find_cuda_home()
    with_cuda = want_cuda(cuda_home, torch.version.cuda)
    if with_cuda and CUDA_HOME is None:
        # A CPU-only torch leaves cpp_extension.CUDA_HOME unset, and BuildExtension finds nvcc
        # through it. Only reached with ASR_KD_WITH_CUDA=1: a compile check of the CUDA sources
        # (the kernels need only the CUDA runtime; a CPU torch cannot run them).
        import torch.utils.cpp_extension as cpp_extension

        cpp_extension.CUDA_HOME = cuda_home
    sources = rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fvisibility=hidden"]
    extra_link_args = ["-fopenmp"]
    define_macros: list[tuple[str, str | None]] = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    library_dirs: list[str] = []
    libraries: list[str] = []
    extra_compile_args: dict[str, list[str]] = {"cxx": cxx}
    if with_cuda:
        sources += rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
        sources += rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cpp")))
        define_macros.append(("ASR_KD_WITH_CUDA", None))
        # The kernels use the CUDA runtime only (no cuBLAS, no c10_cuda), so a plain CppExtension
        # plus cudart is enough; BuildExtension compiles the .cu files with nvcc.
        include_dirs.append(os.path.join(cuda_home, "include"))
        library_dirs.append(os.path.join(cuda_home, "lib64"))
        libraries.append("cudart")
        extra_compile_args["nvcc"] = ["-O3"]
        if torch.version.cuda is None and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = "7.5;8.0;9.0"
    print(f"asr_kd setup: building asr_kd._C with_cuda={with_cuda}", file=sys.stderr)
    ext = CppExtension(
        name="asr_kd._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        library_dirs=library_dirs,
        libraries=libraries,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions_and_cmdclass()

setup(
    name="asr_kd",
    version=read_version(),
    description="Knowledge distillation for end-to-end ASR, k2/icefall style",
    packages=find_packages(include=["asr_kd*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch",
        "lhotse",
        "sentencepiece",
        "numpy",
        "soundfile",
        "kaldialign",
        "tqdm",
        "pyyaml",
        "tensorboard",
    ],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
