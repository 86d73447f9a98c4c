"""The CPU runtime settings coat_ms applies (coat_ms/runtime.py): blocking graph runs and heap trimming."""
import mindspore as ms
import numpy as np

import coat_ms
import coat_ms.models.coat as coat_module
from coat_ms import runtime


def test_blocking_run_is_set_on_cpu_and_a_user_value_is_kept(monkeypatch):
    monkeypatch.delenv(runtime.BLOCKING_RUN, raising=False)
    assert runtime.use_blocking_cpu_run() is True
    assert runtime.os.environ[runtime.BLOCKING_RUN] == "1"
    monkeypatch.setenv(runtime.BLOCKING_RUN, "0")  # the user's opt-out wins
    assert runtime.use_blocking_cpu_run() is False
    assert runtime.os.environ[runtime.BLOCKING_RUN] == "0"


def test_creating_a_model_turns_blocking_runs_on(monkeypatch):
    monkeypatch.delenv(runtime.BLOCKING_RUN, raising=False)
    coat_ms.create_model("coat_lite_tiny", num_classes=3, embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1))
    assert runtime.os.environ.get(runtime.BLOCKING_RUN) == "1"


def test_heap_is_trimmed_once_per_new_compilation(monkeypatch, graph_mode):
    calls = []
    real = coat_module.release_freed_host_memory

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(coat_module, "release_freed_host_memory", counting)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=3, embed_dims=(16, 16, 16, 16),
                                 serial_depths=(1, 1, 1, 1))
    model.set_train(False)
    x = ms.Tensor(np.zeros((1, 3, 32, 32), np.float32))
    first = model(x).asnumpy()
    second = model(x).asnumpy()
    assert len(calls) == 1, "the same input signature must not trim again"
    model(ms.Tensor(np.zeros((2, 3, 32, 32), np.float32))).asnumpy()
    assert len(calls) == 2, "a new input shape compiles a new graph and trims once more"
    np.testing.assert_array_equal(first, second)
    assert isinstance(real(), bool)
