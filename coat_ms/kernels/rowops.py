"""LayerNorm, bias-add and residual add over the last axis as MindSpore AOT custom ops with their own backward (CPU only).

``layer_norm_op()`` -> ``ln(x, gamma, beta, eps)`` where ``eps`` is a float32 Tensor of shape (1,);
``layer_norm_ones_op()`` -> the same with a column of ones appended (a following Linear's bias in its matmul);
``bias_add_op()`` -> ``add(x, b)``; ``residual_bias_add_op()`` -> ``add(x, y, b)`` = x + (y + b);
``column_sum_op()`` -> a bias gradient.
Each returns None where the kernel is unavailable (failed to build or to pass its self-check).
C++ in rowops.cc; forward and gradients are checked against the stock ops in tests/test_kernels.py.
"""
import mindspore as ms
import numpy as np
from mindspore import ops

from .loader import load as load_once
from .build import KernelBuildError, build


def _make_ops(lib):
    def custom(name, out_shape, bprop=None):
        return ops.Custom(f"{lib}:{name}", out_shape=out_shape, out_dtype=lambda *types: types[0], func_type="aot",
                          bprop=bprop)

    ln_dx = custom("LayerNormBackwardInput", lambda x, g, dy, eps: x)
    ln_dgb = custom("LayerNormBackwardParams", lambda x, dy, eps: (2, x[-1]))
    col_sum = custom("ColumnSum", lambda dy: (dy[-1],))

    def ln_bprop(x, gamma, beta, eps, out, dout):
        dgb = ln_dgb(x, dout, eps)
        return ln_dx(x, gamma, dout, eps), dgb[0], dgb[1], ops.zeros_like(eps)

    def ln_ones_bprop(x, gamma, beta, eps, out, dout):
        return ln_bprop(x, gamma, beta, eps, None, dout[..., :-1])  # the ones column has no input

    def bias_bprop(x, b, out, dout):
        return dout, col_sum(dout)

    def residual_bias_bprop(x, y, b, out, dout):
        return dout, dout, col_sum(dout)

    return {"column_sum": col_sum,
            "layer_norm": custom("LayerNormForward", lambda x, g, b, eps: x, ln_bprop),
            "layer_norm_ones": custom("LayerNormOnesForward", lambda x, g, b, eps: x[:-1] + [x[-1] + 1],
                                      ln_ones_bprop),
            "bias_add": custom("BiasAddForward", lambda x, b: x, bias_bprop),
            "residual_bias_add": custom("ResidualBiasAdd", lambda x, y, b: x, residual_bias_bprop)}


def _self_check(made):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 24)).astype(np.float32) * 3 + 1
    g, b = rng.standard_normal(24).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-6) * g + b
    got = made["layer_norm"](ms.Tensor(x), ms.Tensor(g), ms.Tensor(b), ms.Tensor([1e-6], ms.float32)).asnumpy()
    err = float(np.abs(got - ref).max())
    add_err = float(np.abs(made["bias_add"](ms.Tensor(x), ms.Tensor(b)).asnumpy() - (x + b)).max())
    ones = made["layer_norm_ones"](ms.Tensor(x), ms.Tensor(g), ms.Tensor(b), ms.Tensor([1e-6], ms.float32)).asnumpy()
    err = max(err, float(np.abs(ones - np.concatenate([ref, np.ones_like(ref[..., :1])], -1)).max()))
    y = x[::-1].copy()
    add_err = max(add_err, float(np.abs(made["residual_bias_add"](ms.Tensor(x), ms.Tensor(y), ms.Tensor(b)).asnumpy()
                                        - (x + (y + b))).max()))
    if err > 1e-4 or add_err > 1e-6:
        raise KernelBuildError(f"row kernels disagree with numpy on the self-check (layer norm {err:.3g}, "
                               f"bias add {add_err:.3g})")


def load():
    """{"layer_norm", "bias_add", "column_sum"} primitives built and self-checked once, or None if that failed."""
    return load_once("rowops", _build_and_check)


def _build_and_check():
    made = _make_ops(build("rowops.cc"))
    _self_check(made)
    return made


def _get(name):
    made = load()
    return None if made is None else made[name]


def layer_norm_op():
    return _get("layer_norm")


def layer_norm_ones_op():
    """``ln(x, gamma, beta, eps)`` with a column of ones appended: (..., C) -> (..., C + 1), for a Linear that
    takes its bias inside the matmul."""
    return _get("layer_norm_ones")


def bias_add_op():
    return _get("bias_add")


def residual_bias_add_op():
    """``add(x, y, b)`` = x + (y + b): a residual add taking the branch's last Linear before its bias."""
    return _get("residual_bias_add")


def column_sum_op():
    """Sum over all axes but the last (a bias gradient)."""
    return _get("column_sum")
