"""Listing an ImageFolder split: class folders and image files, by name only.

Start-up cost must grow with listing, not decoding (ImageNet: 1.28M files, on every rank, at every
resume), so nothing here opens an image: a file that turns out unreadable is handled where it is
decoded, inside the parallel pipeline (coat_ms.data.decode).

The listing is held compactly (one bytes blob of relative paths, int64 offsets, int32 labels: about
40 bytes per image) so that it costs little memory on every rank and in every data worker.
"""
import logging
import os
import stat

import numpy as np

from ..errors import CoatError

logger = logging.getLogger("coat_ms")

# What the decoder (PIL) reads; compared case-insensitively.  Anything else in a class folder
# (.DS_Store, readme.txt, ...) is not an image and is left out of the listing.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm",
                    ".pbm")


class DataError(CoatError):
    """A dataset folder, split or image list that cannot be used as asked."""


def is_image_name(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


class ImageList:
    """The images of one split: ``path(i)``, ``labels[i]``, ``classes`` (label -> class folder name)."""

    def __init__(self, root, classes, relpaths, labels, ignored=0):
        self.root = root
        self.classes = list(classes)
        encoded = [p.encode("utf-8", "surrogateescape") for p in relpaths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._blob = b"".join(encoded)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.ignored = ignored  # non-image files seen while listing

    def __len__(self):
        return len(self.labels)

    def relpath(self, i):
        return self._blob[self._offsets[i]:self._offsets[i + 1]].decode("utf-8", "surrogateescape")

    def path(self, i):
        return os.path.join(self.root, self.relpath(i))

    def relabelled(self, class_order):
        """The same images with labels taken from ``class_order`` (the training classes), matched by name.

        A split may hold a subset of the training classes; a class the model was not trained on is an
        error (its labels would otherwise shift silently).
        """
        index = {name: i for i, name in enumerate(class_order)}
        unknown = [c for c in self.classes if c not in index]
        if unknown:
            raise DataError(f"{self.root} has class folder(s) the model was not trained on: "
                            f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''} "
                            f"(training classes: {len(class_order)}, e.g. {', '.join(class_order[:3])})")
        mapping = np.array([index[c] for c in self.classes], dtype=np.int32)
        out = ImageList.__new__(ImageList)
        out.__dict__.update(self.__dict__)
        out.classes = list(class_order)
        out.labels = mapping[self.labels] if len(self.labels) else self.labels
        return out


def not_regular(path):
    """Why ``path`` (named like an image) cannot be read as a file, or None for a regular file.  A FIFO
    would block the reader forever, a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link"
    except OSError as exc:
        return exc.strerror
    for test, what in ((stat.S_ISREG, None), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return what
    return "not a file"


def report_skipped(where, skipped):
    """One warning naming the files with image names that are not regular files (and why)."""
    if skipped:
        shown = ", ".join(f"{p} ({why})" for p, why in skipped[:5])
        logger.warning("%s: %d file(s) with an image name skipped, not a regular file: %s%s", where, len(skipped),
                       shown, ", ..." if len(skipped) > 5 else "")


def list_split(data_dir, split, require_every_class=True, watch=None):
    """List ``data_dir/split`` (an ImageFolder: one folder per class, sorted names = labels).

    Clear errors for a missing folder, a split without class folders, a class folder that is a broken
    link, and (``require_every_class``) a class folder without images.  A file with an image name that
    is not a regular file (FIFO, socket, device, broken link) is skipped with a warning.  ``watch``
    (coat_ms.fileio.OutputWatch): outputs that exist already; a listed image linked to one is an error.
    Costs one directory read per class folder (no stat per file, except for symbolic links when
    ``watch`` is given).
    """
    if not data_dir:
        raise DataError("no data folder given: pass --data_dir (an ImageFolder with train/ and val/ inside)")
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DataError(f"data folder not found: {data_dir}")
    root = os.path.join(data_dir, split) if split else data_dir
    if not os.path.isdir(root):
        raise DataError(f"split folder not found: {root} (expected {data_dir}/{split}/<class>/<image>)")
    with os.scandir(root) as entries:
        entries = [e for e in entries if not e.name.startswith(".")]
    for e in entries:
        if e.is_symlink() and not os.path.exists(e.path):
            raise DataError(f"class folder {e.path} is a broken symbolic link (to {os.readlink(e.path)}): fix or "
                            f"remove it (its class would otherwise vanish and shift every later label)")
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    relpaths, labels, ignored, skipped = [], [], 0, []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        device = os.stat(folder).st_dev if watch else None
        with os.scandir(folder) as entries:
            names = []
            for e in entries:
                if not is_image_name(e.name):
                    ignored += e.is_file()
                elif e.is_file():  # follows links; a FIFO, socket or device is not a file
                    if watch:
                        watch.check(e, device)
                    names.append(e.name)
                elif not e.is_dir():
                    skipped.append((e.path, not_regular(e.path)))
        if not names and require_every_class:
            raise DataError(f"class folder {folder} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
        names.sort()
        relpaths += [f"{cls}/{n}" for n in names]
        labels += [label] * len(names)
    report_skipped(root, skipped)
    if not relpaths:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
    if ignored:
        logger.info("%s: %d file(s) that are not images (by extension) left out", root, ignored)
    return ImageList(root, classes, relpaths, labels, ignored)


def shard_indices(count, rank, size):
    """Sample indices of ``rank`` when ``count`` samples are split over ``size`` ranks without padding."""
    return np.arange(rank, count, size, dtype=np.int64)
