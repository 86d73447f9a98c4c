#!/usr/bin/env bash
# One setup path for the README commands and CI: a .venv with every pinned dependency.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: coat_ms needs Python 3.11 (mindspore 2.10 wheels); found $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ -f "$stamp" ]; then
    exit 0
fi
echo "==> creating .venv and installing coat_ms with its pinned dependencies (first time: a few minutes)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --progress-bar off -e ".[dev]"
rm -f .venv/.installed-*
touch "$stamp"
echo "==> .venv ready"
