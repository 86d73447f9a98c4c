"""Errors of the converter: one line each, shown by the CLI without a traceback."""
from coat_ms.errors import CheckpointError


class ConversionError(CheckpointError):
    """A checkpoint that cannot be converted as asked (wrong architecture, variant, keys, values)."""
