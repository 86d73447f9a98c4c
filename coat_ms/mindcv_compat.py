"""Make coat_ms models buildable through mindcv's own ``mindcv.models.create_model``.

mindcv 0.3.0 already registers ``coat_tiny`` ... ``coat_lite_medium`` (its own port, with an N x N
attention matrix, align_corners=True interpolation and a fixed 224 input).  coat_ms registers its
models next to them under the prefix ``coat_ms_``: ``coat_ms_tiny``, ``coat_ms_mini``, ``coat_ms_small``,
``coat_ms_lite_tiny``, ``coat_ms_lite_mini``, ``coat_ms_lite_small``, ``coat_ms_lite_medium``.

    import coat_ms.mindcv_compat  # registers on import
    from mindcv.models import create_model
    net = create_model("coat_ms_lite_tiny", num_classes=10)
"""
from .factory import create_model
from .registry import get_pretrained_cfg, list_models

PREFIX = "coat_ms_"


def mindcv_name(variant):
    """coat_lite_tiny -> coat_ms_lite_tiny."""
    return PREFIX + variant[len("coat_"):]


def _entrypoint(variant):
    def build(pretrained=False, num_classes=1000, in_channels=3, **kwargs):
        return create_model(variant, pretrained=pretrained, num_classes=num_classes, in_channels=in_channels,
                            **kwargs)

    build.__name__ = build.__qualname__ = mindcv_name(variant)
    build.__module__ = __name__
    build.__doc__ = f"coat_ms's {variant} (see coat_ms.create_model)."
    return build


# mindcv's register_model looks up the pretrained config in the defining module's `default_cfgs`.
default_cfgs = {mindcv_name(v): get_pretrained_cfg(v) for v in list_models()}
__all__ = ["register_mindcv_models", "mindcv_name"]


def register_mindcv_models():
    """Register every coat_ms variant with mindcv's registry; returns the mindcv names."""
    from mindcv.models.registry import register_model

    names = []
    for variant in list_models():
        fn = _entrypoint(variant)
        globals()[fn.__name__] = fn  # register_model adds the name to __all__; keep it importable
        register_model(fn)
        names.append(fn.__name__)
    return names


MINDCV_NAMES = register_mindcv_models()
