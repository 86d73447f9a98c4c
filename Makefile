# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
.PHONY: setup demo test test-slow

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m coat_ms.demo

test: setup
	.venv/bin/python -m pytest -q

test-slow: setup
	.venv/bin/python -m pytest -q -m slow
