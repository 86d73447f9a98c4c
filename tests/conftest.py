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
