"""The data pipelines: sample indices -> decoded images -> transforms -> batches, in parallel workers.

One design for training, train-time validation, validate.py and distributed validation:

    source   NumpySlicesDataset of (index, label): shuffled and sharded by MindSpore's sampler (training)
             or this rank's share without padding (evaluation); no file is touched at build time
    decode   ImageReader in ``num_parallel_workers`` workers: (index, label) -> (image, label, bad)
    augment  mindcv's recipe transforms (training) or the eval preprocessing
    batch    (+ mixup / cutmix for training, mindcv's loader)

Every batch carries the ``bad`` column (1 per unreadable file), so bad images are counted per epoch
exactly, in training and in validation, without any per-step host synchronisation.
"""
import logging
import os

import numpy as np

from .decode import ImageReader
from .files import DataError, shard_indices
from .transforms import eval_transforms, train_transforms

logger = logging.getLogger("coat_ms")

COLUMNS = ["image", "label", "bad"]
_CLAMP_SAID = set()


def worker_count(requested):
    """``requested`` data workers, at most the CPU count (MindSpore refuses more); said once."""
    cores = os.cpu_count() or 1
    if requested > cores:
        if requested not in _CLAMP_SAID:
            _CLAMP_SAID.add(requested)
            logger.info("data: num_parallel_workers %d -> %d (this machine has %d CPU cores)", requested, cores, cores)
        return cores
    return requested


def describe(op):
    """Short name of a transform (mindcv's RandAugment is a Python object holding its policy name)."""
    name = type(op).__name__
    if name == "RandomErasing":
        return f"RandomErasing(p={op.prob})"
    if "Augment" in name or name == "RandAugment":
        return "RandAugment" if "Rand" in name else name
    return name


def _source(images, indices, shuffle, num_shards=None, shard_id=None, num_samples=None):
    import mindspore.dataset as ds

    data = {"index": np.asarray(indices, dtype=np.int64), "label": images.labels[indices]}
    return ds.NumpySlicesDataset(data, column_names=["index", "label"], shuffle=shuffle, num_shards=num_shards,
                                 shard_id=shard_id, num_samples=num_samples)


def _decoded(dataset, images, replace, workers, processes=False):
    return dataset.map(ImageReader(images, replace=replace), input_columns=["index", "label"],
                       output_columns=COLUMNS, num_parallel_workers=workers, python_multiprocessing=processes)


def train_dataset(cfg, images, num_classes, rank=0, size=1):
    """Batched training data of this rank: columns image, label (one-hot when mixing), bad.

    ``cfg['deterministic']``: no shuffling and no random augmentation (eval preprocessing instead),
    so runs and ranks can be compared sample for sample.
    """
    from mindcv.data import create_loader

    from .transforms import preprocessing_from_config

    workers = worker_count(cfg["num_parallel_workers"])
    deterministic = cfg["deterministic"]
    shards = dict(num_shards=size, shard_id=rank) if size > 1 else {}
    source = _source(images, np.arange(len(images)), shuffle=cfg["shuffle"] and not deterministic,
                     num_samples=cfg["num_samples"], **shards)
    processes = cfg["python_multiprocessing"]
    decoded = _decoded(source, images, replace=True, workers=workers, processes=processes)
    transform = eval_transforms(preprocessing_from_config(cfg)) if deterministic else train_transforms(cfg)
    mixup, cutmix = (0.0, 0.0) if deterministic else (cfg["mixup"], cfg["cutmix"])
    loader = create_loader(dataset=decoded, batch_size=cfg["batch_size"], drop_remainder=cfg["drop_remainder"],
                           is_training=True, mixup=mixup, cutmix=cutmix, cutmix_prob=cfg["cutmix_prob"],
                           num_classes=num_classes, transform=transform, num_parallel_workers=workers,
                           python_multiprocessing=processes)
    if rank == 0:
        logger.info("data: %d worker(s); decode (PIL), %s%s", workers, ", ".join(describe(op) for op in transform),
                    f"; batch mixing: mixup {mixup}, cutmix {cutmix} (prob {cfg['cutmix_prob']})"
                    if mixup + cutmix > 0 else "")
    if loader.get_dataset_size() == 0:
        raise DataError(f"{images.root}: {len(images)} images over {size} rank(s) make no full batch of "
                        f"{cfg['batch_size']}; lower --batch_size")
    return loader


def eval_dataset(images, pre, batch_size, workers=1, rank=0, size=1):
    """Batched evaluation data of this rank's share (every sample exactly once over all ranks, in order).

    Returns (dataset, number of samples of this rank).  The last batch may be smaller.
    """
    indices = shard_indices(len(images), rank, size)
    if len(indices) == 0:
        return None, 0
    workers = worker_count(workers)
    dataset = _decoded(_source(images, indices, shuffle=False), images, replace=False, workers=workers)
    dataset = dataset.map(eval_transforms(pre), input_columns="image", num_parallel_workers=workers)
    return dataset.batch(batch_size, drop_remainder=False), len(indices)
