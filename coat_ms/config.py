"""mindcv-style YAML configs: the keys train.py / validate.py accept, and a loader that rejects typos.

A config is a flat YAML mapping using mindcv's key names (``model``, ``batch_size``, ``opt``, ``lr``...).
Values in the file are defaults; command-line flags override them.
"""
import difflib
import os

import yaml

from .errors import CoatError


class ConfigError(CoatError):
    """A config file that cannot be used: missing, not YAML, not a mapping, or with unknown keys."""


# Every key a config may hold, with its default (None: not set / chosen at run time).
DEFAULTS = {
    # system
    "mode": 0,                      # 0 graph, 1 pynative (mindcv convention)
    "device_target": None,          # CPU / GPU / Ascend; None: what MindSpore was built for
    "distribute": False,
    "seed": 42,
    "deterministic": False,         # no data shuffling/augmentation randomness (for equality checks)
    "val_while_train": True,
    "val_interval": 1,
    "log_interval": 10,
    # data
    "dataset": "imagefolder",
    "data_dir": None,
    "train_split": "train",
    "val_split": "val",
    "shuffle": True,
    "dataset_download": False,
    "num_parallel_workers": 2,
    "batch_size": 32,
    "drop_remainder": True,
    "num_samples": None,
    # augmentation
    "image_resize": 224,
    "scale": [0.08, 1.0],
    "ratio": [0.75, 1.333],
    "hflip": 0.5,
    "vflip": 0.0,
    "color_jitter": None,
    "interpolation": "bicubic",
    "crop_pct": 0.9,
    "mean": [123.675, 116.28, 103.53],   # mindcv's 0..255 convention
    "std": [58.395, 57.12, 57.375],
    "auto_augment": None,
    "re_prob": 0.0,
    "re_value": 0.0,
    "re_max_attempts": 10,
    "aug_repeats": 0,
    "augment_splits": 0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "cutmix_prob": 1.0,
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "mixup_mode": "batch",
    "mixup_off_epoch": 0.0,
    # model
    "model": "coat_lite_tiny",
    "model_args": None,              # dict of CoaT constructor overrides (e.g. embed_dims for tiny configs)
    "num_classes": 1000,
    "in_channels": 3,
    "pretrained": False,
    "ckpt_path": "",
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "keep_checkpoint_max": 5,
    "ckpt_save_dir": "./ckpt",
    "ckpt_save_interval": 1,
    "ckpt_save_policy": "top_k",
    "resume": "",
    "epoch_size": 90,
    "dataset_sink_mode": False,
    "amp_level": "auto",
    "amp_cast_list": None,
    "ema": False,
    "ema_decay": 0.9999,
    "gradient_accumulation_steps": 1,
    "clip_grad": False,
    "clip_value": 5.0,
    # loss
    "loss": "ce",
    "label_smoothing": 0.0,
    "aux_factor": 0.0,
    "reduction": "mean",
    # loss scale
    "loss_scale_type": "fixed",
    "loss_scale": 1.0,
    "drop_overflow_update": False,
    "scale_factor": 2.0,
    "scale_window": 2000,
    # optimizer
    "opt": "adamw",
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.05,
    "filter_bias_and_bn": True,
    "use_nesterov": False,
    "eps": 1e-8,
    "betas": None,
    "loss_scale_in_opt": None,
    # scheduler
    "scheduler": "cosine_decay",
    "min_lr": 1e-6,
    "warmup_epochs": 0,
    "warmup_factor": 0.0,
    "decay_epochs": None,
    "decay_rate": 0.9,
    "multi_step_decay_milestones": None,
    "lr_epoch_stair": False,
    "num_cycles": 1,
    "cycle_decay": 1.0,
    "lr_scale_by_batch": False,
    # validate.py
    "output": None,
}

KNOWN_KEYS = frozenset(DEFAULTS)

# mindcv keys that coat_ms accepts so mindcv configs load, but does not act on: any other value than
# these would be silently ignored, so it is an error instead.
ACCEPTED_VALUES = {
    "dataset": ("imagefolder", "imagenet"),     # both mean an ImageFolder tree under data_dir
    "dataset_download": (False,),
    "aug_repeats": (0,),
    "augment_splits": (0,),
    "mixup_prob": (1.0,),                       # mindcv's loader fixes these three
    "mixup_switch_prob": (0.5,),
    "mixup_mode": ("batch",),
    "mixup_off_epoch": (0.0, 0),
    "dataset_sink_mode": (False,),
    "ckpt_save_policy": ("top_k",),
    "amp_cast_list": (None,),
    "loss_scale_in_opt": (None, False),
}


def suggest(key, known=KNOWN_KEYS):
    """' (did you mean x?)' for a close known key, else ''."""
    close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def check_keys(cfg, source="config", known=KNOWN_KEYS):
    """Raise ConfigError naming every unknown key (with suggestions)."""
    unknown = [k for k in cfg if k not in known]
    if unknown:
        named = ", ".join(f"'{k}'{suggest(k, known)}" for k in unknown)
        raise ConfigError(f"{source}: unknown config key{'s' if len(unknown) > 1 else ''} {named}")


def load_yaml(path, known=KNOWN_KEYS):
    """Read a flat mindcv-style YAML config into a dict; clear one-line ConfigError on any problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(cfg).__name__}")
    check_keys(cfg, path, known)
    return cfg


def merged(cfg=None, **overrides):
    """DEFAULTS <- cfg <- overrides (None in overrides means 'not given')."""
    out = dict(DEFAULTS)
    out.update(cfg or {})
    out.update({k: v for k, v in overrides.items() if v is not None})
    check_keys(out, "settings")
    check_supported(out)
    return out


def check_supported(cfg):
    """Raise ConfigError for a mindcv option set to a value coat_ms would ignore."""
    for key, allowed in ACCEPTED_VALUES.items():
        if cfg.get(key, allowed[0]) not in allowed:
            raise ConfigError(f"{key}={cfg[key]!r} is not supported by coat_ms (accepted for mindcv configs only "
                              f"as {' or '.join(repr(a) for a in allowed)}); remove it from the config")
    if cfg.get("gradient_accumulation_steps", 1) > 1 and cfg.get("mode") == 1:
        raise ConfigError("gradient_accumulation_steps > 1 needs mode: 0 (GRAPH_MODE); mindcv's GradientAccumulation "
                          "does not run in PyNative mode on MindSpore 2.10")
    if cfg.get("drop_overflow_update") and cfg.get("loss_scale_type") != "dynamic":
        raise ConfigError("drop_overflow_update=True needs loss_scale_type: dynamic (a fixed loss scale does not "
                          "detect overflow in coat_ms); remove it or switch to dynamic loss scaling")
