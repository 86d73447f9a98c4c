"""Evaluation data and metrics shared by validate.py and predict.

Preprocessing follows the model's pretrained config (mindcv's eval pipeline): decode RGB, resize the
short side to floor(image_size / crop_pct) with the config's interpolation, centre-crop image_size,
normalise with mean/std, HWC -> CHW.  Every sample counts: the last, smaller batch is padded to the
batch size for the network (one compiled shape) and the padding is dropped from the results.
"""
import dataclasses
import io
import os

import numpy as np

from .errors import CoatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


class DataError(CoatError):
    """A data folder or image that cannot be used as asked."""


@dataclasses.dataclass
class EvalSettings:
    image_size: tuple = (224, 224)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple = (123.675, 116.28, 103.53)  # 0..255 scale, as mindcv's Normalize on uint8 images
    std: tuple = (58.395, 57.12, 57.375)

    @property
    def resize(self):
        """Short-side size before the centre crop (int for square crops, like mindcv)."""
        h, w = self.image_size
        if h == w:
            return int(np.floor(h / self.crop_pct))
        return (int(h / self.crop_pct), int(w / self.crop_pct))

    def describe(self):
        return (f"resize {self.resize} {self.interpolation}, centre crop {self.image_size[0]}x{self.image_size[1]}, "
                f"mean {tuple(round(m, 3) for m in self.mean)}, std {tuple(round(s, 3) for s in self.std)}")


def _to_255(values):
    values = tuple(float(v) for v in values)
    return tuple(v * 255.0 for v in values) if max(values) <= 1.0 else values


def eval_settings(pretrained_cfg, config=None, image_size=None):
    """EvalSettings from a pretrained config, overridden by keys present in ``config`` and ``image_size``.

    ``config`` uses mindcv's keys (image_resize, crop_pct, interpolation, mean, std); mean/std given
    in 0..1 are scaled to 0..255.
    """
    cfg = dict(pretrained_cfg or {})
    config = dict(config or {})
    size = cfg.get("input_size", (3, 224, 224))[-2:]
    if config.get("image_resize") is not None:
        size = config["image_resize"]
    if image_size is not None:
        size = image_size
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise DataError(f"image size must be H W (positive), got {size}")
    crop_pct = float(config.get("crop_pct") or cfg.get("crop_pct", 0.9))
    if not 0.0 < crop_pct <= 1.0:
        raise DataError(f"crop_pct must be in (0, 1], got {crop_pct}")
    interpolation = str(config.get("interpolation") or cfg.get("interpolation", "bicubic")).lower()
    if interpolation not in ("bicubic", "bilinear", "nearest", "area"):
        raise DataError(f"unknown interpolation '{interpolation}' (bicubic, bilinear, nearest, area)")
    mean = _to_255(config.get("mean") or cfg.get("mean", (0.485, 0.456, 0.406)))
    std = _to_255(config.get("std") or cfg.get("std", (0.229, 0.224, 0.225)))
    return EvalSettings(size, crop_pct, interpolation, mean, std)


def eval_transforms(settings, decode=True):
    """mindspore.dataset vision ops for ``settings`` (the list mindcv's eval pipeline builds)."""
    from mindspore.dataset import vision
    from mindspore.dataset.vision import Inter

    ops = [vision.Decode()] if decode else []
    ops += [vision.Resize(settings.resize, interpolation=getattr(Inter, settings.interpolation.upper())),
            vision.CenterCrop(settings.image_size),
            vision.Normalize(mean=list(settings.mean), std=list(settings.std)),
            vision.HWC2CHW()]
    return ops


# ----------------------------------------------------------------------------------------------
# Folders and files
# ----------------------------------------------------------------------------------------------

def class_folders(split_dir):
    """Sorted class-folder names of an ImageFolder split (the label order of training)."""
    if not os.path.isdir(split_dir):
        raise DataError(f"data folder not found: {split_dir}")
    names = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    if not names:
        raise DataError(f"{split_dir} has no class folders (expected {split_dir}/<class>/<image>)")
    return names


def list_images(paths):
    """Expand files and folders (recursively, sorted) into image paths; other files are listed too
    so that they get reported, but folders' non-image files (by extension) are ignored."""
    out = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.exists(path):
            out.append(path)
        else:
            raise DataError(f"no such file or folder: {path}")
    return out


def read_image(path):
    """RGB uint8 HWC array of an image file; DataError if it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


def preprocess_arrays(images, settings):
    """List of RGB HWC uint8 arrays -> float32 (N, 3, H, W) with the eval transforms."""
    from mindspore.dataset import transforms

    pipeline = transforms.Compose(eval_transforms(settings, decode=False))
    return np.stack([np.asarray(pipeline(img), dtype=np.float32) for img in images])


def preprocess_files(paths, settings):
    """(batch, good paths, [(path, reason)] skipped) for a list of image files."""
    images, good, skipped = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            good.append(path)
        except DataError as exc:
            skipped.append((path, str(exc).split(": ", 1)[-1]))
    batch = preprocess_arrays(images, settings) if images else None
    return batch, good, skipped


def create_eval_dataset(data_dir, split, settings, batch_size, num_workers=1):
    """(batched mindspore dataset, class names, sample count) of ``data_dir/split``; no sample dropped."""
    import mindspore.dataset as ds

    split_dir = os.path.join(os.fspath(data_dir), split) if split else os.fspath(data_dir)
    names = class_folders(split_dir)
    dataset = ds.ImageFolderDataset(split_dir, shuffle=False, num_parallel_workers=num_workers,
                                    class_indexing={n: i for i, n in enumerate(names)},
                                    extensions=list(IMAGE_EXTENSIONS) + [e.upper() for e in IMAGE_EXTENSIONS])
    count = dataset.get_dataset_size()
    if count == 0:
        raise DataError(f"{split_dir} holds no images")
    dataset = dataset.map(eval_transforms(settings), input_columns="image", num_parallel_workers=num_workers)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    return dataset, names, count


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

def log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    return np.exp(log_softmax(logits))


@dataclasses.dataclass
class EvalResult:
    num_samples: int
    top1: float
    top5: float
    loss: float
    class_names: list
    per_class: list          # accuracy of each class (None where the class has no samples)
    confusion: np.ndarray    # rows: true class, columns: predicted class

    def metrics(self):
        """mindcv's printout keys."""
        return {"Top_1_Accuracy": self.top1, "Top_5_Accuracy": self.top5, "Loss": self.loss}


class MetricAccumulator:
    """Collects logits batch by batch; top-1/top-5, cross-entropy, confusion matrix."""

    def __init__(self, num_classes, label_smoothing=0.0):
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.n = self.top1 = self.top5 = 0
        self.loss_sum = 0.0
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, logits, labels):
        logits = np.asarray(logits)
        labels = np.asarray(labels).astype(np.int64)
        if logits.shape[1] < self.num_classes or labels.max(initial=0) >= logits.shape[1]:
            raise DataError(f"the model predicts {logits.shape[1]} classes but the data has {self.num_classes}; "
                            f"check num_classes and the checkpoint")
        logp = log_softmax(logits)
        k = min(5, logits.shape[1])
        topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        self.top1 += int((topk[:, 0] == labels).sum())
        self.top5 += int((topk == labels[:, None]).any(axis=1).sum())
        eps = self.label_smoothing
        nll = -logp[np.arange(len(labels)), labels]
        self.loss_sum += float(((1 - eps) * nll - eps * logp.mean(axis=1)).sum())
        pred = np.minimum(topk[:, 0], self.num_classes - 1)
        np.add.at(self.confusion, (labels, pred), 1)
        self.n += len(labels)

    def result(self, class_names):
        if self.n == 0:
            raise DataError("no samples were evaluated")
        totals = self.confusion.sum(axis=1)
        per_class = [float(self.confusion[i, i] / t) if t else None for i, t in enumerate(totals)]
        return EvalResult(self.n, self.top1 / self.n, self.top5 / self.n, self.loss_sum / self.n,
                          list(class_names), per_class, self.confusion)


def run_padded(predict_fn, batch, batch_size):
    """predict_fn on ``batch`` padded with zeros to ``batch_size`` rows; returns the real rows' logits."""
    n = batch.shape[0]
    if n < batch_size:
        pad = np.zeros((batch_size - n,) + batch.shape[1:], dtype=batch.dtype)
        batch = np.concatenate([batch, pad])
    return np.asarray(predict_fn(batch))[:n]


def evaluate(predict_fn, dataset, class_names, batch_size, label_smoothing=0.0, progress=True):
    """Run ``predict_fn`` (float32 NCHW array -> logits array) over every batch of ``dataset``."""
    from tqdm import tqdm

    acc = MetricAccumulator(len(class_names), label_smoothing)
    steps = dataset.get_dataset_size()
    for item in tqdm(dataset.create_dict_iterator(num_epochs=1, output_numpy=True), total=steps,
                     desc="validate", unit="batch", disable=not progress, leave=False):
        images = item["image"].astype(np.float32)
        acc.update(run_padded(predict_fn, images, batch_size), item["label"])
    return acc.result(class_names)


def cell_predictor(net):
    """numpy -> numpy wrapper of a MindSpore Cell or GraphCell."""
    import mindspore as ms

    def predict(batch):
        return net(ms.Tensor(np.ascontiguousarray(batch, dtype=np.float32))).asnumpy()
    return predict


def save_confusion_png(result, path, title="confusion matrix"):
    """Write the confusion matrix as a PNG (atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n + 2), max(3.5, 0.45 * n + 1.5)))
    im = ax.imshow(result.confusion, cmap="Blues")
    if n <= 40:
        ax.set_xticks(range(n), result.class_names, rotation=90)
        ax.set_yticks(range(n), result.class_names)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if result.confusion[i, j]:
                        ax.text(j, i, int(result.confusion[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if result.confusion[i, j] > result.confusion.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (top-1 {result.top1:.2%}, n={result.num_samples})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def atomic_write(path, write_fn):
    """write_fn(tmp_path) into a temp file next to ``path``, then os.replace."""
    import tempfile

    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise DataError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp files are private; the result should not be
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
