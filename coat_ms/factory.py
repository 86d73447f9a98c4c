"""create_model: build a CoaT variant by name, mindcv style, optionally loading a checkpoint."""
import difflib
import inspect

from .checkpoint import load_checkpoint
from .errors import CoatError
from .models.coat import CoaT
from .registry import get_pretrained_cfg, model_entrypoint

_COAT_OPTIONS = tuple(inspect.signature(CoaT.__init__).parameters)[1:]


def create_model(model_name, pretrained=False, num_classes=1000, in_channels=3, drop_rate=0.0,
                 drop_path_rate=0.0, checkpoint_path=None, strict=True, **overrides):
    """Build ``model_name`` (see ``list_models()``).

    ``overrides`` go to the CoaT constructor (e.g. ``align_corners=True`` for mindcv-compatible
    parallel blocks, ``proj_drop_rate``, ``embed_dims``).  ``checkpoint_path`` loads a MindSpore
    .ckpt strictly: any missing, unused or mis-shaped parameter is an error (``strict=False`` loads
    what matches and reports the rest).
    """
    entrypoint = model_entrypoint(model_name)
    for key in overrides:
        if key not in _COAT_OPTIONS:
            close = difflib.get_close_matches(key, _COAT_OPTIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise CoatError(f"unknown model option '{key}'{hint}; valid options: {', '.join(_COAT_OPTIONS)}")
    if pretrained:
        cfg = get_pretrained_cfg(model_name)
        if not cfg.get("url"):
            raise CoatError(f"no pretrained weights are hosted for '{model_name}': convert a PyTorch checkpoint "
                            f"with 'python -m convert --src X.pth --out X.ckpt' and pass checkpoint_path='X.ckpt'")
    model = entrypoint(num_classes=num_classes, in_chans=in_channels, drop_rate=drop_rate,
                       drop_path_rate=drop_path_rate, **overrides)
    if checkpoint_path:
        load_checkpoint(model, checkpoint_path, strict=strict)
    return model
