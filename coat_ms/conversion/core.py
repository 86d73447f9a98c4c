"""PyTorch state dict <-> coat_ms parameters: the library side of the converter.

``torch_to_ms`` takes a timm or official CoaT state dict (torch tensors or numpy arrays), checks it
against the layout of the matching coat_ms model and returns float32 numpy arrays named as the
MindSpore parameters.  ``ms_to_torch`` goes back, re-expanding tied aliases so that timm's model
loads the result with ``strict=True``.
"""
import dataclasses

import numpy as np

from ..checkpoint import TRAINING_STATE_PREFIXES
from ..errors import ConversionError
from . import rules


@dataclasses.dataclass
class ConversionReport:
    """What the conversion did, for the summary and for tests."""
    variant: str = ""
    num_classes: int = 1000
    in_chans: int = 3
    converted: int = 0                                # MindSpore parameters written
    numel: int = 0                                    # their total size
    dropped: list = dataclasses.field(default_factory=list)     # (key, reason)
    collapsed: list = dataclasses.field(default_factory=list)   # (MindSpore name, alias keys)
    reshaped: list = dataclasses.field(default_factory=list)    # (name, from shape, to shape)
    retyped: list = dataclasses.field(default_factory=list)     # (name, from dtype)
    merged: list = dataclasses.field(default_factory=list)      # (name, source keys)
    renamed: list = dataclasses.field(default_factory=list)     # (from key, to name)
    notes: list = dataclasses.field(default_factory=list)

    def summary(self):
        """A short readable text (lines) of the report."""
        lines = [f"variant: {self.variant} (num_classes={self.num_classes}, in_chans={self.in_chans})",
                 f"parameters converted: {self.converted} ({self.numel / 1e6:.2f}M values)",
                 f"tied groups collapsed: {len(self.collapsed)} "
                 f"({sum(len(a) for _, a in self.collapsed)} duplicate keys checked equal and removed)"]
        if self.merged:
            lines.append(f"tensors merged: {len(self.merged)} (e.g. {self.merged[0][0]} <- "
                         f"{', '.join(self.merged[0][1])})")
        if self.renamed:
            lines.append(f"keys renamed: {len(self.renamed)} (e.g. {self.renamed[0][0]} -> {self.renamed[0][1]})")
        lines.append(f"shapes changed: {len(self.reshaped)}" + "".join(
            f"\n  {n}: {tuple(a)} -> {tuple(b)}" for n, a, b in self.reshaped[:10]))
        if self.retyped:
            lines.append(f"dtypes changed to float32: {len(self.retyped)} (e.g. {self.retyped[0][0]} "
                         f"was {self.retyped[0][1]})")
        lines.append(f"keys dropped: {len(self.dropped)}" + "".join(
            f"\n  {k}: {why}" for k, why in self.dropped[:20])
            + (f"\n  ... and {len(self.dropped) - 20} more" if len(self.dropped) > 20 else ""))
        lines.extend(self.notes)
        return "\n".join(lines)


@dataclasses.dataclass
class ConversionResult:
    params: dict            # MindSpore name -> float32 numpy array, exactly the model's names
    variant: str
    report: ConversionReport
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # constructor switches the weights need


# What a weight may be stored as (converted to float32); integers and booleans are not weights.
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64", "Float32", "Float16", "BFloat16", "Float64")


def to_numpy(value):
    """A torch tensor or array-like -> numpy array, without importing torch."""
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _shapes(state_dict):
    return {k: tuple(getattr(v, "shape", np.shape(v))) for k, v in state_dict.items()}


def _strip_wrappers(state_dict, report):
    """Remove a prefix such as 'module.' that wraps every key."""
    for prefix in rules.WRAPPER_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            report.notes.append(f"removed the '{prefix}' prefix from every key")
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


COAT_PREFIXES = ("patch_embed", "cls_token", "serial_blocks", "cpe", "crpe", "parallel_blocks")


def _looks_like_coat(keys):
    return sum(k.startswith(COAT_PREFIXES) for k in keys) > len(keys) // 2


def _not_coat(state_dict):
    if _looks_like_coat(list(state_dict)):
        absent = [f"patch_embed{i}.proj.weight" for i in range(1, 5) if f"patch_embed{i}.proj.weight" not in state_dict]
        return ConversionError(f"CoaT checkpoint without {', '.join(absent)}: the file is incomplete, and the "
                               f"variant cannot be inferred (pass --model to list every missing key)")
    sample = ", ".join(list(state_dict)[:4]) or "no keys at all"
    return ConversionError(f"this is not a CoaT checkpoint (no patch_embed1-4.proj.weight; keys look like: "
                           f"{sample}); is it a checkpoint of another architecture?")


def infer_variant(state_dict):
    """Name of the CoaT variant whose architecture the state dict's shapes and depths describe."""
    shapes = _shapes(state_dict)
    for prefix in rules.WRAPPER_PREFIXES:
        if shapes and all(k.startswith(prefix) for k in shapes):
            shapes = {k[len(prefix):]: s for k, s in shapes.items()}
    arch = rules.architecture_of(shapes)
    if arch is None:
        raise _not_coat(state_dict)
    variant = rules.match_variant(arch)
    if variant is None:
        raise ConversionError(
            f"CoaT checkpoint of an unregistered architecture (embed_dims={list(arch['embed_dims'])}, "
            f"serial_depths={list(arch['serial_depths'])}, parallel_depth={arch['parallel_depth']}, "
            f"mlp_ratios={list(arch['mlp_ratios'])}); known variants: {', '.join(rules.coat_model.VARIANTS)}")
    return variant


def _first(items, limit=5):
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _check_variant(state_dict, model_name, shapes):
    """Raise a clear error when the checkpoint is a CoaT of another variant than ``model_name``."""
    arch = rules.architecture_of(shapes)
    if arch is None:
        if _looks_like_coat(list(shapes)):
            return  # an incomplete CoaT file: the key check names what is missing
        raise _not_coat(state_dict)
    found = rules.match_variant(arch)
    if found == model_name:
        return
    expected = rules.layout(model_name, *rules.head_config(shapes))
    diffs = [f"{k} {shapes[k]} vs model {expected.shapes[expected.canonical(k)]}"
             for k in shapes if expected.canonical(k) and shapes[k] != expected.shapes[expected.canonical(k)]]
    missing = [k for k in expected.names if k not in shapes]
    what = f"a {found} checkpoint" if found else "a CoaT checkpoint of another architecture"
    detail = f"first mismatched shapes: {_first(diffs, 3)}" if diffs else f"missing keys: {_first(missing, 3)}"
    raise ConversionError(f"--model {model_name} does not match: this is {what} ({detail})")


def torch_to_ms(state_dict, model_name=None, progress=None):
    """Convert a timm/official CoaT state dict to coat_ms parameters (strict; see ConversionResult).

    ``model_name``: expected variant (checked); None infers it from shapes and depths.
    ``progress``: optional callable(n) called as tensors are processed (for a progress bar).
    """
    report = ConversionReport()
    state_dict = _strip_wrappers(dict(state_dict), report)
    shapes = _shapes(state_dict)
    if model_name is None:
        model_name = infer_variant(state_dict)
    else:
        _check_variant(state_dict, model_name, shapes)
    num_classes, in_chans = rules.head_config(shapes)
    lay = rules.layout(model_name, num_classes, in_chans)
    report.variant, report.num_classes, report.in_chans = model_name, num_classes, in_chans

    unknown = []
    for key in state_dict:
        if lay.canonical(key) is None:
            if rules.FINAL_NORM.match(key):
                report.dropped.append((key, "unused final norm of the official model"))
            else:
                unknown.append(key)
    missing = [n for n in lay.names if n not in state_dict and not any(a in state_dict for a in lay.aliases[n])]
    if unknown or missing:
        parts = ([f"{len(unknown)} unknown keys ({_first(unknown)})"] if unknown else []) + \
                ([f"{len(missing)} missing keys ({_first(missing)})"] if missing else [])
        raise ConversionError(f"checkpoint keys do not match {model_name}: {'; '.join(parts)}")

    params = {}
    for name in lay.names:
        present = [k for k in (name,) + lay.aliases[name] if k in state_dict]
        source = state_dict[present[0]]
        value = to_numpy(source)
        for alias in present[1:]:
            other = to_numpy(state_dict[alias])
            if other.shape != value.shape or not np.array_equal(other, value, equal_nan=True):
                diff = (float(np.max(np.abs(other.astype(np.float64) - value))) if other.shape == value.shape
                        else f"shapes {other.shape} vs {value.shape}")
                raise ConversionError(f"tied weights differ: {alias} should equal {present[0]} "
                                      f"(max |diff| {diff}); the checkpoint is corrupt or was edited")
        if len(present) > 1:
            report.collapsed.append((name, tuple(present[1:])))
        if value.shape != lay.shapes[name]:
            raise ConversionError(f"{present[0]} has shape {value.shape}, {model_name} expects {lay.shapes[name]}")
        source_dtype = str(getattr(source, "dtype", value.dtype)).replace("torch.", "")
        if source_dtype not in FLOAT_DTYPES:
            raise ConversionError(f"{present[0]} is stored as {source_dtype}, not as floating-point weights: "
                                  f"converting it would turn its codes into weight values; convert the float "
                                  f"checkpoint the model was trained as (a quantised or edited file cannot be used)")
        if source_dtype != "float32":
            report.retyped.append((name, source_dtype))
        params[name] = np.ascontiguousarray(value, dtype=np.float32)
        report.numel += value.size
        if progress:
            progress(len(present))
    report.converted = len(params)
    return ConversionResult(params, model_name, report)


def ms_to_torch(params, model_name, num_classes=None, in_chans=None):
    """coat_ms parameters ({name: array / Tensor / Parameter}) -> a timm state dict of numpy arrays.

    Tied parameters are written under every key PyTorch lists them, so timm loads it strictly.
    """
    arrays = {}
    for name, value in params.items():
        if name.startswith(TRAINING_STATE_PREFIXES):  # optimizer moments, step counters: not weights
            continue
        arrays[name] = value.asnumpy() if hasattr(value, "asnumpy") else to_numpy(value)
    shapes = _shapes(arrays)
    head_classes, head_chans = rules.head_config(shapes)
    lay = rules.layout(model_name, head_classes if num_classes is None else num_classes,
                       head_chans if in_chans is None else in_chans)
    missing = [n for n in lay.names if n not in arrays]
    unknown = [n for n in arrays if n not in lay.shapes]
    wrong = [f"{n} {arrays[n].shape} vs {lay.shapes[n]}" for n in lay.names
             if n in arrays and tuple(arrays[n].shape) != lay.shapes[n]]
    if missing or unknown or wrong:
        parts = ([f"{len(missing)} missing ({_first(missing)})"] if missing else []) + \
                ([f"{len(unknown)} unknown ({_first(unknown)})"] if unknown else []) + \
                ([f"{len(wrong)} with other shapes ({_first(wrong, 3)})"] if wrong else [])
        raise ConversionError(f"parameters do not match {model_name}: {'; '.join(parts)}")
    return {key: arrays[lay.canonical(key)] for key in lay.torch_keys}


def mindcv_to_ms(params, model_name=None, progress=None):
    """Convert a mindcv 0.3.0 CoaT checkpoint ({name: array}) to coat_ms parameters.

    The result reproduces mindcv's outputs with ``create_model(variant, align_corners=True, cpe_residual=False)``.
    """
    from .mindcv_rules import mindcv_to_torch, model_kwargs
    pre = ConversionReport()
    arrays = {k: (v.asnumpy() if hasattr(v, "asnumpy") else to_numpy(v)) for k, v in params.items()}
    torch_named = mindcv_to_torch(arrays, pre)
    result = torch_to_ms(torch_named, model_name, progress=progress)
    rep = result.report
    rep.dropped[:0] = pre.dropped
    rep.renamed, rep.merged, rep.reshaped = pre.renamed, pre.merged, pre.reshaped + rep.reshaped
    kwargs = model_kwargs()
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    rep.notes.append(f"mindcv checkpoint: build the model as create_model('{result.variant}', {args})")
    result.model_kwargs = kwargs
    return result
