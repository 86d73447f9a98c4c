"""How long the kernels' idle OpenMP worker may spin, measured: inference latency per GOMP_SPINCOUNT.

    python benchmarks/openmp_spin.py                          # coat_tiny, batch 1 and 8, 3 rounds
    python benchmarks/openmp_spin.py --model coat_lite_tiny --settings 300000,1000 --rounds 5

A setting is GOMP_SPINCOUNT[/COAT_MS_KERNEL_PARALLEL_WORK]. 300000 is libgomp's own default (with it
coat_ms splits every kernel call across threads), 1000 the cap `import coat_ms` sets (small calls then
run on the calling thread), 300000/131072 the mix coat_ms avoids: the long spin with small calls on
the calling thread (coat_ms/openmp.py). libgomp reads GOMP_SPINCOUNT once, when it loads, so every
setting runs in a fresh process; the settings take turns round by round, so load changes on the
machine hit them alike.
Prints the median latency of each (setting, batch) over its rounds (each round's own median of
--calls timed calls, after warm-up).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import json, sys, time
import coat_ms
import numpy as np
import mindspore as ms
from coat_ms.runtime import configure_runtime
configure_runtime()
ms.set_context(mode=ms.GRAPH_MODE)
model, batch, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
net = coat_ms.create_model(model)
net.set_train(False)
x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32))
for _ in range(3):
    net(x).asnumpy()
times = []
for _ in range(calls):
    t = time.perf_counter()
    net(x).asnumpy()
    times.append(time.perf_counter() - t)
print("RESULT " + json.dumps(sorted(times)[len(times) // 2] * 1e3))
"""


def time_once(model, batch, calls, setting):
    spin, _, work = setting.partition("/")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "COAT_MS_KERNEL_PARALLEL_WORK")}
    env.update(GOMP_SPINCOUNT=spin, PYTHONPATH=ROOT)
    if work:
        env["COAT_MS_KERNEL_PARALLEL_WORK"] = work
    proc = subprocess.run([sys.executable, "-c", WORKER, model, str(batch), str(calls)], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: the worker failed (setting {setting}, batch {batch}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="coat_tiny")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--settings", default="300000,1000,300000/131072",
                    help="GOMP_SPINCOUNT[/COAT_MS_KERNEL_PARALLEL_WORK] values (default 300000,1000,300000/131072)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=10, help="timed calls per process (default 10)")
    args = ap.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
        spins = args.settings.split(",")
        if min(int(part) for s in spins for part in s.split("/")) < 0:
            raise ValueError
    except ValueError:
        ap.error("--batches takes comma-separated integers, --settings SPIN or SPIN/WORK integers >= 0")
    if args.rounds < 1 or args.calls < 1 or min(batches) < 1:
        ap.error("--rounds, --calls and the batch sizes must be >= 1")
    results = {(s, b): [] for s in spins for b in batches}
    for r in range(args.rounds):
        for b in batches:
            for s in spins:
                results[(s, b)].append(time_once(args.model, b, args.calls, s))
                print(f"round {r + 1}/{args.rounds}: setting {s} batch {b}: {results[(s, b)][-1]:.1f} ms",
                      flush=True)
    print(f"\n{args.model}, 224x224, inference latency in ms (median over {args.rounds} rounds; rounds in brackets)")
    print("| GOMP_SPINCOUNT[/PARALLEL_WORK] | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---:|" + "---:|" * len(batches))
    for s in spins:
        cells = [f"{statistics.median(results[(s, b)]):.1f} ({', '.join(f'{t:.0f}' for t in results[(s, b)])})"
                 for b in batches]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
