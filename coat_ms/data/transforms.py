"""Image transforms: mindcv's training recipe pipeline and the one evaluation preprocessing.

Images arrive decoded (coat_ms.data.decode), so mindcv's fused ``RandomCropDecodeResize`` becomes the
same crop on the decoded image (``RandomResizedCrop``); everything after it (flips, RandAugment /
colour jitter, normalise, HWC -> CHW, random erasing) is mindcv's own list.

Evaluation (train-time validation, validate.py, predict, export metadata) uses ``Preprocessing``:
resize the short side to floor(size / crop_pct) with the interpolation, centre-crop, normalise, in
one of two styles, because the same words compute different pixels in the two libraries:

* ``timm``: what timm's ``create_transform`` does on a PIL image: PIL's resampling (antialiased;
  ``Inter.PILCUBIC`` is the same bicubic, bit for bit) and torchvision's centre crop, whose offset
  is rounded (``round((371 - 224) / 2)`` = 74); a non-square size keeps the aspect ratio as timm's
  ``ResizeKeepRatio``.  Weights from timm or the official code were evaluated this way.
* ``mindcv``: mindcv's eval list: ``mindspore.dataset.vision.Resize`` (OpenCV-style kernels, no
  antialiasing) and ``CenterCrop`` (offset floored, 73).  mindcv's weights, and runs trained here
  from scratch, were evaluated this way.

The style is recorded with the weights (see coat_ms.origin), so every tool evaluates an image the way
the weights were validated.
"""
import dataclasses
import math

import numpy as np

from ..config import KEYS, as_interpolation
from .files import DataError


TIMM, MINDCV = "timm", "mindcv"
STYLES = (TIMM, MINDCV)
# PIL's filter for each interpolation name the configs accept (timm resizes PIL images with these).
PIL_FILTERS = {"bicubic": "BICUBIC", "cubic": "BICUBIC", "pilcubic": "BICUBIC", "bilinear": "BILINEAR",
               "linear": "BILINEAR", "nearest": "NEAREST", "area": "BOX", "antialias": "LANCZOS"}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """One evaluation preprocessing.  Its defaults, what evaluation uses when nothing says otherwise, are the
    config keys' (coat_ms.config.KEYS: mindcv's eval defaults, also those of its CoaT weights)."""
    image_size: tuple = (KEYS["image_resize"].default,) * 2
    crop_pct: float = KEYS["crop_pct"].default
    interpolation: str = KEYS["interpolation"].default
    mean: tuple = tuple(KEYS["mean"].default)  # 0..255 scale, as mindcv's Normalize on uint8 images
    std: tuple = tuple(KEYS["std"].default)
    style: str = MINDCV   # timm | mindcv: which library's resize and crop (see the module doc)

    @property
    def resize(self):
        """Short-side size before the centre crop (int for square crops, as mindcv and timm)."""
        h, w = self.image_size
        if h == w:
            return int(math.floor(h / self.crop_pct))
        return (int(h / self.crop_pct), int(w / self.crop_pct))

    def as_dict(self):
        return {"image_size": list(self.image_size), "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "style": self.style}

    def describe(self):
        how = "PIL, antialiased; rounded crop offset" if self.style == TIMM else "mindspore.dataset ops"
        return (f"{self.style} style ({how}): resize {self.resize} {self.interpolation}, centre crop "
                f"{self.image_size[0]}x{self.image_size[1]}, mean {tuple(round(m, 3) for m in self.mean)}, "
                f"std {tuple(round(s, 3) for s in self.std)}")


def _to_255(values):
    values = tuple(float(v) for v in values)
    return tuple(v * 255.0 for v in values) if max(values) <= 1.0 else values


def _number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) and \
        math.isfinite(float(value))


def _size(value):
    """(H, W) from an int, [H, W] or [C, H, W] (input_size); ValueError otherwise."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3) or \
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        raise ValueError("H W, multiples of 32 (CoaT's patch grid)")
    size = tuple(int(v) for v in value[-2:])
    if min(size) < 32 or size[0] % 32 or size[1] % 32:
        raise ValueError("H W, multiples of 32 (CoaT's patch grid)")
    return size


def preprocessing(base=None, where="", **given):
    """Preprocessing from ``base`` (a dict: a checkpoint's record, an export's sidecar or a pretrained
    config) with ``given`` values (not None) taking precedence, and Preprocessing's defaults for the rest.
    Accepts ``image_size`` as int or (H, W), ``input_size`` as (C, H, W), and mean/std on the 0..1 or 0..255
    scale; ``style`` defaults to mindcv's (records written before styles existed were evaluated that way).
    Every field is checked: a DataError names it, prefixed by ``where`` (e.g. the record's file)."""
    default = Preprocessing()
    if base is not None and not isinstance(base, dict):
        raise DataError(f"{where}preprocessing {base!r} is not a mapping of setting: value")
    cfg = dict(base or {})
    cfg.update({k: v for k, v in given.items() if v is not None})

    def bad(field, expected):
        return DataError(f"{where}{field} {cfg[field]!r} is not valid (expected {expected})")

    field = "image_size" if "image_size" in cfg else "input_size" if "input_size" in cfg else None
    try:
        size = _size(cfg[field]) if field else default.image_size
    except ValueError as exc:
        raise bad(field, exc) from None
    crop_pct = cfg.get("crop_pct", default.crop_pct)
    if not _number(crop_pct) or not 0.0 < float(crop_pct) <= 1.0:
        raise bad("crop_pct", "a fraction in (0, 1]")
    try:
        interpolation = as_interpolation(cfg.get("interpolation", default.interpolation))
    except ValueError as exc:
        raise bad("interpolation", exc) from None
    stats = {}
    for name in ("mean", "std"):
        values = cfg.get(name, getattr(default, name))
        if not isinstance(values, (list, tuple)) or len(values) != 3 or not all(_number(v) for v in values) or \
                (name == "std" and min(values) <= 0):
            raise bad(name, "three numbers" + (" > 0" if name == "std" else ""))
        stats[name] = _to_255(values)
    style = cfg.get("style") or default.style
    if not isinstance(style, str) or style.lower() not in STYLES:
        raise bad("style", " or ".join(STYLES))
    return Preprocessing(size, float(crop_pct), interpolation, stats["mean"], stats["std"], style.lower())


def weights_preprocessing(meta, model=None, where="", **given):
    """The one precedence of evaluation preprocessing: ``given`` values (not None: flags, config keys) over
    the weights' record ``meta`` (coat_ms.origin; an export's sidecar has the same ``preprocessing`` entry)
    over ``model``'s default config (``pretrained_cfg``) over Preprocessing's defaults.  What validate.py,
    predict, export, quantization and a training run's validation use."""
    record = (meta or {}).get("preprocessing") or dict(getattr(model, "pretrained_cfg", None) or {})
    return preprocessing(record, where=where, **given)


def preprocessing_from_config(cfg, record=None):
    """The eval preprocessing of a training run: the config's image_resize, crop_pct, interpolation, mean and
    std, in preprocess_style when set, else in the style of the starting weights' ``record``."""
    return weights_preprocessing(record, image_size=cfg["image_resize"], crop_pct=cfg["crop_pct"],
                                 interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"],
                                 style=cfg.get("preprocess_style"))


def _inter(name):
    from mindspore.dataset.vision import Inter
    return getattr(Inter, name.upper())


def timm_resized_size(height, width, pre):
    """(H, W) timm resizes an image of ``height`` x ``width`` to before the centre crop.

    Square crops: torchvision's ``Resize(int)``, short side to ``pre.resize``, long side truncated.
    Other crops: timm's ``ResizeKeepRatio`` (scale by the smaller of the two ratios, sides rounded).
    """
    if isinstance(pre.resize, int):
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(pre.resize * long / short)
        return (new_long, pre.resize) if width <= height else (pre.resize, new_long)
    ratio = min(height / pre.resize[0], width / pre.resize[1])
    return round(height / ratio), round(width / ratio)


class TimmResizeCrop:
    """Decoded HWC uint8 image -> resized, centre-cropped HWC uint8 image, as timm's eval transform
    computes it on a PIL image (PIL's resampling, torchvision's rounded crop offset).  Picklable, so it
    runs in the pipeline's workers."""

    def __init__(self, pre):
        self.pre = pre

    def __call__(self, image):
        from PIL import Image

        image = np.asarray(image)
        height, width = image.shape[:2]
        size = timm_resized_size(height, width, self.pre)
        pil = Image.fromarray(image)
        if size != (height, width):  # torchvision leaves an image of the right size untouched
            pil = pil.resize((size[1], size[0]), getattr(Image.Resampling, PIL_FILTERS[self.pre.interpolation]))
        crop_h, crop_w = self.pre.image_size
        if size[0] < crop_h or size[1] < crop_w:  # cannot happen with crop_pct <= 1; never pad silently
            raise DataError(f"image resized to {size} is smaller than the {crop_h}x{crop_w} crop")
        top = int(round((size[0] - crop_h) / 2.0))
        left = int(round((size[1] - crop_w) / 2.0))
        return np.ascontiguousarray(np.asarray(pil)[top:top + crop_h, left:left + crop_w])


def eval_transforms(pre):
    """mindspore.dataset ops for a decoded HWC uint8 image: resize and centre crop in ``pre.style``
    (timm's: TimmResizeCrop; mindcv's: its eval list minus Decode), then normalise and HWC -> CHW."""
    from mindspore.dataset import vision

    if pre.style == TIMM:
        if pre.interpolation not in PIL_FILTERS:
            raise DataError(f"interpolation '{pre.interpolation}' has no PIL filter for timm-style preprocessing "
                            f"(use one of {', '.join(PIL_FILTERS)})")
        resize_crop = [TimmResizeCrop(pre)]
    else:
        resize_crop = [vision.Resize(pre.resize, interpolation=_inter(pre.interpolation)),
                       vision.CenterCrop(pre.image_size)]
    return resize_crop + [vision.Normalize(mean=list(pre.mean), std=list(pre.std)), vision.HWC2CHW()]


def train_interpolation(interpolation, style):
    """The MindSpore kernel of the training crop: with timm-style preprocessing, bicubic is PIL's
    (``Inter.PILCUBIC``, bit-exact with PIL), so a run trains with the kernel it evaluates with."""
    from mindspore.dataset.vision import Inter

    if style == TIMM and PIL_FILTERS.get(interpolation) == "BICUBIC":
        return Inter.PILCUBIC
    return _inter(interpolation)


def train_transforms(cfg):
    """mindcv's training transforms for the recipe keys in ``cfg``, for decoded images."""
    from mindcv.data import create_transforms
    from mindspore.dataset import vision

    ops = create_transforms("", image_resize=cfg["image_resize"], is_training=True, auto_augment=cfg["auto_augment"],
                            scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"],
                            vflip=cfg["vflip"], color_jitter=cfg["color_jitter"], interpolation=cfg["interpolation"],
                            mean=list(cfg["mean"]), std=list(cfg["std"]), re_prob=cfg["re_prob"],
                            re_scale=tuple(cfg["re_scale"]), re_ratio=tuple(cfg["re_ratio"]),
                            re_value=cfg["re_value"], re_max_attempts=cfg["re_max_attempts"])
    if not isinstance(ops[0], vision.RandomCropDecodeResize):  # mindcv's list changed: fail loudly, not silently
        raise RuntimeError(f"mindcv's training transforms start with {type(ops[0]).__name__}, "
                           "expected RandomCropDecodeResize")
    ops[0] = vision.RandomResizedCrop(cfg["image_resize"], scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]),
                                      interpolation=train_interpolation(cfg["interpolation"],
                                                                        cfg.get("preprocess_style")))
    return ops
