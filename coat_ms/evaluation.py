"""Evaluation: one metric accumulator and one loop, used by train-time validation, validate.py and
distributed validation.

* Every sample of the split counts exactly once: each rank evaluates its share (coat_ms.data.pipeline),
  the last, smaller batch is padded to the batch size for the network (one compiled shape) and the
  padding is dropped, and the per-rank sums are added across ranks.
* Unreadable images are left out of the metrics and counted (``skipped``).
* Loss is the mean cross-entropy of the logits against the true labels, **without label smoothing**,
  over the readable images (timm's validation loss).  It is comparable across recipes; mindcv's
  validate.py instead reports its training loss (with the recipe's smoothing).
"""
import dataclasses
import logging

import numpy as np

from .data.files import DataError

logger = logging.getLogger("coat_ms")


def log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    return np.exp(log_softmax(logits))


@dataclasses.dataclass
class EvalResult:
    num_samples: int
    skipped: int
    top1: float
    top5: float
    loss: float
    class_names: list
    per_class: list = None          # accuracy of each class (None where the class has no samples)
    confusion: np.ndarray = None    # rows: true class, columns: predicted class

    def metrics(self):
        """mindcv's printout keys."""
        return {"Top_1_Accuracy": self.top1, "Top_5_Accuracy": self.top5, "Loss": self.loss}


class MetricSums:
    """Top-1 / Top-5 hits, summed cross-entropy, counts (and optionally the confusion matrix) of a split."""

    def __init__(self, num_classes, confusion=False):
        self.num_classes = num_classes
        self.count = self.skipped = self.top1 = self.top5 = 0
        self.loss_sum = 0.0
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64) if confusion else None

    def update(self, logits, labels, bad=None):
        logits = np.asarray(logits)
        labels = np.asarray(labels).astype(np.int64)
        if bad is not None:
            keep = np.asarray(bad) == 0
            self.skipped += int((~keep).sum())
            logits, labels = logits[keep], labels[keep]
        if not len(labels):
            return
        if logits.shape[1] < self.num_classes or labels.max() >= logits.shape[1]:
            raise DataError(f"the model predicts {logits.shape[1]} classes but the data has {self.num_classes}; "
                            f"check num_classes and the checkpoint")
        k = min(5, logits.shape[1])
        topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        self.top1 += int((topk[:, 0] == labels).sum())
        self.top5 += int((topk == labels[:, None]).any(axis=1).sum())
        self.loss_sum += float(-log_softmax(logits)[np.arange(len(labels)), labels].sum())
        if self.confusion is not None:
            np.add.at(self.confusion, (labels, np.minimum(topk[:, 0], self.num_classes - 1)), 1)
        self.count += len(labels)

    def _vector(self):
        # float32 on the wire (MindSpore's CPU AllReduce); the loss sum travels as hi + lo parts so the
        # reduced sum keeps float64 precision, and counts stay exact below 2**24.
        hi = np.float32(self.loss_sum)
        lo = np.float32(self.loss_sum - float(hi))
        head = np.array([self.count, self.skipped, self.top1, self.top5, hi, lo], dtype=np.float32)
        return head if self.confusion is None else np.concatenate([head, self.confusion.ravel().astype(np.float32)])

    def _set_vector(self, vector):
        vector = np.asarray(vector, dtype=np.float64)
        self.count, self.skipped, self.top1, self.top5 = (int(round(v)) for v in vector[:4])
        self.loss_sum = float(vector[4]) + float(vector[5])
        if self.confusion is not None:
            self.confusion = np.rint(vector[6:]).astype(np.int64).reshape(self.confusion.shape)

    def all_reduce(self, dist):
        """Add the sums of every rank (all ranks end with the same totals)."""
        if dist is not None and dist.size > 1:
            from .train.distributed import all_reduce_sum
            self._set_vector(all_reduce_sum(self._vector()))
        return self

    def result(self, class_names):
        if self.count == 0:
            raise DataError(f"no readable images were evaluated ({self.skipped} unreadable)")
        per_class = None
        if self.confusion is not None:
            totals = self.confusion.sum(axis=1)
            per_class = [float(self.confusion[i, i] / t) if t else None for i, t in enumerate(totals)]
        return EvalResult(self.count, self.skipped, self.top1 / self.count, self.top5 / self.count,
                          self.loss_sum / self.count, list(class_names), per_class, self.confusion)


def run_padded(predict_fn, batch, batch_size):
    """predict_fn on ``batch`` padded with zeros to ``batch_size`` rows; returns the real rows' logits."""
    n = batch.shape[0]
    if n < batch_size:
        pad = np.zeros((batch_size - n,) + batch.shape[1:], dtype=batch.dtype)
        batch = np.concatenate([batch, pad])
    return np.asarray(predict_fn(batch))[:n]


def evaluate(predict_fn, dataset, num_classes, batch_size, dist=None, confusion=False, progress=True,
             desc="validate"):
    """Run ``predict_fn`` (float32 NCHW array -> logits array) over this rank's ``dataset`` (columns
    image, label, bad; None when the rank has no share) and return the MetricSums of all ranks."""
    from tqdm import tqdm

    sums = MetricSums(num_classes, confusion=confusion)
    if dataset is not None:
        steps = dataset.get_dataset_size()
        for image, label, bad in tqdm(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True), total=steps,
                                      desc=desc, unit="batch", disable=not progress, leave=False, dynamic_ncols=True):
            sums.update(run_padded(predict_fn, image.astype(np.float32, copy=False), batch_size), label, bad)
    return sums.all_reduce(dist)


def cell_predictor(net):
    """numpy -> numpy wrapper of a MindSpore Cell or GraphCell (in inference mode)."""
    import mindspore as ms

    if hasattr(net, "set_train"):
        net.set_train(False)

    def predict(batch):
        return net(ms.Tensor(np.ascontiguousarray(batch, dtype=np.float32))).asnumpy()
    return predict


def save_confusion_png(result, path, title="confusion matrix"):
    """Write the confusion matrix as a PNG (atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write

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


def evaluate_images(model_or_fn, images, pre, batch_size, workers=1, dist=None, confusion=False, progress=True):
    """EvalResult of a model (Cell or numpy predict function) on an ImageList, every sample counted once
    over all ranks (each rank evaluates its share)."""
    from .data.pipeline import eval_dataset

    predict_fn = model_or_fn if callable(model_or_fn) and not hasattr(model_or_fn, "construct") \
        else cell_predictor(model_or_fn)
    rank, size = (dist.rank, dist.size) if dist is not None else (0, 1)
    dataset, _ = eval_dataset(images, pre, batch_size, workers, rank, size)
    sums = evaluate(predict_fn, dataset, len(images.classes), batch_size, dist, confusion=confusion,
                    progress=progress)
    return sums.result(images.classes)


def evaluate_checkpoint(images, ckpt_path=None, model_name=None, *, pretrained=False, num_classes=None,
                        model_args=None, model_args_source="model_args", ema=False, preprocess=None, batch_size=32,
                        workers=1, dist=None, confusion=False, progress=True, amp_level="O0"):
    """validate.py's job: (EvalResult, model, preprocessing) of the weights in ``ckpt_path`` (or, with
    ``pretrained``, timm's weights of ``model_name``) on ``images``, a listed split (coat_ms.data.list_split).

    Model, head size and class order come from the checkpoint's coat_ms record unless given (``model_name``,
    ``num_classes``); ``model_args`` update the recorded model options (``model_args_source`` names where
    they came from in errors).  The preprocessing is ``preprocess`` (the values given: image_size, crop_pct,
    interpolation, mean, std, style; None means not given) over the weights' record over the model's default
    (coat_ms.data.transforms.weights_preprocessing).  With ``ema`` the checkpoint's EMA weights are evaluated
    when it holds them.  ``workers``: data workers, at most the CPU count.
    """
    from .factory import model_from_checkpoint
    from .data.pipeline import worker_count
    from .data.transforms import weights_preprocessing
    from .errors import CoatError

    if ckpt_path:
        model, meta = model_from_checkpoint(ckpt_path, model_name, num_classes, model_args, ema=ema,
                                            args_source=model_args_source)
    elif pretrained:
        from .factory import create_model
        from .model_options import check_model_args
        if not model_name:
            raise CoatError("pretrained weights need a model name (e.g. coat_lite_tiny)")
        options = check_model_args(model_name, model_args or {}, model_args_source)
        model = create_model(model_name, pretrained=True, num_classes=num_classes or 1000, **options)
        model.set_train(False)
        meta = model.weights_meta
    else:
        raise CoatError("no weights given: pass --ckpt_path X.ckpt (or --pretrained True)")
    if amp_level != "O0":
        from mindcv.utils.amp import auto_mixed_precision
        auto_mixed_precision(model, amp_level=amp_level)
    if meta.get("class_names"):
        images = images.relabelled(meta["class_names"])
    elif len(images.classes) != model.num_classes:
        logger.warning("%s: %d class folders for a %d-class model, and the checkpoint has no class list: labels are "
                       "the positions of the sorted folder names", images.root, len(images.classes), model.num_classes)
    pre = weights_preprocessing(meta, model, **(preprocess or {}))
    result = evaluate_images(model, images, pre, batch_size, worker_count(workers), dist, confusion=confusion,
                             progress=progress)
    return result, model, pre
