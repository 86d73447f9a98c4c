"""Memory MindSpore keeps per compiled full-size model (why scripts/test_slow.py runs a process per test file).

    .venv/bin/python benchmarks/compile_memory.py [--models coat_small coat_lite_medium] [--rounds 3]

Builds each model, runs it once in GRAPH_MODE, deletes it, collects garbage and trims the C heap, and
prints the process's resident memory after each step: what stays after the trim is what MindSpore keeps.
"""
import argparse
import gc
import os
import sys

import mindspore as ms
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout's coat_ms
import coat_ms  # noqa: E402
from coat_ms.runtime import release_freed_host_memory  # noqa: E402


def resident_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["coat_small", "coat_lite_medium"])
    parser.add_argument("--rounds", type=int, default=3, help="times the model list is built and run")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    x = ms.Tensor(np.random.default_rng(0).random((2, 3, 224, 224), np.float32))
    for round_ in range(args.rounds):
        for name in args.models:
            model = coat_ms.create_model(name)
            model.set_train(False)
            model(x).asnumpy()
            ran = resident_gb()
            del model
            gc.collect()
            release_freed_host_memory()
            print(f"round {round_ + 1} {name}: {ran:.2f} GB after the run, {resident_gb():.2f} GB after delete + trim",
                  flush=True)


if __name__ == "__main__":
    main()
