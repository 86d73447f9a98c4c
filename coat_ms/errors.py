"""User-facing errors: each says what is wrong and what to do, on one line."""


class CoatError(Exception):
    """Base class of the errors coat_ms raises for bad input (CLIs print them without a traceback)."""


class UnknownModelError(CoatError, KeyError):
    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(CoatError):
    """A checkpoint that cannot be loaded as asked: missing file, corrupt, or names/shapes that do not match."""


class ConversionError(CheckpointError):
    """A checkpoint that cannot be converted as asked (wrong architecture, variant, keys, values)."""


def first_line(exc):
    """The first line of an exception's message (MindSpore's, onnxruntime's and torch's run to pages), or the
    name of its type when it has no message: what a one-line error quotes of a library's failure."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
