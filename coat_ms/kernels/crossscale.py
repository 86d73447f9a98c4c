"""A parallel block's cross-scale sum for one scale as a MindSpore AOT custom op with its own backward (CPU only).

``cross_scale_sum_op()`` -> ``f(x, cur, a, b, ra, ca, rb, cb)`` = x + ((cur + resize(a)) + resize(b)) on tokens
with CLS (the CLS rows add unresized), where (ra, ca) and (rb, cb) are the separable bilinear matrices of
a's and b's resizes to x's grid (``coat_ms.models.tokens.token_resize_factors``). None where the kernel is
unavailable. C++ in crossscale.cc; forward and gradients are checked against the stock ops in
tests/test_kernels.py.
"""
import mindspore as ms
import numpy as np
from mindspore import ops

from .build import KernelBuildError, build
from .loader import load as load_once


def _make_op(lib):
    def resized_shape(src, r, c):
        return [src[0], 1 + r[0] * c[0], src[2]]

    resize = ops.Custom(f"{lib}:ResizeTokens", out_shape=resized_shape, out_dtype=lambda src, r, c: src,
                        func_type="aot")

    def bprop(x, cur, a, b, ra, ca, rb, cb, out, dout):
        # a resize's input gradient is the resize by the transposed matrices
        return (dout, dout, resize(dout, ra.T, ca.T), resize(dout, rb.T, cb.T), ops.zeros_like(ra),
                ops.zeros_like(ca), ops.zeros_like(rb), ops.zeros_like(cb))

    return ops.Custom(f"{lib}:CrossScaleSum", out_shape=lambda x, *rest: x, out_dtype=lambda x, *rest: x,
                      func_type="aot", bprop=bprop)


def reference(x, cur, a, b, ra, ca, rb, cb):
    """numpy float64 version of the forward (self-check and tests)."""
    def resize(t, r, c):
        B, _, C = t.shape
        img = t[:, 1:].astype(np.float64).reshape(B, r.shape[1], c.shape[1], C)
        img = np.einsum("ih,bhwc,jw->bijc", r.astype(np.float64), img, c.astype(np.float64))
        return np.concatenate([t[:, :1].astype(np.float64), img.reshape(B, -1, C)], axis=1)
    return x.astype(np.float64) + cur + resize(a, ra, ca) + resize(b, rb, cb)


def _self_check(op):
    rng = np.random.default_rng(0)
    grids = {"x": (4, 6), "a": (2, 3), "b": (8, 12)}
    t = {k: rng.standard_normal((2, 1 + h * w, 5)).astype(np.float32) for k, (h, w) in grids.items()}
    ra, ca = rng.random((4, 2)).astype(np.float32), rng.random((6, 3)).astype(np.float32)
    rb, cb = rng.random((4, 8)).astype(np.float32), rng.random((6, 12)).astype(np.float32)
    args = (t["x"], t["x"][::-1].copy(), t["a"], t["b"], ra, ca, rb, cb)
    got = op(*(ms.Tensor(v) for v in args)).asnumpy()
    err = float(np.abs(got - reference(*args)).max())
    if err > 1e-4:
        raise KernelBuildError(f"cross-scale kernel disagrees with numpy on the self-check (max abs error {err:.3g})")


def load():
    """The cross-scale sum primitive (with bprop), built and self-checked once, or None if that failed."""
    return load_once("crossscale", _build_and_check)


def _build_and_check():
    op = _make_op(build("crossscale.cc"))
    _self_check(op)
    return op


def cross_scale_sum_op():
    return load()
