"""Where weights come from, and what that means for building and evaluating a model that holds them.

A checkpoint's *record* (coat_ms.checkpoint.META_KEY) names the model, the constructor switches its
weights need (``model_args``) and the evaluation preprocessing they were validated with.  Which
record a set of weights gets depends on where they were made:

* **timm / the official code** (``pretrained=True``, ``python -m convert`` of a .pth/.safetensors):
  timm's pretrained config for the variant (input 224, crop_pct 0.9, bicubic, ImageNet mean/std),
  evaluated in timm's style (PIL resampling, rounded crop offset: coat_ms.data.transforms).
* **mindcv** (its released CoaT .ckpt files, or any CoaT saved from mindcv's model): mindcv's
  computation switches (``align_corners=True, cpe_residual=False``) and mindcv's evaluation (its
  default config, mindspore.dataset ops).  A checkpoint still in mindcv's layout is recognised by
  its names and converted in memory (coat_ms.conversion) wherever a checkpoint is read (``read_weights``).
* **train.py**: the run's own record (the recipe's preprocessing in the style of the weights it
  started from).

The converter writes the record into the .ckpt and into its ``X.ckpt.json`` sidecar; the sidecar is
read for files without one (converted by an earlier version, or MindSpore safetensors outputs).
Weights without any record are evaluated with the model's default config in mindcv's style.
"""
import json
import logging
import os

from .checkpoint import load_state, read_checkpoint_and_meta
from .conversion.mindcv_rules import is_mindcv, model_kwargs
from .data.transforms import MINDCV, TIMM, Preprocessing  # the two styles name the weights' origins too
from .errors import CheckpointError

logger = logging.getLogger("coat_ms")

CONVERTER = "coat_ms convert"   # the sidecar's "converter" value (convert/cli.py)


def timm_preprocessing(variant):
    """timm's evaluation of ``variant``'s weights: its pretrained config, timm style (a record dict)."""
    from .models.coat import default_cfgs
    cfg = default_cfgs.get(variant) or default_cfgs["coat_lite_tiny"]
    return {"image_size": list(cfg["input_size"][-2:]), "crop_pct": cfg["crop_pct"],
            "interpolation": cfg["interpolation"], "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "style": TIMM}


def mindcv_preprocessing():
    """mindcv's evaluation of its released CoaT weights (a record dict): coat_ms's defaults, which are mindcv's
    (its CoaT default_cfg and recipes: 224, crop 0.9, bicubic, ImageNet mean/std)."""
    return Preprocessing(style=MINDCV).as_dict()


def mindcv_model_args():
    """Constructor switches that make coat_ms compute what mindcv's CoaT computes."""
    return model_kwargs()


def switches_of(model):
    """The computation switches a built CoaT has ({'align_corners': ..., 'cpe_residual': ...}; a switch the
    model has no block for is left out)."""
    found = {}
    parallel = getattr(model, "parallel_blocks", None)
    if parallel is not None and len(parallel):
        found["align_corners"] = parallel[0].align_corners
    serial = getattr(model, "serial_blocks1", None)
    if serial is not None and len(serial):
        found["cpe_residual"] = serial[0].cpe_residual
    return found


def check_switches(model, meta, path):
    """An error naming the fix when ``model`` was built without the switches its weights' record needs
    (mindcv's weights in a plainly built model would compute something else, silently)."""
    needed = {k: v for k, v in ((meta or {}).get("model_args") or {}).items() if k in mindcv_model_args()}
    wrong = {k: v for k, v in needed.items() if k in switches_of(model) and switches_of(model)[k] != v}
    if wrong:
        args = ", ".join(f"{k}={v}" for k, v in needed.items())
        raise CheckpointError(f"{path} holds {origin_of(meta) or 'its'} weights, which need the model built with "
                              f"{args}; build it so, or load with create_model(name, checkpoint_path=...), "
                              f"which does")


def record(variant, origin, num_classes=1000, model_args=None):
    """The coat_ms record of ``variant``'s weights made by ``origin`` ('timm' or 'mindcv')."""
    if origin == MINDCV:
        args, pre = dict(mindcv_model_args(), **(model_args or {})), mindcv_preprocessing()
    else:
        args, pre = dict(model_args or {}), timm_preprocessing(variant)
    return {"version": 1, "model": variant, "model_args": args, "num_classes": int(num_classes),
            "preprocessing": pre, "origin": origin}


def origin_of(meta):
    """'timm', 'mindcv' or None (unknown) for a record."""
    meta = meta or {}
    return meta.get("origin") or (meta.get("preprocessing") or {}).get("style")


def _sidecar_record(path, params):
    """The record of a converter sidecar ``<path>.json`` whose variant and head fit ``params``, else {}."""
    sidecar = os.fspath(path) + ".json"
    if not os.path.isfile(sidecar):
        return {}
    try:
        with open(sidecar, encoding="utf-8") as f:
            side = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(side, dict) or side.get("converter") != CONVERTER or side.get("direction") not in (
            "torch->ms", "mindcv->ms"):
        return {}
    if isinstance(side.get("record"), dict):
        found = side["record"]
    else:  # written before the converter stored a record: rebuild it from the sidecar's fields
        found = record(side.get("variant"), MINDCV if side["direction"] == "mindcv->ms" else TIMM,
                       side.get("num_classes") or 1000, side.get("model_kwargs"))
    bias = params.get("head.bias")
    if bias is not None and int(bias.shape[0]) != int(found.get("num_classes") or 0):
        logger.warning("%s: does not describe this checkpoint (head of %d classes, not %s); ignoring it", sidecar,
                       int(bias.shape[0]), found.get("num_classes"))
        return {}
    logger.info("%s: record read from the converter's %s", path, os.path.basename(sidecar))
    return found


def from_mindcv_layout(params, path):
    """(coat_ms parameters, record) of a checkpoint in mindcv's layout, converted in memory."""
    import mindspore as ms

    from .conversion.core import mindcv_to_ms
    arrays = {name: value.asnumpy() for name, value in params.items()}
    result = mindcv_to_ms(arrays)   # strict: every name and shape checked; ConversionError is one line
    meta = record(result.variant, MINDCV, result.report.num_classes)
    switches = ", ".join(f"{k}={v}" for k, v in mindcv_model_args().items())
    logger.info("%s: mindcv CoaT checkpoint (%s, %d tensors): converted in memory to coat_ms names, model built "
                "with %s to compute as mindcv does; evaluated as mindcv evaluates", path, result.variant,
                len(arrays), switches)
    return {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in result.params.items()}, meta


def recognise(params, meta, path):
    """(parameters in coat_ms's layout, record) of a checkpoint read from ``path`` (see the module doc)."""
    if meta:
        return params, meta
    if is_mindcv(params):
        return from_mindcv_layout(params, path)
    return params, _sidecar_record(path, params)


def read_weights(path):
    """(``{name: Parameter}`` in coat_ms's layout, record) of any checkpoint a user may hand over: one
    written by train.py or the converter (its record; a converter sidecar for files without one), or
    mindcv's CoaT layout (converted in memory, with mindcv's switches and preprocessing in the record;
    said in one line)."""
    params, meta = read_checkpoint_and_meta(path)
    return recognise(params, meta, os.fspath(path))


def load_checkpoint(model, path, strict=True):
    """Read ``path`` (any layout read_weights knows) and load it into ``model``; returns the LoadReport.

    Weights whose record needs computation switches the model was built without (mindcv's) are an error."""
    params, meta = read_weights(path)
    check_switches(model, meta, os.fspath(path))
    return load_state(model, params, strict=strict, source=os.fspath(path))
