"""Shared plumbing for the command-line tools: one-line errors, Ctrl-C, device selection, a quiet exit.

Usage in a CLI module::

    def main(argv=None): ...
    if __name__ == "__main__":
        run_cli(main)
"""
import logging
import os
import signal
import sys
import time

from .errors import CoatError

# When the process started (train.py's start-up time is measured from here, imports included).
STARTED_AT = time.time()


def setup_logging(verbose=False):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only


def fail(message, code=2):
    """Print ``error: message`` on stderr and exit non-zero (no traceback)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def _interrupted(signum, frame):
    # Runs as soon as the interpreter gets control, also between the graph compiler's Python callbacks;
    # files are only ever replaced atomically, so stopping here leaves the last complete checkpoint intact.
    fail("interrupted", code=130)


def stop_on_ctrl_c():
    """Ctrl-C (SIGINT) and SIGTERM stop any phase promptly with ``error: interrupted`` and exit 130.

    MindSpore installs its own handlers once it starts (its runtime turns SIGINT into SIGTERM of the
    process: exit 143 with no message); ours are set again after it is imported.
    """
    signal.signal(signal.SIGINT, _interrupted)
    if not os.environ.get("MS_ROLE"):  # cluster workers: MindSpore's handler lets the scheduler see the exit
        signal.signal(signal.SIGTERM, _interrupted)


def use_device(target):
    """Select the MindSpore backend (None: the one this build was made for); one line if it is absent."""
    import mindspore as ms

    if target and target != ms.get_context("device_target"):  # the same device again (a second in-process run) is fine
        try:
            ms.set_device(target)
        except (RuntimeError, ValueError):
            built = "CPU" if "CPU" in str(ms.get_context("device_target")) else ms.get_context("device_target")
            raise CoatError(f"device_target {target} is not available: this MindSpore build runs on {built}; "
                            f"pass --device_target {built} (or install MindSpore for {target})") from None
    stop_on_ctrl_c()
    return ms.get_context("device_target")


def start(cfg):
    """Launcher, device, runtime tuning, execution mode and ranks for a run configured by ``cfg`` (train.py,
    validate.py); returns the DistInfo.  Only rank 0 logs progress."""
    from .train import distributed
    if cfg["distribute"]:
        # Before MindSpore starts: under mpirun on CPU this sets up the dynamic cluster.
        distributed.map_mpirun_to_dynamic_cluster(cfg["device_target"])
    import mindspore as ms

    from .runtime import configure_runtime
    device = use_device(cfg["device_target"])
    configure_runtime(device)
    ms.set_context(mode=ms.PYNATIVE_MODE if cfg["mode"] == 1 else ms.GRAPH_MODE)
    dist = distributed.init_distributed(cfg["distribute"], device)
    if not dist.is_main:
        logging.getLogger("coat_ms").setLevel(logging.WARNING)
    return dist


def run_cli(main, argv=None):
    """Run ``main(argv)``; user errors become one line on stderr and exit code 2.

    Exits with os._exit after flushing, because MindSpore 2.10 may print 'Exception ignored in
    Cell.__del__' noise while the interpreter shuts down (distributed workers excepted, see below).
    """
    setup_logging()
    stop_on_ctrl_c()
    try:
        code = main(argv)
    except CoatError as exc:
        fail(str(exc))
    except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        fail(f"{exc.strerror}: {exc.filename}")
    except OSError as exc:
        if exc.errno is None:
            raise
        fail(f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}")
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
