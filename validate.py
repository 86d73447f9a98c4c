"""Validate a CoaT checkpoint on an ImageFolder split; prints mindcv's metrics dict.

    python validate.py -c configs/coat_mini_ascend.yaml --data_dir DIR --ckpt_path X.ckpt
    python validate.py --model coat_lite_tiny --data_dir DIR --ckpt_path X.ckpt --json out.json --confusion cm.png

Preprocessing comes from the model's pretrained config (resize floor(size / crop_pct) with its
interpolation, centre crop, mean/std); keys image_resize / crop_pct / interpolation / mean / std in the
config file override it.  Every sample of the split counts, whatever the batch size.
"""
import argparse
import json
import os

from coat_ms.cli import run_cli


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=None, help="mindcv-style YAML (model, num_classes, data_dir, ...)")
    p.add_argument("--model", "--model_name", dest="model", default=None, help="CoaT variant (overrides the config)")
    p.add_argument("--data_dir", default=None, help="dataset root holding the split folder")
    p.add_argument("--val_split", default=None, help="split folder under data_dir (default 'val')")
    p.add_argument("--ckpt_path", default=None, help="MindSpore .ckpt to validate (strictly loaded)")
    p.add_argument("--num_classes", type=int, default=None,
                   help="head size (default: config, else read from the checkpoint)")
    p.add_argument("--batch_size", type=int, default=None, help="images per step (default: config, else 32)")
    p.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="eval crop size (default: config image_resize, else the model's 224 224)")
    p.add_argument("--num_parallel_workers", type=int, default=None, help="data workers (default: config, else 2)")
    p.add_argument("--json", dest="json_out", default=None, help="write metrics, per-class accuracy and confusion to JSON")
    p.add_argument("--per_class", action="store_true", help="print the accuracy of every class")
    p.add_argument("--confusion", default=None, metavar="PNG", help="write the confusion matrix as a PNG")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def settings_from(args):
    """Merge config file and flags into the values validate needs."""
    from coat_ms.config import load_yaml

    cfg = load_yaml(args.config) if args.config else {}
    flag = {"model": args.model, "data_dir": args.data_dir, "val_split": args.val_split,
            "ckpt_path": args.ckpt_path, "num_classes": args.num_classes, "batch_size": args.batch_size,
            "num_parallel_workers": args.num_parallel_workers}
    merged = dict(cfg)
    merged.update({k: v for k, v in flag.items() if v is not None})
    return cfg, merged


def main(argv=None):
    args = build_parser().parse_args(argv)
    import mindspore as ms

    from coat_ms.errors import CoatError
    from coat_ms.evaluation import (atomic_write, cell_predictor, create_eval_dataset, eval_settings, evaluate,
                                    save_confusion_png)
    from coat_ms.predict import build_model_from_checkpoint

    cfg, run = settings_from(args)
    for key in ("model", "data_dir", "ckpt_path"):
        if not run.get(key):
            raise CoatError(f"no {key} given: pass --{key} or set '{key}' in the config")
    batch_size = int(run.get("batch_size") or 32)
    if batch_size < 1:
        raise CoatError(f"batch size must be >= 1, got {batch_size}")
    if run.get("device_target"):
        ms.set_device(run["device_target"])
    ms.set_context(mode=ms.PYNATIVE_MODE if run.get("mode") == 1 else ms.GRAPH_MODE)

    model = build_model_from_checkpoint(run["model"], run["ckpt_path"], run.get("num_classes"),
                                        model_args=run.get("model_args"))
    settings = eval_settings(model.pretrained_cfg, cfg, image_size=args.image_size)
    dataset, names, count = create_eval_dataset(run["data_dir"], run.get("val_split", "val"), settings, batch_size,
                                                int(run.get("num_parallel_workers") or 2))
    print(f"validating {run['model']} ({run['ckpt_path']}) on {count} images in {len(names)} classes; "
          f"{settings.describe()}", flush=True)
    label_smoothing = float(cfg.get("label_smoothing") or 0.0)
    result = evaluate(cell_predictor(model), dataset, names, batch_size, label_smoothing,
                      progress=not args.no_progress)

    print(result.metrics())
    if args.per_class:
        for name, acc, total in zip(result.class_names, result.per_class, result.confusion.sum(axis=1)):
            print(f"  class {name}: {'n/a' if acc is None else f'{acc:.4f}'} ({int(total)} images)")
    if args.json_out:
        payload = dict(result.metrics(), num_samples=result.num_samples, model=run["model"],
                       ckpt_path=os.path.abspath(run["ckpt_path"]),
                       per_class={n: a for n, a in zip(result.class_names, result.per_class)},
                       class_names=result.class_names, confusion=result.confusion.tolist())

        def dump(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2)
        atomic_write(args.json_out, dump)
        print(f"wrote {args.json_out}")
    if args.confusion:
        save_confusion_png(result, args.confusion, title=run["model"])
        print(f"wrote {args.confusion}")
    return 0


if __name__ == "__main__":
    run_cli(main)
