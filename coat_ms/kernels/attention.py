"""CoaT's factorized attention plus its crpe product as one MindSpore AOT custom op with its own backward (CPU).

``factor_attention_op()`` -> ``attend(qkv, conv, cfg)`` = scale * q_h softmax_N(k_h)^T v_h + q * conv per head,
with qkv (B, N, 3C) the qkv tokens, conv (B, N, C) crpe's convolution of v and cfg = ``attention_config``;
or None where the kernel is unavailable. C++ in attention.cc; forward and gradients are checked
against the stock-op formulation in tests/test_kernels.py.
"""
import mindspore as ms
import numpy as np
from mindspore import ops

from .loader import load as load_once
from .build import KernelBuildError, build


def attention_config(num_heads, scale):
    """The kernel's float32 descriptor [heads, scale]."""
    return ms.Tensor(np.array([num_heads, scale], np.float32))


def reference(qkv, conv, num_heads, scale):
    """numpy float64 version of the forward (self-check and tests)."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (qkv[..., i * C:(i + 1) * C].astype(np.float64).reshape(B, N, num_heads, C // num_heads)
               for i in range(3))
    e = np.exp(k - k.max(axis=1, keepdims=True))
    ksm = e / e.sum(axis=1, keepdims=True)
    kv = np.einsum("bnhj,bnhc->bhjc", ksm, v)
    out = scale * np.einsum("bnhj,bhjc->bnhc", q, kv).reshape(B, N, C)
    return out + q.reshape(B, N, C) * conv


def _make_op(lib):
    bwd = ops.Custom(f"{lib}:FactorAttentionBackward", out_shape=lambda qkv, conv, cfg, dout: (qkv, conv),
                     out_dtype=lambda qkv, conv, cfg, dout: (qkv, conv), func_type="aot")

    def bprop(qkv, conv, cfg, out, dout):
        grads = bwd(qkv, conv, cfg, dout)
        return grads[0], grads[1], ops.zeros_like(cfg)

    return ops.Custom(f"{lib}:FactorAttentionForward", out_shape=lambda qkv, conv, cfg: conv,
                      out_dtype=lambda qkv, conv, cfg: conv, func_type="aot", bprop=bprop)


def _self_check(attend):
    rng = np.random.default_rng(0)
    heads, C = 2, 6
    qkv = rng.standard_normal((2, 7, 3 * C)).astype(np.float32) * 2
    conv = rng.standard_normal((2, 7, C)).astype(np.float32)
    got = attend(ms.Tensor(qkv), ms.Tensor(conv), attention_config(heads, 0.4)).asnumpy()
    err = float(np.abs(got - reference(qkv, conv, heads, 0.4)).max())
    if err > 1e-5:
        raise KernelBuildError(f"attention kernel disagrees with numpy on the self-check (max abs error {err:.3g})")


def load():
    """The fused attention primitive (with bprop), built and self-checked once, or None if that failed."""
    return load_once("attention", _build_and_check)


def _build_and_check():
    attend = _make_op(build("attention.cc"))
    _self_check(attend)
    return attend


def factor_attention_op():
    return load()
