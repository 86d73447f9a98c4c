"""python -m convert: PyTorch (timm / official) or mindcv CoaT checkpoints <-> coat_ms MindSpore checkpoints.

Examples:
  python -m convert --src coat_lite_tiny.pth --out coat_lite_tiny.ckpt --verify
  python -m convert --src model.safetensors --out model.ckpt --model coat_tiny
  python -m convert --src checkpoint.pth --ema --out ema.ckpt
  python -m convert --src mindcv_coat_tiny.ckpt --out coat_tiny.ckpt --verify      # mindcv 0.3.0 release
  python -m convert --to torch --src coat_lite_tiny.ckpt --out coat_lite_tiny.pth --model coat_lite_tiny
"""
import argparse
import math
import os
import sys
import time

from coat_ms.conversion import CONVERTER_VERSION
from coat_ms.errors import ConversionError
from coat_ms.fileio import check_outputs

FORMATS = {"ms": ("ckpt", "safetensors"), "torch": ("pth", "safetensors")}
# Output names that say which framework reads them (.safetensors can be either: --to decides, default ms).
DIRECTION_OF_EXTENSION = {"ckpt": "ms", "pth": "torch", "pt": "torch", "bin": "torch"}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m convert", description=__doc__.split("\n", 1)[0],
        epilog=__doc__.split("\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="source checkpoint: .pth / .safetensors (PyTorch), "
                        ".ckpt (mindcv, or coat_ms with --to torch); the format is read from the file")
    parser.add_argument("--out", required=True, help="output file (written atomically) + '<out>.json' metadata")
    parser.add_argument("--to", choices=("ms", "torch"),
                        help="direction: 'ms' PyTorch/mindcv -> coat_ms; 'torch' coat_ms -> timm; default from --out's "
                             "extension (.ckpt: ms, .pth/.pt/.bin: torch, otherwise ms)")
    parser.add_argument("--model", help="expected variant (checked); default: inferred from shapes and depths")
    parser.add_argument("--format", choices=("ckpt", "safetensors", "pth"),
                        help="output format; default from --out's extension (ckpt for --to ms, pth for --to torch)")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights ('model_ema') of a container")
    parser.add_argument("--verify", action="store_true",
                        help="run the source framework's model and coat_ms on a shared input; exit 1 above tolerance")
    parser.add_argument("--tolerance", type=float, default=2e-5,
                        help="--verify limit on max|diff| / max|ref| of the logits (default 2e-5)")
    parser.add_argument("--image-size", type=int, default=224, help="--verify input size (default 224)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow .pth files holding Python objects (torch.load weights_only=False)")
    parser.add_argument("--version", action="version", version=f"convert {CONVERTER_VERSION}")
    return parser


def _extension(path):
    return os.path.splitext(path)[1].lstrip(".").lower()


def direction(args):
    """'ms' or 'torch': --to, else read off --out's extension; a contradiction is an error, not a misnamed file."""
    implied = DIRECTION_OF_EXTENSION.get(_extension(args.out))
    if args.to is None:
        return implied or "ms"
    if implied and implied != args.to:
        what = {"ms": "a MindSpore checkpoint", "torch": "a PyTorch checkpoint"}
        raise ConversionError(f"--out {args.out} names {what[implied]} but --to {args.to} writes "
                              f"{what[args.to]}: use --to {implied}, or give --out another extension")
    return args.to


def output_format(args):
    ext = _extension(args.out)
    fmt = args.format or (ext if ext in FORMATS[args.to] else FORMATS[args.to][0])
    if fmt not in FORMATS[args.to]:
        raise ConversionError(f"--format {fmt} is not an output of --to {args.to} (choose from "
                              f"{', '.join(FORMATS[args.to])})")
    return fmt


class _Progress:
    """A tqdm bar over the source tensors (quiet when stderr is not a terminal)."""

    def __init__(self, total, desc):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, unit="tensor", disable=None, leave=False)

    def __call__(self, n):
        self.bar.update(n)

    def close(self):
        self.bar.close()


def _metadata(src, variant, direction, report, extra=None):
    meta = {"converter": "coat_ms convert", "converter_version": CONVERTER_VERSION, "direction": direction,
            "source_file": os.path.basename(src.path), "source_sha256": src.sha256, "source_format": src.format,
            "source_container": src.container, "variant": variant, "num_classes": report.num_classes,
            "in_chans": report.in_chans, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    meta.update(extra or {})
    return meta


def to_mindspore(args, src, fmt):
    from coat_ms.conversion import core, mindcv_rules, verify, writers
    mindcv = src.format == "ckpt" and mindcv_rules.is_mindcv(src.state_dict)
    bar = _Progress(len(src.state_dict), "converting")
    try:
        convert_fn = core.mindcv_to_ms if mindcv else core.torch_to_ms
        result = convert_fn(src.state_dict, args.model, progress=bar)
    finally:
        bar.close()
    if args.model is None:
        print(f"model: {result.variant} (inferred from the checkpoint's shapes and depths)")
    if mindcv:
        print(f"source: mindcv CoaT checkpoint; coat_ms needs {result.model_kwargs} to reproduce it")
    check = None
    if args.verify:
        check = (verify.verify_mindcv(result, src.state_dict, args.tolerance) if mindcv else
                 verify.verify_torch(result, src.state_dict, args.tolerance, args.image_size))
    from coat_ms import origin
    made_by = origin.MINDCV if mindcv else origin.TIMM
    meta = _metadata(src, result.variant, "mindcv->ms" if mindcv else "torch->ms", result.report,
                     {"model_kwargs": result.model_kwargs, "format": fmt,
                      "verify_rel_error": check.rel if check else None,
                      "record": origin.record(result.variant, made_by, result.report.num_classes, result.model_kwargs)})
    pre = meta["record"]["preprocessing"]
    print(f"record: {made_by} weights, evaluated in {made_by}'s style ({pre['interpolation']}, "
          f"crop_pct {pre['crop_pct']})")
    if check is None or check.ok:
        writers.write_mindspore(result.params, args.out, fmt, meta)
    return result, check


def to_torch(args, src, fmt):
    from coat_ms.conversion import core, verify, writers
    if src.format == "pth":
        raise ConversionError(f"--to torch converts a coat_ms MindSpore checkpoint (.ckpt or .safetensors); "
                              f"{src.path} is already a PyTorch file (for PyTorch -> MindSpore, name --out .ckpt)")
    if not args.model:
        args.model = core.infer_variant(src.state_dict)
        print(f"model: {args.model} (inferred from the checkpoint's shapes and depths)")
    state = core.ms_to_torch(src.state_dict, args.model)
    result = core.torch_to_ms(state, args.model)  # re-check: the output converts back to the same model
    check = verify.verify_torch(result, state, args.tolerance, args.image_size) if args.verify else None
    meta = _metadata(src, args.model, "ms->torch", result.report, {"format": fmt})
    if check is None or check.ok:
        writers.write_torch(state, args.out, fmt, meta)
    result.report.notes.append(f"wrote {len(state)} PyTorch keys ({len(state) - len(result.params)} tied aliases "
                               f"re-expanded)")
    return result, check


def main(argv=None):
    args = build_parser().parse_args(argv)
    from coat_ms.conversion import readers, writers
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise ConversionError(f"--tolerance must be a number > 0, got {args.tolerance}")
    if args.image_size < 32 or args.image_size % 32:
        raise ConversionError(f"--image-size must be a multiple of 32 (CoaT's patch grid), got {args.image_size}")
    # real paths: a symlink or hard link to the source is the source
    check_outputs([("--out", args.out), ("--out's metadata file", args.out + ".json")], files=[("file", args.src)])
    inferred = args.to is None
    args.to = direction(args)
    if inferred and args.to == "torch":
        print(f"direction: --to torch (from the extension of {args.out})")
    fmt = output_format(args)
    writers.check_writable(args.out)
    if args.model:
        from coat_ms.models.coat import VARIANTS
        if args.model not in VARIANTS:
            raise ConversionError(f"unknown model '{args.model}'; known: {', '.join(VARIANTS)}")
    start = time.perf_counter()
    src = readers.read_source(args.src, ema=args.ema, trust_pickle=args.trust_pickle)
    print(f"source: {args.src} ({src.format}{', ' + repr(src.container) if src.container else ''}, "
          f"{len(src.state_dict)} tensors, sha256 {src.sha256[:12]})")
    result, check = (to_torch if args.to == "torch" else to_mindspore)(args, src, fmt)
    print(result.report.summary())
    if check is not None:
        print(check.line())
        if not check.ok:
            print(f"not written: {args.out} (verification failed)", file=sys.stderr)
            return 1
    print(f"wrote {args.out} ({fmt}) and {args.out}.json in {time.perf_counter() - start:.1f} s")
    return 0
