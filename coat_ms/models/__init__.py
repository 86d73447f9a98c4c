from .coat import VARIANTS, CoaT

__all__ = ["CoaT", "VARIANTS"]
