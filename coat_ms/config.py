"""mindcv-style configs: every key train.py and validate.py accept, typed and checked before any work.

A config is a flat YAML mapping with mindcv's key names (``model``, ``batch_size``, ``opt``, ``lr``...);
values in the file are defaults and command-line flags override them.  Every value is typed by its key,
the same way for files and flags:

* a number in any YAML or command-line spelling is a number (``5e-06``, ``1e-6``, ``.5``, ``1_000``,
  ``"1e-3"``): PyYAML reads ``5e-06`` (no dot) as a *string*, which is how mindcv's own recipes crashed;
* ints where MindSpore wants ints (sizes, workers, ``re_value``), lists where it wants lists;
* a value of the wrong kind or out of range is one line naming the key, the value, where it came from
  (the file or the flag) and what is expected.

Keys mindcv knows but coat_ms does not act on are accepted only at the value that means "off", so a
mindcv config never has a setting silently ignored.
"""
import dataclasses
import difflib
import json
import math
import os

import yaml

from .amp import AMP_LEVELS
from .amp import parse_cast_list as as_cast_list
from .errors import CoatError, first_line


class ConfigError(CoatError):
    """A config that cannot be used: missing, not YAML, unknown keys, or values of the wrong kind or range."""


# ----------------------------------------------------------------------------------------------
# Value kinds: each turns a YAML value or a command-line string into the typed value, or raises
# ValueError with what was expected.
# ----------------------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NONE = ("none", "null", "~", "")


def _is_none(value):
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def as_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false")


def as_float(value):
    """A finite number: YAML's .inf / .nan are refused as the flags' 'inf' / 'nan' are."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("a number")
    try:
        out = float(value.strip() if isinstance(value, str) else value)  # accepts 5e-06, .5, 1_000
    except (ValueError, OverflowError):
        raise ValueError("a number") from None
    if not math.isfinite(out):
        raise ValueError("a number, not inf or nan")
    return out


def as_int(value):
    if isinstance(value, bool):
        raise ValueError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError("an integer") from None
        if number.is_integer():
            return int(number)
    raise ValueError("an integer")


def as_str(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("a text value")


def as_path(value):
    """A file path; empty (or null) means none, as in mindcv's ``ckpt_path: ''``."""
    return "" if value is None else as_str(value)


def optional(kind):
    def convert(value):
        return None if _is_none(value) else kind(value)
    convert.inner = kind
    return convert


def choice(*options, case=str.lower):
    """One of ``options`` (compared case-insensitively, returned in the spelling of ``options``)."""
    table = {case(o): o for o in options}

    def convert(value):
        text = as_str(value).strip()
        if case(text) not in table:
            raise ValueError("one of " + ", ".join(str(o) for o in options))
        return table[case(text)]
    return convert


def number_list(kind=as_float, lengths=(2,)):
    def convert(value):
        if isinstance(value, str):
            value = value.replace(",", " ").strip("[]() ").split()
        if not isinstance(value, (list, tuple)) or (lengths and len(value) not in lengths):
            raise ValueError(f"a list of {' or '.join(str(n) for n in lengths)} numbers" if lengths else "a list of numbers")
        return [kind(v) for v in value]
    return convert


def as_mapping(value):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"a JSON mapping (not valid JSON: {exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError("a mapping of option: value")
    return value


def as_interpolation(value):
    """One of INTERPOLATIONS (any case); the names MindSpore has but the pipelines cannot run say why."""
    text = as_str(value).strip().lower()
    if text in REFUSED_INTERPOLATIONS:
        raise ValueError(f"one of {', '.join(INTERPOLATIONS)}; not {text}: {REFUSED_INTERPOLATIONS[text]}")
    return choice(*INTERPOLATIONS)(text)


def as_re_value(value):
    """MindSpore's RandomErasing value: an int 0..255, three ints, or 'random' (a float is refused there)."""
    if isinstance(value, str) and value.strip().lower() == "random":
        return "random"
    if isinstance(value, (list, tuple)) or (isinstance(value, str) and len(value.replace(",", " ").split()) == 3):
        values = number_list(as_int, (3,))(value)
    else:
        values = [as_int(value)]
    if not all(0 <= v <= 255 for v in values):
        raise ValueError("a pixel value 0..255, three of them, or 'random'")
    return values[0] if len(values) == 1 else values


def as_color_jitter(value):
    if isinstance(value, (list, tuple)) or (isinstance(value, str) and len(value.replace(",", " ").split()) > 1):
        return number_list(as_float, (3, 4))(value)
    return as_float(value)


# ----------------------------------------------------------------------------------------------
# The keys: mindcv's train/validate parser keys (same names, kinds and meaning) plus coat_ms's own.
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Key:
    default: object
    kind: object
    help: str = ""
    off_only: tuple = ()    # accepted for mindcv configs, but only at these values (coat_ms does not act on it)
    nargs: str = None       # command-line arity for list values
    resume: bool = False    # a resumed run must share it with its checkpoint (it shapes the optimizer state,
                            # the lr schedule or the model)


# Resize kernels the pipelines can run on decoded (array) images.  MindSpore's Inter.ANTIALIAS works on
# PIL images only (it fails inside the pipeline), so it is refused here with the equivalent to use.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "linear", "cubic", "pilcubic")
REFUSED_INTERPOLATIONS = {"antialias": "it works on PIL images only and coat_ms's pipelines resize arrays; "
                                       "pilcubic resizes as PIL's (antialiased) bicubic does"}
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "nadam", "adan", "rmsprop", "adagrad", "lamb")
SCHEDULERS = ("constant", "cosine_decay", "warmup_cosine_decay", "exponential_decay", "polynomial_decay",
              "step_decay", "multi_step_decay", "one_cycle", "cyclic")

KEYS = {
    # system
    "mode": Key(0, choice(0, 1, case=lambda v: str(v).strip()), "0: GRAPH_MODE, 1: PYNATIVE_MODE"),
    "device_target": Key(None, optional(choice("CPU", "GPU", "Ascend")),
                         "CPU, GPU or Ascend (default: the backend this MindSpore was built for)"),
    "distribute": Key(False, as_bool, "data parallel over the ranks started by mpirun / msrun"),
    "seed": Key(42, as_int, "seed of weights, shuffling and augmentation (the same on every rank)"),
    "deterministic": Key(False, as_bool, "no shuffling or random augmentation (for equality checks)"),
    "val_while_train": Key(True, as_bool, "validate on the val split (on every rank, sharded) after epochs"),
    "val_interval": Key(1, as_int, "validate every N epochs (and after the last)"),
    "log_interval": Key(100, as_int, "log loss, lr, images/s and ETA every N steps (the only host reads of the loss)"),
    # data
    "dataset": Key("imagenet", choice("imagenet", "imagefolder"), "both mean an ImageFolder tree under data_dir"),
    "data_dir": Key(None, optional(as_str), "ImageFolder root holding <train_split>/ and <val_split>/ class folders"),
    "train_split": Key("train", as_str),
    "val_split": Key("val", as_str),
    "dataset_download": Key(False, as_bool, off_only=(False,)),
    "num_parallel_workers": Key(8, as_int, "data workers per rank (clamped to the CPU count)"),
    "python_multiprocessing": Key(False, as_bool, "data workers as processes, not threads (many-core hosts: "
                                                  "they scale past Python's interpreter lock)"),
    "shuffle": Key(True, as_bool),
    "num_samples": Key(None, optional(as_int), "use only N training samples per epoch"),
    "batch_size": Key(32, as_int, "images per rank per step", resume=True),
    "drop_remainder": Key(True, as_bool),
    # augmentation
    "image_resize": Key(224, as_int, "training crop / eval image size (a multiple of 32)"),
    "scale": Key([0.08, 1.0], number_list(), "RandomResizedCrop area range", nargs=2),
    "ratio": Key([0.75, 1.333], number_list(), "RandomResizedCrop aspect-ratio range", nargs=2),
    "hflip": Key(0.5, as_float),
    "vflip": Key(0.0, as_float),
    "color_jitter": Key(None, optional(as_color_jitter), "used when auto_augment is not set", nargs="+"),
    "interpolation": Key("bicubic", as_interpolation),
    "auto_augment": Key(None, optional(as_str), "e.g. randaug-m7-mstd0.5-inc1 (mindcv's policies)"),
    "aug_splits": Key(0, as_int, off_only=(0,)),
    "augment_splits": Key(0, as_int, off_only=(0,)),
    "re_prob": Key(0.0, as_float, "random erasing probability"),
    "re_scale": Key([0.02, 0.33], number_list(), nargs=2),
    "re_ratio": Key([0.3, 3.3], number_list(), nargs=2),
    "re_value": Key(0, as_re_value, "erased pixel value: 0..255, three values, or random", nargs="+"),
    "re_max_attempts": Key(10, as_int),
    "mean": Key([123.675, 116.28, 103.53], number_list(lengths=(3,)), "0..255 scale, as mindcv", nargs=3),
    "std": Key([58.395, 57.12, 57.375], number_list(lengths=(3,)), nargs=3),
    "crop_pct": Key(0.9, as_float, "eval: resize to image_resize / crop_pct, centre crop"),
    "preprocess_style": Key(None, optional(choice("timm", "mindcv")),
                            "whose resize and centre crop: timm (PIL, antialiased; rounded crop offset) or mindcv "
                            "(mindspore.dataset ops); default: as the weights were made (timm's and official "
                            "weights: timm, mindcv's and from-scratch runs: mindcv)"),
    "mixup": Key(0.0, as_float),
    "cutmix": Key(0.0, as_float),
    "cutmix_prob": Key(1.0, as_float),
    "aug_repeats": Key(0, as_int, off_only=(0, 1)),
    "mixup_prob": Key(1.0, as_float, off_only=(1.0,)),
    "mixup_switch_prob": Key(0.5, as_float, off_only=(0.5,)),
    "mixup_mode": Key("batch", as_str, off_only=("batch",)),
    "mixup_off_epoch": Key(0, as_float, off_only=(0.0,)),
    # model
    "model": Key("coat_lite_tiny", as_str, "model name (coat_lite_tiny, coat_tiny, ...; see coat_ms.list_models())",
                 resume=True),
    "model_args": Key(None, optional(as_mapping), "CoaT constructor overrides, e.g. '{\"embed_dims\": [32,32,32,32]}'",
                      resume=True),
    "num_classes": Key(None, optional(as_int), "classifier size (default: the number of class folders)", resume=True),
    "in_channels": Key(3, as_int),
    "drop_rate": Key(0.0, optional(as_float)),
    "drop_path_rate": Key(0.0, optional(as_float)),
    "pretrained": Key(False, as_bool, "start from timm's ImageNet weights (ckpt_path wins when given)"),
    "ckpt_path": Key("", as_path, "start from these weights (fine-tuning; a head of another size is re-initialised)"),
    "resume_opt": Key(False, as_bool, "mindcv's resume: with ckpt_path, continue that training checkpoint (same as --resume)"),
    "resume": Key("", as_path, "continue a training checkpoint exactly (weights, optimizer, lr position, epoch)"),
    "keep_checkpoint_max": Key(10, as_int),
    "ckpt_save_dir": Key("./ckpt", as_str, "output folder: latest.ckpt, kept checkpoints, results.csv, results.png"),
    "output_dir": Key(None, optional(as_str), "alias of ckpt_save_dir"),
    "ckpt_save_interval": Key(1, as_int),
    "ckpt_save_policy": Key("top_k", choice("top_k", "latest_k"), "keep the best K by val Top-1, or the latest K"),
    "epoch_size": Key(90, as_int, "number of epochs", resume=True),
    "dataset_sink_mode": Key(False, as_bool, "feed data through MindSpore's sink path (mindcv's Ascend/GPU default)"),
    "ema": Key(False, as_bool, "keep EMA weights (validated and saved); validate.py evaluates them when present",
               resume=True),
    "ema_decay": Key(0.9999, as_float, resume=True),
    "clip_grad": Key(False, as_bool, "clip gradients to global norm clip_value"),
    "clip_value": Key(15.0, as_float),
    "layer_decay": Key(None, optional(as_float), off_only=(None,)),
    "gradient_accumulation_steps": Key(1, as_int, "optimizer update every N steps", resume=True),
    # optimizer
    "opt": Key("adamw", choice(*OPTIMIZERS), resume=True),
    "momentum": Key(0.9, as_float, resume=True),
    "weight_decay": Key(0.05, as_float, resume=True),
    "weight_decay_filter": Key("disable", choice("disable", "auto", "norm_and_bias"),
                               "parameters without weight decay (mindcv's key and default)", resume=True),
    "filter_bias_and_bn": Key(None, optional(as_bool), "older mindcv key: True means weight_decay_filter norm_and_bias"),
    "use_nesterov": Key(False, as_bool, resume=True),
    "eps": Key(1e-10, as_float, "optimizer epsilon: RMSProp (mindcv passes it there), and Adam/AdamW/NAdam/Adan/Lamb "
                                "when given (otherwise they keep their own, 1e-8 / 1e-6)", resume=True),
    "betas": Key(None, optional(number_list()), nargs=2, resume=True),
    "loss_scale_in_opt": Key(None, optional(as_bool), off_only=(None, False)),
    # scheduler
    "scheduler": Key("cosine_decay", choice(*SCHEDULERS), resume=True),
    "lr": Key(0.001, as_float, resume=True),
    "min_lr": Key(1e-6, as_float, resume=True),
    "warmup_epochs": Key(0, as_int, resume=True),
    "warmup_factor": Key(0.0, as_float, resume=True),
    "decay_epochs": Key(None, optional(as_int), "default: epoch_size - warmup_epochs", resume=True),
    "decay_rate": Key(0.9, as_float, resume=True),
    "multi_step_decay_milestones": Key(None, optional(number_list(as_int, ())), nargs="+", resume=True),
    "lr_epoch_stair": Key(False, as_bool, resume=True),
    "num_cycles": Key(1, as_int, resume=True),
    "cycle_decay": Key(1.0, as_float, resume=True),
    "lr_scale_by_batch": Key(False, as_bool, "scale lr by global batch / 512", resume=True),
    # loss
    "loss": Key("CE", choice("CE", "BCE")),
    "label_smoothing": Key(0.0, as_float),
    "aux_factor": Key(0.0, as_float, off_only=(0.0,)),
    "reduction": Key("mean", as_str, off_only=("mean",)),
    # mixed precision and loss scale
    "amp_level": Key("O0", choice(*AMP_LEVELS, case=str.upper),
                     "O0/O1/O2/O3/auto; on CPU a config's level runs as O0 unless given as a flag or amp_on_cpu"),
    "val_amp_level": Key("O0", choice(*AMP_LEVELS, case=str.upper), "precision of validation (O0: float32, as mindcv)"),
    "amp_on_cpu": Key(False, as_bool, "run amp_level on CPU as the device would (MindSpore's float16 operators; "
                                      "slower than O0 there)"),
    "amp_cast_list": Key(None, optional(as_cast_list), "mindcv's cell list replacing the O1 white / O2 black list, "
                                                       "e.g. '[nn.Dense]'"),
    "loss_scale_type": Key("fixed", choice("fixed", "dynamic", "auto"), resume=True),
    "loss_scale": Key(1.0, as_float),
    "drop_overflow_update": Key(False, as_bool),
    "scale_factor": Key(2.0, as_float),
    "scale_window": Key(2000, as_int),
    "eval_shuffle": Key(False, as_bool, off_only=(False,)),
    # validate.py
    "output": Key(None, optional(as_str), off_only=(None,)),
}

DEFAULTS = {name: key.default for name, key in KEYS.items()}
RESUME_KEYS = tuple(name for name, key in KEYS.items() if key.resume)
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1
KNOWN_KEYS = frozenset(KEYS)


class Source(str):
    """Where a setting's value came from.  The text names it in messages (``--lr``, ``configs/x.yaml``,
    ``run/latest.ckpt record``, ``settings``, ``default``); ``kind`` says how it was given, and ranks it:
    a default < a config file or a checkpoint's record < a flag < the calling code's overrides."""

    DEFAULT, FILE, RECORD, FLAG, CALLER = "default", "file", "record", "flag", "caller"
    _RANKS = {DEFAULT: 0, FILE: 1, RECORD: 1, FLAG: 2, CALLER: 3}

    def __new__(cls, text, kind):
        if kind not in cls._RANKS:
            raise ValueError(f"unknown source kind {kind!r}")
        source = super().__new__(cls, text)
        source.kind = kind
        return source

    def __getnewargs__(self):  # pickle and copy rebuild it with its kind
        return str(self), self.kind

    @classmethod
    def flag(cls, key):
        return cls(f"--{key}", cls.FLAG)

    @classmethod
    def record(cls, path):
        """A value taken from the training settings recorded in checkpoint ``path``."""
        return cls(f"{path} record", cls.RECORD)

    @property
    def rank(self):
        return self._RANKS[self.kind]


DEFAULT_SOURCE = Source("default", Source.DEFAULT)
CALLER_SOURCE = Source("settings", Source.CALLER)


class Settings(dict):
    """The merged config: a dict of typed values that also knows where each value came from (a Source)."""

    def __init__(self, values=(), sources=None):
        super().__init__(values)
        self.sources = dict(sources or {})

    def source(self, key):
        return self.sources.get(key, DEFAULT_SOURCE)

    def set(self, key, value, source):
        """Set ``key`` to ``value`` (already typed), given by ``source``."""
        self[key] = value
        self.sources[key] = source

    def given(self, key):
        """The value of ``key`` when something set it (a file, a record, a flag, the caller), else None."""
        return None if self.source(key).kind == Source.DEFAULT else self[key]

    def from_flag(self, key):
        """True when the command line gave ``key``."""
        return self.source(key).kind == Source.FLAG

    def fail(self, key, problem):
        raise ConfigError(f"{where(key, self.source(key))}: {problem}")

    def chosen_for_this_run(self, key):
        """True when a flag (or the calling code) gave ``key``: it overrides files and records."""
        return self.source(key).rank >= Source.flag(key).rank

    def config_files(self):
        """The config files the values came from (inputs a run must never write over)."""
        return sorted({src for src in self.sources.values() if src.kind == Source.FILE and os.path.isfile(src)})

    def named(self, key):
        """How an error names ``key``: the flag that gave it, or 'file: key'."""
        source = self.source(key)
        return source if source.kind == Source.FLAG else where(key, source)


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


def where(key, source):
    """'file.yaml: key' or '--key' (a flag names its key itself)."""
    return source if source == f"--{key}" else f"{source}: {key}"


def typed(key, value, source):
    """``value`` converted to ``key``'s kind, or a one-line ConfigError naming key, value and source."""
    try:
        return KEYS[key].kind(value)
    except ValueError as exc:
        raise ConfigError(f"{where(key, source)}: {value!r} is not valid (expected {exc})") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error (PyYAML keeps the last
    one silently, so the first line a user reads would not be the value used)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path, known=KNOWN_KEYS):
    """Read a flat mindcv-style YAML config into a dict of raw values; one-line ConfigError on any problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(cfg).__name__}")
    check_keys(cfg, path, known)
    return cfg


def merged(cfg=None, source="config", flags=None, **overrides):
    """DEFAULTS <- ``cfg`` (from ``source``) <- ``flags`` (source: the flag) <- ``overrides``; typed and checked.

    None values in ``flags`` and ``overrides`` mean "not given".
    """
    values, sources = dict(DEFAULTS), {}
    file_source = Source(source, Source.FILE)
    layers = [(cfg or {}, source, lambda k: file_source, False),
              (flags or {}, "command line", Source.flag, True),
              (overrides, "settings", lambda k: CALLER_SOURCE, True)]
    for layer, name, source_of, skip_none in layers:
        check_keys(layer, name)
        for key, value in layer.items():
            if value is None and skip_none:
                continue
            values[key] = typed(key, value, source_of(key))
            sources[key] = source_of(key)
    settings = Settings(values, sources)
    _apply_aliases(settings)
    check_values(settings)
    return settings


def _spelling(s, key, value, alias, alias_source, same=lambda a, b: a == b):
    """``alias`` (another spelling of ``key``, meaning ``value``) against ``key`` itself: a flag overrides the
    file whichever spelling each uses; two spellings given at the same level must agree."""
    if key in s.sources:
        mine, theirs = s.source(key).rank, alias_source.rank
        if mine > theirs:
            return
        if mine == theirs and not same(s[key], value):
            raise ConfigError(f"{where(alias, alias_source)} {s[alias]!r} and {where(key, s.source(key))} "
                              f"{s[key]!r} contradict each other (they are two spellings of {key}): give one of "
                              f"them")
    s.set(key, value, alias_source)


def _apply_aliases(s):
    """Keys that are spellings of other keys (mindcv's older names, the seed docs' --output_dir)."""
    if s["output_dir"]:
        _spelling(s, "ckpt_save_dir", s["output_dir"], "output_dir", s.source("output_dir"),
                  same=lambda a, b: os.path.abspath(a) == os.path.abspath(b))
    if s["filter_bias_and_bn"] is not None:
        _spelling(s, "weight_decay_filter", "norm_and_bias" if s["filter_bias_and_bn"] else "disable",
                  "filter_bias_and_bn", s.source("filter_bias_and_bn"))
    if s["resume_opt"] and s["ckpt_path"]:  # mindcv resumes through ckpt_path + resume_opt
        before = s.get("resume"), s.source("resume")
        _spelling(s, "resume", s["ckpt_path"], "ckpt_path", s.source("ckpt_path"))
        if (s["resume"], s.source("resume")) != before:
            s["ckpt_path"] = ""


def _require(s, key, ok, expected):
    if not ok:
        s.fail(key, f"{s[key]!r} is out of range (expected {expected})")


def check_values(s):
    """Ranges and combinations, checked before any data is read or any graph is compiled."""
    for key, spec in KEYS.items():
        if spec.off_only and s[key] not in spec.off_only:
            s.fail(key, f"{s[key]!r} is not supported by coat_ms (accepted for mindcv configs only as "
                   f"{' or '.join(repr(a) for a in spec.off_only)}); remove it from the config")
    positive_ints = ("batch_size", "epoch_size", "num_parallel_workers", "val_interval", "log_interval",
                     "keep_checkpoint_max", "ckpt_save_interval", "gradient_accumulation_steps", "re_max_attempts",
                     "num_cycles", "scale_window", "in_channels")
    for key in positive_ints:
        _require(s, key, s[key] >= 1, "an integer >= 1")
    for key, spec in KEYS.items():  # what MindSpore takes as int32 (batch and dataset sizes, workers, ...)
        if key != "seed" and getattr(spec.kind, "inner", spec.kind) is as_int and s[key] is not None:
            _require(s, key, s[key] <= INT32_MAX, f"an integer <= {INT32_MAX}")
    _require(s, "seed", 0 <= s["seed"] <= SEED_MAX, f"an integer 0 .. {SEED_MAX}, MindSpore's seed range")
    for key in ("num_samples", "num_classes"):
        _require(s, key, s[key] is None or s[key] >= 1, "an integer >= 1, or none")
    _require(s, "image_resize", s["image_resize"] >= 32 and s["image_resize"] % 32 == 0,
             "a multiple of 32: CoaT's patch grid divides the image by 32")
    for key in ("hflip", "vflip", "re_prob", "cutmix_prob"):
        _require(s, key, 0.0 <= s[key] <= 1.0, "a probability in [0, 1]")
    for key in ("mixup", "cutmix", "weight_decay", "momentum", "min_lr", "warmup_epochs", "warmup_factor",
                "decay_rate", "clip_value"):
        _require(s, key, s[key] >= 0, "a number >= 0")
    for key in ("lr", "eps", "loss_scale"):
        _require(s, key, s[key] > 0, "a number > 0 (a negative learning rate would climb the loss)")
    for key in ("drop_rate", "drop_path_rate"):
        _require(s, key, s[key] is None or 0.0 <= s[key] < 1.0, "a rate in [0, 1)")
    _require(s, "label_smoothing", 0.0 <= s["label_smoothing"] < 1.0, "a number in [0, 1)")
    _require(s, "crop_pct", 0.0 < s["crop_pct"] <= 1.0, "a fraction in (0, 1]")
    _require(s, "ema_decay", 0.0 < s["ema_decay"] < 1.0, "a number in (0, 1)")
    _require(s, "scale_factor", s["scale_factor"] > 1.0, "a number > 1")
    low, high = s["scale"]
    _require(s, "scale", 0.0 < low <= high <= 1.0, "two area fractions 0 < min <= max <= 1")
    low, high = s["ratio"]
    _require(s, "ratio", 0.0 < low <= high, "two aspect ratios 0 < min <= max")
    low, high = s["re_scale"]
    _require(s, "re_scale", 0.0 < low <= high < 1.0, "two area fractions 0 < min <= max < 1")
    _require(s, "std", all(v > 0 for v in s["std"]), "three numbers > 0")
    low, high = s["re_ratio"]
    _require(s, "re_ratio", 0.0 < low <= high, "two aspect ratios 0 < min <= max")
    if s["betas"] is not None:
        _require(s, "betas", all(0.0 <= b < 1.0 for b in s["betas"]), "two numbers in [0, 1)")
    if s["cycle_decay"] <= 0:
        s.fail("cycle_decay", f"{s['cycle_decay']!r} is out of range (expected a number > 0)")
    if s["decay_epochs"] is not None:
        _require(s, "decay_epochs", s["decay_epochs"] >= 1, "an integer >= 1")
    if s["color_jitter"] is not None:
        values = s["color_jitter"] if isinstance(s["color_jitter"], list) else [s["color_jitter"]]
        _require(s, "color_jitter", all(v >= 0 for v in values), "numbers >= 0")
    aa = s["auto_augment"]
    if aa and not aa.startswith(("randaug", "autoaug", "3a", "trivialaugwide", "augmix")):
        s.fail("auto_augment", f"{aa!r} is not a policy mindcv knows (randaug-..., autoaug-..., 3a-..., "
               "trivialaugwide, augmix-...)")
    if (s["mixup"] > 0 or s["cutmix"] > 0) and s["batch_size"] % 2:
        s.fail("batch_size", f"{s['batch_size']} must be even with mixup/cutmix (images are mixed in pairs)")
    if s["gradient_accumulation_steps"] > 1 and s["mode"] == 1:
        s.fail("gradient_accumulation_steps", "> 1 needs mode: 0 (GRAPH_MODE); mindcv's GradientAccumulation "
               "does not run in PyNative mode on MindSpore 2.10")
    if s["drop_overflow_update"] and s["loss_scale_type"] != "dynamic":
        s.fail("drop_overflow_update", "True needs loss_scale_type: dynamic (a fixed loss scale does not detect "
               "overflow); remove it or switch to dynamic loss scaling")


# ----------------------------------------------------------------------------------------------
# Command-line flags: one per key, parsed as text and typed by the same rules as the file.
# ----------------------------------------------------------------------------------------------

def add_config_flags(parser, keys=None, title="config keys (each overrides the YAML value)"):
    """``-c/--config`` and ``--<key>`` for every key (or ``keys``); values stay text until ``settings_from``."""
    parser.add_argument("-c", "--config", default=None, help="mindcv-style YAML config (its values are defaults)")
    group = parser.add_argument_group(title)
    for name in keys or sorted(KEYS):
        spec = KEYS[name]
        kwargs = dict(default=None, metavar=name.upper() if spec.nargs is None else "V",
                      help=f"{spec.help + ' ' if spec.help else ''}(default: {spec.default})")
        if getattr(spec.kind, "inner", spec.kind) is as_bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        elif spec.nargs:
            kwargs.update(nargs="+" if spec.nargs == "+" else spec.nargs)
        group.add_argument(f"--{name}", **kwargs)
    return parser


def settings_from(args, **overrides):
    """DEFAULTS <- YAML (``args.config``) <- the flags given <- ``overrides``."""
    cfg = load_yaml(args.config) if args.config else {}
    flags = {}
    for key in KEYS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if isinstance(value, list) and len(value) == 1 and KEYS[key].nargs == "+":
            value = value[0]
        flags[key] = value
    return merged(cfg, source=args.config or "config", flags=flags, **overrides)
