"""MindSpore checkpoints: loading into a model (never silently) and what a checkpoint says about itself.

Every missing, unused or mis-shaped parameter is reported; by default any of them is an error.
Training bookkeeping saved next to the weights (optimizer moments, step counters, loss scale, EMA)
is recognised and set aside, not counted as unused.  Float16 weights are upcast to the model's
float32 with a note.

Checkpoints written by coat_ms carry a JSON record under ``META_KEY`` (a string entry that MindSpore
stores beside the tensors): the model name and constructor options, the class names in label order
and the evaluation preprocessing (image size, crop_pct, interpolation, mean, std).  validate.py,
predict and export read it, so a model is evaluated the way it was trained.
"""
import dataclasses
import json
import logging
import os

import mindspore as ms
import numpy as np

from .errors import CheckpointError, first_line

logger = logging.getLogger("coat_ms")

META_KEY = "coat_ms_meta"
META_VERSION = 1
HEAD_PREFIX = "head."   # the classifier's parameters (head.weight, head.bias)

# Entries a training checkpoint may hold besides the network's weights.
TRAINING_STATE_PREFIXES = ("moments.", "adam_m.", "adam_v.", "accum.", "global_step", "learning_rate",
                           "scale_sense", "current_iterator_step", "last_overflow_iterator_step",
                           "epoch_num", "step_num", "ema.", "beta1_power", "beta2_power", "exp_avg")


@dataclasses.dataclass
class LoadReport:
    loaded: list
    missing: list       # in the model, not in the checkpoint
    unexpected: list    # in the checkpoint, not in the model
    mismatched: list    # (name, checkpoint shape, model shape)
    training_state: list
    upcast: list = dataclasses.field(default_factory=list)   # names stored in float16, loaded as float32

    @property
    def clean(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, limit=5):
        """One line naming the first problems of each kind."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({', '.join(self.missing[:limit])}"
                         f"{', ...' if len(self.missing) > limit else ''})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unused ({', '.join(self.unexpected[:limit])}"
                         f"{', ...' if len(self.unexpected) > limit else ''})")
        if self.mismatched:
            shown = ", ".join(f"{n}: checkpoint {tuple(a)} vs model {tuple(b)}" for n, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} with other shapes ({shown}{', ...' if len(self.mismatched) > limit else ''})")
        return "; ".join(parts)


def make_meta(model_name, num_classes, class_names=None, preprocessing=None, model_args=None, training=None):
    """The record coat_ms stores in a checkpoint (see module doc)."""
    meta = {"version": META_VERSION, "model": model_name, "model_args": dict(model_args or {}),
            "num_classes": int(num_classes)}
    if class_names is not None:
        meta["class_names"] = list(class_names)
    if preprocessing is not None:
        meta["preprocessing"] = preprocessing.as_dict() if hasattr(preprocessing, "as_dict") else dict(preprocessing)
    if training is not None:
        meta["training"] = dict(training)
    return meta


def meta_entry(meta):
    """``append_dict`` for ms.save_checkpoint."""
    return {META_KEY: json.dumps(meta)}


def _read_entries(path):
    """({name: Parameter}, the record's JSON text or None) of a .ckpt (or MindSpore .safetensors); clear
    errors for missing, truncated or foreign files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    fmt = "safetensors" if path.endswith(".safetensors") else "ckpt"
    try:
        entries = ms.load_checkpoint(path, format=fmt)
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError with long texts
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated or not a MindSpore {fmt} "
                              f"({first_line(exc)})") from None
    params = {n: v for n, v in entries.items() if not isinstance(v, str)}
    if not params:
        raise CheckpointError(f"checkpoint {path} holds no parameters")
    record = entries.get(META_KEY)
    return params, record if isinstance(record, str) else None


def check_record(meta, source):
    """A checkpoint's coat_ms record checked field by field (each is optional); CheckpointError naming
    ``source`` and the field otherwise.  Returns it with its preprocessing normalised."""
    def bad(field, expected):
        return CheckpointError(f"{source}: its coat_ms record has {field} {meta[field]!r}, expected {expected} (the "
                               f"record was edited or written by another tool)")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: its coat_ms record is not a mapping but {type(meta).__name__} {meta!r:.60} "
                              f"(the record was edited or written by another tool)")
    if "model" in meta and not isinstance(meta["model"], str):
        raise bad("model", "a model name")
    if "model_args" in meta and meta["model_args"] is not None:
        if not isinstance(meta["model_args"], dict):
            raise bad("model_args", "a mapping of model option: value")
        from .model_options import check_model_args
        check_model_args(None, meta["model_args"], where=f"{source}: record model_args")
    if "num_classes" in meta and (isinstance(meta["num_classes"], bool) or not isinstance(meta["num_classes"], int)
                                  or meta["num_classes"] < 0):
        raise bad("num_classes", "an integer >= 0")
    if "class_names" in meta and (not isinstance(meta["class_names"], list)
                                  or not all(isinstance(c, str) for c in meta["class_names"])):
        raise bad("class_names", "a list of class names")
    for field in ("preprocessing", "training"):
        if meta.get(field) is not None and not isinstance(meta[field], dict):
            raise bad(field, "a mapping")
    if meta.get("preprocessing"):
        from .data.files import DataError
        from .data.transforms import preprocessing
        try:
            preprocessing(meta["preprocessing"], where=f"{source}: record preprocessing ")
        except DataError as exc:
            raise CheckpointError(str(exc)) from None
    settings = (meta.get("training") or {}).get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise CheckpointError(f"{source}: its coat_ms record has training settings {settings!r:.60}, expected a "
                              f"mapping (the record was edited or written by another tool)")
    return meta


def read_checkpoint_and_meta(path):
    """(``{name: Parameter}``, meta dict or {}) of a .ckpt (or MindSpore .safetensors); clear errors for
    missing, truncated or foreign files and for a record whose values cannot be used."""
    params, record = _read_entries(path)
    if record is None:
        return params, {}
    try:
        meta = json.loads(record)
    except ValueError:
        raise CheckpointError(f"{path}: its coat_ms record is not valid JSON (it was edited or written by another "
                              f"tool); load the weights alone with create_model(checkpoint_path=...)") from None
    return params, check_record(meta, os.fspath(path))


def read_checkpoint(path):
    """``{name: Parameter}`` of a checkpoint (its coat_ms record left out, unread)."""
    return _read_entries(path)[0]


def compare_state(model, params):
    """Compare checkpoint entries with the model's parameters by name and shape."""
    model_params = model.parameters_dict()
    loaded, unexpected, mismatched, training_state = [], [], [], []
    for name, value in params.items():
        if name not in model_params:
            (training_state if name.startswith(TRAINING_STATE_PREFIXES) else unexpected).append(name)
        elif tuple(value.shape) != tuple(model_params[name].shape):
            mismatched.append((name, tuple(value.shape), tuple(model_params[name].shape)))
        else:
            loaded.append(name)
    missing = [name for name in model_params if name not in params]
    return LoadReport(loaded, missing, unexpected, mismatched, training_state)


def _as_model_dtype(value, param):
    """The checkpoint value in the parameter's dtype (float16 weights are upcast); None if it cannot be."""
    if value.dtype == param.dtype:
        return value
    if value.dtype in (ms.float16, ms.bfloat16, ms.float64) and param.dtype == ms.float32:
        array = value.float().asnumpy() if value.dtype == ms.bfloat16 else value.asnumpy()
        return ms.Parameter(ms.Tensor(array.astype(np.float32)), name=param.name)
    return None


def load_state(model, params, strict=True, source="checkpoint"):
    """Load {name: Parameter/Tensor} into model; strict: every name and shape must match."""
    report = compare_state(model, params)
    if strict and not report.clean:
        raise CheckpointError(f"{source} does not match the model: {report.problems()}; "
                              f"check the model name and num_classes, or load with strict=False")
    for line in ([f"missing (kept as initialised): {n}" for n in report.missing]
                 + [f"unused: {n}" for n in report.unexpected]
                 + [f"shape differs, not loaded: {n} {a} vs model {b}" for n, a, b in report.mismatched]):
        logger.warning("%s: %s", source, line)
    model_params = model.parameters_dict()
    subset = {}
    for name in report.loaded:
        value = _as_model_dtype(params[name], model_params[name])
        if value is None:
            raise CheckpointError(f"{source}: {name} is stored as {params[name].dtype}, the model needs "
                                  f"{model_params[name].dtype}")
        if value is not params[name]:
            report.upcast.append(name)
        subset[name] = value
    if report.upcast:
        logger.info("%s: %d parameters stored as %s were upcast to float32", source, len(report.upcast),
                    params[report.upcast[0]].dtype)
    not_loaded, _ = ms.load_param_into_net(model, subset, strict_load=True)
    not_loaded = [n for n in not_loaded if n in subset]
    if not_loaded:
        raise CheckpointError(f"MindSpore did not load {len(not_loaded)} parameters of {source}: {not_loaded[:5]}")
    logger.info("%s: loaded %d parameters%s", source, len(report.loaded),
                f", set aside {len(report.training_state)} training-state entries" if report.training_state else "")
    return report


def load_with_fresh_head(model, params, source="checkpoint"):
    """Load ``params`` strictly, except a classifier that does not fit the model (num_classes changed: a
    fine-tuning run, pretrained weights for another number of classes): then the checkpoint's head is left
    out, the model's stays as initialised, and a log line says so.  Every other missing, unused or
    mis-shaped parameter is an error.  Returns the LoadReport."""
    report = compare_state(model, params)
    head = [n for n in params if n.startswith(HEAD_PREFIX)]
    if not any(n in head for n in report.unexpected + [n for n, _, _ in report.mismatched]):
        return load_state(model, params, strict=True, source=source)
    backbone = {n: p for n, p in params.items() if n not in head}
    report = compare_state(model, backbone)
    model_head = [n for n in model.parameters_dict() if n.startswith(HEAD_PREFIX)]
    if report.unexpected or report.mismatched or sorted(report.missing) != sorted(model_head):
        raise CheckpointError(f"{source} does not match the model: {report.problems()}; check the model name and "
                              f"its options")
    classes = num_classes_in(params)
    if model_head:
        logger.warning("%s: backbone loaded; its head (%s classes) is not: the classifier for num_classes=%d is "
                       "freshly initialised", source, classes, model.num_classes)
    else:
        logger.info("%s: backbone loaded; no classifier (num_classes=0), its head (%s classes) is left out", source,
                    classes)
    return load_state(model, backbone, strict=False, source=source)


def ema_weights(params):
    """{name: value} of the EMA copy a training checkpoint holds (``ema.<name>``), or {} when it has none."""
    return {n[len("ema."):]: v for n, v in params.items() if n.startswith("ema.")}


def num_classes_in(params):
    """Head size stored in a checkpoint ({name: Parameter}), or None if it has no head."""
    bias = params.get(HEAD_PREFIX + "bias")
    return int(bias.shape[0]) if bias is not None else None
