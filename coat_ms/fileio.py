"""Writing files safely: the one atomic writer every tool uses, and the "never overwrite an input" rule.

``atomic_write`` writes into a temporary file in the destination folder, flushes it to disk and
renames it over the destination, so a crash, a kill or a full disk leaves the previous file intact
and no temporary file behind.  Only a process killed outright can leave one: its name is
``.<destination name>.tmp<random>``, so the tool that owns the destination can recognise it.
"""
import errno
import glob
import os
import tempfile

from .errors import CoatError

TEMP_MARK = ".tmp"


class WriteError(CoatError):
    """A file could not be written (disk full, no permission, missing folder, or it is an input)."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write_fn, suffix=""):
    """Call ``write_fn(tmp_path)`` on a temp file beside ``path``, fsync it, then rename it to ``path``.

    ``suffix`` ends the temp name (MindSpore's save_checkpoint insists on ``.ckpt``).  On any failure
    the temp file is removed; running out of space or permission is a one-line ``WriteError``.
    Returns the absolute path written.
    """
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise WriteError(f"cannot write {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise WriteError(f"cannot write {path}: it is a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TEMP_MARK}", suffix=suffix, dir=folder)
    except OSError as exc:
        raise WriteError(f"cannot write in {folder}: {exc.strerror}") from None
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp files are private; the result should not be
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EPERM):
            raise WriteError(f"cannot write {path}: {exc.strerror} (the previous file, if any, is unchanged)") from None
        raise
    except RuntimeError as exc:
        # MindSpore's writers report a failed write (e.g. a full disk) as RuntimeError; anything else
        # (a graph that does not compile during an export) keeps its own message
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if not any(w in text.lower() for w in ("space", "write", "save", "disk", "file")):
            raise
        raise WriteError(f"cannot write {path}: {text} (the previous file, if any, is unchanged)") from None
    finally:
        # the temp file, and any sibling a writer made from its name (MindSpore's save_checkpoint writes
        # "<stem>.tmp" first); the stem carries mkstemp's random part, so nothing else can match
        stem = tmp[:-len(suffix)] if suffix else tmp
        for leftover in glob.glob(glob.escape(stem) + "*"):
            os.remove(leftover)
    return path


def atomic_write_bytes(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


def atomic_write_text(path, text):
    return atomic_write_bytes(path, text.encode("utf-8"))


def same_file(a, b):
    """True when ``a`` and ``b`` name the same file (real paths: symlinks and hard links resolved)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_overwriting_inputs(out_path, inputs, flag="the output"):
    """WriteError if ``out_path`` is one of ``inputs`` (compared by real path); None entries are ignored."""
    if not out_path:
        return
    for given in inputs:
        if given and same_file(out_path, given):
            raise WriteError(f"{flag} {out_path} is the input file {given}: refusing to overwrite it; "
                             f"choose another output name")
