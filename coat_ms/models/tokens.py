"""Token maps: layout changes, and the parallel blocks' bilinear resize in its two formulations.

A stage's tokens are (B, 1 + H*W, C): the CLS token, then the image tokens of an H x W grid, row-major.
The resize is PyTorch's bilinear interpolation without antialias (half-pixel, or align_corners for
mindcv compatibility), applied to the image tokens; the CLS token rides along unchanged. Which
formulation runs is the model's backend's choice (``Backend.token_resize``); ONNX files use ONNX's
Resize (coat_ms/onnx_writer.py):

    interpolate  MindSpore's bilinear resize (ResizeBilinearV2) on an NCHW view (stock operators)
    separable    two small matmuls on the channels-last tokens (CPU: a fraction of one dense (H'W', HW)
                 matrix's work, 6 GFLOP less per batch of 8 on coat_tiny, and no transposes)
"""
import numpy as np
from mindspore import Tensor, ops
from mindspore.ops import constexpr


def split_cls(x):
    """(B, 1 + N, C) -> CLS (B, 1, C), image tokens (B, N, C)."""
    return x[:, :1], x[:, 1:]


def tokens_to_nchw(tokens, size):
    """Image tokens (B, H*W, C) -> (B, C, H, W)."""
    B, _, C = tokens.shape
    return tokens.transpose(0, 2, 1).reshape(B, C, size[0], size[1])


def nchw_to_tokens(x):
    """(B, C, H, W) -> image tokens (B, H*W, C)."""
    B, C, H, W = x.shape
    return x.reshape(B, C, H * W).transpose(0, 2, 1)


def bilinear_weights(src, dst, align_corners=False):
    """(dst, src) matrix of PyTorch's bilinear resize along one axis (no antialias).

    align_corners=False is the half-pixel rule: source = (i + 0.5) * src / dst - 0.5, clamped at 0.
    """
    weights = np.zeros((dst, src), np.float64)
    for i in range(dst):
        if align_corners:
            pos = i * (src - 1) / (dst - 1) if dst > 1 else 0.0
        else:
            pos = max((i + 0.5) * src / dst - 0.5, 0.0)
        i0 = min(int(np.floor(pos)), src - 1)
        i1 = min(i0 + 1, src - 1)
        frac = pos - i0
        weights[i, i0] += 1.0 - frac
        weights[i, i1] += frac
    return weights


@constexpr
def token_resize_factors(size, target, align_corners=False):
    """The (H', H) and (W', W) bilinear matrices that resize an h x w token grid to ``target``.

    A compile-time constant in GRAPH_MODE (``constexpr``: the sizes are): compiled as graph code instead,
    the numpy loops of ``bilinear_weights`` left ~210 MB in MindSpore's compiler per model (coat_tiny)."""
    return (Tensor(bilinear_weights(size[0], target[0], align_corners).astype(np.float32)),
            Tensor(bilinear_weights(size[1], target[1], align_corners).astype(np.float32)))


def resize_separable(x, size, target, factors):
    """Tokens with CLS (B, 1 + h*w, C) -> (B, 1 + H'*W', C) by two matmuls; ``factors`` from token_resize_factors."""
    B, _, C = x.shape
    cls_token, img = split_cls(x)
    rows, cols = factors[0].astype(x.dtype), factors[1].astype(x.dtype)
    img = ops.matmul(rows, img.reshape(B, size[0], size[1] * C))  # (B, H', w*C)
    img = ops.matmul(cols, img.reshape(B * target[0], size[1], C))  # (B*H', W', C)
    return ops.concat((cls_token, img.reshape(B, target[0] * target[1], C)), axis=1)


def resize_interpolate(x, size, target, align_corners):
    """The same resize with MindSpore's bilinear resize on an NCHW view.

    The ResizeBilinearV2 primitive that ``ops.interpolate(mode="bilinear")`` calls, called directly:
    ops.interpolate requires a constant ``size``, so a MindIR exported with dynamic H and W could not
    hold it (half_pixel_centers is PyTorch's align_corners=False rule).
    """
    cls_token, img = split_cls(x)
    resize = ops.ResizeBilinearV2(align_corners=align_corners, half_pixel_centers=not align_corners)
    img = resize(tokens_to_nchw(img, size), target)
    return ops.concat((cls_token, nchw_to_tokens(img)), axis=1)
