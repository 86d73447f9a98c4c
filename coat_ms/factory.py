"""Building models with their weights: ``create_model`` (a CoaT variant by name, mindcv style) and
``model_from_checkpoint`` (the model a checkpoint describes)."""
import logging
import numbers
import os

from .checkpoint import ema_weights, load_state, num_classes_in
from .errors import CoatError
from .model_options import check_model_args
from .origin import read_weights
from .registry import model_entrypoint


def _check_own_arguments(**values):
    """create_model's own arguments, checked before anything is built."""
    for name, minimum in (("num_classes", 0), ("in_channels", 1)):
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
            raise CoatError(f"{name} must be an integer >= {minimum}, got {v!r}")
    for name in ("drop_rate", "drop_path_rate"):
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= v < 1.0:
            raise CoatError(f"{name} must be a rate in [0, 1), got {v!r}")


logger = logging.getLogger("coat_ms")


def create_model(model_name, pretrained=False, num_classes=1000, in_channels=3, drop_rate=0.0,
                 drop_path_rate=0.0, checkpoint_path=None, strict=True, **overrides):
    """Build ``model_name`` (see ``list_models()``).

    ``pretrained=True`` loads timm's ImageNet-1k weights of the variant (found in the Hugging Face
    cache or downloaded, converted and cached on first use: see coat_ms.pretrained); with a
    ``num_classes`` other than 1000 the backbone is loaded and the classifier freshly initialised.
    ``overrides`` go to the CoaT constructor (e.g. ``align_corners=True`` for mindcv-compatible
    parallel blocks, ``proj_drop_rate``, ``embed_dims``).  ``checkpoint_path`` loads a MindSpore
    .ckpt strictly: any missing, unused or mis-shaped parameter is an error (``strict=False`` loads
    what matches and reports the rest).  A checkpoint whose record names constructor switches (e.g.
    mindcv's weights, also in mindcv's own layout: see coat_ms.origin) is built with them unless
    ``overrides`` set them.  ``model.weights_meta`` is the record of the loaded weights ({} for none).
    """
    entrypoint = model_entrypoint(model_name)
    overrides = check_model_args(model_name, overrides, where=f"{model_name} options")
    _check_own_arguments(num_classes=num_classes, in_channels=in_channels, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate)
    if not isinstance(pretrained, bool) and pretrained not in (0, 1, None):
        raise CoatError(f"pretrained must be True or False, got {pretrained!r}")
    if pretrained and checkpoint_path:
        raise CoatError("give pretrained=True or checkpoint_path, not both (checkpoint_path loads all the weights)")
    if pretrained:
        from .pretrained import check_supported
        check_supported(model_name, in_channels)  # before the (slow) build
    params, meta = read_weights(checkpoint_path) if checkpoint_path and not pretrained else (None, {})
    recorded = meta.get("model_args") or {}
    differ = {k: v for k, v in overrides.items() if k in recorded and recorded[k] != v}
    if differ:
        logger.warning("%s: its weights were made with %s; building with %s as asked", checkpoint_path,
                       ", ".join(f"{k}={recorded[k]}" for k in differ),
                       ", ".join(f"{k}={v}" for k, v in differ.items()))
    overrides = dict(recorded, **overrides)
    model = entrypoint(num_classes=num_classes, in_chans=in_channels, drop_rate=drop_rate,
                       drop_path_rate=drop_path_rate, **overrides)
    if pretrained:
        from .pretrained import load_pretrained
        meta = load_pretrained(model, model_name)[1]
    elif checkpoint_path:
        load_state(model, params, strict=strict, source=str(checkpoint_path))
    model.weights_meta = meta
    return model


def model_from_checkpoint(path, model_name=None, num_classes=None, model_args=None, ema=False,
                          args_source="model_args", **build_options):
    """(model in inference mode, meta) of a checkpoint, strictly loaded.

    Model name and head size come from the arguments, else from the checkpoint's record (coat_ms.origin:
    train.py's, the converter's, or mindcv's for a checkpoint in mindcv's layout), else (head size) from
    its ``head.bias``; constructor options are the record's, updated by ``model_args``.  The returned
    record is the one the weights came with.  ``ema=True`` loads the EMA weights when
    the checkpoint holds them (as mindcv's validate does) and says which weights were used.
    ``build_options`` (e.g. ``backend``) go to create_model on top of the model options; ``args_source``
    names where given ``model_args`` came from (a flag) in errors.
    """
    params, meta = read_weights(path)
    model_name = model_name or meta.get("model")
    if not model_name:
        raise CoatError(f"{path} does not say which model it holds: pass --model (e.g. coat_lite_tiny)")
    recorded = check_model_args(model_name, meta.get("model_args") or {}, where=f"{path}: record model_args")
    given = check_model_args(model_name, model_args, where=args_source) if model_args is not None else {}
    model_args = dict(recorded, **given)
    if num_classes is None:
        num_classes = num_classes_in(params) or meta.get("num_classes") or 1000
    if ema:
        averaged = ema_weights(params)
        if averaged:
            logger.info("%s: evaluating its EMA weights (ema: True)", path)
            params = averaged
        else:
            logger.info("%s: ema is set but the checkpoint holds no EMA weights; evaluating its weights", path)
    model = create_model(model_name, num_classes=num_classes, **dict(model_args, **build_options))
    load_state(model, params, strict=True, source=os.fspath(path))
    model.set_train(False)
    model.weights_meta = meta
    return model, meta
