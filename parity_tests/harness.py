"""Build a timm CoaT and a coat_ms CoaT with the same weights, feed both the same input.

One ``Pair`` holds both models.  The timm model gets seeded random weights (biases and norm
weights perturbed away from their 0 / 1 initialisation so every parameter matters), and the
MindSpore model receives them through ``convert.torch_to_ms``, the product's own converter.
"""
import contextlib
import dataclasses

import mindspore as ms
import numpy as np
import timm
import torch

import coat_ms
from coat_ms.checkpoint import load_state
from coat_ms.models.coat import VARIANTS

from . import taps

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}

# A small CoaT and CoaT-Lite (same code paths as the real variants) for the quick tests.
TINY_ARCHS = {
    "tiny_lite": dict(base="coat_lite_tiny", embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1),
                      mlp_ratios=(2, 2, 2, 2)),
    "tiny_coat": dict(base="coat_tiny", embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1),
                      parallel_depth=2, mlp_ratios=(2, 2, 2, 2)),
}


@contextlib.contextmanager
def ms_mode(mode):
    """Run the block under MindSpore's GRAPH_MODE or PYNATIVE_MODE, then restore the previous mode."""
    previous = ms.get_context("mode")
    ms.set_context(mode=MODES[mode])
    try:
        yield
    finally:
        ms.set_context(mode=previous)


def arch_of(name):
    """(timm/coat_ms variant name, constructor overrides, full architecture dict) for a variant or tiny arch."""
    if name in TINY_ARCHS:
        spec = dict(TINY_ARCHS[name])
        base = spec.pop("base")
    elif name in VARIANTS:
        base, spec = name, {}
    else:
        raise KeyError(f"unknown variant {name!r}: choose from {sorted(VARIANTS) + sorted(TINY_ARCHS)}")
    arch = dict(VARIANTS[base], **spec)
    return base, spec, arch


def perturb_torch_weights(model, seed):
    """Move biases off 0 and norm weights off 1 (timm initialises them so), reproducibly."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.05 * noise)
            elif p.ndim == 1:  # LayerNorm weights
                p.copy_(1.0 + 0.1 * noise)
            elif name.startswith("cls_token"):
                p.copy_(0.5 * noise)


def build_torch(name, img_size=224, seed=0, num_classes=1000):
    base, spec, _ = arch_of(name)
    torch.manual_seed(seed)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
    model = timm.create_model(base, pretrained=False, img_size=img_size, num_classes=num_classes, **kwargs)
    perturb_torch_weights(model, seed)
    return model.eval()


def torch_to_ms_params(state_dict, name, ms_names):
    """MindSpore {name: np.float32} from a torch state dict; returns (params, how).

    Real variants go through the product's converter (``convert.torch_to_ms``), which checks the
    variant.  The tiny test architectures are no variant the converter knows, so their tensors are
    copied by name (coat_ms parameter names equal timm's canonical keys; aliases are skipped).
    """
    if name in VARIANTS:
        from convert import torch_to_ms  # noqa: PLC0415  (late: only the parity run needs it)
        return dict(torch_to_ms(state_dict, name).params), "convert.torch_to_ms"
    return {n: state_dict[n].detach().numpy().astype(np.float32) for n in ms_names}, "copy by name (tiny arch)"


def build_ms(name, num_classes=1000, **extra):
    """A coat_ms model for ``name`` (variant or tiny arch), randomly initialised, in eval mode."""
    base, spec, _ = arch_of(name)
    model = coat_ms.create_model(base, num_classes=num_classes, **dict(spec, **extra))
    model.set_train(False)
    return model


def load_params(model, params, source):
    """Load {name: array} strictly (every name and shape must match)."""
    load_state(model, {k: ms.Parameter(ms.Tensor(np.asarray(v, np.float32)), name=k) for k, v in params.items()},
               strict=True, source=source)


@dataclasses.dataclass
class Pair:
    name: str
    img_size: int
    seed: int
    torch_model: object
    ms_model: object
    arch: dict

    @property
    def serial_depths(self):
        return tuple(self.arch["serial_depths"])

    @property
    def parallel_depth(self):
        return int(self.arch.get("parallel_depth", 0))

    @property
    def tap_names(self):
        return taps.tap_names(self.serial_depths, self.parallel_depth)

    def inputs(self, batch, seed=None):
        rng = np.random.RandomState(self.seed + 100 if seed is None else seed)
        return rng.standard_normal((batch, 3, self.img_size, self.img_size)).astype(np.float32)

    def labels(self, batch, num_classes=1000):
        return np.random.RandomState(self.seed + 200).randint(0, num_classes, size=batch).astype(np.int32)

    def torch_forward_taps(self, x):
        return taps.torch_taps(self.torch_model, torch.from_numpy(x), self.serial_depths, self.parallel_depth)

    def ms_forward_taps(self, x, mode="pynative"):
        """MindSpore taps in ``mode``, through the model's own forward_intermediates (the code construct runs)."""
        with ms_mode(mode):
            return taps.ms_taps(self.ms_model, ms.Tensor(x), self.serial_depths, self.parallel_depth)

    weights_via: str = ""

    def ms_params(self):
        # copies: asnumpy() shares the Parameter's memory, which the optimizer step overwrites
        return {n: p.asnumpy().copy() for n, p in self.ms_model.parameters_dict().items()}


def build_pair(name, img_size=224, seed=0, num_classes=1000):
    """timm model with seeded random weights + coat_ms model loaded from it via convert."""
    _, _, arch = arch_of(name)
    pt = build_torch(name, img_size, seed, num_classes)
    ms_model = build_ms(name, num_classes=num_classes)
    params, how = torch_to_ms_params(pt.state_dict(), name, list(ms_model.parameters_dict()))
    load_params(ms_model, params, f"{name} weights via {how}")
    return Pair(name, img_size, seed, pt, ms_model, arch, weights_via=how)


# ---------------------------------------------------------------------------------------------
# Gradients and one optimizer step
# ---------------------------------------------------------------------------------------------

ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)


class _LossNet(ms.nn.Cell):
    """Mean cross-entropy of the model's logits against fixed labels."""

    def __init__(self, model):
        super().__init__(auto_prefix=False)  # keep the model's parameter names unprefixed
        self.model = model

    def construct(self, x, y):
        return ms.ops.cross_entropy(self.model(x), y)


class _TrainStep(ms.nn.Cell):
    """loss, grads = value_and_grad(loss); optimizer(grads) -- one Cell so GRAPH_MODE compiles it whole."""

    def __init__(self, model, optimizer):
        super().__init__(auto_prefix=False)  # keep the model's parameter names unprefixed
        self.loss_net = _LossNet(model)
        self.optimizer = optimizer
        self.grad_fn = ms.value_and_grad(self.loss_net, None, weights=optimizer.parameters)

    def construct(self, x, y):
        loss, grads = self.grad_fn(x, y)
        self.optimizer(grads)
        return loss


def torch_loss_grads(model, x, labels, autocast=None, scale=1.0):
    """(loss, d loss / d input, {param name: grad}) for mean cross-entropy, in PyTorch.  ``autocast``: a dtype
    for torch.autocast (the loss stays float32, backpropagated at ``scale`` and unscaled, as GradScaler does)."""
    model.zero_grad(set_to_none=True)
    xt = torch.from_numpy(x).requires_grad_(True)
    with torch.autocast("cpu", dtype=autocast or torch.float16, enabled=autocast is not None):
        logits = model(xt)
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.from_numpy(labels).long())
    (loss * scale).backward()
    grads = {n: p.grad.detach().numpy().copy() / scale for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), xt.grad.numpy().copy(), grads


def ms_loss_grads(model, x, labels, mode="pynative"):
    """(loss, d loss / d input, {param name: grad}) in MindSpore, via value_and_grad."""
    params = model.trainable_params()
    grad_fn = ms.value_and_grad(_LossNet(model), grad_position=0, weights=params)
    with ms_mode(mode):
        loss, (gx, gw) = grad_fn(ms.Tensor(x), ms.Tensor(labels))
    return float(loss.asnumpy()), gx.asnumpy(), {p.name: g.asnumpy() for p, g in zip(params, gw)}


def torch_adamw_step(model, x, labels, cfg=ADAMW):
    """One torch.optim.AdamW step; returns (loss, {name: updated weight})."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=cfg["betas"], eps=cfg["eps"],
                            weight_decay=cfg["weight_decay"])
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(labels).long())
    loss.backward()
    opt.step()
    return float(loss.detach()), {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def ms_optimizer(params, kind, cfg=ADAMW, step=1):
    """MindSpore optimizer equal to torch.optim.AdamW(cfg).

    ``adamw``: ``mindspore.experimental.optim.AdamW`` has torch's definition (decoupled decay
    lr*wd*w, bias-corrected moments); ``mindspore.mint.optim.AdamW`` is the same but has no CPU kernel.
    ``adamweightdecay``: ``nn.AdamWeightDecay`` has no bias correction and adds wd*w to the update;
    at step t it equals torch's AdamW with lr' = lr*sqrt(1-b2^t)/(1-b1^t), eps' = eps*sqrt(1-b2^t),
    wd' = wd*(1-b1^t)/sqrt(1-b2^t) -- exact for a single step; for a run, eps' would have to follow t.
    """
    b1, b2 = cfg["betas"]
    if kind == "adamw":
        from mindspore.experimental.optim import AdamW  # noqa: PLC0415
        return AdamW(params, lr=cfg["lr"], betas=(b1, b2), eps=cfg["eps"], weight_decay=cfg["weight_decay"])
    if kind == "adamweightdecay":
        c1, c2 = 1 - b1 ** step, (1 - b2 ** step) ** 0.5
        return ms.nn.AdamWeightDecay(params, learning_rate=cfg["lr"] * c2 / c1, beta1=b1, beta2=b2,
                                     eps=cfg["eps"] * c2, weight_decay=cfg["weight_decay"] * c1 / c2)
    raise ValueError(f"unknown optimizer kind {kind!r}")


def ms_adamw_step(model, x, labels, kind="adamw", mode="pynative", cfg=ADAMW):
    """One MindSpore optimizer step; returns (loss, {name: updated weight})."""
    params = model.trainable_params()
    step = _TrainStep(model, ms_optimizer(params, kind, cfg))
    with ms_mode(mode):
        loss = step(ms.Tensor(x), ms.Tensor(labels))
    return float(loss.asnumpy()), {p.name: p.asnumpy().copy() for p in params}


def step_excess(w_pt, w_ms, w0, g_pt, g_ms, cfg=ADAMW, tol=None):
    """Elements of one tensor whose post-step difference exceeds ``tol * max|w_pt|``, with their bound.

    At step 1 Adam's update is f(g) = lr * g / (|g| + eps): its slope is lr * eps / (|g| + eps)^2, largest
    (lr / eps) at g = 0.  A gradient rounding difference between g_ms and g_pt (both measured) therefore
    moves the weight by at most  lr * |g_ms - g_pt| * eps / (d + eps)^2  (mean value theorem), where d is
    the distance of the interval [g_ms, g_pt] from 0: min(|g_ms|, |g_pt|) when both have the same sign,
    0 when the interval contains 0 (the two gradients have opposite signs, as for k's bias, whose exact
    gradient is zero).  Returns rows (index, w0, w_pt, w_ms, |diff|, g_pt, g_ms, bound) for the offending
    elements; an element is *explained* when |diff| <= bound + tol * max|w_pt|.
    """
    from .metrics import STEP_RTOL  # noqa: PLC0415
    tol = STEP_RTOL if tol is None else tol
    scale = float(np.abs(w_pt).max()) or 1.0
    diff = np.abs(w_ms.astype(np.float64) - w_pt)
    idx = np.argwhere(diff > tol * scale)
    rows = []
    for i in map(tuple, idx):
        gp, gm = float(g_pt[i]), float(g_ms[i])
        d = 0.0 if gp * gm <= 0 else min(abs(gp), abs(gm))
        bound = cfg["lr"] * abs(gm - gp) * cfg["eps"] / (d + cfg["eps"]) ** 2
        rows.append(dict(index=tuple(int(k) for k in i), w0=float(w0[i]), w_pt=float(w_pt[i]), w_ms=float(w_ms[i]),
                         diff=float(diff[i]), g_pt=gp, g_ms=gm, bound=bound,
                         explained=bool(diff[i] <= bound + tol * scale)))
    return rows


# ---------------------------------------------------------------------------------------------
# mindcv 0.3.0's CoaT (its own parameter names) loaded with the same weights
# ---------------------------------------------------------------------------------------------

def mindcv_value(name, ours, lay):
    """The array for mindcv parameter ``name`` taken from coat_ms parameters ``ours`` ({name: array}).

    The name rules are the converter's (coat_ms.conversion.mindcv_rules.torch_key), read backwards; ``lay`` (a
    coat_ms.conversion.rules.Layout) resolves tied aliases to the coat_ms parameter that owns them.
    """
    from coat_ms.conversion.mindcv_rules import torch_key  # noqa: PLC0415
    key, part = torch_key(name)
    owner = lay.canonical(key)
    if owner is None:
        raise KeyError(f"mindcv parameter {name} maps to {key}, which coat_ms does not have")
    value = ours[owner]
    if part is None:
        return value
    rows = value.shape[0] // 3
    i = "qkv".index(part)
    return value[i * rows:(i + 1) * rows]


def build_mindcv(name, img_size, ours_model, num_classes=1000):
    """mindcv's CoaT for ``name`` (variant or tiny arch) holding the weights of the coat_ms model ``ours_model``."""
    from mindcv.models.coat import CoaT as MindcvCoaT  # noqa: PLC0415
    from coat_ms.conversion.rules import layout_of  # noqa: PLC0415
    _, _, arch = arch_of(name)
    model = MindcvCoaT(image_size=img_size, patch_size=4, num_classes=num_classes,
                       embed_dims=list(arch["embed_dims"]), serial_depths=list(arch["serial_depths"]),
                       parallel_depth=arch.get("parallel_depth", 0), num_heads=8,
                       mlp_ratios=list(arch["mlp_ratios"]), qkv_bias=True)
    model.set_train(False)
    ours = {n: p.asnumpy() for n, p in ours_model.parameters_dict().items()}
    lay = layout_of(ours_model, name)
    values = {}
    for pname, param in model.parameters_dict().items():
        value = np.asarray(mindcv_value(pname, ours, lay), np.float32)
        if value.size != int(np.prod(param.shape)):
            raise ValueError(f"mindcv {pname} {tuple(param.shape)} vs coat_ms value {value.shape}")
        values[pname] = ms.Parameter(ms.Tensor(value.reshape(param.shape)), name=pname)
    not_loaded, unused = ms.load_param_into_net(model, values, strict_load=True)
    if not_loaded or unused:
        raise RuntimeError(f"mindcv load incomplete: not loaded {not_loaded[:5]}, unused {unused[:5]}")
    return model


def mindcv_taps(model, x, tap_list):
    """{tap: array} from mindcv in PyNative via forward hooks (mindcv cells have the same module names)."""
    cells = dict(model.cells_and_names())
    captured = {}
    handles = []

    def hook_for(name):
        def hook(_cell, _inputs, output):
            if name.startswith("parallel_blocks."):
                for s in (2, 3, 4):
                    captured[f"{name}.x{s}"] = output[s - 1].asnumpy().copy()
            elif name == "aggregate":
                captured[name] = output.asnumpy().reshape(output.shape[0], -1).copy()
            else:
                captured[name] = output.asnumpy().copy()
        return hook

    for block in {taps.tap_block(n) for n in tap_list if n != "logits"}:
        handles.append(cells[block].register_forward_hook(hook_for(block)))
    try:
        with ms_mode("pynative"):
            logits = model(ms.Tensor(x))
    finally:
        for h in handles:
            h.remove()
    captured["logits"] = logits.asnumpy()
    return {n: captured[n] for n in tap_list if n in captured}
