"""Write a CoaT model as an ONNX graph (opset 17) from its cells and weights, in the forms ONNX Runtime fuses.

Why not ``mindspore.onnx.export`` (measured with MindSpore 2.10 and onnxruntime 1.31):

* it writes opset 11 without Erf or LayerNormalization, so exact GELU and every LayerNorm become
  chains of 10-15 elementwise nodes that ORT cannot fuse (ORT ran that file at 0.53x timm's own ONNX
  export on coat_lite_tiny, batch 8);
* it writes every shape into Reshape constants, so its ``dynamic_axes`` only renames the input's
  dimensions: batch 1 fails in a file exported at batch 2, and an input with H and W swapped runs and
  returns wrong numbers.

This writer walks the model's cells (the same attributes ``construct`` uses) and writes the same
computation with ONNX's operators: LayerNormalization, GELU as ``x * 0.5 * (1 + erf(x / sqrt 2))``
(the pattern ORT fuses into Gelu), depthwise Conv, Softmax on the last axis, and the parallel blocks'
bilinear resizes as Resize (half_pixel or align_corners, as PyTorch's). Shapes are fixed, or the batch
(``dynamic="batch"``) or batch, height and width (``dynamic="shape"``) are symbolic dimensions whose
values the graph reads from its input at run time. export.py trusts the file only after comparing it
with the model at one shape (fixed) or three shapes (dynamic).
"""
import numpy as np

from .errors import CoatError

OPSET = 17
DYNAMIC_MODES = ("batch", "shape")
_INT64_MAX = np.iinfo(np.int64).max


class OnnxWriteError(CoatError):
    """The model has a part this writer does not know how to write (e.g. a head of the user's own)."""


class _Graph:
    """Nodes and initializers of one ONNX graph, with unique names."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], {}, 0
        self._consts = {}

    def _name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, dtype=np.int64):
        """An initializer holding ``value`` (small constants are shared)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self._name("const")
            self.initializers[name] = array
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name, array):
        """An initializer named after a model parameter (written once, however often it is used)."""
        if name not in self.initializers:
            self.initializers[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def op(self, op_type, inputs, hint=None, outputs=1, **attrs):
        from onnx import helper

        names = [self._name(hint or op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names


def _param(p):
    return p.asnumpy().astype(np.float32)


class _CoatWriter:
    """Emits the CoaT forward pass of ``model`` (eval mode) into a _Graph."""

    def __init__(self, model, input_shape, dynamic):
        self.m, self.g = model, _Graph()
        self.batch, self.chans, self.height, self.width = input_shape
        self.dynamic = dynamic
        self.stride = int(model.stride)  # the coarsest grid's: H and W must be multiples of it
        self.image = "image"

    # -- shapes: Python ints when fixed, int64 tensors read from the input when dynamic ------------------------

    def _input_dims(self, start, end):
        return self.g.op("Slice", [self.g.op("Shape", [self.image]), self.g.const([start]), self.g.const([end])])

    def grid(self, stride):
        """The (h, w) token grid at ``stride``: a tuple of ints, or an int64 tensor of shape (2,).

        Dynamic grids are (H // 32, W // 32) times 32 / stride: for an H or W that is not a multiple of
        32 they disagree with the convolutions' output, and the graph fails in a Reshape instead of
        returning numbers for a cropped image.
        """
        if self.dynamic != "shape":
            return (self.height // stride, self.width // stride)
        coarse = self.g.op("Div", [self._input_dims(2, 4), self.g.const([self.stride] * 2)])
        return self.g.op("Mul", [coarse, self.g.const([self.stride // stride] * 2)], hint="grid")

    def shape(self, head, grid=None):
        """A shape tensor: ``head`` (ints; 0 copies the input's dimension) followed by ``grid``."""
        if grid is None or isinstance(grid, tuple):
            return self.g.const(list(head) + list(grid or ()))
        return self.g.op("Concat", [self.g.const(list(head)), grid], axis=0)

    def batch_dim(self):
        return self.g.const([self.batch]) if self.dynamic is None else self._input_dims(0, 1)

    # -- layout helpers -----------------------------------------------------------------------------------------

    def slice_axis(self, x, axis, start, end=_INT64_MAX):
        return self.g.op("Slice", [x, self.g.const([start]), self.g.const([end]), self.g.const([axis])])

    def slice_tokens(self, x, start, end=_INT64_MAX):
        return self.slice_axis(x, 1, start, end)

    def to_map(self, tokens, grid, channels):
        """Image tokens (B, h*w, C) -> (B, C, h, w)."""
        t = self.g.op("Transpose", [tokens], perm=[0, 2, 1])
        return self.g.op("Reshape", [t, self.shape([0, channels], grid)])

    def to_tokens(self, fmap):
        """(B, C, h, w) -> tokens (B, h*w, C)."""
        flat = self.g.op("Reshape", [fmap, self.g.const([0, 0, -1])])
        return self.g.op("Transpose", [flat], perm=[0, 2, 1])

    def with_cls(self, cls_token, tokens):
        return self.g.op("Concat", [cls_token, tokens], axis=1)

    # -- layers -------------------------------------------------------------------------------------------------

    def layer_norm(self, x, norm):
        return self.g.op("LayerNormalization", [x, self.g.weight(norm.weight.name, _param(norm.weight)),
                                                self.g.weight(norm.bias.name, _param(norm.bias))],
                         hint="layernorm", axis=-1, epsilon=float(norm.eps))

    def linear(self, x, dense):
        """x @ W^T + b, with W^T stored (MatMul + Add: ORT fuses the pair)."""
        wt = self.g.weight(dense.weight.name + ".T", _param(dense.weight).T)
        y = self.g.op("MatMul", [x, wt])
        if getattr(dense, "has_bias", False):
            y = self.g.op("Add", [y, self.g.weight(dense.bias.name, _param(dense.bias))])
        return y

    def linear_t(self, x_t, dense, part):
        """Channels-first W_part @ x^T + b_part, x^T = Transpose(tokens): (B, C, N) out.

        ``part`` (0, 1, 2) picks q, k or v rows of the fused qkv Linear. The transpose sits on the
        MatMul's input, where ORT folds it into the product (FusedMatMul), instead of on an output, from
        where ORT's transpose optimizer would push it through the softmax (which then runs off the last axis).
        """
        rows = int(dense.weight.shape[0]) // 3
        cut = slice(part * rows, (part + 1) * rows)
        y = self.g.op("MatMul", [self.g.weight(f"{dense.weight.name}[{part}]", _param(dense.weight)[cut]), x_t])
        if getattr(dense, "has_bias", False):
            y = self.g.op("Add", [y, self.g.weight(f"{dense.bias.name}[{part}]", _param(dense.bias)[cut, None])])
        return y

    def gelu(self, x):
        """Exact GELU in the Div/Erf/Add/Mul/Mul form ORT fuses into one Gelu node."""
        e = self.g.op("Erf", [self.g.op("Div", [x, self.g.const(np.sqrt(2.0), np.float32)])])
        y = self.g.op("Mul", [x, self.g.op("Add", [e, self.g.const(1.0, np.float32)])])
        return self.g.op("Mul", [y, self.g.const(0.5, np.float32)], hint="gelu")

    def mlp(self, x, mlp):
        return self.linear(self.gelu(self.linear(x, mlp.fc1)), mlp.fc2)

    def dwconv(self, fmap, conv):
        k = int(conv.kernel_size)
        return self.g.op("Conv", [fmap, self.g.weight(conv.weight.name, _param(conv.weight)),
                                  self.g.weight(conv.bias.name, _param(conv.bias))],
                         group=int(conv.channels), kernel_shape=[k, k], pads=[k // 2] * 4)

    def patch_embed(self, fmap, pe):
        p = int(pe.patch_size)
        y = self.g.op("Conv", [fmap, self.g.weight(pe.proj.weight.name, _param(pe.proj.weight)),
                               self.g.weight(pe.proj.bias.name, _param(pe.proj.bias))],
                      kernel_shape=[p, p], strides=[p, p])
        return self.layer_norm(self.to_tokens(y), pe.norm)

    def add_cls(self, tokens, cls_param):
        cls_token = self.g.weight(cls_param.name, _param(cls_param))  # (1, 1, C)
        repeat = self.g.op("Concat", [self.batch_dim(), self.g.const([1, 1])], axis=0) \
            if self.dynamic else self.g.const([self.batch, 1, 1])
        return self.with_cls(self.g.op("Expand", [cls_token, repeat]), tokens)

    def cpe(self, x, cpe, grid):
        """x + DWConv3x3(x) on the image tokens; the CLS token passes through."""
        fmap = self.to_map(self.slice_tokens(x, 1), grid, int(cpe.dim))
        y = self.g.op("Add", [self.dwconv(fmap, cpe.proj), fmap])
        return self.with_cls(self.slice_tokens(x, 0, 1), self.to_tokens(y))

    def attention(self, x, att, grid):
        """Factorized attention q @ (softmax_N(k)^T @ v) * scale + crpe, then proj; x: (B, N, C).

        Computed channels-first, (B, C, N) = (B, h, Ch, N) with head-major channels as in the model:
        one transpose of qkv in and one of the result out, the softmax on the last axis, and crpe's
        q_img * DWConv(v_img) on (B, C, h, w) views without further transposes. The scale multiplies
        the small (Ch, Ch) matrix rather than the (N, Ch) result.
        """
        g = self.g
        C = int(att.qkv.weight.shape[1])
        heads = int(att.num_heads)
        x_t = g.op("Transpose", [x], perm=[0, 2, 1])  # (B, C, N); ORT folds it into the MatMuls
        q_t, k_t, v_t = (self.linear_t(x_t, att.qkv, i) for i in range(3))  # (B, C, N) each: no split copy
        by_heads = g.const([0, heads, C // heads, -1])
        q_h, k_h, v_h = (g.op("Reshape", [t, by_heads]) for t in (q_t, k_t, v_t))  # (B, h, Ch, N)
        k_softmax = g.op("Softmax", [k_h], axis=-1)  # over the tokens, CLS included
        # kv^T[j, i] = sum_n v[j, n] softmax(k)[i, n]; ORT folds the transpose into the MatMul
        kv_t = g.op("MatMul", [v_h, g.op("Transpose", [k_softmax], perm=[0, 1, 3, 2])])
        kv_t = g.op("Mul", [kv_t, g.const(float(att.scale), np.float32)])
        factor_t = g.op("Reshape", [g.op("MatMul", [kv_t, q_h]), g.const([0, C, -1])])  # (B, C, N)
        out_t = g.op("Add", [factor_t, self.crpe(q_t, v_t, att.crpe, grid, C)])
        return self.linear(g.op("Transpose", [out_t], perm=[0, 2, 1]), att.proj)  # ORT fuses the transpose

    def crpe(self, q_t, v_t, crpe, grid, channels):
        """q_img * DWConv(v_img) per group of heads, channels-first (B, C, N), zero in the CLS column."""
        g = self.g
        v_map = g.op("Reshape", [self.slice_axis(v_t, 2, 1), self.shape([0, channels], grid)])
        convs = list(crpe.conv_list)
        if len(convs) == 1:
            conv_v = self.dwconv(v_map, convs[0])
        else:
            parts = g.op("Split", [v_map, g.const(list(crpe.channel_splits))], outputs=len(convs), axis=1)
            conv_v = g.op("Concat", [self.dwconv(part, conv) for part, conv in zip(parts, convs)], axis=1)
        conv_v = g.op("Reshape", [conv_v, g.const([0, channels, -1])])
        conv_v = g.op("Pad", [conv_v, g.const([0, 0, 1, 0, 0, 0])])  # a zero CLS column in front
        return g.op("Mul", [q_t, conv_v])

    def serial_block(self, x, blk, grid):
        y = self.cpe(x, blk.cpe, grid)
        base = y if blk.cpe_residual else x
        x = self.g.op("Add", [base, self.attention(self.layer_norm(y, blk.norm1), blk.factoratt_crpe, grid)])
        return self.g.op("Add", [x, self.mlp(self.layer_norm(x, blk.norm2), blk.mlp)])

    def resize(self, x, src, dst, channels, align_corners):
        """Bilinear resize of the image tokens from grid ``src`` to ``dst``; the CLS token rides along.

        Resized channels-last, (B, h, w, C) as a view of the tokens: no transposes.
        """
        g = self.g
        if isinstance(src, tuple):
            map_shape = g.const([0, src[0], src[1], channels])
        else:
            map_shape = g.op("Concat", [g.const([0]), src, g.const([channels])], axis=0)
        grid_map = g.op("Reshape", [self.slice_tokens(x, 1), map_shape])
        if self.dynamic is None:
            sizes = g.const([self.batch, dst[0], dst[1], channels])
        else:
            target = dst if not isinstance(dst, tuple) else g.const(list(dst))
            sizes = g.op("Concat", [self.batch_dim(), target, g.const([channels])], axis=0)
        mode = "align_corners" if align_corners else "half_pixel"  # half_pixel: PyTorch's rule, 1-pixel outputs too
        resized = g.op("Resize", [grid_map, "", "", sizes], mode="linear", coordinate_transformation_mode=mode)
        tokens = g.op("Reshape", [resized, g.const([0, -1, channels])])
        return self.with_cls(self.slice_tokens(x, 0, 1), tokens)

    def parallel_block(self, xs, blk, grids, channels):
        g = self.g
        x2, x3, x4 = xs
        s2, s3, s4 = grids
        cur2 = self.attention(self.layer_norm(x2, blk.norm12), blk.factoratt_crpe2, s2)
        cur3 = self.attention(self.layer_norm(x3, blk.norm13), blk.factoratt_crpe3, s3)
        cur4 = self.attention(self.layer_norm(x4, blk.norm14), blk.factoratt_crpe4, s4)
        ac = bool(blk.align_corners)
        up3_2 = self.resize(cur3, s3, s2, channels, ac)
        up4_3 = self.resize(cur4, s4, s3, channels, ac)
        up4_2 = self.resize(cur4, s4, s2, channels, ac)
        down2_3 = self.resize(cur2, s2, s3, channels, ac)
        down3_4 = self.resize(cur3, s3, s4, channels, ac)
        down2_4 = self.resize(cur2, s2, s4, channels, ac)

        def add(*terms):
            out = terms[0]
            for t in terms[1:]:
                out = g.op("Add", [out, t])
            return out
        x2 = add(x2, cur2, up3_2, up4_2)
        x3 = add(x3, cur3, up4_3, down2_3)
        x4 = add(x4, cur4, down3_4, down2_4)
        x2 = add(x2, self.mlp(self.layer_norm(x2, blk.norm22), blk.mlp2))
        x3 = add(x3, self.mlp(self.layer_norm(x3, blk.norm23), blk.mlp3))
        x4 = add(x4, self.mlp(self.layer_norm(x4, blk.norm24), blk.mlp4))
        return x2, x3, x4

    def head(self, pooled):
        from mindspore import nn

        head = self.m.head
        if isinstance(head, nn.Identity):
            return pooled
        if not isinstance(head, nn.Dense):
            raise OnnxWriteError(f"cannot write the model's head ({type(head).__name__}) to ONNX: only a Linear head "
                                 "or none (num_classes=0) is supported")
        return self.g.op("Gemm", [pooled, self.g.weight(head.weight.name, _param(head.weight)),
                                  self.g.weight(head.bias.name, _param(head.bias))], transB=1)

    def out_features(self):
        return int(self.m.num_classes) if int(self.m.num_classes) > 0 else int(self.m.num_features)

    def cls_of(self, x, norm):
        """LayerNorm of the CLS token of x (the norm is per token: normalising only CLS is the same)."""
        cls_token = self.layer_norm(self.slice_tokens(x, 0, 1), norm)  # (B, 1, C)
        return cls_token

    def forward(self):
        m, g = self.m, self.g
        p = int(m.patch_size)
        strides = (p, 2 * p, 4 * p, 8 * p)
        grids = [self.grid(s) for s in strides]
        fmap, xs = self.image, []
        for i in range(4):
            if i:
                fmap = self.to_map(self.slice_tokens(xs[-1], 1), grids[i - 1], int(m.embed_dims[i - 1]))
            x = self.add_cls(self.patch_embed(fmap, getattr(m, f"patch_embed{i + 1}")), getattr(m, f"cls_token{i + 1}"))
            for blk in getattr(m, f"serial_blocks{i + 1}"):
                x = self.serial_block(x, blk, grids[i])
            xs.append(x)
        if m.parallel_blocks is None:
            pooled = g.op("Reshape", [self.cls_of(xs[3], m.norm4), g.const([0, -1])])
        else:
            x2, x3, x4 = xs[1:]
            channels = int(m.embed_dims[1])
            for blk in m.parallel_blocks:
                x2 = self.cpe(x2, m.cpe2, grids[1])
                x3 = self.cpe(x3, m.cpe3, grids[2])
                x4 = self.cpe(x4, m.cpe4, grids[3])
                x2, x3, x4 = self.parallel_block((x2, x3, x4), blk, grids[1:], channels)
            stacked = g.op("Concat", [self.cls_of(x2, m.norm2), self.cls_of(x3, m.norm3), self.cls_of(x4, m.norm4)],
                           axis=1)  # (B, 3, C)
            agg = m.aggregate  # Conv1d(3 -> 1, k=1): a weighted sum over the three CLS tokens
            weighted = g.op("Mul", [stacked, g.weight(agg.weight.name, _param(agg.weight))])
            summed = g.op("ReduceSum", [weighted, g.const([1])], keepdims=0)
            pooled = g.op("Add", [summed, g.weight(agg.bias.name, _param(agg.bias))])
        return self.head(pooled)

    def model_proto(self):
        from onnx import TensorProto, helper, numpy_helper

        out = self.forward()
        dims = [self.batch, self.chans, self.height, self.width]
        if self.dynamic in DYNAMIC_MODES:
            dims[0] = "batch"
        if self.dynamic == "shape":
            dims[2:] = ["height", "width"]
        self.g.nodes.append(helper.make_node("Identity", [out], ["logits"], name="logits"))
        graph = helper.make_graph(
            self.g.nodes, "coat", [helper.make_tensor_value_info(self.image, TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], self.out_features()])],
            initializer=[numpy_helper.from_array(a, name) for name, a in self.g.initializers.items()])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="coat_ms")
        proto.ir_version = 8  # opset 17's IR version: readable by onnxruntime >= 1.13
        return proto


def is_writable(model):
    """True for a CoaT model (what this writer knows)."""
    return all(hasattr(model, a) for a in ("patch_embed1", "serial_blocks1", "parallel_blocks", "build_args"))


def write_onnx(model, path, input_shape, dynamic=None):
    """Write ``model`` (a CoaT, eval mode) to ``path`` as ONNX opset 17.

    input_shape: (B, C, H, W) of the example input; ``dynamic``: None (that shape only), "batch" (any
    batch at H x W) or "shape" (any batch and any H, W multiple of the model's stride).
    """
    import onnx

    if dynamic not in (None,) + DYNAMIC_MODES:
        raise OnnxWriteError(f"unknown dynamic mode {dynamic!r}; choose {', '.join(DYNAMIC_MODES)}")
    if not is_writable(model):
        raise OnnxWriteError(f"{type(model).__name__} is not a CoaT model: the ONNX writer writes CoaT only")
    proto = _CoatWriter(model, tuple(int(d) for d in input_shape), dynamic).model_proto()
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
