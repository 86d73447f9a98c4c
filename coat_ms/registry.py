"""Model registry: name -> constructor, and the pretrained configuration of each name."""
import fnmatch

from .errors import UnknownModelError
from .models import coat

_ENTRYPOINTS = {name: getattr(coat, name) for name in coat.VARIANTS}


def list_models(pattern="*"):
    """Sorted names of the registered models matching a shell-style pattern."""
    return sorted(name for name in _ENTRYPOINTS if fnmatch.fnmatch(name, pattern))


def is_model(name):
    return name in _ENTRYPOINTS


def model_entrypoint(name):
    if name not in _ENTRYPOINTS:
        raise UnknownModelError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _ENTRYPOINTS[name]


def get_pretrained_cfg(name):
    """The variant's default config (coat_ms.models.coat.default_cfgs): its eval preprocessing and where its
    pretrained weights are (``hf_hub_id``: timm's, see coat_ms.pretrained)."""
    model_entrypoint(name)  # same error for unknown names
    return dict(coat.default_cfgs[name], architecture=name)
