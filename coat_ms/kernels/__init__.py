"""C++ kernels for MindSpore's CPU backend (AOT-compiled with g++ at first use, each self-checked).

A model uses them only when its backend is ``cpu_kernels`` (coat_ms/models/backend.py decides that,
once, when the model is built); everything else keeps MindSpore's stock operators.
See docs/performance.md.
"""
from . import attention, crossscale, dwconv, gelu, rowops
from .dwconv import MODE_CONV, MODE_RESIDUAL, kernel_size_table, make_meta, pack_weights, tap_embeddings
from .loader import KERNEL_NAMES, reason

_MODULES = {"dwconv": dwconv, "rowops": rowops, "gelu": gelu, "attention": attention, "crossscale": crossscale}
assert set(_MODULES) == set(KERNEL_NAMES)


def load_kernel(name):
    """Build and self-check kernel ``name`` (once per process); its primitives, or None if unavailable."""
    return _MODULES[name].load()


__all__ = ["KERNEL_NAMES", "load_kernel", "reason", "make_meta", "pack_weights", "kernel_size_table",
           "tap_embeddings", "MODE_CONV", "MODE_RESIDUAL"]
