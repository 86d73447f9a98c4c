"""Classify images with a CoaT checkpoint or an exported MindIR / ONNX file; prints the top-k classes.

    python -m coat_ms.predict img1.png img2.jpg --ckpt_path X.ckpt
    python -m coat_ms.predict photos/ --mindir coat_lite_tiny.mindir --labels labels.txt --topk 3
    python -m coat_ms.predict photos/ --onnx coat_lite_tiny.onnx

A checkpoint written by train.py knows its model, class names and preprocessing (image size, crop_pct,
interpolation, mean/std), so it needs nothing else; other checkpoints take --model_name (and
--class_dir or --labels for names).  Exported files need no model code: the input shape is read
from the file (MindSpore's loader / onnxruntime) and the preprocessing from the ``<file>.json`` that
export.py writes next to it. A file exported with --dynamic takes any --batch_size, and with
--dynamic shape also any --image_size (multiples of 32; default: the recorded one).
Files that are not readable images are reported and skipped.
"""
import argparse
import json
import sys

from .cli import run_cli
from .errors import CoatError

DEFAULT_BATCH = 8  # images per network call, unless --batch_size or an exported file's fixed batch says otherwise


def build_parser():
    p = argparse.ArgumentParser(prog="python -m coat_ms.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt_path", help="MindSpore .ckpt")
    src.add_argument("--mindir", help="exported .mindir file (no model code needed)")
    src.add_argument("--onnx", help="exported .onnx file, run with onnxruntime (no MindSpore model code needed)")
    p.add_argument("--model_name", "--model", help="CoaT variant of --ckpt_path (default: read from the checkpoint)")
    p.add_argument("--model_args", default=None,
                   help="JSON dict of constructor overrides for custom configs, e.g. '{\"embed_dims\": [32,32,32,32]}'")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--labels", help="text file with one class name per line, in label order")
    lab.add_argument("--class_dir", help="training split folder: its sorted class folders name the labels")
    p.add_argument("--topk", type=int, default=5, help="classes to print per image (default 5)")
    p.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input size (default: the checkpoint's / the exported file's)")
    p.add_argument("--batch_size", type=int, default=None,
                   help=f"images per network call (default {DEFAULT_BATCH}; an exported file without a dynamic "
                        "batch uses the batch it was exported with)")
    p.add_argument("--num_parallel_workers", type=int, default=2, help="decoding workers (default 2)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the results to this JSON file")
    return p


def _exported_predictor(args):
    """(preprocessing, predict function, batch, recorded class names) of an exported MindIR or ONNX file.

    The input shape comes from the file itself; a dynamic dimension (-1) takes the flag, else the
    recorded preprocessing's size / DEFAULT_BATCH. A fixed one must agree with the flag.
    """
    import numpy as np

    from .data.transforms import weights_preprocessing
    from .inference import read_sidecar

    path = args.mindir or args.onnx
    if args.mindir:
        from .cli import start
        from .evaluation import cell_predictor
        from .export import mindir_input_shape
        from .inference import load_mindir

        start()
        shape = mindir_input_shape(path)
        predict_fn = cell_predictor(load_mindir(path))
    else:
        from .onnx_session import onnx_input_shape, open_session, run

        session = open_session(path)
        shape = onnx_input_shape(session)
        if len(shape) != 4:
            raise CoatError(f"{path}: expected one (N, C, H, W) image input, found shape {shape}")

        def predict_fn(batch):
            return run(session, np.ascontiguousarray(batch, dtype=np.float32))
    meta = read_sidecar(path)
    recorded_shape = meta.get("input_shape")
    if recorded_shape and list(recorded_shape) != list(shape):
        raise CoatError(f"{path}.json says input_shape {'x'.join(map(str, recorded_shape))} but {path} takes "
                        f"{'x'.join(map(str, shape))}: the metadata belongs to another export; export again, or move "
                        f"it away to use the defaults")
    if not meta:
        sys.stderr.write(f"note: {path}.json (export metadata) not found: using default preprocessing"
                         + (f" at the file's {shape[-2]}x{shape[-1]}\n" if shape[-1] > 0 else "\n"))
    if shape[-1] > 0:  # fixed H, W
        if args.image_size and tuple(args.image_size) != tuple(shape[-2:]):
            raise CoatError(f"{path} was exported for {shape[-2]}x{shape[-1]} images, not "
                            f"{args.image_size[0]}x{args.image_size[1]}: drop --image_size, or export again "
                            f"(--dynamic shape takes any size)")
        size = tuple(shape[-2:])
    else:
        size = tuple(args.image_size) if args.image_size else None  # None: the recorded size
    if shape[0] > 0 and args.batch_size and args.batch_size != shape[0]:
        raise CoatError(f"{path} was exported for batch {shape[0]}, not {args.batch_size} "
                        f"(export with --dynamic batch to choose it here)")
    batch = int(shape[0]) if shape[0] > 0 else (args.batch_size or DEFAULT_BATCH)
    pre = weights_preprocessing(meta, image_size=size)
    return pre, predict_fn, batch, meta.get("class_names") or []


def _checkpoint_predictor(args):
    from .factory import model_from_checkpoint
    from .cli import start
    from .data.transforms import weights_preprocessing
    from .evaluation import cell_predictor

    start()
    model, meta = model_from_checkpoint(args.ckpt_path, args.model_name, model_args=args.model_options,
                                        args_source="--model_args")
    pre = weights_preprocessing(meta, model, image_size=args.image_size)
    return pre, cell_predictor(model), args.batch_size or DEFAULT_BATCH, meta.get("class_names") or []


def check_flags(args):
    """The flags' values, before any work; returns the model options (parsed and checked)."""
    from .model_options import parse_model_args

    for flag, value, minimum in (("--topk", args.topk, 1), ("--batch_size", args.batch_size, 1),
                                 ("--num_parallel_workers", args.num_parallel_workers, 1)):
        if value is not None and value < minimum:
            raise CoatError(f"{flag} must be >= {minimum}, got {value}")
    if args.image_size and (min(args.image_size) < 32 or any(s % 32 for s in args.image_size)):
        raise CoatError(f"--image_size {args.image_size[0]} {args.image_size[1]}: height and width must be multiples "
                        f"of 32 (CoaT's patch grid)")
    return parse_model_args(args.model_args, args.model_name)


def main(argv=None):
    args = build_parser().parse_args(argv)
    import os

    from .fileio import check_outputs
    from .inference import classify, list_image_files, read_labels

    args.model_options = check_flags(args)
    named = [p for p in args.inputs if not os.path.isdir(p)]
    watch = check_outputs([("--json", args.json_out)],
                          files=[("checkpoint", args.ckpt_path), ("MindIR file", args.mindir), ("ONNX file", args.onnx),
                                 ("export metadata", (args.mindir or args.onnx) and (args.mindir or args.onnx) + ".json"),
                                 ("labels file", args.labels)] + [("image", p) for p in named],
                          folders=[("image folder", p) for p in args.inputs if os.path.isdir(p)])
    paths = list_image_files(args.inputs, watch)
    if not paths:
        raise CoatError(f"no image files found in {' '.join(args.inputs)}")
    exported = args.mindir or args.onnx
    from .data.files import list_split
    names = read_labels(args.labels) if args.labels else list_split(args.class_dir, "").classes if args.class_dir else []
    pre, predict_fn, batch, recorded_names = (_exported_predictor if exported else _checkpoint_predictor)(args)
    names = names or recorded_names

    results, skipped = classify(predict_fn, paths, pre, batch, args.topk, names, args.num_parallel_workers,
                                progress=len(paths) > 2 * batch)
    for path, top in results:
        print(f"{path}: " + ", ".join(f"{name} {prob:.4f}" for name, prob in top))
    print(f"{len(results)} images classified, {len(skipped)} skipped as unreadable ({pre.describe()})")
    if args.json_out:
        from .fileio import atomic_write_text

        payload = {"results": [{"path": p, "topk": [{"label": n, "prob": pr} for n, pr in top]} for p, top in results],
                   "skipped": skipped, "preprocessing": pre.as_dict()}
        atomic_write_text(args.json_out, json.dumps(payload, indent=2))
    if not results:
        raise CoatError(f"no image could be read: {len(skipped)} of {len(paths)} file(s) unreadable (named above)")
    return 0


if __name__ == "__main__":
    run_cli(main)
