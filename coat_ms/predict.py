"""Classify images with a CoaT checkpoint or an exported MindIR file; prints the top-k classes.

    python -m coat_ms.predict img1.png img2.jpg --model_name coat_lite_tiny --ckpt_path X.ckpt --class_dir data/train
    python -m coat_ms.predict photos/ --mindir coat_lite_tiny.mindir --labels labels.txt --topk 3

The MindIR path needs no model code: the file is loaded with mindspore.load and run by nn.GraphCell.
Its input shape and preprocessing are read from the ``<file>.json`` that export.py writes next to it
(or given with --image_size / --batch_size).  Preprocessing is validate.py's (see coat_ms.evaluation).
Files that are not readable images are reported and skipped.
"""
import argparse
import json
import os
import sys

import numpy as np

from .cli import run_cli
from .errors import CheckpointError, CoatError
from .evaluation import (DataError, class_folders, eval_settings, list_images, preprocess_files,
                         run_padded, softmax)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def num_classes_in(params):
    """Head size stored in a checkpoint ({name: Parameter}), or None if it has no head."""
    bias = params.get("head.bias")
    return int(bias.shape[0]) if bias is not None else None


def build_model_from_checkpoint(model_name, ckpt_path=None, num_classes=None, model_args=None):
    """Create ``model_name`` in eval mode and strictly load ``ckpt_path`` (head size read from it)."""
    from .checkpoint import load_state, read_checkpoint
    from .factory import create_model

    params = read_checkpoint(ckpt_path) if ckpt_path else None
    if num_classes is None:
        num_classes = (num_classes_in(params) if params else None) or 1000
    model = create_model(model_name, num_classes=num_classes, **(model_args or {}))
    if params is not None:
        load_state(model, params, strict=True, source=os.fspath(ckpt_path))
    model.set_train(False)
    return model


def read_sidecar(mindir_path):
    """The metadata export.py writes next to an exported file, or {}."""
    path = mindir_path + ".json"
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CoatError(f"{path}: unreadable export metadata ({exc})") from None


def load_mindir(path):
    """nn.GraphCell of a MindIR file, with a clear error for missing or broken files."""
    import mindspore as ms
    from mindspore import nn

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"MindIR file not found: {path}")
    try:
        return nn.GraphCell(ms.load(path))
    except Exception as exc:  # MindSpore raises RuntimeError/ValueError with long texts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load MindIR {path}: {first}") from None


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------

def read_labels(path):
    """One class name per line (blank lines ignored; 'index name' or 'index: name' also accepted)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: labels file is not text") from None
    names = []
    for line in lines:
        head, _, rest = line.replace(":", " ", 1).partition(" ")
        names.append(rest.strip() if head.isdigit() and rest.strip() else line)
    if not names:
        raise DataError(f"{path}: labels file is empty")
    return names


def top_k(probs, names, k):
    """[(class name, probability)] of the k most probable classes of one row."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i] if i < len(names) else str(i), float(probs[i])) for i in order]


def predict(predict_fn, paths, settings, batch_size, k=5, names=()):
    """Classify image files; returns ([(path, [(name, prob)])], [(path, reason)] skipped)."""
    from tqdm import tqdm

    results, skipped = [], []
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    for chunk in tqdm(chunks, desc="predict", unit="batch", disable=len(chunks) < 2, leave=False):
        batch, good, bad = preprocess_files(chunk, settings)
        skipped += bad
        if batch is None:
            continue
        probs = softmax(run_padded(predict_fn, batch, batch_size))
        if names and probs.shape[1] != len(names):
            raise DataError(f"the model predicts {probs.shape[1]} classes but {len(names)} labels were given")
        results += [(p, top_k(row, names, k)) for p, row in zip(good, probs)]
    return results, skipped


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(prog="python -m coat_ms.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt_path", help="MindSpore .ckpt (needs --model_name)")
    src.add_argument("--mindir", help="exported .mindir file (no model code needed)")
    p.add_argument("--model_name", "--model", help="CoaT variant of --ckpt_path, e.g. coat_lite_tiny")
    p.add_argument("--model_args", default=None,
                   help="JSON dict of constructor overrides for custom configs, e.g. '{\"embed_dims\": [32,32,32,32]}'")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--labels", help="text file with one class name per line, in label order")
    lab.add_argument("--class_dir", help="training split folder: its sorted class folders name the labels")
    p.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    p.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input size (default: the model's / the MindIR's)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per network call (default 8; a MindIR uses the batch it was exported with)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results to this JSON file")
    return p


def _settings_and_predictor(args):
    import mindspore as ms

    from .evaluation import cell_predictor

    ms.set_context(mode=ms.GRAPH_MODE)
    if args.mindir:
        meta = read_sidecar(args.mindir)
        net = load_mindir(args.mindir)
        shape = meta.get("input_shape")
        pre = meta.get("preprocessing", {})
        size = args.image_size or (shape[-2:] if shape else None)
        settings = eval_settings({}, pre, image_size=size)
        batch = int(shape[0]) if shape else (args.batch_size or 1)
        if shape and args.batch_size and args.batch_size != batch:
            raise CoatError(f"{args.mindir} was exported for batch {batch}, not {args.batch_size}")
        return settings, cell_predictor(net), batch
    if not args.model_name:
        raise CoatError("--ckpt_path needs --model_name (the CoaT variant the checkpoint belongs to)")
    try:
        model_args = json.loads(args.model_args) if args.model_args else None
    except ValueError as exc:
        raise CoatError(f"--model_args is not valid JSON: {exc}") from None
    model = build_model_from_checkpoint(args.model_name, args.ckpt_path, model_args=model_args)
    settings = eval_settings(model.pretrained_cfg, image_size=args.image_size)
    return settings, cell_predictor(model), args.batch_size or 8


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.topk < 1:
        raise CoatError(f"--topk must be >= 1, got {args.topk}")
    if args.batch_size is not None and args.batch_size < 1:
        raise CoatError(f"--batch_size must be >= 1, got {args.batch_size}")
    paths = list_images(args.inputs)
    if not paths:
        raise DataError(f"no image files found in {' '.join(args.inputs)}")
    names = (read_labels(args.labels) if args.labels else class_folders(args.class_dir) if args.class_dir else [])
    settings, predict_fn, batch = _settings_and_predictor(args)

    results, skipped = predict(predict_fn, paths, settings, batch, args.topk, names)
    for path, reason in skipped:
        sys.stderr.write(f"skipped {path}: {reason}\n")
    for path, top in results:
        print(f"{path}: " + ", ".join(f"{name} {prob:.4f}" for name, prob in top))
    print(f"{len(results)} images classified, {len(skipped)} skipped ({settings.describe()})")
    if args.json_out:
        from .evaluation import atomic_write

        payload = {"results": [{"path": p, "topk": [{"label": n, "prob": pr} for n, pr in top]}
                               for p, top in results],
                   "skipped": [{"path": p, "reason": r} for p, r in skipped]}
        atomic_write(args.json_out, lambda tmp: _dump(payload, tmp))
    return 0 if results else 1


def _dump(payload, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)


if __name__ == "__main__":
    run_cli(main)
