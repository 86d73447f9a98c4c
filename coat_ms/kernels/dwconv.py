"""Channels-last depthwise convolution on token maps as a MindSpore AOT custom op (CPU only).

``token_dwconv(x, weight, bias, meta)`` convolves the image tokens of ``x`` (B, T, Cx) -- image
token (i, j) is row ``off + i * W + j`` -- over channels ``[c0, c0 + C)`` and returns (B, T, C).
``pack_weights`` turns one or more torch-layout depthwise weights (C_i, 1, k_i, k_i) into the
kernel's (K*K, C) tap table (``tap_embeddings`` centres the smaller kernels), so crpe's three
convolutions run as one op.
Forward and backward are C++ (dwconv.cc); gradients are checked against the stock op in tests.
"""
import mindspore as ms
import numpy as np
from mindspore import ops

from .loader import load as load_once
from .build import KernelBuildError, build

MODE_CONV = 0  # y = conv(x) + b, leading (CLS) rows zero
MODE_RESIDUAL = 1  # y = x + conv(x) + b, leading rows copied from x


def _make_ops(lib):
    """The three Custom primitives (forward, input grad, weight grad) and the forward's bprop."""
    fwd = ops.Custom(f"{lib}:DwConvForward", out_shape=lambda x, w, b, m: (x[0], x[1], w[1]),
                     out_dtype=lambda x, w, b, m: x, func_type="aot")
    bwd_x = ops.Custom(f"{lib}:DwConvBackwardInput", out_shape=lambda g, w, m, x: x,
                       out_dtype=lambda g, w, m, x: g, func_type="aot")
    bwd_w = ops.Custom(f"{lib}:DwConvBackwardWeight", out_shape=lambda x, g, w, m: (w[0] + 1, w[1]),
                       out_dtype=lambda x, g, w, m: x, func_type="aot")

    def bprop(x, w, b, meta, out, dout):
        dx = bwd_x(dout, w, meta, x)
        dwb = bwd_w(x, dout, w, meta)
        return dx, dwb[:-1], dwb[-1], ops.zeros_like(meta)

    fwd_with_grad = ops.Custom(f"{lib}:DwConvForward", out_shape=lambda x, w, b, m: (x[0], x[1], w[1]),
                               out_dtype=lambda x, w, b, m: x, func_type="aot", bprop=bprop)
    return fwd_with_grad, fwd, bwd_x, bwd_w


def _self_check(fwd):
    """Run the kernel once against the stock op on a small map; a mismatch disables it."""
    rng = np.random.default_rng(0)
    B, H, W, C, k = 2, 5, 6, 8, 3
    x = rng.standard_normal((B, 1 + H * W, C)).astype(np.float32)
    w = rng.standard_normal((C, 1, k, k)).astype(np.float32)
    b = rng.standard_normal((C,)).astype(np.float32)
    img = ms.Tensor(x[:, 1:].reshape(B, H, W, C).transpose(0, 3, 1, 2))
    ref = ops.conv2d(img, ms.Tensor(w), ms.Tensor(b), stride=1, pad_mode="pad", padding=k // 2, groups=C)
    ref = ref.asnumpy().reshape(B, C, H * W).transpose(0, 2, 1)
    taps = w.reshape(C, k * k).T.copy()
    got = fwd(ms.Tensor(x), ms.Tensor(taps), ms.Tensor(b), make_meta(H, W, 1, 0, C, k, (k,) * C, MODE_CONV))
    got = got.asnumpy()
    err = float(np.abs(got[:, 1:] - ref).max())
    if err > 1e-4 or np.abs(got[:, 0]).max() != 0:
        raise KernelBuildError(f"kernel disagrees with ops.conv2d on the self-check (max abs error {err:.3g})")


def load():
    """The three primitives and the forward's bprop (built and self-checked once), or None if that failed."""
    return load_once("dwconv", _build_and_check)


def _build_and_check():
    made = _make_ops(build("dwconv.cc"))
    _self_check(made[1])
    return made


def dwconv_op():
    """The forward primitive (with bprop), or None where the kernel is unavailable."""
    made = load()
    return None if made is None else made[0]


def make_meta(H, W, off, c0, C, K, ks, mode):
    """The kernel's int32 descriptor [H, W, off, c0, C, K, mode, k_0..k_{C-1}].

    ``ks`` may be a tuple or a ready int32 Tensor (cells keep one, so graph compilation does not
    fold a few hundred constants at every call site).
    """
    head = ms.Tensor((H, W, off, c0, C, K, mode), ms.int32)
    if isinstance(ks, ms.Tensor):
        return ops.concat((head, ks), axis=0)
    return ops.concat((head, ms.Tensor(tuple(ks), ms.int32)), axis=0)


def kernel_size_table(ks):
    """Per-channel kernel sizes as the int32 Tensor ``make_meta`` takes."""
    return ms.Tensor(np.asarray(ks, dtype=np.int32))


def tap_embeddings(kernel_sizes):
    """Constant 0/1 matrices (k*k, K*K) that place each k x k kernel in the centre of K x K.

    ``pack_weights`` applies them as matmuls: ``ops.pad`` would do the same, but its gradient hangs
    on the second call of a compiled training step on MindSpore 2.10's CPU backend (see
    docs/performance.md). A product with a 0/1 matrix is exact in fp32.
    """
    K = max(kernel_sizes)
    mats = []
    for k in kernel_sizes:
        p = (K - k) // 2
        m = np.zeros((k * k, K * K), np.float32)
        for i in range(k):
            for j in range(k):
                m[i * k + j, (i + p) * K + (j + p)] = 1.0
        mats.append(ms.Tensor(m))
    return tuple(mats)


def pack_weights(weights, embeddings=None):
    """Depthwise weights [(C_i, 1, k_i, k_i)] -> taps (K*K, sum C_i), each kernel centred in K x K.

    One weight needs no embedding; several need ``tap_embeddings(kernel_sizes)``.
    """
    if len(weights) == 1:
        w = weights[0]
        return w.reshape(w.shape[0], -1).transpose(1, 0)
    parts = ()
    for w, embed in zip(weights, embeddings):
        parts = parts + (ops.matmul(w.reshape(w.shape[0], -1), embed),)
    return ops.concat(parts, axis=0).transpose(1, 0)
