"""Named intermediate outputs ("taps") on both sides, in depth order.

Tap names, in the order the network computes them:
  patch_embed1, serial_blocks1.0, ..., patch_embed4, serial_blocks4.J,
  parallel_blocks.J.x2 / .x3 / .x4 (CoaT only), norm2, norm3, norm4 (CoaT) or norm4 (Lite),
  aggregate (CoaT only), logits.

PyTorch: forward hooks on timm's modules.  MindSpore: ``MsTapNet``, a Cell that runs the coat_ms
model's own sub-cells in the model's order and returns every tap as one tuple, so it compiles in
GRAPH_MODE as well as running in PyNative (hooks are PyNative-only in MindSpore).
"""
import torch
from mindspore import nn, ops

from coat_ms.models.tokens import token_resize_factors


def tap_names(serial_depths, parallel_depth):
    """Tap names in depth order for an architecture."""
    names = []
    for stage in range(4):
        names.append(f"patch_embed{stage + 1}")
        names += [f"serial_blocks{stage + 1}.{j}" for j in range(serial_depths[stage])]
    for j in range(parallel_depth):
        names += [f"parallel_blocks.{j}.x{s}" for s in (2, 3, 4)]
    if parallel_depth:
        names += ["norm2", "norm3", "norm4", "aggregate"]
    else:
        names.append("norm4")
    names.append("logits")
    return names


def tap_block(name):
    """The module a tap belongs to: 'parallel_blocks.3.x2' -> 'parallel_blocks.3'."""
    return name.rsplit(".", 1)[0] if name.startswith("parallel_blocks.") else name


class MsTapNet(nn.Cell):
    """Runs a coat_ms CoaT and returns (taps..., logits) with the model's own cells.

    It mirrors ``CoaT.forward_scales`` / ``forward_head`` step by step; ``check_logits`` in the harness
    compares its logits with the model's own ``construct`` so the two cannot drift apart.
    """

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names unprefixed
        self.model = model
        self.has_parallel = model.parallel_blocks is not None

    def _stage(self, patch_embed, cls_token, blocks, x_nhwc, taps):
        x, size = self.model._embed(patch_embed, cls_token, x_nhwc)
        taps = taps + (x[:, 1:],)
        for blk in blocks:
            x = blk(x, size)
            taps = taps + (x,)
        return x, size, taps

    def construct(self, x):
        m = self.model
        taps = ()
        x = x.transpose(0, 2, 3, 1)
        x1, s1, taps = self._stage(m.patch_embed1, m.cls_token1, m.serial_blocks1, x, taps)
        x2, s2, taps = self._stage(m.patch_embed2, m.cls_token2, m.serial_blocks2, m._to_nhwc(x1, s1), taps)
        x3, s3, taps = self._stage(m.patch_embed3, m.cls_token3, m.serial_blocks3, m._to_nhwc(x2, s2), taps)
        x4, s4, taps = self._stage(m.patch_embed4, m.cls_token4, m.serial_blocks4, m._to_nhwc(x3, s3), taps)
        if self.has_parallel:
            sizes = (s1, s2, s3, s4)
            factors = None
            if m.token_resize == "separable":  # as CoaT.forward_scales: one set of resize matrices for all blocks
                ac = m.align_corners
                factors = (token_resize_factors(s3, s2, ac), token_resize_factors(s4, s3, ac),
                           token_resize_factors(s4, s2, ac), token_resize_factors(s2, s3, ac),
                           token_resize_factors(s3, s4, ac), token_resize_factors(s2, s4, ac))
            for blk in m.parallel_blocks:
                x2, x3, x4 = m.cpe2(x2, s2), m.cpe3(x3, s3), m.cpe4(x4, s4)
                x1, x2, x3, x4 = blk(x1, x2, x3, x4, sizes, factors)
                taps = taps + (x2, x3, x4)
            feats = (m.norm2(x2), m.norm3(x3), m.norm4(x4))
            cls_tokens = ops.stack((feats[0][:, 0], feats[1][:, 0], feats[2][:, 0]), axis=1)
            taps = taps + feats + (m.aggregate(cls_tokens),)
            logits = m.forward_head(feats)
        else:
            feats = m.norm4(x4)
            taps = taps + (feats,)
            logits = m.forward_head(feats)
        return taps + (logits,)


def ms_taps(model, x_ms, serial_depths, parallel_depth):
    """{tap name: np.ndarray} from one MindSpore forward (mode = the current MindSpore context)."""
    outs = MsTapNet(model)(x_ms)
    names = tap_names(serial_depths, parallel_depth)
    if len(outs) != len(names):
        raise RuntimeError(f"MsTapNet returned {len(outs)} taps, expected {len(names)}")
    return {n: o.asnumpy() for n, o in zip(names, outs)}


def torch_taps(model, x_pt, serial_depths, parallel_depth):
    """{tap name: np.ndarray} from one timm forward, captured with forward hooks."""
    captured = {}
    modules = dict(model.named_modules())
    handles = []

    def hook_for(name):
        def hook(_module, _inputs, output):
            if name.startswith("parallel_blocks."):
                _, x2, x3, x4 = output
                for s, t in zip((2, 3, 4), (x2, x3, x4)):
                    captured[f"{name}.x{s}"] = t.detach().numpy().copy()
            elif name == "aggregate":
                captured[name] = output.detach().squeeze(1).numpy().copy()
            else:
                captured[name] = output.detach().numpy().copy()
        return hook

    hooked = {tap_block(n) for n in tap_names(serial_depths, parallel_depth) if n != "logits"}
    for name in hooked:
        handles.append(modules[name].register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            logits = model(x_pt)
    finally:
        for h in handles:
            h.remove()
    captured["logits"] = logits.detach().numpy().copy()
    names = tap_names(serial_depths, parallel_depth)
    missing = [n for n in names if n not in captured]
    if missing:
        raise RuntimeError(f"torch hooks did not capture {missing}")
    return {n: captured[n] for n in names}

