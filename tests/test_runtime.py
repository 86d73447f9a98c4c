"""coat_ms.runtime.configure_runtime: the CPU runtime settings (blocking graph runs, heap trimming), applied
only when asked; building a model applies none of them."""
import os

import mindspore as ms
import numpy as np
import pytest

import coat_ms
from coat_ms import runtime


@pytest.fixture
def restore_runtime(monkeypatch):
    """Undo what a test's configure_runtime call arranged (environment and module state)."""
    monkeypatch.delenv(runtime.BLOCKING_RUN, raising=False)
    monkeypatch.setattr(runtime, "_settings", runtime._settings)
    return monkeypatch


def test_cpu_runtime_sets_blocking_runs_and_keeps_a_user_value(restore_runtime):
    settings = runtime.configure_runtime("CPU")
    assert settings == runtime.RuntimeSettings("CPU", blocking_run=True, trim_after_compile=True)
    assert os.environ[runtime.BLOCKING_RUN] == "1"
    restore_runtime.setenv(runtime.BLOCKING_RUN, "0")  # the user's opt-out wins
    assert runtime.configure_runtime().blocking_run is False  # MindSpore's own target: CPU here
    assert os.environ[runtime.BLOCKING_RUN] == "0"
    assert runtime.current_settings().device_target == "CPU"


def test_devices_keep_mindspores_runtime(restore_runtime):
    assert runtime.configure_runtime("Ascend") == runtime.RuntimeSettings("Ascend")
    assert runtime.BLOCKING_RUN not in os.environ
    assert runtime.after_graph_compile() is False


def _count_trims(monkeypatch):
    calls = []
    real = runtime.release_freed_host_memory

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(runtime, "release_freed_host_memory", counting)
    return calls


def _compile(model, batch):
    """Logits of a zero batch: a new graph for each new batch size, the cached one otherwise."""
    return model(ms.Tensor(np.zeros((batch, 3, 32, 32), np.float32))).asnumpy()


def test_heap_is_trimmed_once_per_new_compilation_only_when_configured(restore_runtime, graph_mode):
    calls = _count_trims(restore_runtime)
    restore_runtime.setattr(runtime, "_settings", runtime.RuntimeSettings(""))  # as in a fresh process
    model = coat_ms.create_model("coat_lite_tiny", num_classes=3, embed_dims=(16, 16, 16, 16),
                                 serial_depths=(1, 1, 1, 1))
    model.set_train(False)
    _compile(model, 1)  # before configure_runtime (building a model applies none of it): no trim
    assert calls == []
    runtime.configure_runtime("CPU")
    _compile(model, 2)
    np.testing.assert_array_equal(_compile(model, 2), _compile(model, 2))
    _compile(model, 3)
    assert len(calls) == 2, "once for each new input shape; not for a cached graph"
    assert isinstance(runtime.release_freed_host_memory(), bool)


@pytest.mark.artefacts
def test_compile_memory_probe_runs_as_readme_names_it():
    """benchmarks/compile_memory.py (README's memory-per-compile figure), on a small model for time: a line per
    build with the resident memory after the run and after delete + trim."""
    import re

    from helpers import run_script
    proc = run_script("benchmarks/compile_memory.py", "--models", "coat_lite_tiny", "--rounds", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.findall(r"round (\d) coat_lite_tiny: ([\d.]+) GB after the run, ([\d.]+) GB after delete \+ trim",
                       proc.stdout)
    assert [r for r, _, _ in found] == ["1", "2"], proc.stdout
    assert all(0.1 < float(after) <= float(ran) for _, ran, after in found), found
