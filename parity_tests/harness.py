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
        """MindSpore taps in ``mode``; also checks the tap net's logits equal the model's own forward."""
        with ms_mode(mode):
            xt = ms.Tensor(x)
            got = taps.ms_taps(self.ms_model, xt, self.serial_depths, self.parallel_depth)
            own = self.ms_model(xt).asnumpy()
        drift = float(np.abs(own - got["logits"]).max())
        if drift > 1e-6 * max(float(np.abs(own).max()), 1.0):
            raise RuntimeError(f"MsTapNet drifted from the model's construct: logits differ by {drift:g}")
        return got

    weights_via: str = ""

    def ms_params(self):
        return {n: p.asnumpy() for n, p in self.ms_model.parameters_dict().items()}


def build_pair(name, img_size=224, seed=0, num_classes=1000):
    """timm model with seeded random weights + coat_ms model loaded from it via convert."""
    _, _, arch = arch_of(name)
    pt = build_torch(name, img_size, seed, num_classes)
    ms_model = build_ms(name, num_classes=num_classes)
    params, how = torch_to_ms_params(pt.state_dict(), name, list(ms_model.parameters_dict()))
    load_params(ms_model, params, f"{name} weights via {how}")
    return Pair(name, img_size, seed, pt, ms_model, arch, weights_via=how)
