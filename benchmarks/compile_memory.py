"""Memory MindSpore keeps per compiled full-size model (why scripts/test_slow.py runs a process per test file).

    .venv/bin/python benchmarks/compile_memory.py [--models coat_small coat_lite_medium] [--rounds 5]

Builds each model, runs it once in GRAPH_MODE, deletes it, collects garbage and trims the C heap, and
prints the process's resident memory after each step: what stays after the trim is what MindSpore keeps.
"""
import argparse
import ctypes
import gc

import mindspore as ms
import numpy as np

import coat_ms


def resident_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["coat_small", "coat_lite_medium"])
    parser.add_argument("--rounds", type=int, default=3, help="times the model list is built and run")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    x = ms.Tensor(np.random.default_rng(0).random((2, 3, 224, 224), np.float32))
    libc = ctypes.CDLL("libc.so.6")
    for round_ in range(args.rounds):
        for name in args.models:
            model = coat_ms.create_model(name)
            model.set_train(False)
            model(x).asnumpy()
            ran = resident_gb()
            del model
            gc.collect()
            libc.malloc_trim(0)
            print(f"round {round_ + 1} {name}: {ran:.2f} GB after the run, {resident_gb():.2f} GB after delete + trim",
                  flush=True)


if __name__ == "__main__":
    main()
