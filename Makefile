# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Tiers (README, Tests): `make test` what CI runs; `make test-slow` every shipped artefact and every study.
.PHONY: setup demo test test-slow test-artefacts test-studies

PYTEST = .venv/bin/python -m pytest -q --durations=15 -n 2 --dist loadgroup --no-loadscope-reorder

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m coat_ms.demo

test: setup
	$(PYTEST)

# one pytest process per test file, two at a time (scripts/test_slow.py says why: memory)
test-slow: setup
	.venv/bin/python scripts/test_slow.py -m slow

test-artefacts: setup
	.venv/bin/python scripts/test_slow.py -m artefacts

test-studies: setup
	.venv/bin/python scripts/test_slow.py -m studies
