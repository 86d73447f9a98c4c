"""User-facing errors: each says what is wrong and what to do, on one line."""


class CoatError(Exception):
    """Base class of the errors coat_ms raises for bad input (CLIs print them without a traceback)."""


class UnknownModelError(CoatError, KeyError):
    def __str__(self):  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(CoatError):
    """A checkpoint that cannot be loaded as asked: missing file, corrupt, or names/shapes that do not match."""
