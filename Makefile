# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Tiers (README, Tests): `make test` what CI runs; `make test-slow` every shipped artefact and every study.
.PHONY: setup demo test test-slow test-artefacts test-studies

PYTEST = .venv/bin/python -m pytest -q --durations=15 -n 2 --dist loadgroup

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m coat_ms.demo

test: setup
	$(PYTEST)

test-slow: setup
	$(PYTEST) -m slow

test-artefacts: setup
	$(PYTEST) -m artefacts

test-studies: setup
	$(PYTEST) -m studies
