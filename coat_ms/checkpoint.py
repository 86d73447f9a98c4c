"""Loading MindSpore checkpoints into a model, never silently.

Every missing, unused or mis-shaped parameter is reported; by default any of them is an error.
Training bookkeeping saved next to the weights (optimizer moments, step counters, loss scale) is
recognised and set aside, not counted as unused.
"""
import dataclasses
import logging
import os

import mindspore as ms

from .errors import CheckpointError

logger = logging.getLogger("coat_ms")

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


def read_checkpoint(path):
    """Read a .ckpt (or MindSpore .safetensors) into {name: Parameter}; clear errors for missing or corrupt files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    # MindSpore writes its safetensors format on request (convert --format safetensors).
    fmt = "safetensors" if path.endswith(".safetensors") else "ckpt"
    try:
        params = ms.load_checkpoint(path, format=fmt)
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError with long texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated or not a MindSpore {fmt} "
                              f"({first})") from None
    if not params:
        raise CheckpointError(f"checkpoint {path} holds no parameters")
    return params


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
    subset = {name: params[name] for name in report.loaded}
    not_loaded, _ = ms.load_param_into_net(model, subset, strict_load=True)
    not_loaded = [n for n in not_loaded if n in subset]
    if not_loaded:
        raise CheckpointError(f"MindSpore did not load {len(not_loaded)} parameters of {source}: {not_loaded[:5]}")
    logger.info("%s: loaded %d parameters%s", source, len(report.loaded),
                f", set aside {len(report.training_state)} training-state entries" if report.training_state else "")
    return report


def load_checkpoint(model, path, strict=True):
    """Read ``path`` and load it into ``model``; returns the LoadReport."""
    return load_state(model, read_checkpoint(path), strict=strict, source=os.fspath(path))
