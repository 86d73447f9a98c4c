"""coat_ms: the CoaT vision transformers in MindSpore, faithful to the official model.

The public names load on first use, so ``import coat_ms.config`` (and every CLI's argument check)
runs before MindSpore is imported.
"""
from .errors import CheckpointError, CoatError, UnknownModelError
from .openmp import cap_spinning

cap_spinning()  # before MindSpore loads libgomp (coat_ms/openmp.py)

__version__ = "0.1.0"

__all__ = ["CoaT", "create_model", "list_models", "is_model", "get_pretrained_cfg", "load_checkpoint",
           "CoatError", "CheckpointError", "UnknownModelError", "__version__"]


def __getattr__(name):
    # plain import statements, so that tests/test_import_graph.py sees what this package depends on
    if name == "CoaT":
        from .models.coat import CoaT as value
    elif name == "create_model":
        from .factory import create_model as value
    elif name in ("list_models", "is_model", "get_pretrained_cfg"):
        from . import registry
        value = getattr(registry, name)
    elif name == "load_checkpoint":
        from .origin import load_checkpoint as value
    else:
        raise AttributeError(f"module 'coat_ms' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
