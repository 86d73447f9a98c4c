"""Exact (erf) GELU as one fused MindSpore AOT custom op on CPU, with its own backward (gelu.cc)."""
import math

import mindspore as ms
import numpy as np
from mindspore import ops

from .loader import load as load_once
from .build import KernelBuildError, build
from .rowops import column_sum_op


def _make_ops(lib):
    bwd = ops.Custom(f"{lib}:GeluBackward", out_shape=lambda x, g: x, out_dtype=lambda x, g: x, func_type="aot")

    def bprop(x, out, dout):
        return (bwd(x, dout),)

    fwd = ops.Custom(f"{lib}:GeluForward", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot",
                     bprop=bprop)
    bias_bwd = ops.Custom(f"{lib}:GeluBiasBackward", out_shape=lambda x, b, g: x, out_dtype=lambda x, b, g: x,
                          func_type="aot")
    column_sum = column_sum_op()

    def bias_bprop(x, b, out, dout):
        dx = bias_bwd(x, b, dout)
        return dx, column_sum(dx)

    fused_bias = None
    if column_sum is not None:
        fused_bias = ops.Custom(f"{lib}:GeluBiasForward", out_shape=lambda x, b: x, out_dtype=lambda x, b: x,
                                func_type="aot", bprop=bias_bprop)
    return fwd, bwd, fused_bias


def _self_check(made):
    fwd, fused_bias = made[0], made[2]
    x = np.linspace(-6, 6, 97, dtype=np.float32).reshape(1, 97)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel().astype(np.float64)])
    got = fwd(ms.Tensor(x)).asnumpy().ravel()
    err = float(np.abs(got - ref).max())
    if fused_bias is not None:
        shifted = fused_bias(ms.Tensor(x - 0.5), ms.Tensor(np.full(97, 0.5, np.float32))).asnumpy().ravel()
        err = max(err, float(np.abs(shifted - ref).max()))
    if err > 1e-5:
        raise KernelBuildError(f"GELU kernel disagrees with erf GELU on the self-check (max abs error {err:.3g})")


def load():
    """(forward, backward, bias-fused forward) built and self-checked once, or None if that failed."""
    return load_once("gelu", _build_and_check)


def _build_and_check():
    made = _make_ops(build("gelu.cc"))
    _self_check(made)
    return made


def gelu_op():
    """The fused GELU primitive (with bprop), or None where the kernel is unavailable."""
    made = load()
    return None if made is None else made[0]


def bias_gelu_op():
    """``f(x, b) = gelu(x + b)`` over the last axis (fc1's bias fused into the activation), or None.

    Its bias gradient is the rowops column sum, so it is None when that kernel is unavailable too.
    """
    made = load()
    return None if made is None else made[2]
