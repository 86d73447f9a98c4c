"""convert: PyTorch <-> MindSpore checkpoint conversion for coat_ms (library API; CLI: python -m convert)."""
from .core import ConversionReport, ConversionResult, infer_variant, mindcv_to_ms, ms_to_torch, torch_to_ms
from .errors import ConversionError

__version__ = "0.1.0"

__all__ = ["torch_to_ms", "ms_to_torch", "mindcv_to_ms", "infer_variant", "ConversionResult", "ConversionReport",
           "ConversionError", "__version__"]
