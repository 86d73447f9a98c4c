from .backend import Backend, BackendError, resolve_backend
from .coat import VARIANTS, CoaT

__all__ = ["CoaT", "VARIANTS", "Backend", "BackendError", "resolve_backend"]
