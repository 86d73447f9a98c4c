"""Per-operator CPU time of one coat_ms step (inference or training) with MindSpore's profiler.

    python benchmarks/profile_ops.py --model coat_lite_tiny --batch 8 --task train

Prints the operator types by total time (share of the profiled steps) and writes MindSpore's raw
profiler files under --out. Use it to see where a step goes before optimising anything.
"""
import argparse
import csv
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_step(model_name, batch, task, size):
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    import coat_ms
    from benchmarks.step import compiled_train_step
    model = coat_ms.create_model(model_name)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32))
    if task == "infer":
        model.set_train(False)
        return lambda: model(x)
    model.set_train(True)
    y = ms.Tensor(np.arange(batch, dtype=np.int32) % 1000)
    opt = nn.AdamWeightDecay(model.trainable_params(), 1e-4, weight_decay=0.05)
    step = compiled_train_step(model, opt)
    return lambda: step(x, y)


def op_table(out_dir):
    """MindSpore's per-op-type CPU records: [(type, ms per step, calls per step)], largest first.

    The profiler counts every step it saw; occurrences / per-step frequency gives that number.
    """
    files = glob.glob(os.path.join(out_dir, "**", "cpu_op_type_info_*.csv"), recursive=True)
    if not files:
        raise SystemExit(f"error: the profiler wrote no cpu_op_type_info_*.csv under {out_dir}")
    rows = []
    with open(max(files, key=os.path.getmtime), newline="") as f:
        for r in csv.DictReader(f):
            steps = max(1, round(int(r["type_occurrences"]) / max(1, int(r["execution_frequency(per-step)"]))))
            rows.append((r["op_type"], float(r["total_compute_time"]) / steps, int(r["execution_frequency(per-step)"])))
    return sorted(rows, key=lambda r: -r[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="coat_lite_tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--task", choices=("infer", "train"), default="train")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps after one warm-up step")
    parser.add_argument("--out", default="./profile_out")
    args = parser.parse_args(argv)

    import mindspore as ms

    from coat_ms.runtime import configure_runtime
    ms.set_context(mode=ms.GRAPH_MODE)
    configure_runtime()  # as the coat_ms tools run
    step = build_step(args.model, args.batch, args.task, args.size)
    step()  # compile outside the profile
    from mindspore import Profiler
    profiler = Profiler(output_path=args.out)
    t0 = time.time()
    for _ in range(args.steps):
        out = step()
    float(out.asnumpy().ravel()[0])
    wall = (time.time() - t0) / args.steps
    profiler.analyse()
    table = op_table(args.out)
    total = sum(t for _, t, _ in table)
    if total <= 0:
        raise SystemExit("error: the profiler recorded no operator time")
    print(f"{args.model} {args.task} batch {args.batch} {args.size}x{args.size}: {wall * 1000:.0f} ms/step wall "
          f"(profiled, {args.steps} steps); op time {total:.0f} ms/step")
    print(f"{'op type':28s} {'ms/step':>9s} {'share':>7s} {'calls/step':>10s}")
    for op, t, n in table[:25]:
        print(f"{op:28s} {t:9.1f} {100 * t / total:6.1f}% {n:10d}")


if __name__ == "__main__":
    main()
