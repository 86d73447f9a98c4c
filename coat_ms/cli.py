"""Shared plumbing for the command-line tools: clean one-line errors and a quiet exit.

Usage in a CLI module::

    def main(argv=None): ...
    if __name__ == "__main__":
        run_cli(main)
"""
import logging
import os
import sys

from .errors import CoatError


def setup_logging(verbose=False):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only


def fail(message, code=2):
    """Print ``error: message`` on stderr and exit non-zero (no traceback)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def run_cli(main, argv=None):
    """Run ``main(argv)``; user errors become one line on stderr and exit code 2.

    Exits with os._exit after flushing, because MindSpore 2.10 may print 'Exception ignored in
    Cell.__del__' noise while the interpreter shuts down (distributed workers excepted, see below).
    """
    setup_logging()
    try:
        code = main(argv)
    except CoatError as exc:
        fail(str(exc))
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        fail(f"{exc.strerror}: {exc.filename}")
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get("MS_ROLE"):
        # A cluster worker (msrun, or mpirun mapped onto the dynamic cluster) must exit through the
        # interpreter: MindSpore unregisters from the scheduler in its exit handlers; a worker that
        # vanishes is reported as timed out and the scheduler then kills the ranks still running.
        sys.exit(int(code or 0))
    os._exit(int(code or 0))
