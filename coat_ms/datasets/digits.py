"""The embedded dataset: scikit-learn's handwritten digits written as an ImageFolder of PNG files.

1,797 real 8x8 scans of the digits 0-9 (16 grey levels), ship with scikit-learn, so the demo and
tests need no download.  Each image is scaled up (nearest neighbour) and saved as RGB PNG under
``root/{train,val}/{digit}/``; the split is stratified and fixed by ``seed``.
"""
import os

import numpy as np
from PIL import Image

CLASS_NAMES = tuple(str(d) for d in range(10))


def write_digits_imagefolder(root, image_size=32, val_fraction=0.2, seed=0, classes=None, per_class=None,
                             fmt="png"):
    """Write the digits dataset to ``root`` (idempotent); returns {'train': n, 'val': n}.

    ``classes`` (digits) and ``per_class`` (images per class and split, at most) make smaller sets;
    ``fmt`` is the file format ("png" or "jpg").
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # 8x8, values 0..16
    labels = digits.target
    rng = np.random.RandomState(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        is_val[idx[:int(round(len(idx) * val_fraction))]] = True

    scale = image_size // 8
    counts = {"train": 0, "val": 0}
    taken = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "val" if is_val[i] else "train"
        if classes is not None and label not in classes:
            continue
        if per_class is not None and taken.get((split, label), 0) >= per_class:
            continue
        taken[(split, label)] = taken.get((split, label), 0) + 1
        folder = os.path.join(root, split, CLASS_NAMES[label])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:04d}.{fmt}")
        if not os.path.exists(path):
            big = np.kron(image, np.ones((scale, scale), dtype=np.uint8))
            Image.fromarray(np.stack([big] * 3, axis=-1), mode="RGB").save(path)
        counts[split] += 1
    return counts
