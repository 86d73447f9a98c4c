"""convert: PyTorch <-> MindSpore checkpoint conversion for coat_ms (CLI: python -m convert).

The conversion rules live in the library (coat_ms.conversion), because ``pretrained=True`` and the
reading of mindcv-layout checkpoints need them at load time; this package is the command line above
them and re-exports their Python API.
"""
from coat_ms.conversion import CONVERTER_VERSION as __version__
from coat_ms.conversion.core import (ConversionReport, ConversionResult, infer_variant, mindcv_to_ms, ms_to_torch,
                                     torch_to_ms)
from coat_ms.errors import ConversionError

__all__ = ["torch_to_ms", "ms_to_torch", "mindcv_to_ms", "infer_variant", "ConversionResult", "ConversionReport",
           "ConversionError", "__version__"]
