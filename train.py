"""Train a CoaT model, mindcv style.

    python train.py -c configs/coat_lite_tiny_cpu.yaml --data_dir /path/to/imagefolder
    mpirun -n 8 python train.py -c configs/coat_lite_tiny_ascend.yaml --data_dir /path/to/imagenet
    msrun --worker_num 2 --local_worker_num 2 train.py -c ... --distribute     (mpirun on CPU works too)

Every mindcv config key is a flag (--lr 0.001, --ema, --scale 0.08 1.0); flags override the YAML.
"""
import argparse
import logging
import os
import sys

from coat_ms.cli import STARTED_AT, run_cli

logger = logging.getLogger("coat_ms")


def build_parser():
    from coat_ms.config import add_config_flags

    parser = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_config_flags(parser)


def main(argv=None):
    from coat_ms.config import settings_from

    cfg = settings_from(build_parser().parse_args(argv))
    from coat_ms.cli import start
    from coat_ms.train import distributed
    dist = start(cfg["device_target"], cfg["mode"], cfg["distribute"])
    from coat_ms.train.engine import train
    try:
        summary = train(cfg, dist, started_at=STARTED_AT)
    finally:
        distributed.shutdown_distributed(dist)
    if dist.is_main:
        print_summary(summary, dist)
    return 0


def print_summary(summary, dist):
    from coat_ms.train.monitor import duration, output_listing

    print(f"done: {summary['epochs']} epochs, {summary['steps']} steps on {dist.size} rank(s) in "
          f"{duration(summary['elapsed_s'])} (start-up: first step {summary['first_step_s'] or 0:.1f} s after launch)")
    m = summary["metrics"]
    if m:
        print(f"validation ({m['num_images']} images): {{'Top_1_Accuracy': {m['Top_1_Accuracy']:.4f}, "
              f"'Top_5_Accuracy': {m['Top_5_Accuracy']:.4f}, 'Loss': {m['Loss']:.4f}}}")
    per_epoch = summary["skipped_per_epoch"]
    print(f"unreadable images: {summary['skipped_images']} replaced in training "
          f"({', '.join(str(n) for n in per_epoch)} per epoch; named in the log)"
          f"{', ' + str(m['skipped']) + ' skipped in the last validation' if m and m.get('skipped') else ''}")
    print(f"outputs: {output_listing(summary['out_dir'], summary['best'])}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run_cli(main)
