"""Test tiers (see README, Tests): ``make test`` runs what is not ``slow``; ``make test-slow`` runs the two slow
kinds, ``artefacts`` (every shipped recipe, documented command and variant, as shipped) and ``studies``
(numerical studies over the full-size variants)."""
import pytest

SLOW_KINDS = ("artefacts", "studies")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(items):
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)
