"""Compile the C++ kernels with the machine's g++ at first use, into a per-user cache directory.

The shared library is keyed by a hash of the source, the compiler command and the CPU, so an
edited kernel or a different machine never picks up a stale build. Writes are atomic (compile to a
temporary file in the cache folder, then rename: ``coat_ms.fileio.atomic_write``), so two processes
building at once cannot load half a file; the later rename replaces an identical library.
"""
import hashlib
import os
import platform
import shutil
import subprocess

from ..errors import CoatError
from ..fileio import atomic_write

HERE = os.path.dirname(os.path.abspath(__file__))
CXXFLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17"]


class KernelBuildError(CoatError):
    """The kernel could not be compiled (no compiler, compiler error, ...)."""


def cache_dir():
    """$COAT_MS_KERNEL_CACHE, else $XDG_CACHE_HOME/coat_ms/kernels, else ~/.cache/coat_ms/kernels."""
    path = os.environ.get("COAT_MS_KERNEL_CACHE")
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "coat_ms", "kernels")
    return path


def _compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise KernelBuildError("no C++ compiler found (g++ or $CXX)")
    return cxx


def build(source_name="dwconv.cc"):
    """Return the path of the compiled shared library for ``source_name``, building it if needed."""
    src = os.path.join(HERE, source_name)
    with open(src, "rb") as f:
        code = f.read()
    for header in sorted(n for n in os.listdir(HERE) if n.endswith(".h")):  # included sources count too
        with open(os.path.join(HERE, header), "rb") as f:
            code += f.read()
    cxx = _compiler()
    key = hashlib.sha256(code + " ".join([cxx] + CXXFLAGS).encode() + platform.processor().encode()
                         + platform.node().encode()).hexdigest()[:16]
    out_dir = cache_dir()
    lib = os.path.join(out_dir, f"{os.path.splitext(source_name)[0]}_{key}.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(out_dir, exist_ok=True)

    def compile_to(tmp):
        try:
            proc = subprocess.run([cxx, *CXXFLAGS, "-o", tmp, src], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KernelBuildError(f"could not run {cxx}: {exc}") from None
        if proc.returncode != 0:
            raise KernelBuildError(f"{cxx} failed on {source_name}: {proc.stderr.strip()[-2000:]}")

    return atomic_write(lib, compile_to, suffix=".so")
