"""Data-parallel equality check: N ranks x B/N images == one process x B images.

    mpirun -n 2 python -m coat_ms.train.ddp_check --data_dir D --out O        (or msrun ... -m style, see docs)
    python -m coat_ms.train.ddp_check --data_dir D --out O --reference       (single process, reads O/rank*.npz)

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

if __name__ == "__main__" and not __package__:  # run as a file (msrun takes a script path, not -m)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    import coat_ms.train  # noqa: F401
    __package__ = "coat_ms.train"

TINY = {"embed_dims": [32, 32, 32, 32], "serial_depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]}


def check_config(data_dir, batch_size):
    from ..config import merged
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

    from .engine import build_model, build_optimizer_and_schedule, build_train_step

    ms.set_seed(cfg["seed"])
    model = build_model(cfg)
    optimizer, _ = build_optimizer_and_schedule(cfg, model, len(batches))
    train_step = build_train_step(cfg, model, optimizer, "CPU")
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
    parser = argparse.ArgumentParser(prog="python -m coat_ms.train.ddp_check", description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--global_batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="single-process run on the ranks' batches")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    from . import distributed
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
    from ..data import create_split_loader
    cfg = check_config(args.data_dir, args.global_batch // dist.size)
    loader, _ = create_split_loader(cfg, "train", is_training=True, num_shards=dist.size, shard_id=dist.rank)
    batches = []
    for x, y in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
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
    code = main()
    sys.stdout.flush()
    if os.environ.get("MS_ROLE"):  # a cluster worker unregisters in MindSpore's exit handlers
        sys.exit(code or 0)
    os._exit(code or 0)
