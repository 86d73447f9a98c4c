"""Shared fixtures: model pairs are built once per test module (building is the slow part)."""
import pytest

from . import harness


@pytest.fixture(scope="module")
def tiny_lite_pair():
    return harness.build_pair("tiny_lite", img_size=64, seed=0)


@pytest.fixture(scope="module")
def tiny_coat_pair():
    return harness.build_pair("tiny_coat", img_size=64, seed=0)
