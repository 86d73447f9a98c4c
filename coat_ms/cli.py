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
import threading
import time

from .errors import CoatError

# When the process started (train.py's start-up time is measured from here, imports included).
STARTED_AT = time.time()


def setup_logging(verbose=False):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only


_FAILING = threading.Lock()


def fail(message, code=2):
    """Print ``error: message`` on stderr and exit non-zero (no traceback); the first caller wins."""
    if not _FAILING.acquire(blocking=False):  # the signal watcher and the handler may both get here
        time.sleep(60)
        os._exit(code)
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def _interrupted(signum, frame):
    # Runs as soon as the interpreter gets control, also between the graph compiler's Python callbacks;
    # files are only ever replaced atomically, so stopping here leaves the last complete checkpoint intact.
    fail("interrupted", code=130)


_WATCHER = None


def _watch_signals(read_fd):
    """Exit on SIGINT/SIGTERM even while the main thread waits inside MindSpore (C++ never hands control
    back to Python there, so the Python-level handler would not run): Python's C signal handler writes
    each signal's number to the wakeup fd, and this thread, which needs no help from the main thread,
    reads it."""
    while True:
        try:
            received = os.read(read_fd, 64)
        except InterruptedError:
            continue
        if not received:
            return
        for number in set(received) & {signal.SIGINT, signal.SIGTERM}:
            if signal.getsignal(number) is _interrupted:  # not where MindSpore's own handler is in charge
                fail("interrupted", code=130)


def _start_signal_watcher():
    global _WATCHER
    if _WATCHER is None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        _WATCHER = (read_fd, write_fd)
        threading.Thread(target=_watch_signals, args=(read_fd,), name="coat_ms-signals", daemon=True).start()
    signal.set_wakeup_fd(_WATCHER[1], warn_on_full_buffer=False)


def stop_on_ctrl_c():
    """Ctrl-C (SIGINT) and SIGTERM stop any phase promptly with ``error: interrupted`` and exit 130,
    also while the process waits inside MindSpore (a stuck data worker, a graph run).

    MindSpore installs its own handlers once it starts (its runtime turns SIGINT into SIGTERM of the
    process: exit 143 with no message); ours are set again after it is imported.  Only the main
    thread may do this (in-process callers on other threads keep their own handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _interrupted)
    if not os.environ.get("MS_ROLE"):  # cluster workers: MindSpore's handler lets the scheduler see the exit
        signal.signal(signal.SIGTERM, _interrupted)
    _start_signal_watcher()


def use_device(target):
    """Select the MindSpore backend (None: the one this build was made for); one line if it is absent."""
    import mindspore as ms

    if target and target != ms.get_context("device_target"):  # set once per process; the same again is fine
        try:
            ms.set_device(target)
        except (RuntimeError, ValueError):
            built = "CPU" if "CPU" in str(ms.get_context("device_target")) else ms.get_context("device_target")
            raise CoatError(f"device_target {target} is not available: this MindSpore build runs on {built}; "
                            f"pass --device_target {built} (or install MindSpore for {target})") from None
    stop_on_ctrl_c()
    return ms.get_context("device_target")


def start(device_target=None, mode=0, distribute=False):
    """The start-up of every tool that runs MindSpore, in one order: the launcher (under mpirun on CPU,
    the dynamic cluster, set up before MindSpore starts), the device (None: the one MindSpore was built
    for), the runtime tuning (coat_ms.runtime.configure_runtime), the execution mode (0: GRAPH_MODE,
    1: PYNATIVE_MODE, mindcv's ``mode`` key) and the ranks.  Returns the DistInfo; only rank 0 logs progress."""
    from .train import distributed
    if distribute:
        distributed.map_mpirun_to_dynamic_cluster(device_target)
    import mindspore as ms

    from .runtime import configure_runtime
    device = use_device(device_target)
    configure_runtime(device)
    ms.set_context(mode=ms.PYNATIVE_MODE if mode == 1 else ms.GRAPH_MODE)
    dist = distributed.init_distributed(distribute, device)
    if not dist.is_main:
        logging.getLogger("coat_ms").setLevel(logging.WARNING)
    return dist


def error_message(exc):
    """The one line a user error becomes (``error: <line>``, exit 2); None for an exception that is a bug."""
    if isinstance(exc, CoatError):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}"
    return None


def run_cli(main, argv=None):
    """Run ``main(argv)``; user errors become one line on stderr and exit code 2.

    Exits with os._exit after flushing, because MindSpore 2.10 may print 'Exception ignored in
    Cell.__del__' noise while the interpreter shuts down (distributed workers excepted, see below).
    """
    setup_logging()
    stop_on_ctrl_c()
    try:
        code = main(argv)
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except (CoatError, OSError) as exc:
        message = error_message(exc)
        if message is None:
            raise
        fail(message)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get("MS_ROLE"):
        from .train.distributed import stop_own_scheduler
        if not stop_own_scheduler():
            # A cluster worker under msrun must exit through the interpreter: MindSpore unregisters from the
            # scheduler in its exit handlers; a worker that vanishes is reported as timed out and the
            # scheduler then kills the ranks still running.
            sys.exit(int(code or 0))
    os._exit(int(code or 0))
