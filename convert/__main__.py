"""Entry point of ``python -m convert`` (see convert/cli.py)."""
from coat_ms.cli import run_cli

from .cli import main

run_cli(main)
