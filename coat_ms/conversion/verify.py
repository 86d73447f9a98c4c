"""--verify: run the source framework's model and coat_ms on one shared input and compare logits.

The reference model gets the *source* tensors (not our converted ones), so a naming or layout
mistake in the converter shows up as an error, not as two equal copies of the same mistake.
"""
import dataclasses

import numpy as np

from ..errors import ConversionError

DEFAULT_TOLERANCE = 2e-5


@dataclasses.dataclass
class VerifyResult:
    reference: str
    max_abs: float
    max_ref: float
    tolerance: float

    @property
    def rel(self):
        return self.max_abs / max(self.max_ref, 1e-30)

    @property
    def ok(self):
        return bool(np.isfinite(self.rel) and self.rel <= self.tolerance)

    def line(self):
        return (f"verify vs {self.reference}: max |diff| {self.max_abs:.3e}, max |ref| {self.max_ref:.3e}, "
                f"relative {self.rel:.3e} (tolerance {self.tolerance:.0e}) -> {'OK' if self.ok else 'FAILED'}")


def _no_init():
    """Build MindSpore models without drawing initial weights (they are all overwritten)."""
    try:
        from mindspore.nn.utils import no_init_parameters
        return no_init_parameters()
    except ImportError:
        import contextlib
        return contextlib.nullcontext()


def shared_input(in_chans=3, image_size=224, batch=1, seed=0):
    return np.random.RandomState(seed).standard_normal((batch, in_chans, image_size, image_size)).astype(np.float32)


def coat_ms_logits(params, variant, x, num_classes, in_chans, **model_kwargs):
    """Build coat_ms, load ``params`` strictly, return logits for ``x`` (eval mode)."""
    import mindspore as ms

    from ..checkpoint import load_state
    from ..registry import model_entrypoint
    with _no_init():  # every parameter is loaded below, strictly
        model = model_entrypoint(variant)(num_classes=num_classes, in_chans=in_chans, **model_kwargs)
    model.set_train(False)
    load_state(model, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()},
               source="converted parameters")
    return model(ms.Tensor(x)).asnumpy()


def timm_logits(state_dict, variant, x, num_classes, in_chans):
    """timm's model holding the source state dict (official extras filtered as timm does)."""
    try:
        import timm
        import torch
    except ImportError:
        raise ConversionError("--verify against PyTorch needs torch and timm ('pip install torch timm')") from None
    from .core import to_numpy
    model = timm.create_model(variant, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              img_size=x.shape[-1]).eval()  # timm's CoaT takes only the size it was built for
    wanted = model.state_dict()
    tensors = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            key = key[len(prefix):] if key.startswith(prefix) else key
        if key in wanted:
            tensors[key] = torch.from_numpy(np.array(to_numpy(value), dtype=np.float32))
    model.load_state_dict(tensors, strict=False)
    # A file may name each tied tensor once (safetensors.torch.save_model does): the keys it lacks
    # must then be timm's own aliases of keys it has, i.e. share their storage in timm's model.
    lacking = [k for k in wanted if k not in tensors and not any(a in tensors for a in _tied_with(wanted, k))]
    if lacking:
        raise ConversionError(f"--verify: timm's {variant} needs {len(lacking)} tensors the source lacks "
                              f"({', '.join(lacking[:5])}{', ...' if len(lacking) > 5 else ''})")
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _tied_with(state, key):
    """Other keys of a torch state dict whose tensor is the same storage as ``key``'s (timm's tied weights)."""
    ref = state[key]
    return [k for k, t in state.items() if k != key and t.data_ptr() == ref.data_ptr() and t.shape == ref.shape]


def mindcv_logits(params, variant, x, num_classes):
    """mindcv 0.3.0's own CoaT holding the mindcv checkpoint (fixed 224 input, 3 channels)."""
    import mindspore as ms
    from mindcv.models import create_model
    with _no_init():  # every parameter is loaded below (not_loaded is checked)
        model = create_model(variant, num_classes=num_classes)
    model.set_train(False)
    weights = {k: ms.Parameter(ms.Tensor(np.asarray(v)), name=k) for k, v in params.items()
               if k in model.parameters_dict()}
    not_loaded, _ = ms.load_param_into_net(model, weights, strict_load=True)
    if not_loaded:
        raise ConversionError(f"mindcv's {variant} did not take {len(not_loaded)} parameters: {not_loaded[:3]}")
    return model(ms.Tensor(x)).asnumpy()


def compare(reference_name, ref, out, tolerance=DEFAULT_TOLERANCE):
    if ref.shape != out.shape:
        raise ConversionError(f"logit shapes differ: {reference_name} {ref.shape} vs coat_ms {out.shape}")
    return VerifyResult(reference_name, float(np.max(np.abs(out.astype(np.float64) - ref))),
                        float(np.max(np.abs(ref))), tolerance)


def verify_torch(result, state_dict, tolerance=DEFAULT_TOLERANCE, image_size=224, seed=0):
    rep = result.report
    x = shared_input(rep.in_chans, image_size, seed=seed)
    ref = timm_logits(state_dict, result.variant, x, rep.num_classes, rep.in_chans)
    out = coat_ms_logits(result.params, result.variant, x, rep.num_classes, rep.in_chans, **result.model_kwargs)
    return compare(f"timm {result.variant}", ref, out, tolerance)


def verify_mindcv(result, mindcv_params, tolerance=DEFAULT_TOLERANCE, seed=0):
    rep = result.report
    x = shared_input(3, 224, seed=seed)
    ref = mindcv_logits(mindcv_params, result.variant, x, rep.num_classes)
    out = coat_ms_logits(result.params, result.variant, x, rep.num_classes, 3, **result.model_kwargs)
    return compare(f"mindcv {result.variant}", ref, out, tolerance)
