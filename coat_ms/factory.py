"""create_model: build a CoaT variant by name, mindcv style, optionally loading a checkpoint."""
from .checkpoint import load_checkpoint
from .errors import CoatError
from .registry import get_pretrained_cfg, model_entrypoint


def create_model(model_name, pretrained=False, num_classes=1000, in_channels=3, drop_rate=0.0,
                 drop_path_rate=0.0, checkpoint_path=None, strict=True, **overrides):
    """Build ``model_name`` (see ``list_models()``).

    ``overrides`` go to the CoaT constructor (e.g. ``align_corners=True`` for mindcv-compatible
    parallel blocks, ``proj_drop_rate``, ``embed_dims``).  ``checkpoint_path`` loads a MindSpore
    .ckpt strictly: any missing, unused or mis-shaped parameter is an error (``strict=False`` loads
    what matches and reports the rest).
    """
    entrypoint = model_entrypoint(model_name)
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
