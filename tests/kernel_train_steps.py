"""Run three compiled SGD training steps of a narrow CoaT and print the losses and final weights' digest.

Used by tests/test_kernels.py in a subprocess (with and without COAT_MS_CPU_KERNELS) so that a hang
is a timeout, not a stuck test run.
"""
import json
import sys

import mindspore as ms
import numpy as np
from mindspore import nn

import coat_ms
from benchmarks.step import compiled_train_step


def main(out_path):
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    model = coat_ms.create_model("coat_tiny", num_classes=5, embed_dims=(32, 32, 32, 32),
                                 serial_depths=(1, 1, 1, 1), parallel_depth=1)
    model.set_train(True)
    opt = nn.SGD(model.trainable_params(), learning_rate=0.05, momentum=0.9)
    step = compiled_train_step(model, opt)

    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    y = ms.Tensor(np.array([1, 3], np.int32))
    losses = [float(step(x, y).asnumpy()) for _ in range(3)]
    weights = {p.name: p.asnumpy() for p in model.trainable_params()}
    np.savez(out_path, **weights)
    print(json.dumps({"losses": losses, "kernel": model.backend.name == "cpu_kernels"}))


if __name__ == "__main__":
    main(sys.argv[1])
