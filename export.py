"""Export a CoaT checkpoint to MINDIR / ONNX / AIR and verify the written file against the live network.

    python export.py --model_name coat_mini --ckpt_file X.ckpt --file_format MINDIR
    python export.py --model_name coat_lite_tiny --ckpt_file X.ckpt --file_format ONNX --image_size 256 256
    python export.py --ckpt_file X.ckpt --file_format ONNX --dynamic shape     # any batch, any H, W (x32)
    python export.py --ckpt_file X.ckpt --file_format ONNX --quantize int8 --calib_dir photos/   # + X.int8.onnx

The model is built on MindSpore's stock operators, never with the CPU C++ kernels. Every file is run
in a fresh process (MINDIR: mindspore.load + nn.GraphCell; ONNX: onnxruntime) and must match the model
within 1e-6 (MINDIR) / 1e-5 (ONNX) relative, at the export's shape and, for --dynamic, at two more.
--quantize int8 also writes <name>.int8.onnx: ONNX Runtime's static INT8 quantization, calibrated on
--calib_dir's images at the model's evaluation preprocessing, kept only if its top-1 agrees with the
float32 file on the held-out images at least --min_agreement of the time. AIR needs an Ascend backend.
"""
import argparse
import os

from coat_ms.cli import run_cli


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_name", "--model", default=None,
                   help="CoaT variant, e.g. coat_lite_tiny (default: read from a checkpoint written by train.py)")
    p.add_argument("--ckpt_file", "--ckpt_path", default="",
                   help="MindSpore .ckpt to export (strictly loaded); without it random weights are exported")
    p.add_argument("--file_format", default="MINDIR", type=str.upper, choices=["MINDIR", "ONNX", "AIR"])
    p.add_argument("--file_name", default=None,
                   help="output path without or with extension (default: <model_name> in the current folder)")
    p.add_argument("--device_target", default=None, choices=["CPU", "GPU", "Ascend"],
                   help="backend to compile on (default: the one MindSpore was built for)")
    p.add_argument("--batch_size", type=int, default=1, help="batch size baked into the file (default 1)")
    p.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input height and width, multiples of 32 (default: the model's 224 224)")
    p.add_argument("--num_classes", type=int, default=None,
                   help="classes of the head (default: read from the checkpoint, else 1000)")
    p.add_argument("--model_args", default=None,
                   help="JSON dict of constructor overrides for custom configs, e.g. '{\"embed_dims\": [32,32,32,32]}'")
    p.add_argument("--dynamic", choices=["batch", "shape"], default=None,
                   help="batch: any batch size at the --image_size; shape: any batch and any H, W multiple of 32 "
                        "(MINDIR and ONNX; default: the --batch_size and --image_size only)")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="ONNX only: also write <name>.int8.onnx, statically quantized with onnxruntime")
    p.add_argument("--calib_dir", default=None,
                   help="--quantize: folder of images like the ones the model will see (searched recursively)")
    p.add_argument("--calib_size", type=int, default=256,
                   help="--quantize: images used to calibrate (default 256); the rest, at least a fifth, check")
    p.add_argument("--min_agreement", type=float, default=0.9,
                   help="--quantize: least top-1 agreement of INT8 with float32 on the held-out images (default 0.9)")
    p.add_argument("--no_verify", action="store_true", help="skip the check of the written file (not advised)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check input")
    return p


def check_flags(args):
    """The flags' values, before any work; returns the model options (parsed and checked)."""
    from coat_ms.errors import CoatError
    from coat_ms.model_options import parse_model_args

    if not args.model_name and not args.ckpt_file:
        raise CoatError("pass --ckpt_file (a checkpoint written by train.py knows its model) or --model_name")
    for flag, value, minimum in (("--batch_size", args.batch_size, 1), ("--num_classes", args.num_classes, 0),
                                 ("--seed", args.seed, 0)):
        if value is not None and value < minimum:
            raise CoatError(f"{flag} must be >= {minimum}, got {value}")
    if args.seed > 2**32 - 1:
        raise CoatError(f"--seed must be <= {2**32 - 1}, got {args.seed}")
    if args.image_size and (min(args.image_size) < 32 or any(v % 32 for v in args.image_size)):
        raise CoatError(f"--image_size {args.image_size[0]} {args.image_size[1]}: height and width must be multiples "
                        f"of 32 (CoaT's patch grid)")
    model_args = parse_model_args(args.model_args, args.model_name) or {}
    if "backend" in model_args:
        raise CoatError("--model_args must be model options without 'backend' (the export picks the operator set "
                        "its format needs)")
    return model_args


def main(argv=None):
    args = build_parser().parse_args(argv)
    model_args = check_flags(args)
    from coat_ms.cli import start
    from coat_ms.export import check_dynamic, check_format, check_writable, export_backend, export_model, output_path
    from coat_ms.factory import model_from_checkpoint
    from coat_ms.fileio import check_outputs

    final = output_path(args.file_name or args.model_name or os.path.splitext(os.path.basename(args.ckpt_file))[0],
                        args.file_format)
    outputs = [("--file_name", final), ("--file_name's metadata file", final + ".json")]
    if args.quantize:
        from coat_ms.quantize import int8_path_for
        outputs += [("--quantize's file", int8_path_for(final)), ("--quantize's metadata file",
                                                                  int8_path_for(final) + ".json")]
    check_outputs(outputs, files=[("checkpoint", args.ckpt_file)],
                  folders=[("--calib_dir", args.calib_dir)] if args.quantize else [])
    start(args.device_target)
    fmt = check_format(args.file_format, args.device_target)      # before any slow work
    check_dynamic(args.dynamic, fmt)
    check_quantize_args(args, fmt)
    check_writable(final)

    # built directly on the export's operator set: no C++ kernel is built or used
    if args.ckpt_file:
        model, meta = model_from_checkpoint(args.ckpt_file, args.model_name, args.num_classes, model_args or None,
                                            args_source="--model_args", backend=export_backend(fmt))
    else:
        from coat_ms.factory import create_model
        classes = 1000 if args.num_classes is None else args.num_classes
        model, meta = create_model(args.model_name, num_classes=classes,
                                   **dict(model_args, backend=export_backend(fmt))), {}
        model.set_train(False)
    result = export_model(model, final, fmt, batch_size=args.batch_size, image_size=args.image_size,
                          seed=args.seed, verify=not args.no_verify, device_target=args.device_target,
                          checkpoint_meta=meta, dynamic=args.dynamic)
    print(result.summary())
    if args.quantize:
        from coat_ms.quantize import quantize_export
        print(f"quantizing to INT8: calibration images from {args.calib_dir} ...", flush=True)
        print(quantize_export(result.path, args.calib_dir, args.calib_size, args.min_agreement).summary())
    return 0


def check_quantize_args(args, fmt):
    """--quantize needs ONNX and a folder of images; its options need --quantize."""
    from coat_ms.errors import CoatError

    if not args.quantize:
        if args.calib_dir:
            raise CoatError("--calib_dir is used with --quantize int8 only")
        return
    if fmt != "ONNX":
        raise CoatError(f"--quantize int8 quantizes an ONNX file (onnxruntime's tooling): use --file_format ONNX, "
                        f"not {fmt}")
    if not args.calib_dir or not os.path.isdir(args.calib_dir):
        raise CoatError(f"--quantize int8 needs --calib_dir, a folder of images to calibrate on "
                        f"(got {args.calib_dir!r})")
    if args.calib_size < 1 or not 0.0 <= args.min_agreement <= 1.0:
        raise CoatError("--calib_size must be >= 1 and --min_agreement in [0, 1]")
    if args.no_verify:
        raise CoatError("--quantize needs the float32 file verified first: drop --no_verify")


if __name__ == "__main__":
    run_cli(main)
