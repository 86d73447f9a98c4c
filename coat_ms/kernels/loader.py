"""Decide once per process whether a C++ kernel is used: CPU target, not disabled, built, self-checked.

Any failure is logged once as a warning and the caller keeps MindSpore's stock operators.
``COAT_MS_CPU_KERNELS=0`` turns all kernels off; ``COAT_MS_CPU_KERNELS_OFF=gemm,gelu`` turns off the
named ones (dwconv, rowops, gelu, gemm), to measure what each brings.
"""
import logging
import os

import mindspore as ms

logger = logging.getLogger(__name__)

_LOADED = {}  # name -> {"ops": ... or None, "reason": str}


def device_is_cpu():
    return ms.get_context("device_target") == "CPU"


def load(name, factory):
    """``factory()`` builds and self-checks the kernel's primitives; returns them or None (stock op)."""
    if os.environ.get("COAT_MS_CPU_KERNELS", "1") == "0" or not device_is_cpu():
        return None
    if name in os.environ.get("COAT_MS_CPU_KERNELS_OFF", "").replace(" ", "").split(","):
        return None
    if name not in _LOADED:
        try:
            _LOADED[name] = {"ops": factory(), "reason": ""}
        except Exception as exc:  # any failure means: use the stock op, loudly
            _LOADED[name] = {"ops": None, "reason": str(exc)}
            logger.warning("coat_ms: CPU %s kernel unavailable, using the stock op: %s", name, exc)
    return _LOADED[name]["ops"]


def reason(name):
    """Why a kernel fell back ('' when it loaded or was never tried)."""
    return _LOADED.get(name, {}).get("reason", "")


def forget(name):
    """Drop the cached decision (tests)."""
    return _LOADED.pop(name, None)


def restore(name, state):
    if state is not None:
        _LOADED[name] = state
