"""CPU kernels for MindSpore's CPU backend (AOT-compiled C++), used only when the device target is CPU.

Ascend and GPU keep MindSpore's stock operators. See docs/performance.md.
"""
from .dwconv import (MODE_CONV, MODE_RESIDUAL, fallback_reason, get_op, kernel_size_table, kernels_available,
                     make_meta, pack_weights, tap_embeddings)
from .gelu import gelu_kernel

__all__ = ["kernels_available", "fallback_reason", "get_op", "make_meta", "pack_weights", "kernel_size_table",
           "tap_embeddings", "gelu_kernel", "MODE_CONV", "MODE_RESIDUAL"]
