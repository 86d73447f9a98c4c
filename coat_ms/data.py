"""ImageFolder data for training and validation, on top of mindcv's create_dataset / create_transforms / create_loader.

Before handing a split to mindcv we scan it once: a missing or empty folder, or a class folder with
no images, is a clear error; unreadable images are skipped and counted (a corrupt file would
otherwise kill the data pipeline mid-epoch).
"""
import dataclasses
import logging
import os

import numpy as np
from PIL import Image

from .errors import CoatError

logger = logging.getLogger("coat_ms")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jpe", ".ppm")


class DataError(CoatError):
    """A dataset folder that cannot be used as asked."""


@dataclasses.dataclass
class SplitScan:
    root: str
    classes: list
    samples: list          # (path, label) of readable images, in ImageFolder order
    corrupt: list          # paths skipped because PIL cannot decode them

    @property
    def num_images(self):
        return len(self.samples)


def scan_split(data_dir, split, check_images=True):
    """Check ``data_dir/split`` is a usable ImageFolder; returns a SplitScan."""
    if not data_dir:
        raise DataError("no data folder given: pass --data_dir (an ImageFolder with train/ and val/ inside)")
    if not os.path.isdir(data_dir):
        raise DataError(f"data folder not found: {data_dir}")
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise DataError(f"split folder not found: {root} (expected {data_dir}/{split}/<class>/<image>)")
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    samples, corrupt = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        files = sorted(f.name for f in os.scandir(folder) if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...)")
        for name in files:
            path = os.path.join(folder, name)
            if check_images and not _readable(path):
                corrupt.append(path)
            else:
                samples.append((path, label))
    if not samples:
        raise DataError(f"{root}: none of the images can be read ({len(corrupt)} corrupt)")
    if corrupt:
        logger.warning("%s: skipping %d unreadable image(s), e.g. %s", root, len(corrupt), corrupt[0])
    return SplitScan(root, classes, samples, corrupt)


def _readable(path):
    try:
        with Image.open(path) as im:
            im.load()  # verify() misses truncated pixel data; load() decodes it
        return True
    except Exception:
        return False


class _FileList:
    """Random-access source of (encoded bytes, label) in the layout ImageFolderDataset produces."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with open(path, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8), np.array(label, dtype=np.int32)


def create_split_dataset(scan, shuffle, num_shards=None, shard_id=None, num_parallel_workers=1, num_samples=None):
    """Raw (undecoded) dataset of one split, sharded for data parallel; mindcv's create_dataset when clean."""
    import mindspore.dataset as ds
    from mindcv.data import create_dataset

    if num_shards is not None and num_shards <= 1:
        num_shards = shard_id = None
    if not scan.corrupt:
        return create_dataset(name="", root=os.path.dirname(scan.root), split=os.path.basename(scan.root),
                              shuffle=shuffle, num_samples=num_samples, num_shards=num_shards, shard_id=shard_id,
                              num_parallel_workers=num_parallel_workers)
    # Same columns and order as ImageFolderDataset, minus the unreadable files.
    samples = scan.samples[:num_samples] if num_samples else scan.samples
    return ds.GeneratorDataset(_FileList(samples), column_names=["image", "label"], shuffle=shuffle,
                               num_shards=num_shards, shard_id=shard_id, num_parallel_workers=1)


def create_split_loader(cfg, split, is_training, num_shards=None, shard_id=None, scan=None):
    """Batched loader for ``cfg['data_dir']/split`` following the mindcv keys in ``cfg``.

    With ``cfg['deterministic']`` training data is neither shuffled nor randomly augmented, so runs
    (and ranks) can be compared sample for sample.
    """
    from mindcv.data import create_loader, create_transforms

    scan = scan or scan_split(cfg["data_dir"], split)
    deterministic = bool(cfg.get("deterministic"))
    augment = is_training and not deterministic
    dataset = create_split_dataset(scan, shuffle=is_training and cfg.get("shuffle", True) and not deterministic,
                                   num_shards=num_shards, shard_id=shard_id,
                                   num_parallel_workers=cfg.get("num_parallel_workers", 1),
                                   num_samples=cfg.get("num_samples") if is_training else None)
    common = dict(image_resize=cfg["image_resize"], mean=list(cfg["mean"]), std=list(cfg["std"]),
                  interpolation=cfg.get("interpolation", "bilinear"))
    if augment:
        transform = create_transforms("", is_training=True, auto_augment=cfg.get("auto_augment"),
                                      scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]), hflip=cfg["hflip"],
                                      vflip=cfg["vflip"], color_jitter=cfg.get("color_jitter"),
                                      re_prob=cfg.get("re_prob", 0.0), re_value=cfg.get("re_value", 0),
                                      re_max_attempts=cfg.get("re_max_attempts", 10), **common)
    else:
        transform = create_transforms("", is_training=False, crop_pct=cfg.get("crop_pct", 0.875), **common)
    mixup = cfg.get("mixup", 0.0) if augment else 0.0
    cutmix = cfg.get("cutmix", 0.0) if augment else 0.0
    loader = create_loader(dataset=dataset, batch_size=cfg["batch_size"],
                           drop_remainder=cfg.get("drop_remainder", True) if is_training else False,
                           is_training=is_training, mixup=mixup, cutmix=cutmix, cutmix_prob=cfg.get("cutmix_prob", 1.0),
                           num_classes=cfg["num_classes"], transform=transform,
                           num_parallel_workers=cfg.get("num_parallel_workers", 1))
    if loader.get_dataset_size() == 0:
        raise DataError(f"{scan.root}: {scan.num_images} images per {num_shards or 1} rank(s) make no full batch of "
                        f"{cfg['batch_size']}; lower --batch_size")
    return loader, scan
