"""Shared fixtures: MindSpore execution mode and a per-session cache of built models."""
import mindspore as ms
import numpy as np
import pytest


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture
def pynative_mode():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def random_images(shape, seed=0):
    return ms.Tensor(np.random.RandomState(seed).rand(*shape).astype(np.float32))


def pytest_terminal_summary(terminalreporter):
    """The recipe smoke runs' wall times (README's Recipes table is filled from this output)."""
    import sys
    helpers = sys.modules.get("helpers")
    times = getattr(helpers, "RECIPE_TIMES", {}) if helpers else {}
    if times:
        terminalreporter.write_sep("-", "recipe smoke runs (one epoch on CPU, train.py wall time)")
        for name, seconds in sorted(times.items()):
            terminalreporter.write_line(f"{name}: {seconds:.0f} s")
