"""Named intermediate outputs ("taps") on both sides, in depth order.

Tap names, in the order the network computes them:
  patch_embed1, serial_blocks1.0, ..., patch_embed4, serial_blocks4.J,
  parallel_blocks.J.x2 / .x3 / .x4 (CoaT only), norm2, norm3, norm4 (CoaT) or norm4 (Lite),
  aggregate (CoaT only), logits.

PyTorch: forward hooks on timm's modules.  MindSpore: the model's own API,
``forward_intermediates(blocks=True, output_fmt="NLC")`` then ``forward_head``, wrapped in ``MsTapNet``,
a Cell returning every tap as one tuple, so it compiles in GRAPH_MODE as well as running in PyNative
(hooks are PyNative-only in MindSpore).
"""
import torch
from mindspore import nn


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
    """(taps..., logits) of a coat_ms CoaT through its ``forward_intermediates`` and ``forward_head``.

    The block taps are the model's intermediates (tokens with CLS; timm's patch_embed output has no CLS,
    so it is dropped there); the final features give the norm taps, ``forward_head(pre_logits=True)``
    the aggregate tap (dropout is off in eval mode) and ``forward_head`` the logits.
    """

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names unprefixed
        self.model = model
        self.has_parallel = model.parallel_blocks is not None
        self.embed_positions = tuple(i for i, n in enumerate(model.intermediate_names(blocks=True))
                                     if n.startswith("patch_embed"))

    def construct(self, x):
        final, intermediates = self.model.forward_intermediates(x, blocks=True, output_fmt="NLC")
        taps = ()
        for i in range(len(intermediates)):
            tokens = intermediates[i]
            taps = taps + ((tokens[:, 1:],) if i in self.embed_positions else (tokens,))
        if self.has_parallel:
            taps = taps + final + (self.model.forward_head(final, pre_logits=True),)
        else:
            taps = taps + (final,)
        return taps + (self.model.forward_head(final),)


def ms_taps(model, x_ms, serial_depths, parallel_depth):
    """{tap name: np.ndarray} from one MindSpore forward (mode = the current MindSpore context)."""
    names = tap_names(serial_depths, parallel_depth)
    blocks = model.intermediate_names(blocks=True)
    if names[:len(blocks)] != blocks:
        raise RuntimeError(f"the model's intermediates {blocks} are not the block taps {names[:len(blocks)]}")
    outs = MsTapNet(model)(x_ms)
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

