"""Data-parallel equality check: N ranks x B/N images == one process x B images.

    mpirun -n 2 python tests/ddp_check.py --data_dir D --out O          (or msrun ... tests/ddp_check.py ...)
    python tests/ddp_check.py --data_dir D --out O --reference        (single process, reads O/rank*.npz)

Each rank reads its own shard of the digits ImageFolder (deterministic: no shuffle, no random
augmentation, no dropout), records the averaged gradient of the first batch, trains 3 steps of SGD
with momentum through the same TrainStep train.py uses, and saves its batches and final weights.
The reference run concatenates the ranks' batches step by step and does the same in one process.
"""
import argparse
import glob
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository (a test tool)

TINY = {"embed_dims": [32, 32, 32, 32], "serial_depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]}


def check_config(data_dir, batch_size):
    from coat_ms.config import merged
    return merged({}, data_dir=data_dir, image_resize=32, crop_pct=1.0, num_classes=10, batch_size=batch_size,
                  deterministic=True, model_args=TINY, opt="momentum", lr=0.05, momentum=0.9, weight_decay=0.0,
                  scheduler="constant", warmup_epochs=0, label_smoothing=0.0, drop_rate=0.0, drop_path_rate=0.0,
                  num_parallel_workers=1, epoch_size=1, seed=7, amp_level="O0")


def _grad_cell(net_with_loss, weights, reducer):
    from mindspore import nn, ops

    class GradCell(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.net, self.weights, self.reducer = net_with_loss, weights, reducer
            self.grad = ops.GradOperation(get_by_list=True)

        def construct(self, x, y):
            return self.reducer(self.grad(self.net, self.weights)(x, y))

    return GradCell()


def run(cfg, batches, rank, size):
    """First-batch gradient (averaged over ranks) and weights after len(batches) steps."""
    import mindspore as ms
    from mindspore import nn

    from coat_ms.train.engine import build_model, build_optimizer_and_schedule, build_train_step

    ms.set_seed(cfg["seed"])
    model = build_model(cfg, cfg["num_classes"])
    optimizer, _ = build_optimizer_and_schedule(cfg, model, len(batches))
    train_step = build_train_step(cfg, model, optimizer)
    train_step.set_train(True)
    weights = optimizer.parameters
    reducer = nn.DistributedGradReducer(weights, mean=True, degree=size) if size > 1 else nn.Identity()
    from mindcv.loss import create_loss
    grad_cell = _grad_cell(nn.WithLossCell(model, create_loss("CE")), weights, reducer)
    grads = grad_cell(ms.Tensor(batches[0][0]), ms.Tensor(batches[0][1]))
    out = {f"grad/{p.name}": g.asnumpy() for p, g in zip(weights, grads)}
    for x, y in batches:
        train_step(ms.Tensor(x), ms.Tensor(y))
    out.update({f"weight/{n}": p.asnumpy() for n, p in model.parameters_dict().items()})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tests/ddp_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--global_batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="single-process run on the ranks' batches")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    from coat_ms.train import distributed
    if not args.reference:
        distributed.map_mpirun_to_dynamic_cluster("CPU")
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)

    if args.reference:
        ranks = [dict(np.load(p)) for p in sorted(glob.glob(os.path.join(args.out, "rank*.npz")))]
        if not ranks:
            raise SystemExit(f"no rank*.npz in {args.out}")
        batches = [(np.concatenate([r[f"x{s}"] for r in ranks]), np.concatenate([r[f"y{s}"] for r in ranks]))
                   for s in range(args.steps)]
        cfg = check_config(args.data_dir, args.global_batch)
        np.savez(os.path.join(args.out, "reference.npz"), **run(cfg, batches, 0, 1))
        return 0

    dist = distributed.init_distributed(True, "CPU")
    from coat_ms.data import list_split, train_dataset
    cfg = check_config(args.data_dir, args.global_batch // dist.size)
    loader = train_dataset(cfg, list_split(args.data_dir, "train"), cfg["num_classes"], dist.rank, dist.size)
    batches = []
    for x, y, _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
        batches.append((x, y))
        if len(batches) == args.steps:
            break
    out = run(cfg, batches, dist.rank, dist.size)
    for s, (x, y) in enumerate(batches):
        out[f"x{s}"], out[f"y{s}"] = x, y
    np.savez(os.path.join(args.out, f"rank{dist.rank}.npz"), **out)
    distributed.shutdown_distributed(dist)
    return 0


if __name__ == "__main__":
    from coat_ms.cli import run_cli
    run_cli(main)
