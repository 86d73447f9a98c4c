"""INT8 against float32 on trained models: top-1 agreement and accuracy drop on held-out images.

    python benchmarks/int8_study.py --work int8_study

Two trained models, each exported to ONNX (float32, dynamic batch) and quantized by export.py
(``--quantize int8``, calibrated on images of its training split), then both files are run on the
validation split with its labels:

1. the demo's digits model (``python -m coat_ms.demo``: configs/demo_digits_cpu.yaml, scikit-learn's
   handwritten digits at 32x32), or ``--digits_ckpt`` for one trained already;
2. that model fine-tuned on real photographs: no download is possible here, so the photos are crops
   of the two sample photos scikit-learn ships (coat_ms/datasets/photos.py: 24 classes, 40 train and
   10 val crops each, 72-128 px JPEGs), at 64x64 (resize 73, centre crop, bicubic).

Prints per model: float32 top-1, INT8 top-1, the drop, top-1 agreement, and writes int8_study.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    print("$ " + " ".join(map(str, args)), flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    print("\n".join("  " + ln for ln in lines[-4:]) + f"\n  ({time.perf_counter() - start:.0f} s)", flush=True)
    return proc.stdout


def latest_checkpoint(run_dir):
    path = os.path.join(run_dir, "latest.ckpt")
    if not os.path.isfile(path):
        sys.exit(f"no latest.ckpt in {run_dir}")
    return path


def evaluate(fp32, int8, val_dir):
    """Top-1 of both files against the labels of ``val_dir`` (an ImageFolder split), and their agreement."""
    import numpy as np

    from coat_ms.data.files import list_split
    from coat_ms.data.pipeline import eval_dataset
    from coat_ms.data.transforms import preprocessing
    from coat_ms.inference import read_sidecar
    from coat_ms.onnx_session import open_session, run as ort_run

    meta = read_sidecar(fp32)
    names = meta["class_names"]
    images = list_split(val_dir, "")
    to_model = np.array([names.index(c) for c in images.classes])  # folder order -> the model's label order
    pre = preprocessing(meta["preprocessing"])
    dataset, _ = eval_dataset(images, pre, 32, 2)
    a, b = open_session(fp32), open_session(int8)
    hits_a = hits_b = agree = n = 0
    for image, label, bad in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        keep = ~bad.astype(bool)
        x = image[keep].astype(np.float32)
        y = to_model[label[keep]]
        pa, pb = ort_run(a, x).argmax(1), ort_run(b, x).argmax(1)
        hits_a += int((pa == y).sum())
        hits_b += int((pb == y).sum())
        agree += int((pa == pb).sum())
        n += len(y)
    return {"images": n, "fp32_top1": hits_a / n, "int8_top1": hits_b / n, "drop": (hits_a - hits_b) / n,
            "agreement": agree / n}


def export_and_quantize(ckpt, name, calib_dir, work):
    out = run("export.py", "--ckpt_file", ckpt, "--file_format", "ONNX", "--dynamic", "batch", "--file_name",
              os.path.join(work, name), "--quantize", "int8", "--calib_dir", calib_dir, "--min_agreement", "0",
              "--device_target", "CPU", cwd=ROOT)
    fp32 = os.path.join(work, name + ".onnx")
    with open(fp32[:-5] + ".int8.onnx.json") as f:
        record = json.load(f)["quantization"]
    return fp32, fp32[:-5] + ".int8.onnx", record, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="int8_study", help="folder for the data, the runs and the files")
    p.add_argument("--digits_ckpt", default=None, help="a trained digits checkpoint (default: run the demo)")
    p.add_argument("--digits_epochs", type=int, default=None, help="demo epochs (default: the config's 12)")
    p.add_argument("--photo_epochs", type=int, default=15, help="fine-tuning epochs on the photo crops (default 15)")
    args = p.parse_args(argv)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    from coat_ms.datasets import write_digits_imagefolder, write_photo_crops_imagefolder
    from coat_ms.fileio import atomic_write_text

    digits = os.path.join(work, "digits")
    write_digits_imagefolder(digits, image_size=32)
    if args.digits_ckpt:
        digits_ckpt = os.path.abspath(args.digits_ckpt)
    else:
        demo = ["-m", "coat_ms.demo", "--data_dir", digits, "--out", os.path.join(work, "demo")]
        out = run(*demo, *(["--epochs", args.digits_epochs] if args.digits_epochs else []), cwd=work)
        folder = out.split("outputs: ")[-1].split()[0].rstrip(":") if "outputs: " in out else os.path.join(work, "demo")
        digits_ckpt = latest_checkpoint(folder)  # the demo picks a new folder when one holds a run

    photos = os.path.join(work, "photos")
    counts = write_photo_crops_imagefolder(photos)
    photo_run = os.path.join(work, "photo_run")
    if not os.path.isfile(os.path.join(photo_run, "latest.ckpt")):
        run("train.py", "-c", "configs/demo_digits_cpu.yaml", "--data_dir", photos, "--ckpt_path", digits_ckpt,
            "--num_classes", counts["classes"], "--image_resize", 64, "--crop_pct", 0.875, "--interpolation", "bicubic",
            "--hflip", 0.5, "--scale", 0.5, 1.0, "--epoch_size", args.photo_epochs, "--warmup_epochs", 1,
            "--ckpt_save_dir", photo_run, cwd=ROOT)
    rows = {}
    for name, ckpt, data in (("digits", digits_ckpt, digits), ("photos", latest_checkpoint(photo_run), photos)):
        fp32, int8, record, _ = export_and_quantize(ckpt, name, os.path.join(data, "train"), work)
        rows[name] = dict(evaluate(fp32, int8, os.path.join(data, "val")), calibration_images=record["calibration_images"],
                          calibration_check_agreement=record["top1_agreement"])
    lines = ["| model | val images | fp32 top-1 | INT8 top-1 | drop | top-1 agreement | calibration images |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['images']} | {100 * r['fp32_top1']:.2f}% | {100 * r['int8_top1']:.2f}% | "
                     f"{100 * r['drop']:.2f} pt | {100 * r['agreement']:.2f}% | {r['calibration_images']} |")
    print("\n" + "\n".join(lines))
    atomic_write_text(os.path.join(work, "int8_study.json"), json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
