"""The embedded default: train a small CoaT-Lite on scikit-learn's handwritten digits, on CPU, then validate.

    python -m coat_ms.demo [--epochs N] [--data_dir ./demo_data] [--out ./outputs/demo_digits]

Writes the digits as an ImageFolder of 32x32 PNGs (1438 train / 359 val), trains with the demo
config (shipped inside the package: coat_ms/configs/demo_digits_cpu.yaml, also configs/ in a checkout)
and prints the validation Top-1/Top-5 and where the outputs are.  An output folder that already holds
a run is kept: the new run goes to the next free name (outputs/demo_digits-2, ...).
"""
import argparse
import os
import sys
import time

from .cli import STARTED_AT, run_cli

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo_digits_cpu.yaml")


def free_run_folder(folder):
    """``folder``, or ``folder-2``, ``folder-3``... when it already holds a run."""
    from .train.run_folder import run_files

    candidate, n = folder, 1
    while run_files(candidate):
        n += 1
        candidate = f"{folder}-{n}"
    return candidate


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m coat_ms.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="./demo_data", help="where the digits ImageFolder is written")
    parser.add_argument("--out", default="./outputs/demo_digits", help="checkpoints, results.csv, results.png")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epoch_size")
    parser.add_argument("--config", default=CONFIG, help="training config")
    args = parser.parse_args(argv)
    from .config import load_yaml, merged
    from .datasets.digits import write_digits_imagefolder

    out = free_run_folder(args.out)
    cfg = merged(load_yaml(args.config), source=args.config, data_dir=args.data_dir, ckpt_save_dir=out,
                 epoch_size=args.epochs)
    counts = write_digits_imagefolder(args.data_dir, image_size=32)
    print(f"digits ImageFolder: {os.path.abspath(args.data_dir)} ({counts['train']} train / {counts['val']} val)")

    from .cli import start
    start("CPU")
    from .train.engine import train
    summary = train(cfg, started_at=STARTED_AT)
    m = summary["metrics"]
    minutes = (time.time() - STARTED_AT) / 60
    print(f"\nvalidation ({m['num_images']} images): {{'Top_1_Accuracy': {m['Top_1_Accuracy']:.4f}, "
          f"'Top_5_Accuracy': {m['Top_5_Accuracy']:.4f}, 'Loss': {m['Loss']:.4f}}}  after {summary['epochs']} epochs, "
          f"{minutes:.1f} min")
    print(f"outputs: {os.path.abspath(out)}: latest.ckpt, {os.path.basename(summary['best'] or '-')}, "
          f"results.csv, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
