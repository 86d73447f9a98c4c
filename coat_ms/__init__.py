"""coat_ms: the CoaT vision transformers in MindSpore, faithful to the official model."""
from .checkpoint import load_checkpoint
from .errors import CheckpointError, CoatError, UnknownModelError
from .factory import create_model
from .models.coat import CoaT
from .registry import get_pretrained_cfg, is_model, list_models

__version__ = "0.1.0"

__all__ = ["CoaT", "create_model", "list_models", "is_model", "get_pretrained_cfg", "load_checkpoint",
           "CoatError", "CheckpointError", "UnknownModelError", "__version__"]
