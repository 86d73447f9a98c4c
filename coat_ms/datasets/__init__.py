from .digits import write_digits_imagefolder
from .photos import write_photo_crops_imagefolder

__all__ = ["write_digits_imagefolder", "write_photo_crops_imagefolder"]
