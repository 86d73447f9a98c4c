"""Decoding images inside the data pipeline, so that a bad file never stops a run.

MindSpore's ``vision.Decode`` refuses GIF/WebP and 0-byte files (and then writes
``unsupported_image.<ext>`` into the current folder), and a truncated JPEG killed validate.py with
SIGFPE.  PIL decodes all of these formats or fails with an exception we can catch per sample, so
decoding is a Python map step running in the pipeline's parallel workers:

* ``(index, label) -> (image HWC uint8 RGB, label, bad)``: ``bad`` is 1 when the file could not be
  read.  It travels with the batch, so the number of bad images per epoch is counted exactly (on the
  host in the metrics, in the graph during training) without any extra synchronisation.
* training (``replace=True``): a bad file is replaced by the next readable image of the split
  (image and label), so every batch stays full and the epoch keeps its length;
* evaluation (``replace=False``): a tiny black image stands in and the metrics leave the row out.

Each worker names a bad file once on stderr the first time it meets it.
"""
import os
import stat
import sys

import numpy as np

from ..errors import first_line
from .files import not_regular

# How far to look for a readable replacement before giving up (a split that bad is not a dataset).
MAX_REPLACEMENT_TRIES = 64
PLACEHOLDER = np.zeros((8, 8, 3), dtype=np.uint8)
NO_READABLE_IMAGE = "no readable image among"


def decode_file(path):
    """RGB uint8 HWC array of an image file; raises OSError/ValueError (and PIL's errors) when unreadable.

    Opened without blocking and refused unless it is a regular file: a FIFO (or a device) that took the
    place of an image after listing would otherwise stall the data worker, and the run, forever."""
    from PIL import Image

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"not a regular file ({not_regular(path) or 'changed while reading'})")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        with Image.open(f) as img:
            img.load()  # decode fully here: a truncated file fails now, not later
            return np.asarray(img.convert("RGB"))


def why_unreadable(exc):
    name, line = type(exc).__name__, first_line(exc)
    return line if line == name else f"{name}: {line}"


class ImageReader:
    """Picklable map operation for ``mindspore.dataset``: sample index -> decoded image (see module doc)."""

    def __init__(self, images, replace):
        self.images = images
        self.replace = replace
        self._named = set()

    def _read(self, index):
        path = self.images.path(index)
        try:
            return decode_file(path)
        except Exception as exc:  # any decoder failure means: this file is not usable
            if index not in self._named:
                self._named.add(index)
                sys.stderr.write(f"warning: unreadable image {'replaced' if self.replace else 'skipped'}: "
                                 f"{path} ({why_unreadable(exc)})\n")
                sys.stderr.flush()
            return None

    def __call__(self, index, label):
        index = int(index)
        image = self._read(index)
        if image is not None:
            return image, np.int32(label), np.int32(0)
        if not self.replace:
            return PLACEHOLDER, np.int32(label), np.int32(1)
        count = len(self.images)
        for step in range(1, min(MAX_REPLACEMENT_TRIES, count)):
            other = (index + step) % count
            image = self._read(other)
            if image is not None:
                return image, np.int32(self.images.labels[other]), np.int32(1)
        raise RuntimeError(f"{NO_READABLE_IMAGE} {min(MAX_REPLACEMENT_TRIES, count)} files from "
                           f"{self.images.path(index)} on: check the dataset")
