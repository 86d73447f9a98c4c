"""Test tiers (see README, Tests): ``make test`` runs what is not ``slow``; ``make test-slow`` runs the two slow
kinds, ``artefacts`` (every shipped recipe, documented command and variant, as shipped) and ``studies``
(numerical studies over the full-size variants).

``make test`` spreads the tests over two pytest-xdist workers (``-n 2 --dist loadgroup``) in groups: each test
file is one group, so its module fixtures are built once, and the files that read the session's shared train.py
run (tests/conftest.py, ``trained_run``) form one group, so that run happens once.  The longest groups are handed
out first, so that neither worker is left alone with a long group at the end."""
import os

import pytest

from coat_ms.runtime import BLOCKING_RUN

# Graphs run in the test processes as the CLIs run them on CPU (coat_ms.runtime.configure_runtime, which every
# CLI's start-up calls): on the calling thread. Otherwise MindSpore's waiting thread spins on a core the other
# test worker needs (test_models and two parity files: 150 s -> 125 s, 18 % less CPU). A value already set wins.
os.environ.setdefault(BLOCKING_RUN, "1")

SLOW_KINDS = ("artefacts", "studies")
SHARED_RUN = "trained_run"
# make test's longest groups, longest first (measured with --durations); the others follow in collection order
LONGEST_GROUPS = (SHARED_RUN, "tests/test_distributed.py", "tests/test_models.py", "tests/test_train_engine.py",
                  "tests/test_amp.py", "tests/test_export.py", "tests/test_failure_rules.py")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers, and before xdist reads groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)
    if not getattr(config.option, "loadgroup", False):
        return
    sharing = {file_of(item) for item in items if SHARED_RUN in item.fixturenames}
    groups = {id(item): SHARED_RUN if file_of(item) in sharing else file_of(item) for item in items}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[id(item)]))
    order = {name: rank for rank, name in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda item: order.get(groups[id(item)], len(order)))  # stable: collection order otherwise


def pytest_collection_finish(session):
    """pytest-xdist puts the group into each test's id; with pytest 9.2 that silently stopped working
    (pytest-xdist issue 1386: every fixture was then built on both workers). Stop rather than run ungrouped."""
    if getattr(session.config.option, "loadgroup", False) and any("@" not in item.nodeid for item in session.items):
        raise pytest.UsageError("pytest-xdist ignored the test groups of --dist loadgroup (pytest-xdist issue 1386, "
                                "pytest >= 9.2): install the pytest version pyproject.toml pins")


def file_of(item):
    return item.nodeid.split("::", 1)[0]
