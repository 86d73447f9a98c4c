"""The CPU kernels (coat_ms/kernels) against MindSpore's stock operators, forward and backward,
plus the fallback to the stock op when a kernel cannot be built."""
import json
import logging
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from coat_ms.kernels import dwconv as D
from coat_ms import openmp
from coat_ms.kernels import loader
from coat_ms.kernels.build import KernelBuildError, build
from coat_ms.models.tokens import resize_separable, token_resize_factors

H, W, C0 = 5, 7, 3
SPLITS = ((3, 3), (4, 5), (4, 7))  # (channels, kernel) as crpe's 3/5/7 groups, small
KS = tuple(k for n, k in SPLITS for _ in range(n))
EMBED = D.tap_embeddings(tuple(k for _, k in SPLITS))
C = len(KS)
CX = C0 + C + 4  # the kernel reads a channel window [C0, C0 + C) of a wider tensor (v inside qkv)


@pytest.fixture(scope="module")
def kernel():
    ms.set_context(mode=ms.GRAPH_MODE)
    assert D.load() is not None, loader.reason("dwconv")
    return D.dwconv_op()


def _data(batch=2, seed=1):
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal((batch, 1 + H * W, CX)).astype(np.float32))
    ws = [ms.Tensor(rng.standard_normal((n, 1, k, k)).astype(np.float32)) for n, k in SPLITS]
    bs = [ms.Tensor(rng.standard_normal((n,)).astype(np.float32)) for n, _ in SPLITS]
    g = ms.Tensor(rng.standard_normal((batch, 1 + H * W, C)).astype(np.float32))
    return x, ws, bs, g


class KernelLoss(nn.Cell):
    def __init__(self, op, g, mode):
        super().__init__()
        self.op, self.g, self.mode = op, g, mode

    def construct(self, x, w0, w1, w2, b0, b1, b2):
        taps = D.pack_weights([w0, w1, w2], EMBED)
        meta = D.make_meta(H, W, 1, C0, C, 7, KS, self.mode)
        y = self.op(x, taps, ops.concat((b0, b1, b2)), meta)
        return (y * self.g).sum(), y


class StockLoss(nn.Cell):
    """The same function with ops.conv2d on NCHW maps, CLS row handled by concat."""

    def __init__(self, g, mode):
        super().__init__()
        self.g, self.mode = g, mode

    def construct(self, x, w0, w1, w2, b0, b1, b2):
        B = x.shape[0]
        img = x[:, 1:, C0:C0 + C].reshape(B, H, W, C).transpose(0, 3, 1, 2)
        parts = ops.split(img, tuple(n for n, _ in SPLITS), axis=1)
        outs = (ops.conv2d(parts[0], w0, b0, pad_mode="pad", padding=1, groups=w0.shape[0]),
                ops.conv2d(parts[1], w1, b1, pad_mode="pad", padding=2, groups=w1.shape[0]),
                ops.conv2d(parts[2], w2, b2, pad_mode="pad", padding=3, groups=w2.shape[0]))
        y = ops.concat(outs, axis=1).reshape(B, C, H * W).transpose(0, 2, 1)
        if self.mode == D.MODE_RESIDUAL:
            y = ops.concat((x[:, :1, C0:C0 + C], y + x[:, 1:, C0:C0 + C]), axis=1)
        else:
            y = ops.concat((ops.zeros((B, 1, C), ms.float32), y), axis=1)
        return (y * self.g).sum(), y


def _rel(a, b):
    a, b = a.asnumpy(), b.asnumpy()
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("mode", [D.MODE_CONV, D.MODE_RESIDUAL])
@pytest.mark.parametrize("exec_mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_forward_and_gradients_match_stock_conv(kernel, mode, exec_mode):
    ms.set_context(mode=exec_mode)
    try:
        x, ws, bs, g = _data()
        args = (x, *ws, *bs)
        ours, ref = KernelLoss(kernel, g, mode), StockLoss(g, mode)
        assert _rel(ours(*args)[1], ref(*args)[1]) <= 1e-6
        grad_ours = ms.grad(ours, grad_position=tuple(range(7)), has_aux=True)(*args)[0]
        grad_ref = ms.grad(ref, grad_position=tuple(range(7)), has_aux=True)(*args)[0]
        for a, b in zip(grad_ours, grad_ref):
            assert a.shape == b.shape
            assert _rel(a, b) <= 1e-5
        # channels outside the window get no gradient; the CLS row only in residual mode
        dx = grad_ours[0].asnumpy()
        assert np.all(dx[:, :, :C0] == 0) and np.all(dx[:, :, C0 + C:] == 0)
        assert np.any(dx[:, 0, C0:C0 + C] != 0) == (mode == D.MODE_RESIDUAL)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def _numpy_token_dwconv(x, weights, biases, size, c0, residual):
    """float64 reference: depthwise 'same' convolutions of the image tokens' channel window, CLS row per mode."""
    H_, W_ = size
    B = x.shape[0]
    out_parts, c = [], c0
    for w, b in zip(weights, biases):
        n, k = w.shape[0], w.shape[-1]
        p = k // 2
        img = np.pad(x[:, 1:, c:c + n].astype(np.float64).reshape(B, H_, W_, n), ((0, 0), (p, p), (p, p), (0, 0)))
        y = np.zeros((B, H_, W_, n)) + b
        for dy in range(k):
            for dx in range(k):
                y += img[:, dy:dy + H_, dx:dx + W_] * w[:, 0, dy, dx]
        out_parts.append(y.reshape(B, H_ * W_, n))
        c += n
    y = np.concatenate(out_parts, axis=-1)
    C_ = y.shape[-1]
    if residual:
        return np.concatenate((x[:, :1, c0:c0 + C_], y + x[:, 1:, c0:c0 + C_]), axis=1)
    return np.concatenate((np.zeros((B, 1, C_)), y), axis=1)


@pytest.mark.parametrize("mode", [D.MODE_CONV, D.MODE_RESIDUAL])
@pytest.mark.parametrize("size", [(9, 23), (56, 40)])
def test_register_tiles_match_a_direct_convolution(kernel, mode, size):
    """Maps wide enough for the forward's interior register tiles (8 outputs + the kernel's reach) and
    channel groups that fill 16-lane blocks, cut 16/8/4/1 lanes at the tail and mix kernel sizes
    within a block (the block runs its largest kernel on the zero-padded taps). The 56 x 40 map is
    above the work at which a call splits its rows across threads (fastmath.h), the small one below."""
    rng = np.random.default_rng(5)
    c0, splits = 5, ((19, 3), (26, 5), (28, 7))  # 73 channels: 4 x 16 + 8 + 1
    ks = tuple(k for n, k in splits for _ in range(n))
    C_ = len(ks)
    x = rng.standard_normal((2, 1 + size[0] * size[1], c0 + C_ + 3)).astype(np.float32)
    ws = [rng.standard_normal((n, 1, k, k)).astype(np.float32) for n, k in splits]
    bs = [rng.standard_normal((n,)).astype(np.float32) for n, _ in splits]
    taps = D.pack_weights([ms.Tensor(w) for w in ws], D.tap_embeddings(tuple(k for _, k in splits)))
    meta = D.make_meta(size[0], size[1], 1, c0, C_, 7, ks, mode)
    got = kernel(ms.Tensor(x), taps, ms.Tensor(np.concatenate(bs)), meta).asnumpy()
    ref = _numpy_token_dwconv(x, ws, bs, size, c0, mode == D.MODE_RESIDUAL)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_kernel_detects_a_wrong_shape(kernel):
    x, ws, bs, _ = _data()
    taps = D.pack_weights(ws, EMBED)
    bad_meta = D.make_meta(H + 1, W, 1, C0, C, 7, KS, D.MODE_CONV)  # H*W no longer matches the tokens
    with pytest.raises(RuntimeError):
        kernel(x, taps, ops.concat(bs), bad_meta).asnumpy()


def test_build_failure_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    from coat_ms.kernels import load_kernel
    from coat_ms.models.backend import resolve_backend

    # every kernel is built (once per process) before the compiler is taken away
    assert all(load_kernel(name) is not None for name in loader.KERNEL_NAMES)
    monkeypatch.setenv("COAT_MS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(KernelBuildError):
        build("dwconv.cc")
    saved = loader.forget("dwconv")
    try:
        with caplog.at_level(logging.WARNING):
            assert D.load() is None and D.dwconv_op() is None
        assert "using the stock op" in caplog.text
        assert "no-such-compiler" in loader.reason("dwconv")
        # the backend leaves it out, and the attention kernel that consumes its output
        assert resolve_backend("cpu_kernels").kernels == {"rowops", "gelu", "crossscale"}
    finally:
        loader.forget("dwconv")
        loader.restore("dwconv", saved)
    assert D.load() is not None  # the real kernel is back for later tests
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")], "no temp file left by the failed build"


def test_every_kernel_source_is_a_named_kernel():
    here = os.path.dirname(D.__file__)
    assert set(loader.KERNEL_NAMES) == {f[:-3] for f in os.listdir(here) if f.endswith(".cc")}


def test_build_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("COAT_MS_KERNEL_CACHE", str(tmp_path))
    lib = build("dwconv.cc")
    mtime = (tmp_path / lib.split("/")[-1]).stat().st_mtime_ns
    assert build("dwconv.cc") == lib
    assert (tmp_path / lib.split("/")[-1]).stat().st_mtime_ns == mtime


def test_gelu_kernel_matches_stock_exact_gelu_forward_and_backward():
    from coat_ms.kernels.gelu import gelu_op
    ms.set_context(mode=ms.GRAPH_MODE)
    fused = gelu_op()
    assert fused is not None
    rng = np.random.default_rng(3)
    x = ms.Tensor((rng.standard_normal((2, 9, 16)) * 3).astype(np.float32))
    g = ms.Tensor(rng.standard_normal((2, 9, 16)).astype(np.float32))

    def ours(t):
        return (fused(t) * g).sum()

    def stock(t):
        return (ops.gelu(t, approximate="none") * g).sum()

    assert _rel(fused(x), ops.gelu(x, approximate="none")) <= 1e-6
    assert _rel(ms.grad(ours)(x), ms.grad(stock)(x)) <= 1e-5


class RowCase(nn.Cell):
    """sum(f(x, gamma, beta) * g) for one row op, ours (the C++ kernel) or MindSpore's stock ops."""

    def __init__(self, kind, ours, g):
        super().__init__()
        from coat_ms.kernels import rowops
        self.kind, self.ours, self.g = kind, ours, g
        self.ln, self.add = rowops.layer_norm_op(), rowops.bias_add_op()
        self.ln_ones, self.residual = rowops.layer_norm_ones_op(), rowops.residual_bias_add_op()
        self.stock_ln = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=1e-6)
        self.eps = ms.Tensor([1e-6], ms.float32)

    def construct(self, x, gamma, beta):
        if self.kind == "layer_norm":
            y = self.ln(x, gamma, beta, self.eps) if self.ours else self.stock_ln(x, gamma, beta)[0]
        elif self.kind == "layer_norm_ones":  # the ones column feeds a weighted sum too: its gradient is dropped
            if self.ours:
                y = self.ln_ones(x, gamma, beta, self.eps)
            else:
                y = ops.concat((self.stock_ln(x, gamma, beta)[0], ops.ones(x.shape[:-1] + (1,), x.dtype)), axis=-1)
            return (y[..., :-1] * self.g).sum() + (y[..., -1] * self.g[..., 0]).sum()
        elif self.kind == "residual_bias_add":  # x + (y + b) with y = x * gamma
            y = self.residual(x, x * gamma, beta) if self.ours else x + (x * gamma + beta)
        else:
            y = self.add(x, beta) if self.ours else x + beta
        return (y * self.g).sum()


@pytest.mark.parametrize("kind", ["layer_norm", "layer_norm_ones", "bias_add", "residual_bias_add"])
@pytest.mark.parametrize("exec_mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_row_kernels_match_stock_ops_forward_and_backward(kind, exec_mode):
    """LayerNorm (alone and with the ones column), bias add and the residual add with a bias
    (coat_ms/kernels/rowops.cc) against MindSpore's own ops."""
    ms.set_context(mode=exec_mode)
    try:
        rng = np.random.default_rng(5)
        args = (ms.Tensor((rng.standard_normal((3, 37, 24)) * 2 + 0.5).astype(np.float32)),
                ms.Tensor(rng.standard_normal(24).astype(np.float32)),
                ms.Tensor(rng.standard_normal(24).astype(np.float32)))
        g = ms.Tensor(rng.standard_normal((3, 37, 24)).astype(np.float32))
        ours, stock = RowCase(kind, True, g), RowCase(kind, False, g)
        ref = float(stock(*args).asnumpy())
        assert abs(float(ours(*args).asnumpy()) - ref) <= 1e-5 * max(1.0, abs(ref))
        got = ms.grad(ours, grad_position=(0, 1, 2))(*args)
        want = ms.grad(stock, grad_position=(0, 1, 2))(*args)
        used = 0
        for a, b in zip(got, want):
            assert a.shape == b.shape
            if np.abs(b.asnumpy()).max() > 0:  # gamma has no gradient in bias_add
                assert _rel(a, b) <= 1e-5
                used += 1
        assert used == (2 if kind == "bias_add" else 3)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


class CrossScaleCase(nn.Cell):
    """sum(x + ((cur + resize(a)) + resize(b)) * g): the crossscale kernel or the stock-op separable resizes."""

    def __init__(self, ours, sizes, factors, g):
        super().__init__()
        from coat_ms.kernels.crossscale import cross_scale_sum_op
        self.ours, self.sizes, self.factors, self.g = ours, sizes, factors, g
        self.op = cross_scale_sum_op()

    def construct(self, x, cur, a, b):
        (fa, fb), (s, sa, sb) = self.factors, self.sizes
        if self.ours:
            y = self.op(x, cur, a, b, fa[0], fa[1], fb[0], fb[1])
        else:
            y = x + ((cur + resize_separable(a, sa, s, fa)) + resize_separable(b, sb, s, fb))
        return (y * self.g).sum()


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("exec_mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_cross_scale_kernel_matches_stock_resizes_forward_and_backward(align_corners, exec_mode):
    """A parallel block's per-scale resizes and sums (coat_ms/kernels/crossscale.cc) against the separable
    stock-op resizes, up (2x, 4x) and down, to and from 1 x 1 grids, with the CLS rows riding along."""
    ms.set_context(mode=exec_mode)
    try:
        rng = np.random.default_rng(8)
        for s, sa, sb in (((4, 6), (2, 3), (1, 2)), ((2, 3), (4, 6), (8, 12)), ((1, 1), (2, 2), (4, 4)),
                          ((4, 4), (1, 1), (2, 2))):
            def tokens(size):
                return ms.Tensor(rng.standard_normal((2, 1 + size[0] * size[1], 5)).astype(np.float32))
            args = (tokens(s), tokens(s), tokens(sa), tokens(sb))
            factors = (token_resize_factors(sa, s, align_corners), token_resize_factors(sb, s, align_corners))
            g = tokens(s)
            ours, stock = CrossScaleCase(True, (s, sa, sb), factors, g), CrossScaleCase(False, (s, sa, sb), factors, g)
            ref = float(stock(*args).asnumpy())
            assert abs(float(ours(*args).asnumpy()) - ref) <= 1e-5 * max(1.0, abs(ref)), (s, sa, sb)
            got = ms.grad(ours, grad_position=(0, 1, 2, 3))(*args)
            want = ms.grad(stock, grad_position=(0, 1, 2, 3))(*args)
            for a, b in zip(got, want):
                assert a.shape == b.shape and _rel(a, b) <= 1e-5, (s, sa, sb)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


class AttentionCase(nn.Cell):
    """sum(attention(qkv, conv) * g): the fused kernel, or the head-major stock-op formulation of the model."""

    def __init__(self, ours, heads, g):
        super().__init__()
        from coat_ms.kernels.attention import attention_config, factor_attention_op
        self.ours, self.heads, self.g = ours, heads, g
        self.attend = factor_attention_op()
        self.channels = g.shape[2]
        self.scale = (self.channels // heads) ** -0.5
        self.config = attention_config(heads, self.scale)

    def construct(self, qkv, conv):
        if self.ours:
            y = self.attend(qkv, conv, self.config)
        else:
            B, N, C = conv.shape
            q, k, v = ops.split(qkv, C, axis=2)
            q4, k4, v4 = (t.reshape(B, N, self.heads, C // self.heads).transpose(0, 2, 1, 3) for t in (q, k, v))
            att = ops.matmul(q4, ops.matmul(ops.softmax(k4, axis=2).transpose(0, 1, 3, 2), v4)) * self.scale
            y = att.transpose(0, 2, 1, 3).reshape(B, N, C) + q * conv
        return (y * self.g).sum()


# 8 and 19 are compiled head widths of the CoaT family, 5 takes the generic loop; the last case is above
# the work at which a call splits across threads (fastmath.h), the others run on the calling thread
@pytest.mark.parametrize("heads,head_chs,batch,tokens", [(3, 8, 2, 50), (2, 19, 3, 17), (4, 5, 1, 9),
                                                          (2, 19, 2, 1800)])
@pytest.mark.parametrize("exec_mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_attention_kernel_matches_stock_ops_forward_and_backward(heads, head_chs, batch, tokens, exec_mode):
    """The fused factorized attention + crpe product (coat_ms/kernels/attention.cc) against numpy and the stock ops."""
    from coat_ms.kernels.attention import attention_config, factor_attention_op, reference
    ms.set_context(mode=exec_mode)
    try:
        rng = np.random.default_rng(heads * head_chs)
        C = heads * head_chs
        qkv = (rng.standard_normal((batch, tokens, 3 * C)) * 2).astype(np.float32)
        conv = rng.standard_normal((batch, tokens, C)).astype(np.float32)
        conv[:, 0] = 0  # the CLS row of crpe's convolution
        g = ms.Tensor(rng.standard_normal((batch, tokens, C)).astype(np.float32))
        out = factor_attention_op()(ms.Tensor(qkv), ms.Tensor(conv), attention_config(heads, head_chs ** -0.5))
        want = reference(qkv, conv, heads, head_chs ** -0.5)
        assert np.abs(out.asnumpy() - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
        args = (ms.Tensor(qkv), ms.Tensor(conv))
        got = ms.grad(AttentionCase(True, heads, g), grad_position=(0, 1))(*args)
        ref = ms.grad(AttentionCase(False, heads, g), grad_position=(0, 1))(*args)
        for a, b in zip(got, ref):
            assert a.shape == b.shape
            assert _rel(a, b) <= 1e-5
        C3 = qkv.shape[2]
        assert np.abs(ref[0].asnumpy()[..., C3 // 3:2 * C3 // 3]).max() > 0  # k's gradient is exercised
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("head_chs", [8, 16, 19, 27, 32, 40, 64])
def test_attention_forward_at_every_compiled_head_width(head_chs):
    """Each head width with its own register-tiled forward (attention.cc) against numpy, at token counts
    that leave partial tiles (the kv update takes 8 tokens at a time, the output product 4) in each chunk."""
    from coat_ms.kernels.attention import attention_config, factor_attention_op, reference
    rng = np.random.default_rng(head_chs)
    heads, batch, tokens = 3, 2, 4 * 8 * 3 + 7
    C = heads * head_chs
    qkv = (rng.standard_normal((batch, tokens, 3 * C)) * 2).astype(np.float32)
    conv = rng.standard_normal((batch, tokens, C)).astype(np.float32)
    out = factor_attention_op()(ms.Tensor(qkv), ms.Tensor(conv), attention_config(heads, head_chs ** -0.5))
    want = reference(qkv, conv, heads, head_chs ** -0.5)
    assert np.abs(out.asnumpy() - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def _train_steps(tmp_path, kernels):
    """Three compiled SGD steps of a narrow coat_tiny in a subprocess: (losses, weights, kernel used)."""
    out = tmp_path / f"weights_{kernels}.npz"
    from helpers import ENV  # PYTHONPATH: this checkout's coat_ms and benchmarks
    env = {**ENV, "COAT_MS_CPU_KERNELS": kernels}  # the documented switch, read at model build
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "kernel_train_steps.py"),
                           str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["losses"], dict(np.load(out)), report["kernel"]


@pytest.mark.studies
def test_compiled_training_steps_with_kernels_match_stock_ops(tmp_path):
    """Training uses the kernels too: repeated compiled steps finish (a padded-tap gradient once hung
    on the second call) and follow the stock operators' trajectory."""
    losses_k, weights_k, used_k = _train_steps(tmp_path, "1")
    losses_s, weights_s, used_s = _train_steps(tmp_path, "0")
    assert used_k and not used_s
    assert losses_k[-1] < losses_k[0]  # it trains
    np.testing.assert_allclose(losses_k, losses_s, rtol=1e-5)
    scale = max(np.abs(w).max() for w in weights_s.values())
    assert weights_k.keys() == weights_s.keys()
    assert max(np.abs(weights_k[n] - weights_s[n]).max() for n in weights_s) <= 1e-5 * scale


def test_bias_gelu_kernel_matches_stock_bias_add_and_gelu():
    from coat_ms.kernels.gelu import bias_gelu_op
    ms.set_context(mode=ms.GRAPH_MODE)
    fused = bias_gelu_op()
    assert fused is not None
    rng = np.random.default_rng(4)
    x = ms.Tensor((rng.standard_normal((2, 9, 16)) * 3).astype(np.float32))
    b = ms.Tensor(rng.standard_normal(16).astype(np.float32))
    g = ms.Tensor(rng.standard_normal((2, 9, 16)).astype(np.float32))

    def ours(t, bias):
        return (fused(t, bias) * g).sum()

    def stock(t, bias):
        return (ops.gelu(t + bias, approximate="none") * g).sum()

    assert _rel(fused(x, b), ops.gelu(x + b, approximate="none")) <= 1e-6
    for a, w in zip(ms.grad(ours, grad_position=(0, 1))(x, b), ms.grad(stock, grad_position=(0, 1))(x, b)):
        assert a.shape == w.shape and _rel(a, w) <= 1e-5


def test_benchmark_report_ratios_and_targets():
    from benchmarks import bench
    result = {
        "machine": {"cpus": 2, "load_avg_start": (1.0, 1.0, 1.0), "load_avg_end": (2.0, 2.0, 2.0)},
        "settings": {"batches": [8], "train_batch": 8},
        "matmul": {"torch-matmul": {"gflops": 200.0}, "ms-matmul": {"gflops": 100.0}},
        "models": {"m": {
            "gmacs": 1.0,
            "infer": {"coat_ms/b8": {"median_s": 0.25, "img_per_s": 32.0},
                      "timm/b8": {"median_s": 0.5, "img_per_s": 16.0},
                      "mindcv/b8": {"median_s": 4.0, "img_per_s": 2.0}},
            "train": {"coat_ms/b8": {"median_s": 1.0, "img_per_s": 8.0},
                      "timm/b8": {"median_s": 2.0, "img_per_s": 4.0}},
            "compile_first_call_s": {"coat_ms/infer/b8": 5.0, "mindcv/infer/b8": 10.0},
            "peak_rss_mb": {"coat_ms/infer/b8": 1300.0, "timm/infer/b8": 1000.0}}}}
    rows, limit = bench.summarize(result)
    assert limit == 200.0
    ours = next(r for r in rows if r["framework"] == "coat_ms" and r["task"] == "infer")
    assert ours["vs_timm"] == 2.0 and ours["vs_mindcv"] == 16.0
    assert ours["gflops"] == 64.0 and ours["eff"] == 0.32  # 2 FLOPs/MAC x 1 GMAC x 32 img/s
    met = {label: ok for _, label, _, _, ok in bench.targets(result, rows)}
    assert met["infer b8 coat_ms/timm"] and met["infer b8 coat_ms/mindcv"]
    assert met["compile+first call b8 coat_ms/mindcv"] and met["train b8 coat_ms/timm"]
    assert met["peak RSS b8 coat_ms/timm"] is False  # 1.3 > 1.2
    md = bench.to_markdown(result)
    assert "| m | infer | coat_ms | 8 | 32.00 | 250 | 2.00 | - | 16.0 | 64.0 | 32.0 |" in md


def test_benchmark_gives_mindcv_mindspores_default_runtime_unless_asked(monkeypatch):
    from benchmarks import bench
    from coat_ms import runtime
    assert bench.BLOCKING_RUN == runtime.BLOCKING_RUN
    monkeypatch.setenv(runtime.BLOCKING_RUN, "0")  # a user's opt-out reaches coat_ms's configure_runtime
    assert runtime.BLOCKING_RUN not in bench.worker_env("mindcv")
    assert bench.worker_env("coat_ms")[runtime.BLOCKING_RUN] == "0"
    assert bench.worker_env("mindcv", mindcv_blocking_run=True)[runtime.BLOCKING_RUN] == "1"


def test_benchmark_cli_rejects_bad_arguments():
    import subprocess
    import sys
    from helpers import ROOT
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--models", "no_such_model",
                           "--out", "/tmp/x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model(s) no_such_model")


@pytest.mark.parametrize("first,user_spin,spin,parallel_work", [
    ("coat_ms", None, "1000", None),        # coat_ms first: spin capped, small calls on the calling thread
    ("mindspore", None, None, "0"),         # libgomp already loaded with its long spin: every call split
    ("coat_ms", "5", "5", None),            # the user's short spin is kept
    ("coat_ms", "300000", "300000", "0"),   # the user's long spin is kept, and every call split
])
def test_openmp_spin_and_kernel_threading_follow_the_import_order(first, user_spin, spin, parallel_work):
    """libgomp reads GOMP_SPINCOUNT once, when it loads (with MindSpore); coat_ms/openmp.py."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                                                             "COAT_MS_KERNEL_PARALLEL_WORK", openmp.MARK_ENV)}
    if user_spin is not None:
        env["GOMP_SPINCOUNT"] = user_spin
    second = "mindspore" if first == "coat_ms" else "coat_ms"
    code = (f"import os, {first}, {second}; from coat_ms.kernels import load_kernel; "
            "assert load_kernel('rowops') is not None; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('COAT_MS_KERNEL_PARALLEL_WORK'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(spin), str(parallel_work)]


@pytest.mark.parametrize("marked", [True, False])
def test_a_child_can_undo_only_the_cap_coat_ms_set(marked):
    """The benchmark's timm workers start without coat_ms's cap, which their parent passed on with its
    mark; a GOMP_SPINCOUNT=1000 without the mark is the user's and stays."""
    env = {k: v for k, v in os.environ.items() if k != openmp.MARK_ENV}
    env["GOMP_SPINCOUNT"] = "1000"
    if marked:
        env[openmp.MARK_ENV] = "1"
    code = ("import os; from coat_ms.openmp import uncap_spinning; uncap_spinning(); "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None" if marked else "1000"]
