"""MindSpore runtime settings that coat_ms applies on the CPU target.

MindSpore 2.10 runs a compiled graph on a worker thread while the calling (Python) thread waits for
it in a busy loop (``AsyncRQueue::Wait``, seen with gdb at 100 % CPU). On a 2-core machine that
waiter takes one of the two cores the kernels need: a coat_lite_tiny training step (batch 8) took
1.47 s that way and 0.90 s with ``MS_DEV_HOST_BLOCKING_RUN=1``, which makes the calling thread run
the graph itself (docs/performance.md). Devices (Ascend, GPU) keep the asynchronous launch.

A value the user already set is left alone: ``MS_DEV_HOST_BLOCKING_RUN=0`` opts out.
"""
import ctypes
import ctypes.util
import logging
import os

import mindspore as ms

logger = logging.getLogger(__name__)

BLOCKING_RUN = "MS_DEV_HOST_BLOCKING_RUN"


def use_blocking_cpu_run():
    """On the CPU target, have MindSpore run graphs on the calling thread (read by MindSpore at each run).

    Returns True when the setting is in effect.
    """
    if ms.get_context("device_target") != "CPU":
        return False
    if BLOCKING_RUN not in os.environ:
        os.environ[BLOCKING_RUN] = "1"
        logger.debug("coat_ms: %s=1 (CPU target: run graphs on the calling thread)", BLOCKING_RUN)
    return os.environ[BLOCKING_RUN] == "1"


def release_freed_host_memory():
    """Hand memory that is free in the C heap back to the OS (glibc ``malloc_trim``); False where unsupported.

    Graph compilation of coat_tiny frees ~350 MB of scratch that glibc would otherwise keep, and the
    first run then allocates its activations on top of it (measured: steady RSS at batch 8 1904 -> 1548 MB).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def configure_runtime(device_target):
    """Runtime settings coat_ms's CLIs apply once the device is chosen (placeholder until the backend seam lands)."""
    if device_target == "CPU":
        use_blocking_cpu_run()
