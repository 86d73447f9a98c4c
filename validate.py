"""Validate a CoaT checkpoint on an ImageFolder split; prints mindcv's metrics dict.

    python validate.py -c configs/coat_mini_ascend.yaml --data_dir DIR --ckpt_path X.ckpt
    python validate.py --data_dir DIR --ckpt_path X.ckpt --json out.json --confusion cm.png
    mpirun -n 2 python validate.py --data_dir DIR --ckpt_path X.ckpt --distribute     (each rank takes a share)

Takes mindcv's validate arguments (every config key is a flag: --dataset, --device_target, --image_resize,
--crop_pct, --interpolation, --mean/--std, --mode, --ema, --val_amp_level, ...).  Model, head size,
class order and preprocessing come from the checkpoint's coat_ms record unless given.  With --ema (the
coat_tiny recipes set it) the checkpoint's EMA weights are evaluated when it holds them.  Loss is the
plain cross-entropy over the readable images (no label smoothing; see coat_ms.evaluation).
"""
import argparse
import json
import logging
import os

from coat_ms.cli import run_cli

logger = logging.getLogger("coat_ms")


def build_parser():
    from coat_ms.config import add_config_flags

    p = argparse.ArgumentParser(prog="validate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    extra = p.add_argument_group("validate.py")
    extra.add_argument("--model_name", dest="model_alias", default=None, help="same as --model")
    extra.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                       help="non-square eval size (default: image_resize)")
    extra.add_argument("--json", dest="json_out", default=None, help="write metrics, per-class accuracy and confusion")
    extra.add_argument("--per_class", action="store_true", help="print the accuracy of every class")
    extra.add_argument("--confusion", default=None, metavar="PNG", help="write the confusion matrix as a PNG")
    extra.add_argument("--no_progress", action="store_true", help="no progress bar")
    return add_config_flags(p)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model_alias and not args.model:
        args.model = args.model_alias
    from coat_ms.config import settings_from
    from coat_ms.data.files import list_split
    from coat_ms.errors import CoatError
    from coat_ms.fileio import check_outputs

    cfg = settings_from(args)
    if not cfg["data_dir"]:
        raise CoatError("no data_dir given: pass --data_dir (a folder holding the val split) or set it in the config")
    if args.image_size and (min(args.image_size) < 32 or any(v % 32 for v in args.image_size)):
        raise CoatError(f"--image_size {args.image_size[0]} {args.image_size[1]}: height and width must be multiples "
                        f"of 32 (CoaT's patch grid)")
    split = os.path.join(cfg["data_dir"], cfg["val_split"])
    watch = check_outputs([("--json", args.json_out), ("--confusion", args.confusion)],
                          files=[("checkpoint", cfg["ckpt_path"]), ("config", args.config)],
                          folders=[("val split", split)] if os.path.isdir(split) else [])
    images = list_split(cfg["data_dir"], cfg["val_split"], require_every_class=False, watch=watch)
    import mindspore as ms

    from coat_ms.train import distributed
    if cfg["distribute"] and not cfg.from_flag("distribute") and not distributed.launcher_present():
        cfg["distribute"] = False  # a training recipe's setting; validating needs no launcher
    from coat_ms.cli import start
    from coat_ms.evaluation import evaluate_checkpoint, save_confusion_png
    dist = start(cfg["device_target"], cfg["mode"], cfg["distribute"])
    device = ms.get_context("device_target")
    ckpt = cfg["ckpt_path"]
    given = cfg.given
    try:
        result, model, pre = evaluate_checkpoint(
            images, ckpt, given("model") if ckpt else cfg["model"], pretrained=cfg["pretrained"],
            # a checkpoint's head size wins over a config file's num_classes (a recipe says 1000, the checkpoint
            # may be fine-tuned); a --num_classes flag is taken as given
            num_classes=cfg["num_classes"] if not ckpt or cfg.from_flag("num_classes") else None,
            model_args=given("model_args"), model_args_source=cfg.named("model_args"), ema=cfg["ema"],
            preprocess=dict(image_size=args.image_size or given("image_resize"), crop_pct=given("crop_pct"),
                            interpolation=given("interpolation"), mean=given("mean"), std=given("std"),
                            style=cfg["preprocess_style"]),
            batch_size=cfg["batch_size"], workers=cfg["num_parallel_workers"], dist=dist,
            confusion=bool(args.json_out or args.confusion or args.per_class),
            progress=dist.is_main and not args.no_progress,
            amp_level=cfg["val_amp_level"] if device != "CPU" else "O0")
    finally:
        distributed.shutdown_distributed(dist)
    if not dist.is_main:
        return 0
    name = cfg["ckpt_path"] or f"{cfg['model']} (pretrained)"
    print(f"validated {name} on {result.num_samples} images in {len(result.class_names)} classes over "
          f"{dist.size} rank(s); {pre.describe()}"
          f"{f'; {result.skipped} unreadable images skipped' if result.skipped else ''}")
    print(result.metrics())
    if args.per_class:
        for cls, acc, total in zip(result.class_names, result.per_class, result.confusion.sum(axis=1)):
            print(f"  class {cls}: {'n/a' if acc is None else f'{acc:.4f}'} ({int(total)} images)")
    if args.json_out:
        from coat_ms.fileio import atomic_write_text
        payload = dict(result.metrics(), num_samples=result.num_samples, skipped=result.skipped,
                       ckpt_path=os.path.abspath(cfg["ckpt_path"]) if cfg["ckpt_path"] else None,
                       preprocessing=pre.as_dict(),
                       per_class={n: a for n, a in zip(result.class_names, result.per_class)},
                       class_names=result.class_names, confusion=result.confusion.tolist())
        atomic_write_text(args.json_out, json.dumps(payload, indent=2))
        print(f"wrote {args.json_out}")
    if args.confusion:
        save_confusion_png(result, args.confusion, title=os.path.basename(name))
        print(f"wrote {args.confusion}")
    return 0


if __name__ == "__main__":
    run_cli(main)
