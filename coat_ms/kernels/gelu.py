"""Exact (erf) GELU as one fused MindSpore AOT custom op on CPU, with its own backward (gelu.cc)."""
import math

import mindspore as ms
import numpy as np
from mindspore import ops

from . import loader
from .build import KernelBuildError, build


def _make_ops(lib):
    bwd = ops.Custom(f"{lib}:GeluBackward", out_shape=lambda x, g: x, out_dtype=lambda x, g: x, func_type="aot")

    def bprop(x, out, dout):
        return (bwd(x, dout),)

    fwd = ops.Custom(f"{lib}:GeluForward", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot",
                     bprop=bprop)
    return fwd, bwd


def _self_check(fwd):
    x = np.linspace(-6, 6, 97, dtype=np.float32).reshape(1, 97)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel().astype(np.float64)])
    got = fwd(ms.Tensor(x)).asnumpy().ravel()
    err = float(np.abs(got - ref).max())
    if err > 1e-5:
        raise KernelBuildError(f"GELU kernel disagrees with erf GELU on the self-check (max abs error {err:.3g})")


def _load():
    made = _make_ops(build("gelu.cc"))
    _self_check(made[0])
    return made


def gelu_kernel():
    """The fused GELU primitive (with bprop) on CPU, or None where the stock op must be used."""
    ops_ = loader.load("gelu", _load)
    return None if ops_ is None else ops_[0]


def gelu_backward_op():
    """The backward primitive, for tests."""
    return loader.load("gelu", _load)[1]
