"""Start-up cost of train.py per image file: how long an ImageNet-sized folder delays the first step.

    .venv/bin/python benchmarks/bench_startup.py                    # 100,000 files in 1,000 classes vs 1,000
    .venv/bin/python benchmarks/bench_startup.py --files 20000 --small 1000 --root /tmp/startup

Generates two ImageFolders of small real JPEGs (kept under --root for the next run), runs train.py
on each (a narrow CoaT-Lite, one step of batch 8, no validation) and reads the time from launch to
the end of the first training step that train.py itself logs.  The per-file cost is

    (first step on the big folder - first step on the small one) / (files in big - files in small)

which cancels imports, model build and graph compilation.  A resumed run (--resume) is timed on the
big folder too.  Target here: <= 50 us per file (ImageNet's 1.28M files: about a minute per rank).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '{"embed_dims": [16, 16, 16, 16], "serial_depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]}'


def make_folder(root, files, classes, size=24):
    """``files`` JPEGs spread over ``classes`` class folders under root/train (skipped if already there)."""
    from PIL import Image

    marker = os.path.join(root, f".complete-{files}-{classes}")
    if os.path.exists(marker):
        return root
    rng = np.random.default_rng(0)
    tiles = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(16)]
    t0 = time.time()
    for c in range(classes):
        folder = os.path.join(root, "train", f"n{c:08d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(c, files, classes):
            tiles[i % len(tiles)].save(os.path.join(folder, f"img_{i:07d}.JPEG"), quality=80)
    open(marker, "w").close()
    print(f"generated {files} files in {classes} classes under {root} in {time.time() - t0:.0f} s", flush=True)
    return root


def first_step_seconds(data, out, resume=None):
    """Seconds from launch to the end of the first training step and to the data pipelines being ready,
    as train.py logs them.

    Each run has 3 one-step epochs and is killed while saving epoch 2 (train.py's crash-test hook), so
    that it leaves a checkpoint to resume from; a resumed run trains epochs 2 and 3.
    """
    if resume:
        cmd = [sys.executable, os.path.join(REPO, "train.py"), "--resume", resume]
    else:  # killed while saving epoch 2 (tests/crash_during_save.py), so a resume has work left
        cmd = [sys.executable, os.path.join(REPO, "tests", "crash_during_save.py"), "2", "--data_dir", data, "--ckpt_save_dir", out,
               "--model", "coat_lite_tiny", "--model_args", TINY, "--image_resize", "32", "--batch_size", "8",
               "--num_samples", "8", "--epoch_size", "3", "--val_while_train", "False", "--device_target", "CPU",
               "--num_parallel_workers", "1", "--log_interval", "1000"]
    env = dict(os.environ, GLOG_v="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != (0 if resume else -9):
        raise SystemExit(f"train.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    found = re.search(r"first training step done ([0-9.]+) s after launch", proc.stderr)
    ready = re.search(r"data pipelines ready ([0-9.]+) s after launch", proc.stderr)
    return float(found.group(1)), float(ready.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the big folder (default 100,000)")
    parser.add_argument("--classes", type=int, default=1000, help="class folders (default 1,000)")
    parser.add_argument("--small", type=int, default=1000, help="files in the small folder (default 1,000)")
    parser.add_argument("--root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "coat_ms_bench_startup"),
                        help="where the generated folders are kept")
    parser.add_argument("--repeats", type=int, default=3, help="runs per folder (the fastest counts)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.small >= args.files:
        raise SystemExit("--small must be smaller than --files")
    big = make_folder(os.path.join(args.root, f"big_{args.files}"), args.files, args.classes)
    small = make_folder(os.path.join(args.root, f"small_{args.small}"), args.small, min(args.classes, args.small))
    runs = os.path.join(args.root, f"runs_{os.getpid()}")
    times = {"small": [], "big": [], "resume": []}
    for repeat in range(args.repeats):  # interleaved, so that a slow spell of the machine hits both folders
        for name, data in (("small", small), ("big", big)):
            out = os.path.join(runs, f"{name}_{repeat}")
            times[name].append(first_step_seconds(data, out))
            print(f"{name:6s} folder: first step after {times[name][-1][0]:.1f} s (data ready after "
                  f"{times[name][-1][1]:.2f} s)", flush=True)
        times["resume"].append(first_step_seconds(big, None, resume=os.path.join(runs, f"big_{repeat}", "latest.ckpt")))
        print(f"resume on the big folder: first step after {times['resume'][-1][0]:.1f} s", flush=True)
    shutil.rmtree(runs)  # this run's own output folders
    resumed = min(times["resume"])
    t_small, t_big = min(t for t, _ in times["small"]), min(t for t, _ in times["big"])
    spread = max(t for t, _ in times["small"]) - t_small  # how much the same run varies on this machine
    per_file_us = (t_big - t_small) / (args.files - args.small) * 1e6
    noise_us = spread / (args.files - args.small) * 1e6
    ready_us = (min(x for _, x in times["big"]) - min(x for _, x in times["small"])) / (args.files - args.small) * 1e6
    imagenet_s = per_file_us * 1.281e6 / 1e6
    print(f"\nstart-up cost per file: {per_file_us:.1f} us (+- {noise_us:.1f} us: the spread of the same small run; "
          f"launch to data pipelines ready: {ready_us:.1f} us per file)"
          f"\n  target <= 50 us per file: {'met' if per_file_us <= 50 else 'NOT met'}"
          f"\n  resume on the big folder: first step after {resumed[0]:.1f} s (a fresh start on it: {t_big:.1f} s)"
          f"\n  ImageNet-1k train split (1.281M files): about {imagenet_s:.0f} s per rank before the first step, "
          f"on top of the fixed start-up ({t_small:.0f} s here: imports, model, graph compilation)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"files": args.files, "small": args.small, "first_step_s": times, "resume_s": resumed[0],
                       "per_file_us": per_file_us, "noise_per_file_us": noise_us, "ready_per_file_us": ready_us,
                       "imagenet_estimate_s": imagenet_s}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
