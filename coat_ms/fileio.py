"""Writing files safely: the one atomic writer every tool uses, and the "never overwrite an input" rule.

``atomic_write`` writes into a temporary file in the destination folder, flushes it to disk and
renames it over the destination, so a crash, a kill or a full disk leaves the previous file intact
and no temporary file behind.  Only a process killed outright can leave one: its name is
``.<destination name>.tmp<random>``, so the tool that owns the destination can recognise it.

``check_outputs`` is the "no output may be an input" rule, checked by every tool before any work:
outputs against the input files (real paths, hard links) and against the data folders it reads.
It does no work per image: an output is compared with a data folder by its real path, and only an
output that already exists is compared with the listed images, by the inode numbers the listing
reads anyway (``OutputWatch``).
"""
import errno
import glob
import os
import tempfile

from .errors import CoatError, first_line

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
        text = first_line(exc)
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


def _inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def data_roots(folder):
    """Real paths of a data folder and of its sub-folders that are symbolic links (class folders living
    elsewhere): everything under them is read as data."""
    roots = [os.path.realpath(folder)]
    try:
        with os.scandir(folder) as entries:
            roots += [os.path.realpath(e.path) for e in entries if e.is_symlink() and e.is_dir()]
    except OSError:
        pass
    return roots


class OutputWatch:
    """The outputs that exist already, for the data listing to compare with each file it lists: an image
    that is a hard link to an output (same inode) or a symbolic link to it (same real path)."""

    def __init__(self, existing):
        self.by_inode = {(st.st_dev, st.st_ino): (flag, path) for flag, path, st in existing}
        self.by_path = {os.path.realpath(path): (flag, path) for flag, path, _ in existing}

    def __bool__(self):
        return bool(self.by_inode)

    def check(self, entry, device):
        """Raise WriteError if the listed ``entry`` (an os.DirEntry in a folder on ``device``) is an output."""
        if entry.is_symlink():
            hit = self.by_path.get(os.path.realpath(entry.path))
        else:
            hit = self.by_inode.get((device, entry.inode()))  # the inode readdir gives: no stat per file
        if hit:
            flag, path = hit
            raise WriteError(f"{flag} {path} is the input image {entry.path} (a link to the same file): refusing "
                             f"to overwrite it; choose another output name")


def check_outputs(outputs, files=(), folders=(), output_folders=()):
    """Refuse, before any work, an output that is an input.

    ``outputs``: (flag, path) pairs of files the tool writes (None paths ignored); ``output_folders``:
    (flag, path) pairs of folders it writes into (a training run's folder); ``files``: (what, path)
    pairs of files it reads; ``folders``: (what, path) pairs of data folders whose images it reads.
    Refused: two outputs that are one file; an output that is an input file (real path, hard link); an
    output file with an image name inside a data folder (an existing one is an input, a new one would
    become one) and an output folder inside a data folder (it would become a class).  Returns the
    OutputWatch of the outputs that exist already (see module doc).
    """
    from .data.files import is_image_name

    outputs = [(flag, os.fspath(path)) for flag, path in outputs if path]
    files = [(what, os.fspath(path)) for what, path in files if path]
    seen = {}
    for flag, path in outputs:
        real = os.path.realpath(path)
        if real in seen:
            raise WriteError(f"{seen[real]} and {flag} name the same file {path}: give them different names")
        seen[real] = flag
        for what, given in files:
            if same_file(path, given):
                raise WriteError(f"{flag} {path} is the input {what} {given}: refusing to overwrite it; "
                                 f"choose another output name")
    checked = [(flag, path, is_image_name(os.path.basename(os.path.realpath(path)))) for flag, path in outputs]
    checked += [(flag, os.fspath(path), True) for flag, path in output_folders if path]
    for flag, path, read_as_data in checked:
        real = os.path.realpath(path)
        for what, folder in folders:
            if read_as_data and any(_inside(real, root) for root in data_roots(folder)):
                if os.path.isfile(path):
                    raise WriteError(f"{flag} {path} is an image of the {what} {folder} it reads: refusing to "
                                     f"overwrite it; choose another output name")
                raise WriteError(f"{flag} {path} lies inside the data it reads ({what} {folder}): it would be read "
                                 f"as data next time; choose a place outside it")
    existing = []
    for flag, path in outputs:
        if os.path.isfile(path):
            existing.append((flag, path, os.stat(path)))
    return OutputWatch(existing)
