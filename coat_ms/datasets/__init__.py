from .digits import write_digits_imagefolder

__all__ = ["write_digits_imagefolder"]
