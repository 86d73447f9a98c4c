"""coat_ms: the CoaT vision transformers in MindSpore, faithful to the official model.

The public names load on first use, so ``import coat_ms.config`` (and every CLI's argument check)
runs before MindSpore is imported.
"""
import importlib

from .errors import CheckpointError, CoatError, UnknownModelError

__version__ = "0.1.0"

_LAZY = {"CoaT": ".models.coat", "create_model": ".factory", "list_models": ".registry", "is_model": ".registry",
         "get_pretrained_cfg": ".registry", "load_checkpoint": ".checkpoint"}

__all__ = ["CoaT", "create_model", "list_models", "is_model", "get_pretrained_cfg", "load_checkpoint",
           "CoatError", "CheckpointError", "UnknownModelError", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coat_ms' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
