"""CPU benchmark of coat_ms vs timm vs mindcv; see ``python benchmarks/bench.py --help`` and docs/performance.md."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coat_ms.bench import main  # noqa: E402
from coat_ms.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
