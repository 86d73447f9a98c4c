"""Build and self-check each C++ kernel at most once per process; remember the result.

The kernels: ``dwconv`` (depthwise convolutions on token maps: cpe and crpe), ``rowops`` (LayerNorm,
bias add and its column-sum gradient), ``gelu`` (exact GELU, alone and with fc1's bias fused in),
``attention`` (factorized attention with crpe's product), ``crossscale`` (a parallel block's cross-scale
resizes and sums). Whether a model uses them is not decided
here: that is the model's backend (coat_ms/models/backend.py), chosen once when the model is built.
A kernel that fails to build or disagrees with its reference is logged once as a warning and
reported as unavailable (None), and the backend then leaves it out.
"""
import logging

from ..openmp import choose_kernel_threading

logger = logging.getLogger(__name__)

KERNEL_NAMES = ("dwconv", "rowops", "gelu", "attention", "crossscale")

_LOADED = {}  # name -> {"ops": ... or None, "reason": str}


def load(name, factory):
    """``factory()`` builds and self-checks the kernel's primitives; returns them, or None if that failed."""
    if name not in _LOADED:
        choose_kernel_threading()  # before the first kernel call reads it
        try:
            _LOADED[name] = {"ops": factory(), "reason": ""}
        except Exception as exc:  # any failure means: use the stock op, loudly
            _LOADED[name] = {"ops": None, "reason": str(exc)}
            logger.warning("coat_ms: CPU %s kernel unavailable, using the stock op: %s", name, exc)
    return _LOADED[name]["ops"]


def reason(name):
    """Why a kernel is unavailable ('' when it loaded or was never tried)."""
    return _LOADED.get(name, {}).get("reason", "")


def forget(name):
    """Drop the remembered result (tests); returns it for ``restore``."""
    return _LOADED.pop(name, None)


def restore(name, state):
    if state is not None:
        _LOADED[name] = state
