"""Test tiers (see README, Tests): ``make test`` runs what is not ``slow``; ``make test-slow`` runs the two slow
kinds, ``artefacts`` (every shipped recipe, documented command and variant, as shipped) and ``studies``
(numerical studies over the full-size variants)."""
import pytest

SLOW_KINDS = ("artefacts", "studies")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(items):
    grouped = items and items[0].config.pluginmanager.hasplugin("xdist")
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)
        if grouped:  # `-n 2 --dist loadgroup` (Makefile): a worker builds each expensive fixture once
            item.add_marker(pytest.mark.xdist_group(xdist_group(item)))


def xdist_group(item):
    """A module's tests run in one worker (its module fixtures are built once); so do all the tests that read
    the session's shared train.py run (tests/conftest.py, trained_run), whatever their module."""
    return "trained_run" if "trained_run" in item.fixturenames else item.nodeid.split("::", 1)[0]
