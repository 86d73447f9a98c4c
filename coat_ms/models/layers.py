"""Small building blocks of CoaT, written so that their parameters carry PyTorch's names.

Every layer here keeps the parameter names and shapes of the matching ``torch.nn`` module
(``weight`` / ``bias``), so a PyTorch state-dict key is also the MindSpore parameter name.
Layers with a CPU kernel take the model's ``backend`` (backend.py) and keep what it gives them in one
attribute, ``kernel``: the C++ primitive, or None for MindSpore's own operators.
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import TruncatedNormal, Uniform, initializer


def trunc_normal(shape, std=0.02):
    """Truncated normal init used by CoaT for Linear weights and CLS tokens."""
    return initializer(TruncatedNormal(sigma=std), shape, ms.float32)


def torch_default_uniform(shape, fan_in):
    """PyTorch's default Conv init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weights and biases."""
    return initializer(Uniform(scale=1.0 / math.sqrt(fan_in)), shape, ms.float32)


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last axis with PyTorch parameter names (``weight``, ``bias``), computed in float32.

    ``nn.LayerNorm`` calls them gamma/beta and defaults to eps 1e-7; CoaT needs 1e-6 in blocks
    and 1e-5 in patch embeddings, so eps is always explicit here.  It subclasses ``nn.LayerNorm`` only
    so that mixed precision (MindSpore's and mindcv's O2 lists name ``nn.LayerNorm``) keeps it in
    float32; its own ``__init__`` is skipped because it would create gamma/beta.  Whatever the
    amp level, the statistics are taken in float32 (float16 loses them on wide rows, and MindSpore's
    CPU LayerNorm has no float16 kernel) and the result is returned in the input's dtype.
    """

    def __init__(self, dim, eps, *, backend):
        nn.Cell.__init__(self)  # pylint: disable=non-parent-init-called
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32), name="bias")
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        # CPU: one C++ pass forward and backward (MindSpore's LayerNormGrad is slow there)
        self.kernel = backend.op("layer_norm")
        self.ones_kernel = backend.op("layer_norm_ones")
        self.eps_tensor = Tensor(np.array([eps], np.float32))

    def construct(self, x):
        if self.kernel is not None:
            return self.kernel(x, self.weight, self.bias, self.eps_tensor)
        y, _, _ = self.layer_norm(x.astype(ms.float32), self.weight.astype(ms.float32),
                                  self.bias.astype(ms.float32))
        return y.astype(x.dtype)

    def with_ones(self, x):
        """CPU kernels: the LayerNorm with a column of ones appended, (..., C) -> (..., C + 1), for
        ``Linear.augmented``."""
        return self.ones_kernel(x, self.weight, self.bias, self.eps_tensor)

    def extend_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Linear(nn.Dense):
    """``nn.Dense`` initialised as CoaT does (trunc normal std 0.02, zero bias).

    ``nn.Dense`` already stores ``weight`` as (out, in) and ``bias`` like ``torch.nn.Linear``.
    """

    def __init__(self, in_features, out_features, bias=True, *, backend):
        super().__init__(in_features, out_features, has_bias=bias,
                         weight_init=trunc_normal((out_features, in_features)),
                         bias_init="zeros")
        # CPU: bias add whose gradient is a C++ column sum (MindSpore's BiasAddGrad is slow there)
        self.kernel = backend.op("bias_add") if bias else None

    def construct(self, x):
        if self.kernel is None:
            return super().construct(x)
        return self.kernel(self.unbiased(x), self.bias)

    def unbiased(self, x):
        """x @ weight^T without the bias, for a kernel that adds the bias in a later pass (CPU kernels)."""
        return self._matmul(x, self.weight)

    def augmented(self, x_ones):
        """The layer on an input with a column of ones appended (``LayerNorm.with_ones``): [x, 1] @ [W | b]^T,
        the bias taken inside the matmul instead of in a pass over the output (CPU kernels)."""
        return self._matmul(x_ones, ops.concat((self.weight, self.bias.reshape(-1, 1)), axis=1))

    def _matmul(self, x, weight):
        shape = x.shape
        y = self.matmul(x.reshape(-1, shape[-1]), weight)
        return y.reshape(shape[:-1] + (y.shape[-1],))


class DepthwiseConv2d(nn.Cell):
    """Depthwise k x k convolution, stride 1, 'same' zero padding, with bias.

    Weight (C, 1, k, k) and bias (C,) as in ``torch.nn.Conv2d(C, C, k, padding=k//2, groups=C)``.
    Kept as one cell so the CPU kernel can be swapped without touching the model.
    """

    def __init__(self, channels, kernel_size):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        fan_in = kernel_size * kernel_size  # in_channels / groups == 1
        self.weight = Parameter(torch_default_uniform((channels, 1, kernel_size, kernel_size), fan_in),
                                name="weight")
        self.bias = Parameter(torch_default_uniform((channels,), fan_in), name="bias")
        self.pad = kernel_size // 2

    def construct(self, x):
        # functional ops get no mixed-precision cast of their Parameters: compute in the input's dtype
        return ops.conv2d(x, self.weight.astype(x.dtype), self.bias.astype(x.dtype), stride=1, pad_mode="pad",
                          padding=self.pad, groups=self.channels)

    def extend_repr(self):
        return f"{self.channels}, kernel_size={self.kernel_size}"


class PatchEmbed(nn.Cell):
    """Non-overlapping p x p patch embedding followed by LayerNorm (eps 1e-5).

    The stride-p convolution of the official model is computed as patchify + matmul, which is the
    same sum of products and much faster than MindSpore's CPU convolution. The input is channels-last
    (B, H, W, C) so that stages hand tokens on without transposes. ``proj.weight`` keeps the
    Conv2d layout (D, C, p, p).
    """

    def __init__(self, patch_size, in_chans, embed_dim, *, backend):
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = _ConvWeights(embed_dim, in_chans, patch_size)
        self.norm = LayerNorm(embed_dim, eps=1e-5, backend=backend)
        self.matmul = ops.MatMul(transpose_b=True)
        self.kernel = backend.op("bias_add")

    def construct(self, x):
        """(B, H, W, C) -> tokens (B, H/p * W/p, D)."""
        B, H, W, C = x.shape
        p = self.patch_size
        h, w = H // p, W // p
        x = x.reshape(B, h, p, w, p, C).transpose(0, 1, 3, 2, 4, 5).reshape(B * h * w, p * p * C)
        # (D, C, p, p) -> (D, p, p, C) to match the (kh, kw, c) order of the patches above.
        # Cast to the input's dtype: under mixed precision the weights stay float32 and the input is float16.
        weight = self.proj.weight.astype(x.dtype).transpose(0, 2, 3, 1).reshape(self.embed_dim, p * p * C)
        # 2-D MatMul with transpose_b: a 3-D ops.matmul would broadcast the weight over the batch
        x = self.matmul(x, weight)
        x = x + self.proj.bias.astype(x.dtype) if self.kernel is None else self.kernel(x, self.proj.bias)
        return self.norm(x.reshape(B, h * w, self.embed_dim))


class _ConvWeights(nn.Cell):
    """Holds a Conv2d's ``weight`` (D, C, p, p) and ``bias`` (D,) under the name ``proj``."""

    def __init__(self, out_channels, in_channels, kernel_size):
        super().__init__()
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = Parameter(torch_default_uniform((out_channels, in_channels, kernel_size, kernel_size),
                                                      fan_in), name="weight")
        self.bias = Parameter(torch_default_uniform((out_channels,), fan_in), name="bias")


class GELU(nn.Cell):
    """Exact GELU, x * Phi(x) with erf (``nn.GELU()`` defaults to the tanh approximation).

    On CPU a fused C++ kernel (coat_ms/kernels/gelu.cc) replaces the four elementwise passes
    MindSpore makes of it; otherwise ``ops.gelu``.
    """

    def __init__(self, *, backend):
        super().__init__()
        self.kernel = backend.op("gelu")

    def construct(self, x):
        if self.kernel is not None:
            return self.kernel(x)
        return ops.gelu(x, approximate="none")


class Mlp(nn.Cell):
    """fc1 -> exact (erf) GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features, hidden_features, drop=0.0, *, backend):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features, backend=backend)
        self.act = GELU(backend=backend)
        self.fc2 = Linear(hidden_features, in_features, backend=backend)
        self.drop = nn.Dropout(p=drop)
        # CPU: fc1's bias add and the GELU in one pass over the largest activation
        self.kernel = backend.op("bias_gelu")

    def construct(self, x):
        if self.kernel is not None:
            x = self.drop(self.kernel(self.fc1.unbiased(x), self.fc1.bias))
        else:
            x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))

    def fused(self, x):
        """CPU kernels, dropout off: the MLP without fc2's bias, which the residual add adds (``residual_bias_add``)."""
        return self.fc2.unbiased(self.kernel(self.fc1.unbiased(x), self.fc1.bias))


class DropPath(nn.Cell):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob
        self.keep_prob = 1.0 - drop_prob

    def construct(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = ops.floor(self.keep_prob + ops.rand(shape, dtype=x.dtype))
        return x / self.keep_prob * mask

    def extend_repr(self):
        return f"drop_prob={self.drop_prob}"


class Aggregate(nn.Cell):
    """``torch.nn.Conv1d(3, 1, kernel_size=1)`` over the three CLS tokens, with torch's weight shape (1, 3, 1).

    MindSpore's Conv1d would store (1, 3, 1, 1); a weighted sum keeps the PyTorch layout.
    """

    def __init__(self, in_channels=3):
        super().__init__()
        self.weight = Parameter(torch_default_uniform((1, in_channels, 1), in_channels), name="weight")
        self.bias = Parameter(torch_default_uniform((1,), in_channels), name="bias")

    def construct(self, x):
        """(B, 3, C) -> (B, C)."""
        return (x * self.weight.astype(x.dtype)).sum(axis=1) + self.bias.astype(x.dtype)
