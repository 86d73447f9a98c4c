"""Train a CoaT model, mindcv style.

    python train.py -c configs/coat_lite_tiny_cpu.yaml --data_dir /path/to/imagefolder
    mpirun -n 2 python train.py -c ... --distribute          (CPU: mapped onto MindSpore's dynamic cluster)
    msrun --worker_num 2 --local_worker_num 2 train.py -c ... --distribute
"""
import logging
import os
import sys

from coat_ms.cli import run_cli

logger = logging.getLogger("coat_ms")


def main(argv=None):
    from coat_ms.train.cli_args import build_parser, resolve

    args = build_parser("train.py", __doc__.splitlines()[0]).parse_args(argv)
    cfg = resolve(args)
    from coat_ms.train import distributed
    if cfg["distribute"]:
        # Before MindSpore starts: under mpirun on CPU this sets up the dynamic cluster.
        distributed.map_mpirun_to_dynamic_cluster(cfg["device_target"])
    import mindspore as ms
    if cfg["device_target"]:
        ms.set_device(cfg["device_target"])
    ms.set_context(mode=ms.GRAPH_MODE if cfg["mode"] == 0 else ms.PYNATIVE_MODE)
    dist = distributed.init_distributed(cfg["distribute"], ms.get_context("device_target"))
    if not dist.is_main:
        logging.getLogger("coat_ms").setLevel(logging.WARNING)  # rank 0 alone logs
    from coat_ms.train.engine import train
    try:
        summary = train(cfg, dist)
    finally:
        distributed.shutdown_distributed(dist)
    if dist.is_main:
        m = summary["metrics"]
        print(f"done: {summary['epochs']} epochs, {summary['steps']} steps on {dist.size} rank(s)")
        if m:
            print(f"validation: {{'Top_1_Accuracy': {m['Top_1_Accuracy']:.4f}, 'Top_5_Accuracy': "
                  f"{m['Top_5_Accuracy']:.4f}, 'Loss': {m['Loss']:.4f}}}")
        print(f"outputs: {os.path.abspath(summary['out_dir'])} (latest.ckpt, best: "
              f"{os.path.basename(summary['best']) if summary['best'] else '-'}, results.csv, results.png)")
        if summary["skipped_images"]:
            print(f"skipped {summary['skipped_images']} unreadable training image(s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run_cli(main)
