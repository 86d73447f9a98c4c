"""CoaT: Co-Scale Conv-Attentional Image Transformers (Xu et al., ICCV 2021) in MindSpore.

Faithful to the official model (mlpc-ucsd/CoaT) and to timm's port:
  * factorized attention  q @ (softmax_N(k)^T @ v)  -- never an N x N matrix;
  * convolutional relative position encoding (crpe): q_img * DWConv(v_img), heads split 2/3/3 over
    kernels 3/5/7, zero row for the CLS token, not scaled by head_dim^-0.5;
  * convolutional position encoding (cpe): x + DWConv3x3(x) on image tokens, CLS passes through;
  * exact (erf) GELU; LayerNorm eps 1e-6 in blocks and final norms, 1e-5 in patch embeddings;
  * parallel blocks: bilinear half-pixel interpolation (align_corners=False) to explicit target sizes,
    the CLS token riding along (so CLS rows are summed across scales);
  * CoaT: norms 2-4 on the CLS tokens, Conv1d(3 -> 1) aggregate, head.  CoaT-Lite: norm4 CLS, head.
  * any input H x W divisible by 32: grid sizes are read from the input at run time.

Parameter naming rule: every parameter name equals the PyTorch (timm / official) state-dict key.
  Layers keep torch's ``weight``/``bias`` names and shapes (see layers.py), attributes are assigned in
  timm's order, and tied modules are real shared cells (one Parameter each).  A PyTorch state dict
  lists a tied tensor under several keys; its first key (``cpe1.*``, ``crpe1.*``, ``mlp2.*``) is the
  MindSpore name, the others (``serial_blocks1.0.cpe.*``, ``...factoratt_crpe.crpe.*``, ``mlp3.*``,
  ``mlp4.*``) are aliases.  Official checkpoints also hold unused ``norm1`` (and ``norm2``/``norm3``
  for Lite), which this model does not have.
"""
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from ..kernels import MODE_CONV, MODE_RESIDUAL, kernel_size_table, make_meta, pack_weights, tap_embeddings
from ..kernels.attention import attention_config
from ..runtime import after_graph_compile
from .backend import BackendError, resolve_backend
from .layers import (Aggregate, DepthwiseConv2d, DropPath, LayerNorm, Linear, Mlp, PatchEmbed,
                     trunc_normal)
from .tokens import (nchw_to_tokens, resize_interpolate, resize_separable, split_cls, token_resize_factors,
                     tokens_to_nchw)

BLOCK_NORM_EPS = 1e-6
# the attribute under which mindcv's (_op) and MindSpore's (_backbone) amp wrappers hold the wrapped cell
_AMP_WRAPPER_ATTRIBUTES = ("_op", "_backbone")
DEFAULT_CRPE_WINDOW = {3: 2, 5: 3, 7: 3}


def _take_indices(count, indices):
    """timm's index rule: None -> all ``count`` positions, an int n -> the last n, a sequence -> those
    (negative from the end); returned sorted and unique, in depth order."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if indices < 1 or indices > count:
            raise ValueError(f"indices={indices}: take the last n for n from 1 to {count}")
        return tuple(range(count - indices, count))
    chosen = ()
    for i in indices:
        if i < -count or i >= count:
            raise ValueError(f"index {i} is out of range: there are {count} intermediate outputs")
        chosen = chosen + ((i + count if i < 0 else i),)
    if not chosen:
        raise ValueError("indices is empty: name at least one intermediate output")
    take = ()
    for i in range(count):
        if i in chosen:
            take = take + (i,)
    return take


def parallel_resize_factors(sizes, align_corners):
    """The separable resize matrices of a parallel block, in the order its construct takes them: the pairs
    3->2, 4->3, 4->2, 2->3, 3->4, 2->4 (``token_resize_factors``) for the scales' grid ``sizes``."""
    _, s2, s3, s4 = sizes
    return tuple(token_resize_factors(src, dst, align_corners)
                 for src, dst in ((s3, s2), (s4, s3), (s4, s2), (s2, s3), (s3, s4), (s2, s4)))


def _runs_fused(block):
    """Whether a block runs its fused CPU-kernel form: the backend has all the kernels
    (``Backend.fuses_blocks``), qkv has a bias, and the branches are deterministic (evaluation, or training without drop path and
    dropout), so a Linear's bias can move into the matmul before it or the residual add after it."""
    return block.fused and (not block.training or block.deterministic)


class ConvPosEnc(nn.Cell):
    """cpe: image tokens + depthwise 3x3 conv of themselves; the CLS token passes through.

    With the dwconv kernel (CPU) one C++ op does all of it on the token tensor; otherwise the stock
    conv runs on an NCHW view.
    """

    def __init__(self, dim, k=3, *, backend):
        super().__init__()
        self.proj = DepthwiseConv2d(dim, k)
        self.dim = dim
        self.k = k
        self.kernel_sizes = kernel_size_table((k,) * dim)
        self.kernel = backend.op("dwconv")

    def construct(self, x, size):
        if self.kernel is not None:
            taps = pack_weights((self.proj.weight,))
            meta = make_meta(size[0], size[1], 1, 0, self.dim, self.k, self.kernel_sizes, MODE_RESIDUAL)
            return self.kernel(x, taps, self.proj.bias, meta)
        cls_token, img = split_cls(x)
        feat = tokens_to_nchw(img, size)
        img = nchw_to_tokens(self.proj(feat) + feat)
        return ops.concat((cls_token, img), axis=1)


class ConvRelPosEnc(nn.Cell):
    """crpe: q_img * DWConv(v_img), with one depthwise conv per group of heads.

    ``window`` maps kernel size -> number of heads ({3: 2, 5: 3, 7: 3}), or is one int for all heads.
    Channels are head-major (h, Ch), so each conv sees whole heads.
    """

    def __init__(self, head_chs, num_heads, window, *, backend):
        super().__init__()
        if isinstance(window, int):
            window = {window: num_heads}
        if not isinstance(window, dict) or sum(window.values()) != num_heads:
            raise ValueError(f"crpe_window must be an int or a dict kernel->heads summing to num_heads="
                             f"{num_heads}, got {window!r}")
        self.window = dict(window)
        self.head_chs = head_chs
        self.num_heads = num_heads
        self.channel_splits = tuple(heads * head_chs for heads in window.values())
        self.conv_list = nn.CellList([DepthwiseConv2d(heads * head_chs, kernel)
                                      for kernel, heads in window.items()])
        # dwconv kernel (CPU): the three convolutions run as one op reading v straight out of the qkv tokens.
        self.kernel_sizes = tuple(window.keys())
        self.tap_embeddings = tap_embeddings(self.kernel_sizes)
        self.channel_kernel = kernel_size_table([k for k, heads in window.items() for _ in range(heads * head_chs)])
        self.kernel = backend.op("dwconv")

    def conv_tokens(self, qkv, size):
        """Kernel path: DWConv(v_img) as tokens (B, 1 + N, C) with a zero CLS row.

        v is read by the kernel straight out of the qkv tokens (B, 1 + N, 3C): no slice, no transpose.
        """
        C = self.head_chs * self.num_heads
        taps = pack_weights(tuple(conv.weight for conv in self.conv_list), self.tap_embeddings)
        bias = ops.concat(tuple(conv.bias for conv in self.conv_list), axis=0)
        meta = make_meta(size[0], size[1], 1, 2 * C, C, max(self.kernel_sizes), self.channel_kernel, MODE_CONV)
        return self.kernel(qkv, taps, bias, meta)

    def construct(self, q, v, size):
        B, h, N, Ch = q.shape
        q_img = q[:, :, 1:]
        v_img = v[:, :, 1:].transpose(0, 1, 3, 2).reshape(B, h * Ch, size[0], size[1])
        if len(self.channel_splits) == 1:
            conv_v = self.conv_list[0](v_img)
        else:
            parts = ops.split(v_img, self.channel_splits, axis=1)
            outs = ()
            for i in range(len(self.channel_splits)):
                outs = outs + (self.conv_list[i](parts[i]),)
            conv_v = ops.concat(outs, axis=1)
        conv_v = conv_v.reshape(B, h, Ch, N - 1).transpose(0, 1, 3, 2)
        ev_hat = q_img * conv_v
        zero_cls = ops.zeros((B, h, 1, Ch), ev_hat.dtype)
        return ops.concat((zero_cls, ev_hat), axis=2)


class FactorAttnConvRelPosEnc(nn.Cell):
    """Factorized attention with convolutional relative position encoding (crpe is shared)."""

    def __init__(self, dim, num_heads, qkv_bias, proj_drop, shared_crpe, *, backend):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias, backend=backend)
        self.proj = Linear(dim, dim, backend=backend)
        self.proj_drop = nn.Dropout(p=proj_drop)
        self.crpe = shared_crpe
        # CPU: softmax, both per-head products and the crpe product in one kernel on the qkv tokens.
        # A backend has it only together with the dwconv kernel, whose token-layout output it takes.
        self.kernel = backend.op("attention")
        self.attention_config = attention_config(num_heads, self.scale)

    def construct(self, x, size):
        return self.proj_drop(self.proj(self.attend(x, size)))

    def fused(self, x_ones, size):
        """CPU kernels, dropout off: the attention on ``LayerNorm.with_ones`` output (qkv's bias inside its
        matmul), before proj's bias."""
        return self.proj.unbiased(self.attend(x_ones, size, augmented=True))

    def attend(self, x, size, augmented=False):
        """The attended tokens (B, N, C), before ``proj``; ``augmented``: x carries a ones column (kernels)."""
        if self.kernel is not None:  # token layout throughout: no split, transpose or strided slice
            qkv = self.qkv.augmented(x) if augmented else self.qkv(x)
            return self.kernel(qkv, self.crpe.conv_tokens(qkv, size), self.attention_config)
        B, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, h, C // h).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, N, Ch)

        # over tokens, CLS included; in float32 whatever the amp level (a sum over thousands of tokens)
        k_softmax = ops.softmax(k.astype(ms.float32), axis=2).astype(k.dtype)
        factor_att = ops.matmul(q, ops.matmul(k_softmax.transpose(0, 1, 3, 2), v))  # (B, h, N, Ch)
        x = self.scale * factor_att + self.crpe(q, v, size)
        return x.transpose(0, 2, 1, 3).reshape(B, N, C)


class SerialBlock(nn.Cell):
    """cpe -> norm1 -> conv-attention -> residual -> norm2 -> MLP -> residual.

    ``cpe_residual=True`` (official): the attention residual is added to the cpe output.  False
    reproduces mindcv 0.3.0, which adds it to the block input: x + attn(norm1(cpe(x))).
    """

    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, proj_drop, drop_path, shared_cpe, shared_crpe,
                 cpe_residual=True, *, backend):
        super().__init__()
        self.cpe_residual = cpe_residual
        self.cpe = shared_cpe
        self.norm1 = LayerNorm(dim, BLOCK_NORM_EPS, backend=backend)
        self.factoratt_crpe = FactorAttnConvRelPosEnc(dim, num_heads, qkv_bias, proj_drop, shared_crpe,
                                                      backend=backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(dim, BLOCK_NORM_EPS, backend=backend)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, backend=backend)
        # CPU kernels (_runs_fused): qkv's bias inside its matmul (norm1 appends a ones column), proj's and
        # fc2's added by the residual adds, fc1's by the GELU: no pass of its own for any bias
        self.fused = backend.fuses_blocks and bool(qkv_bias)
        self.residual_add = backend.op("residual_bias_add")
        self.deterministic = drop_path == 0.0 and proj_drop == 0.0

    def construct(self, x, size):
        y = self.cpe(x, size)
        if self.cpe_residual:
            x = y
        if _runs_fused(self):
            attn = self.factoratt_crpe
            x = self.residual_add(x, attn.fused(self.norm1.with_ones(y), size), attn.proj.bias)
            return self.residual_add(x, self.mlp.fused(self.norm2(x)), self.mlp.fc2.bias)
        x = x + self.drop_path(self.factoratt_crpe(self.norm1(y), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ParallelBlock(nn.Cell):
    """Conv-attention on scales 2-4, cross-scale exchange by interpolation, shared MLP.

    ``align_corners=False`` is the official half-pixel bilinear; True reproduces mindcv's CoaT.
    The resize formulation is the backend's (tokens.py): separable matmuls on CPU kernels, MindSpore's
    bilinear resize on stock operators.
    """

    def __init__(self, dims, num_heads, mlp_ratios, qkv_bias, proj_drop, drop_path, shared_crpes,
                 align_corners=False, *, backend):
        super().__init__()
        if not dims[1] == dims[2] == dims[3] or not mlp_ratios[1] == mlp_ratios[2] == mlp_ratios[3]:
            raise ValueError(f"parallel blocks need equal dims and mlp ratios for scales 2-4, "
                             f"got embed_dims={list(dims)}, mlp_ratios={list(mlp_ratios)}")
        self.align_corners = align_corners
        self.token_resize = backend.token_resize
        self.norm12 = LayerNorm(dims[1], BLOCK_NORM_EPS, backend=backend)
        self.norm13 = LayerNorm(dims[2], BLOCK_NORM_EPS, backend=backend)
        self.norm14 = LayerNorm(dims[3], BLOCK_NORM_EPS, backend=backend)
        attention_args = dict(num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop, backend=backend)
        self.factoratt_crpe2 = FactorAttnConvRelPosEnc(dims[1], shared_crpe=shared_crpes[1], **attention_args)
        self.factoratt_crpe3 = FactorAttnConvRelPosEnc(dims[2], shared_crpe=shared_crpes[2], **attention_args)
        self.factoratt_crpe4 = FactorAttnConvRelPosEnc(dims[3], shared_crpe=shared_crpes[3], **attention_args)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm22 = LayerNorm(dims[1], BLOCK_NORM_EPS, backend=backend)
        self.norm23 = LayerNorm(dims[2], BLOCK_NORM_EPS, backend=backend)
        self.norm24 = LayerNorm(dims[3], BLOCK_NORM_EPS, backend=backend)
        self.mlp2 = self.mlp3 = self.mlp4 = Mlp(dims[1], int(dims[1] * mlp_ratios[1]), drop=proj_drop,
                                                backend=backend)
        # CPU kernels (_runs_fused): as SerialBlock, and each scale's resizes, sum and residual in one op
        self.fused = backend.fuses_blocks and bool(qkv_bias)
        self.residual_add = backend.op("residual_bias_add")
        self.cross_scale_sum = backend.op("cross_scale_sum")
        self.deterministic = drop_path == 0.0 and proj_drop == 0.0

    def interpolate(self, x, size, target, factors=None):
        """Resize the image tokens of x from grid ``size`` to grid ``target``; CLS rides along.

        ``factors``: the separable form's matrix pair (CoaT computes them once per forward for all blocks).
        """
        if self.token_resize == "separable":
            if factors is None:
                factors = token_resize_factors(size, target, self.align_corners)
            return resize_separable(x, size, target, factors)
        return resize_interpolate(x, size, target, self.align_corners)

    @staticmethod
    def _fused_attention(attn, norm, x, size):
        """A scale's attention in the fused form, proj's bias included (the resizes take the sum)."""
        return attn.proj(attn.attend(norm.with_ones(x), size, augmented=True))

    def construct(self, x1, x2, x3, x4, sizes, resize_factors=None):
        """``resize_factors``: optional, for the separable resize, the factor pairs (3->2, 4->3, 4->2, 2->3,
        3->4, 2->4) from ``token_resize_factors``; without them each block computes its own."""
        _, s2, s3, s4 = sizes
        f = resize_factors if resize_factors is not None else (None,) * 6
        if _runs_fused(self):
            cur2 = self._fused_attention(self.factoratt_crpe2, self.norm12, x2, s2)
            cur3 = self._fused_attention(self.factoratt_crpe3, self.norm13, x3, s3)
            cur4 = self._fused_attention(self.factoratt_crpe4, self.norm14, x4, s4)
            if resize_factors is None:
                f = parallel_resize_factors(sizes, self.align_corners)
            x2 = self.cross_scale_sum(x2, cur2, cur3, cur4, f[0][0], f[0][1], f[2][0], f[2][1])
            x3 = self.cross_scale_sum(x3, cur3, cur4, cur2, f[1][0], f[1][1], f[3][0], f[3][1])
            x4 = self.cross_scale_sum(x4, cur4, cur3, cur2, f[4][0], f[4][1], f[5][0], f[5][1])
            x2 = self.residual_add(x2, self.mlp2.fused(self.norm22(x2)), self.mlp2.fc2.bias)
            x3 = self.residual_add(x3, self.mlp3.fused(self.norm23(x3)), self.mlp3.fc2.bias)
            x4 = self.residual_add(x4, self.mlp4.fused(self.norm24(x4)), self.mlp4.fc2.bias)
            return x1, x2, x3, x4
        cur2 = self.factoratt_crpe2(self.norm12(x2), s2)
        cur3 = self.factoratt_crpe3(self.norm13(x3), s3)
        cur4 = self.factoratt_crpe4(self.norm14(x4), s4)
        up3_2 = self.interpolate(cur3, s3, s2, f[0])
        up4_3 = self.interpolate(cur4, s4, s3, f[1])
        up4_2 = self.interpolate(cur4, s4, s2, f[2])
        down2_3 = self.interpolate(cur2, s2, s3, f[3])
        down3_4 = self.interpolate(cur3, s3, s4, f[4])
        down2_4 = self.interpolate(cur2, s2, s4, f[5])
        x2 = x2 + self.drop_path(cur2 + up3_2 + up4_2)
        x3 = x3 + self.drop_path(cur3 + up4_3 + down2_3)
        x4 = x4 + self.drop_path(cur4 + down3_4 + down2_4)

        x2 = x2 + self.drop_path(self.mlp2(self.norm22(x2)))
        x3 = x3 + self.drop_path(self.mlp3(self.norm23(x3)))
        x4 = x4 + self.drop_path(self.mlp4(self.norm24(x4)))
        return x1, x2, x3, x4


class CoaT(nn.Cell):
    """CoaT (parallel_depth > 0) and CoaT-Lite (parallel_depth == 0).

    Args:
        patch_size: first patch embedding stride (later stages use 2); inputs must be divisible by
            ``patch_size * 8``.
        in_chans: input channels.  num_classes: 0 gives no head (pooled features out).
        embed_dims, serial_depths, parallel_depth, num_heads, mlp_ratios, qkv_bias, crpe_window: architecture.
        drop_rate: dropout before the head.  proj_drop_rate: dropout after attention / MLP projections.
        drop_path_rate: stochastic depth, the same rate in every block (as the official model).
        align_corners: parallel-block interpolation; False (official), True (mindcv compatibility).
        cpe_residual: serial-block residual base; True (official: cpe output), False (mindcv: block input).
            ``align_corners=True, cpe_residual=False`` computes what mindcv 0.3.0's CoaT computes.
        backend: the operator set, "auto" (C++ kernels on the CPU target, MindSpore's operators elsewhere),
            "cpu_kernels" or "stock" (see backend.py); resolved once here and kept as ``self.backend``.

    Building a model changes no process state (runtime tuning is ``coat_ms.runtime.configure_runtime``).
    """

    def __init__(self, patch_size=4, in_chans=3, num_classes=1000, embed_dims=(64, 128, 320, 512),
                 serial_depths=(3, 4, 6, 3), parallel_depth=0, num_heads=8, mlp_ratios=(4, 4, 4, 4),
                 qkv_bias=True, drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                 crpe_window=None, align_corners=False, cpe_residual=True, backend="auto"):
        super().__init__()
        for dim in embed_dims:
            if dim % num_heads:
                raise ValueError(f"every embed dim must be divisible by num_heads={num_heads}, got {list(embed_dims)}")
        del attn_drop_rate  # accepted for API compatibility: CoaT has no attention matrix to drop
        # what with_backend needs to build this model again on another operator set
        self.build_args = dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                               embed_dims=tuple(embed_dims), serial_depths=tuple(serial_depths),
                               parallel_depth=parallel_depth, num_heads=num_heads, mlp_ratios=tuple(mlp_ratios),
                               qkv_bias=qkv_bias, drop_rate=drop_rate, proj_drop_rate=proj_drop_rate,
                               drop_path_rate=drop_path_rate, crpe_window=crpe_window,
                               align_corners=align_corners, cpe_residual=cpe_residual)
        self.backend = backend = resolve_backend(backend)
        self.token_resize = backend.token_resize  # a string: what construct may read of the backend
        crpe_window = crpe_window or DEFAULT_CRPE_WINDOW
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.serial_depths = tuple(serial_depths)
        self.parallel_depth = parallel_depth
        self.num_features = embed_dims[-1]
        self.align_corners = align_corners
        self.cpe_residual = cpe_residual
        self.stride = patch_size * 8

        self.patch_embed1 = PatchEmbed(patch_size, in_chans, embed_dims[0], backend=backend)
        self.patch_embed2 = PatchEmbed(2, embed_dims[0], embed_dims[1], backend=backend)
        self.patch_embed3 = PatchEmbed(2, embed_dims[1], embed_dims[2], backend=backend)
        self.patch_embed4 = PatchEmbed(2, embed_dims[2], embed_dims[3], backend=backend)
        self.cls_token1 = Parameter(trunc_normal((1, 1, embed_dims[0])), name="cls_token1")
        self.cls_token2 = Parameter(trunc_normal((1, 1, embed_dims[1])), name="cls_token2")
        self.cls_token3 = Parameter(trunc_normal((1, 1, embed_dims[2])), name="cls_token3")
        self.cls_token4 = Parameter(trunc_normal((1, 1, embed_dims[3])), name="cls_token4")
        self.cpe1, self.cpe2, self.cpe3, self.cpe4 = (ConvPosEnc(d, 3, backend=backend) for d in embed_dims)
        self.crpe1, self.crpe2, self.crpe3, self.crpe4 = (
            ConvRelPosEnc(d // num_heads, num_heads, crpe_window, backend=backend) for d in embed_dims)

        block_args = dict(num_heads=num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                          drop_path=drop_path_rate, backend=backend)
        cpes = (self.cpe1, self.cpe2, self.cpe3, self.cpe4)
        crpes = (self.crpe1, self.crpe2, self.crpe3, self.crpe4)
        self.serial_blocks1, self.serial_blocks2, self.serial_blocks3, self.serial_blocks4 = (
            nn.CellList([SerialBlock(embed_dims[i], mlp_ratio=mlp_ratios[i], shared_cpe=cpes[i],
                                     shared_crpe=crpes[i], cpe_residual=cpe_residual, **block_args)
                         for _ in range(serial_depths[i])])
            for i in range(4))
        if parallel_depth > 0:
            self.parallel_blocks = nn.CellList([
                ParallelBlock(embed_dims, mlp_ratios=mlp_ratios, shared_crpes=crpes,
                              align_corners=align_corners, **block_args)
                for _ in range(parallel_depth)])
            self.norm2 = LayerNorm(embed_dims[1], BLOCK_NORM_EPS, backend=backend)
            self.norm3 = LayerNorm(embed_dims[2], BLOCK_NORM_EPS, backend=backend)
            self.norm4 = LayerNorm(embed_dims[3], BLOCK_NORM_EPS, backend=backend)
            self.aggregate = Aggregate(3)
        else:
            self.parallel_blocks = None
            self.norm4 = LayerNorm(embed_dims[3], BLOCK_NORM_EPS, backend=backend)
        self.head_drop = nn.Dropout(p=drop_rate)
        self.head = self._new_head(num_classes)
        self.name_parameters_by_path()
        self._compiled_signatures = set()

    def compile(self, *args, **kwargs):
        """``Cell.compile``, then ``runtime.after_graph_compile`` once per new input signature (it trims the
        heap when ``configure_runtime`` arranged that; otherwise it does nothing)."""
        super().compile(*args, **kwargs)
        signature = (self.training,) + tuple((tuple(a.shape), str(a.dtype)) for a in args if isinstance(a, Tensor))
        if signature not in self._compiled_signatures:
            self._compiled_signatures.add(signature)
            after_graph_compile()

    def with_backend(self, backend):
        """This model on another operator set ("stock", "cpu_kernels", "auto" or a Backend).

        Returns a new CoaT built with the same arguments on that backend, holding a copy of this model's
        weights and its train/eval mode (or ``self`` when it already runs on it). A head replaced by a
        cell of the user's own is carried over as it is. Export uses this to get MindSpore's stock
        operators.
        """
        target = resolve_backend(backend)
        if target == self.backend:
            return self
        twin = CoaT(**self.build_args, backend=target)
        if not isinstance(self.head, (Linear, nn.Identity)):
            twin.head = self.head  # the user's own cell: no kernel in it, shared as it is
            twin.name_parameters_by_path()
        own, new = self.parameters_dict(), twin.parameters_dict()
        changed = sorted(set(own) ^ set(new)) + [n for n in new if n in own and own[n].shape != new[n].shape]
        if changed:
            raise BackendError(f"cannot rebuild the model on backend {target}: it was changed after it was built "
                               f"(parameters {', '.join(changed[:5])}); build it with create_model(..., "
                               f"backend='{target.name}') and load the weights")
        for name, param in new.items():
            param.set_data(Tensor(own[name].asnumpy().copy()))
            param.requires_grad = own[name].requires_grad
        if hasattr(self, "pretrained_cfg"):
            twin.pretrained_cfg = dict(self.pretrained_cfg)
        twin.set_train(self.training)
        return twin

    def _new_head(self, num_classes):
        return Linear(self.num_features, num_classes, backend=self.backend) if num_classes > 0 else nn.Identity()

    def name_parameters_by_path(self):
        """Name each Parameter by its first attribute path (= the PyTorch state-dict key).

        MindSpore renames a shared cell's parameters each time the cell is assigned somewhere;
        this puts the canonical names back so checkpoints carry them.  The cells that mixed precision
        wraps around a layer (mindcv's and MindSpore's _OutputTo16/_OutputTo32) add no name.
        """
        for name, param in self.parameters_and_names():
            param.name = ".".join(part for part in name.split(".") if part not in _AMP_WRAPPER_ATTRIBUTES)

    def get_classifier(self):
        return self.head

    def no_weight_decay(self):
        """Parameters the official recipe does not decay besides the 1-D ones (timm's list): the cls tokens."""
        return {n for n, _ in self.parameters_and_names() if n.startswith("cls_token")}

    def reset_classifier(self, num_classes):
        """Replace the head by a new, freshly initialised one (0: no head)."""
        self.num_classes = num_classes
        self.build_args["num_classes"] = num_classes
        self.head = self._new_head(num_classes)

    def check_input(self, x):
        """Fail early, with the rule, on inputs CoaT cannot take."""
        if x.ndim != 4:
            raise ValueError(f"CoaT expects a 4-D input (batch, channels, height, width), got shape {x.shape}")
        _, C, H, W = x.shape
        if C != self.in_chans:
            raise ValueError(f"CoaT was built for {self.in_chans} input channels but the input has {C} "
                             f"(shape {x.shape}); build it with in_channels={C}")
        # H, W are not constants while a MindIR with dynamic H, W compiles: then whoever feeds the file checks
        if ops.isconstant(H) and ops.isconstant(W) and (H % self.stride != 0 or W % self.stride != 0):
            raise ValueError(f"input size {H}x{W} is not supported: CoaT needs height and width divisible "
                             f"by {self.stride} (e.g. 224x224 or 192x256)")

    def _embed(self, patch_embed, cls_token, x_nhwc):
        """Patch-embed a channels-last map and prepend the stage's CLS token."""
        B, H, W, _ = x_nhwc.shape
        p = patch_embed.patch_size
        x = patch_embed(x_nhwc)
        cls_tokens = ops.broadcast_to(cls_token.astype(x.dtype), (B, 1, cls_token.shape[2]))
        return ops.concat((cls_tokens, x), axis=1), (H // p, W // p)

    # ------------------------------------------------------------------------------------------
    # The forward pass.  One path, _forward_scales, serves construct, forward_features,
    # forward_feature_maps and forward_intermediates; every choice in it (which outputs to keep,
    # where to stop) is a Python constant, so GRAPH_MODE compiles only what a caller asked for.
    # ------------------------------------------------------------------------------------------

    def _forward_scales(self, x, keep=(), stop=None, norm=False, output_fmt="NCHW"):
        """Run the serial blocks of the four scales, then the parallel blocks (CoaT).

        ``keep``: positions in ``intermediate_names(blocks=True)`` whose outputs are returned, formatted by
        ``_intermediate``; ``stop``: the last position to compute (None: the whole network).
        Returns (xs, sizes, kept): the tokens with CLS of each scale computed, their grid sizes, and the kept
        outputs in depth order.
        """
        self.check_input(x)
        stages = ((self.patch_embed1, self.cls_token1, self.serial_blocks1),
                  (self.patch_embed2, self.cls_token2, self.serial_blocks2),
                  (self.patch_embed3, self.cls_token3, self.serial_blocks3),
                  (self.patch_embed4, self.cls_token4, self.serial_blocks4))
        feat = x.transpose(0, 2, 3, 1)  # NHWC: patch embeddings take channels-last input
        xs, sizes, kept = (), (), ()
        pos = 0
        for scale in range(4):
            if stop is None or pos <= stop:
                patch_embed, cls_token, blocks = stages[scale]
                if scale > 0:
                    feat = self._to_nhwc(xs[-1], sizes[-1])
                tokens, size = self._embed(patch_embed, cls_token, feat)
                if pos in keep:
                    kept = kept + (self._intermediate(tokens, scale, size, norm, output_fmt),)
                pos = pos + 1
                for blk in blocks:
                    if stop is None or pos <= stop:
                        tokens = blk(tokens, size)
                        if pos in keep:
                            kept = kept + (self._intermediate(tokens, scale, size, norm, output_fmt),)
                    pos = pos + 1
                xs = xs + (tokens,)
                sizes = sizes + (size,)
        if self.parallel_blocks is not None and len(xs) == 4 and (stop is None or pos <= stop):
            x1, x2, x3, x4 = xs
            _, s2, s3, s4 = sizes
            factors = None
            if self.token_resize == "separable":  # the matrices once for all parallel blocks
                factors = parallel_resize_factors(sizes, self.align_corners)
            for blk in self.parallel_blocks:  # each block's outputs x2, x3, x4 take three positions
                if stop is None or pos <= stop:
                    x2, x3, x4 = self.cpe2(x2, s2), self.cpe3(x3, s3), self.cpe4(x4, s4)
                    x1, x2, x3, x4 = blk(x1, x2, x3, x4, sizes, factors)
                    outs = (x2, x3, x4)
                    for i in range(3):
                        if pos + i in keep:
                            kept = kept + (self._intermediate(outs[i], i + 1, sizes[i + 1], norm, output_fmt),)
                pos = pos + 3
            xs = (x1, x2, x3, x4)
        return xs, sizes, kept

    def _intermediate(self, tokens, scale, size, norm, output_fmt):
        """One intermediate output: tokens of ``scale`` (0-3), optionally through its final norm, as NCHW or NLC."""
        if norm:
            if scale == 3:
                tokens = self.norm4(tokens)
            elif scale == 2 and self.parallel_blocks is not None:
                tokens = self.norm3(tokens)
            elif scale == 1 and self.parallel_blocks is not None:
                tokens = self.norm2(tokens)
        if output_fmt == "NCHW":
            return tokens_to_nchw(tokens[:, 1:], size)
        return tokens

    def _final_features(self, xs):
        """What forward_features returns, from the four scales' tokens."""
        if self.parallel_blocks is None:
            return self.norm4(xs[3])
        return self.norm2(xs[1]), self.norm3(xs[2]), self.norm4(xs[3])

    @staticmethod
    def _to_nhwc(x, size):
        """Tokens with CLS (B, 1 + H*W, C) -> image (B, H, W, C)."""
        return x[:, 1:].reshape(x.shape[0], size[0], size[1], x.shape[2])

    def _depth(self):
        """How many outputs ``forward_intermediates(blocks=True)`` can take: 4 patch embeddings, every serial
        block, three per parallel block."""
        depth = 4 + 3 * self.parallel_depth
        for d in self.serial_depths:
            depth = depth + d
        return depth

    def intermediate_names(self, blocks=False):
        """The names of what ``forward_intermediates`` can return, in depth order; its ``indices`` count here.

        blocks=False: ``scale1`` ... ``scale4`` (strides 4, 8, 16, 32).  blocks=True: ``patch_embed1``,
        ``serial_blocks1.0``, ..., ``patch_embed4``, ``serial_blocks4.J``, then ``parallel_blocks.J.x2/x3/x4``.
        """
        if not blocks:
            return [f"scale{i + 1}" for i in range(4)]
        names = []
        for i, depth in enumerate(self.serial_depths):
            names += [f"patch_embed{i + 1}"] + [f"serial_blocks{i + 1}.{j}" for j in range(depth)]
        for j in range(self.parallel_depth):
            names += [f"parallel_blocks.{j}.x{s}" for s in (2, 3, 4)]
        return names

    @property
    def feature_info(self):
        """Per scale, as timm: channels, stride and the module whose output it is (CoaT: scales 2-4 after the
        parallel blocks)."""
        return [dict(num_chs=c, reduction=self.patch_size * 2 ** i,
                     module="parallel_blocks" if i > 0 and self.parallel_depth > 0 else f"serial_blocks{i + 1}")
                for i, c in enumerate(self.embed_dims)]

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False, blocks=False):
        """The forward pass with its intermediate outputs, in depth order (timm's API; graph and PyNative).

        Args:
            indices: which outputs, counted in ``intermediate_names(blocks)``: None all, an int n the last n,
                a sequence those positions (negative from the end).  Returned in depth order.
            norm: pass each output through the final norm of its scale where the model has one (CoaT:
                norm2-4 on scales 2-4; CoaT-Lite: norm4 on scale 4).
            stop_early: compute no further than the deepest output asked for.  CoaT's parallel blocks need all
                scales, so at ``blocks=False`` only scale 1 stops early there.
            output_fmt: "NCHW" maps (B, C, H/s, W/s) without CLS, or "NLC" tokens (B, 1 + H*W/s^2, C) with the
                CLS token first, as the blocks compute them.
            intermediates_only: return only the intermediates.
            blocks: False, the four scales (strides 4-32; CoaT's scales 2-4 after the parallel blocks, as timm);
                True, every patch embedding and block output.

        Returns:
            (final, intermediates), or intermediates: a tuple.  ``final`` is ``forward_features(x)`` when the
            whole network ran, else the last scale's tokens where it stopped.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        last = self._depth() - 1  # the deepest position (blocks=True) of the network
        if blocks:
            take = _take_indices(last + 1, indices)
            stop = take[-1] if stop_early else last
            run = self._forward_scales(x, take, stop, norm, output_fmt)
            xs, intermediates = run[0], run[2]
        else:
            take = _take_indices(4, indices)
            stop = last
            if stop_early and (self.parallel_blocks is None or take[-1] == 0):
                stop = self._scale_end(take[-1])
            run = self._forward_scales(x, (), stop)
            xs, sizes = run[0], run[1]
            intermediates = ()
            for i in take:
                intermediates = intermediates + (self._intermediate(xs[i], i, sizes[i], norm, output_fmt),)
        if intermediates_only:
            return intermediates
        if stop == last:
            return self._final_features(xs), intermediates
        return xs[-1], intermediates

    def _scale_end(self, scale):
        """The position (blocks=True) of the last serial output of ``scale``."""
        end = -1
        for i in range(scale + 1):
            end = end + 1 + self.serial_depths[i]
        return end

    def forward_feature_maps(self, x):
        """The four scales' outputs without CLS, as (B, C_i, H/4, W/4) ... (B, C_i, H/32, W/32).

        For CoaT, scales 2-4 are taken after the parallel blocks (as timm and the official model).
        """
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_features(self, x):
        """CoaT-Lite: norm4(x4) (B, 1 + N4, C).  CoaT: (norm2(x2), norm3(x3), norm4(x4))."""
        return self._final_features(self._forward_scales(x)[0])

    def forward_head(self, features, pre_logits=False):
        if self.parallel_blocks is None:
            x = features[:, 0]
        else:
            cls_tokens = ops.stack((features[0][:, 0], features[1][:, 0], features[2][:, 0]), axis=1)
            x = self.aggregate(cls_tokens)  # (B, 3, C) -> (B, C)
        x = self.head_drop(x)
        if pre_logits:
            return x
        return self.head(x)

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------
# Variants and their pretrained configurations, as timm's: where the ImageNet-1k weights are
# (``hf_hub_id``: timm publishes them for all seven variants; pretrained=True converts them, see
# coat_ms.pretrained) and how they are evaluated (224 -> resize 248 bicubic, centre crop 224,
# ImageNet mean/std).  The one place this metadata lives.
# ----------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _cfg(**kwargs):
    cfg = dict(url="", hf_hub_id="", num_classes=1000, input_size=(3, 224, 224), crop_pct=0.9, interpolation="bicubic",
               mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv="patch_embed1.proj", classifier="head")
    cfg.update(kwargs)
    return cfg


VARIANTS = {
    "coat_tiny": dict(embed_dims=(152, 152, 152, 152), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                      mlp_ratios=(4, 4, 4, 4)),
    "coat_mini": dict(embed_dims=(152, 216, 216, 216), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                      mlp_ratios=(4, 4, 4, 4)),
    "coat_small": dict(embed_dims=(152, 320, 320, 320), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                       mlp_ratios=(4, 4, 4, 4)),
    "coat_lite_tiny": dict(embed_dims=(64, 128, 256, 320), serial_depths=(2, 2, 2, 2), parallel_depth=0,
                           mlp_ratios=(8, 8, 4, 4)),
    "coat_lite_mini": dict(embed_dims=(64, 128, 320, 512), serial_depths=(2, 2, 2, 2), parallel_depth=0,
                           mlp_ratios=(8, 8, 4, 4)),
    "coat_lite_small": dict(embed_dims=(64, 128, 320, 512), serial_depths=(3, 4, 6, 3), parallel_depth=0,
                            mlp_ratios=(8, 8, 4, 4)),
    "coat_lite_medium": dict(embed_dims=(128, 256, 320, 512), serial_depths=(3, 6, 10, 8), parallel_depth=0,
                             mlp_ratios=(4, 4, 4, 4)),
}

default_cfgs = {name: _cfg(hf_hub_id=f"timm/{name}.in1k") for name in VARIANTS}


def _create(variant, **kwargs):
    model = CoaT(**dict(VARIANTS[variant], **kwargs))
    model.pretrained_cfg = dict(default_cfgs[variant], architecture=variant)
    return model


def coat_tiny(**kwargs):
    return _create("coat_tiny", **kwargs)


def coat_mini(**kwargs):
    return _create("coat_mini", **kwargs)


def coat_small(**kwargs):
    return _create("coat_small", **kwargs)


def coat_lite_tiny(**kwargs):
    return _create("coat_lite_tiny", **kwargs)


def coat_lite_mini(**kwargs):
    return _create("coat_lite_mini", **kwargs)


def coat_lite_small(**kwargs):
    return _create("coat_lite_small", **kwargs)


def coat_lite_medium(**kwargs):
    return _create("coat_lite_medium", **kwargs)
