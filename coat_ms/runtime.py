"""MindSpore runtime tuning for coat_ms, applied by ``configure_runtime`` and nowhere else.

Every CLI's start-up (coat_ms.cli.start: train.py, validate.py, export.py, predict, the demo) calls
it once after choosing the device, and so do the benchmark's workers; a Python user calls it the same
way. Building a model changes no process state.

On the CPU target it arranges two things (Ascend and GPU: nothing):

* ``MS_DEV_HOST_BLOCKING_RUN=1``. MindSpore 2.10 runs a compiled graph on a worker thread while the
  calling (Python) thread waits for it in a busy loop (``AsyncRQueue::Wait``, seen with gdb at
  100 % CPU). On a 2-core machine that waiter takes one of the two cores the kernels need: a
  coat_lite_tiny training step (batch 8) took 1.47 s that way and 0.90 s with the switch, which
  makes the calling thread run the graph itself (MindSpore reads it at each run). A value the user
  already set is left alone: ``MS_DEV_HOST_BLOCKING_RUN=0`` opts out.
* Heap trimming after each new graph compilation of a CoaT model (``after_graph_compile``, called
  by ``CoaT.compile``): compiling coat_tiny frees ~350 MB of scratch that glibc would keep, and the
  first run then allocates its activations on top of it (batch 8 inference, steady RSS 1904 -> 1548 MB).

See docs/performance.md.
"""
import ctypes
import ctypes.util
import dataclasses
import logging
import os

logger = logging.getLogger(__name__)

BLOCKING_RUN = "MS_DEV_HOST_BLOCKING_RUN"


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """What ``configure_runtime`` arranged."""

    device_target: str
    blocking_run: bool = False  # graphs run on the calling thread
    trim_after_compile: bool = False  # the C heap is trimmed after each new CoaT graph


_settings = RuntimeSettings(device_target="")  # nothing arranged until configure_runtime is called


def configure_runtime(device_target=None, trim_after_compile=True):
    """Tune MindSpore's runtime for coat_ms in this process; returns the RuntimeSettings in effect.

    ``device_target``: the target the models run on (default: MindSpore's current one). Call it after
    choosing the device (``mindspore.set_device``) and before the first graph runs. Calling it again
    is harmless.
    """
    global _settings
    if device_target is None:
        import mindspore as ms
        device_target = ms.get_context("device_target")
    if device_target != "CPU":
        _settings = RuntimeSettings(device_target)
        return _settings
    if BLOCKING_RUN not in os.environ:
        os.environ[BLOCKING_RUN] = "1"
        logger.debug("coat_ms: %s=1 (CPU target: run graphs on the calling thread)", BLOCKING_RUN)
    _settings = RuntimeSettings(device_target, blocking_run=os.environ[BLOCKING_RUN] == "1",
                                trim_after_compile=bool(trim_after_compile))
    return _settings


def current_settings():
    """The RuntimeSettings of the last ``configure_runtime`` call (all off before the first)."""
    return _settings


def after_graph_compile():
    """Called by ``CoaT.compile`` after each new compilation; trims the heap if ``configure_runtime`` asked to."""
    return _settings.trim_after_compile and release_freed_host_memory()


def release_freed_host_memory():
    """Hand memory that is free in the C heap back to the OS (glibc ``malloc_trim``); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False

