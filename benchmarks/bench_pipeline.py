"""Training data pipeline throughput against the model's training step, on realistic JPEGs.

    .venv/bin/python benchmarks/bench_pipeline.py                       # coat_lite_tiny_ascend recipe, batch 16
    .venv/bin/python benchmarks/bench_pipeline.py --config configs/coat_tiny_ascend.yaml --batch_size 8

Times the recipe's own training pipeline (PIL decode in the workers, RandomResizedCrop, flips,
RandAugment, normalise, random erasing, batch, mixup/cutmix) in images/s and CPU milliseconds per
image for 1, 2 and all workers, as threads and as processes (``python_multiprocessing``), on
generated 500x375 JPEGs, then the recipe model's compiled training step (forward, backward,
optimizer) at the same batch size.  Whichever is slower bounds training on this machine; the CPU
cost per image sizes the workers a faster device needs.
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only


def make_jpegs(root, count, classes=10, size=(500, 375)):
    """``count`` photo-like JPEGs (smooth colour fields with noise, ~40 KB each) in ``classes`` folders."""
    from PIL import Image

    marker = os.path.join(root, f".complete-{count}")
    if os.path.exists(marker):
        return root
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = os.path.join(root, "train", f"class_{i % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        base = rng.integers(0, 255, (size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.BICUBIC)
        noisy = np.clip(np.asarray(img, np.int16) + rng.integers(-12, 12, (size[1], size[0], 3)), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(os.path.join(folder, f"img_{i:05d}.jpg"), quality=90)
    open(marker, "w").close()
    return root


def cpu_seconds():
    """CPU time of this process and of its child processes, running (data workers) or done (Linux /proc)."""
    own, done = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid; utime and stime are fields 14 and 15 of stat
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def pipeline_rate(cfg, images, num_classes, workers, batches, processes=False):
    """(images/s, CPU milliseconds per image) of the recipe's training pipeline."""
    from coat_ms.data.pipeline import train_dataset

    loader = train_dataset(dict(cfg, num_parallel_workers=workers, python_multiprocessing=processes), images,
                           num_classes)
    it = loader.create_tuple_iterator(num_epochs=-1, output_numpy=True)
    next(it)  # workers started, queues filling: not counted
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    it.stop()  # its workers must not compete with the next measurement
    count = batches * cfg["batch_size"]
    return count / wall, 1000 * cpu / count


def train_step_rate(cfg, num_classes, steps):
    import mindspore as ms

    from coat_ms.train.engine import build_model, build_optimizer_and_schedule, build_train_step
    model = build_model(cfg, num_classes)
    optimizer, _ = build_optimizer_and_schedule(cfg, model, steps_per_epoch=100)
    step = build_train_step(cfg, model, optimizer)
    step.set_train(True)
    rng = np.random.default_rng(0)
    size = cfg["image_resize"]
    x = ms.Tensor(rng.standard_normal((cfg["batch_size"], 3, size, size)).astype(np.float32))
    y = ms.Tensor(rng.dirichlet(np.ones(num_classes), cfg["batch_size"]).astype(np.float32))  # mixed labels
    step(x, y).asnumpy()  # compile
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    loss.asnumpy()
    return steps * cfg["batch_size"] / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "coat_lite_tiny_ascend.yaml"))
    parser.add_argument("--batch_size", type=int, default=16, help="images per batch, pipeline and step (default 16)")
    parser.add_argument("--images", type=int, default=400, help="generated JPEGs (default 400)")
    parser.add_argument("--batches", type=int, default=24, help="batches timed per worker count (default 24)")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed (default 3)")
    parser.add_argument("--root", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "coat_ms_bench_pipeline"))
    args = parser.parse_args(argv)

    from coat_ms.cli import start
    from coat_ms.config import load_yaml, merged
    from coat_ms.data import list_split

    start("CPU")
    data = make_jpegs(args.root, args.images)
    cfg = merged(load_yaml(args.config), source=args.config, data_dir=data, batch_size=args.batch_size,
                 device_target="CPU", distribute=False, num_classes=10)
    images = list_split(data, "train")
    cores = os.cpu_count() or 1
    print(f"{os.path.basename(args.config)}: batch {args.batch_size}, {cfg['image_resize']}px, "
          f"auto_augment {cfg['auto_augment']}, re_prob {cfg['re_prob']}, mixup {cfg['mixup']}, cutmix {cfg['cutmix']}; "
          f"{len(images)} JPEGs of 500x375; {cores} CPU cores")
    rates, cost = {}, {}
    for processes in (False, True):
        for workers in sorted({1, 2, cores}):
            rate, cpu_ms = pipeline_rate(cfg, images, 10, workers, args.batches, processes)
            rates[(workers, processes)], cost[(workers, processes)] = rate, cpu_ms
            print(f"  data pipeline, {workers} worker {'processes' if processes else 'threads'}: {rate:8.1f} images/s "
                  f"({cpu_ms:.1f} ms of CPU per image)", flush=True)
    step = train_step_rate(cfg, 10, args.steps)
    print(f"  {cfg['model']} training step (forward + backward + {cfg['opt']}): {step:8.1f} images/s")
    best = max(rates.values())
    bound = "the model's training step" if step < best else "the data pipeline"
    cpu_ms = min(cost.values())
    print(f"bounded by {bound} here: pipeline up to {best:.1f} images/s vs step {step:.1f} images/s.\n"
          f"Sizing: the pipeline costs about {cpu_ms:.1f} ms of CPU per image, so a rank that trains at R images/s "
          f"needs about R x {cpu_ms / 1000:.4f} cores of data workers (R = 1000: {cpu_ms:.0f} cores).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
