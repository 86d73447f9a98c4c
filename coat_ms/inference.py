"""Classifying image files with a model or an exported MindIR: the library side of ``coat_ms.predict``.

Images go through the same pipeline as validation (coat_ms.data.pipeline: PIL decoding in parallel
workers, the eval preprocessing), so a file that is not a readable image is reported and skipped.
"""
import json
import os

import numpy as np

from .data.files import DataError, ImageList, is_image_name, not_regular, report_skipped
from .errors import CheckpointError, CoatError, first_line
from .evaluation import run_padded, softmax


def list_image_files(paths, watch=None):
    """Expand files and folders (recursively, sorted) into image paths.  Files named explicitly are kept
    whatever their extension (so that they get reported if unreadable); inside folders only image
    names count.  A file that is not a regular file (FIFO, socket, device, broken link) is skipped with
    a warning: reading it could block forever.  ``watch`` (coat_ms.fileio.OutputWatch): outputs that
    exist already; a listed image linked to one is an error."""
    out, skipped = [], []

    def walk(folder):
        device = os.stat(folder).st_dev if watch else None
        with os.scandir(folder) as entries:
            entries = sorted(entries, key=lambda e: e.name)
        for e in entries:
            if e.is_dir():
                if not e.is_symlink():  # as os.walk: linked folders are not followed
                    walk(e.path)
            elif not is_image_name(e.name):
                continue
            elif e.is_file():
                if watch:
                    watch.check(e, device)
                out.append(e.path)
            else:
                skipped.append((e.path, not_regular(e.path)))

    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            walk(path)
        elif os.path.lexists(path):
            why = not_regular(path)
            if why:
                skipped.append((path, why))
            else:
                out.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    report_skipped("inputs", skipped)
    return out


def read_labels(path):
    """One class name per line (blank lines ignored; 'index name' or 'index: name' also accepted)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: labels file is not text") from None
    names = []
    for line in lines:
        head, _, rest = line.replace(":", " ", 1).partition(" ")
        names.append(rest.strip() if head.isdigit() and rest.strip() else line)
    if not names:
        raise DataError(f"{path}: labels file is empty")
    return names


def top_k(probs, names, k):
    """[(class name, probability)] of the k most probable classes of one row."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i] if i < len(names) else str(i), float(probs[i])) for i in order]


def classify(predict_fn, paths, pre, batch_size, k=5, names=(), workers=1, progress=True):
    """Classify image files; returns ([(path, [(name, prob)])], [path] of unreadable files)."""
    from tqdm import tqdm

    from .data.pipeline import eval_dataset

    images = ImageList("", [], [os.path.abspath(p) for p in paths], np.zeros(len(paths), np.int32))
    dataset, _ = eval_dataset(images, pre, batch_size, workers)
    results, skipped, index = [], [], 0
    for image, _, bad in tqdm(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True),
                              total=dataset.get_dataset_size(), desc="predict", unit="batch",
                              disable=not progress, leave=False):
        probs = softmax(run_padded(predict_fn, image.astype(np.float32, copy=False), batch_size))
        if names and probs.shape[1] != len(names):
            raise DataError(f"the model predicts {probs.shape[1]} classes but {len(names)} labels were given")
        for row, is_bad in zip(probs, bad):
            path = paths[index]
            index += 1
            if is_bad:
                skipped.append(path)
            else:
                results.append((path, top_k(row, names, k)))
    return results, skipped


def read_sidecar(mindir_path):
    """The metadata export writes next to an exported file (``<file>.json``), or {}; every field is
    checked (CoatError naming the file and the field)."""
    from .data.transforms import preprocessing

    path = mindir_path + ".json"
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise CoatError(f"{path}: unreadable export metadata ({exc})") from None

    def bad(field, expected):
        return CoatError(f"{path}: export metadata {field} {meta[field]!r} is not valid (expected {expected}); "
                         f"export again, or move the file away to use the defaults")
    if not isinstance(meta, dict):
        raise CoatError(f"{path}: export metadata is not a mapping but {type(meta).__name__} {meta!r:.60}; export "
                        f"again, or move the file away to use the defaults")
    if meta.get("class_names") is not None and (not isinstance(meta["class_names"], list) or
                                                not all(isinstance(c, str) for c in meta["class_names"])):
        raise bad("class_names", "a list of class names")
    if meta.get("input_shape") is not None and (
            not isinstance(meta["input_shape"], list) or len(meta["input_shape"]) != 4 or
            not all(isinstance(d, int) and not isinstance(d, bool) for d in meta["input_shape"])):
        raise bad("input_shape", "[N, C, H, W]")
    if meta.get("preprocessing") is not None:
        try:
            preprocessing(meta["preprocessing"], where=f"{path}: export metadata preprocessing ")
        except DataError as exc:
            raise CoatError(str(exc)) from None
    return meta


def load_mindir(path):
    """nn.GraphCell of a MindIR file, with a clear error for missing or broken files."""
    import mindspore as ms
    from mindspore import nn

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"MindIR file not found: {path}")
    try:
        return nn.GraphCell(ms.load(path))
    except Exception as exc:  # MindSpore raises RuntimeError/ValueError with long texts
        raise CheckpointError(f"cannot load MindIR {path}: {first_line(exc)}") from None
