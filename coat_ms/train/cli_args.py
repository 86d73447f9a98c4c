"""Command-line flags for every config key: yaml values are defaults, flags given on the command line win."""
import argparse
import json

from ..config import DEFAULTS, ConfigError, load_yaml, merged

HELP = {
    "model": "model name (coat_lite_tiny, coat_tiny, ...; see coat_ms.list_models())",
    "data_dir": "ImageFolder root holding <train_split>/ and <val_split>/ class folders",
    "num_classes": "classifier size (a --ckpt_path with another size gets a fresh head)",
    "ckpt_path": "start from these weights (fine-tuning); everything but a resized head loads strictly",
    "resume": "continue a training checkpoint exactly (weights, optimizer, lr position, epoch)",
    "ckpt_save_dir": "output folder: latest.ckpt, top-k checkpoints, results.csv, results.png",
    "distribute": "data parallel over the ranks started by mpirun / msrun",
    "amp_level": "O0/O1/O2/O3/auto (CPU always runs O0, and says so)",
    "deterministic": "no shuffling or random augmentation (for equality checks)",
    "model_args": "JSON dict of CoaT constructor overrides, e.g. '{\"embed_dims\": [32,32,32,32]}'",
    "epoch_size": "number of epochs",
    "batch_size": "images per rank per step",
    "ema": "keep EMA weights (validated and saved)",
    "clip_grad": "clip gradients to global norm --clip_value",
    "gradient_accumulation_steps": "optimizer update every N steps",
}


def _bool(text):
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _json(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None


def _number_or_text(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return None if text.lower() in ("none", "null") else text


def build_parser(prog, description, keys=None):
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-c", "--config", default=None, help="mindcv-style YAML config (its values are defaults)")
    group = parser.add_argument_group("config keys (each overrides the YAML value)")
    for key in keys or sorted(DEFAULTS):
        default = DEFAULTS[key]
        kwargs = dict(default=None, help=HELP.get(key, f"(yaml default: {default})"))
        if isinstance(default, bool):
            kwargs.update(type=_bool, nargs="?", const=True, metavar="BOOL")
        elif key == "model_args":
            kwargs.update(type=_json, metavar="JSON")
        elif isinstance(default, list) or key in ("betas", "multi_step_decay_milestones"):
            kwargs.update(type=float, nargs="+")
        elif isinstance(default, int):
            kwargs.update(type=int)
        elif isinstance(default, float):
            kwargs.update(type=float)
        else:
            kwargs.update(type=_number_or_text if default is None else str)
        group.add_argument(f"--{key}", **kwargs)
    return parser


def resolve(args):
    """DEFAULTS <- YAML (-c) <- flags given."""
    cfg = load_yaml(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    try:
        return merged(cfg, **flags)
    except ConfigError:
        raise
