"""Real photographs without a download: crops of scikit-learn's two sample photos as an ImageFolder.

scikit-learn ships two 640x427 colour photos (``load_sample_images``: a temple in China, a flower).
Each photo is cut into a ``grid`` of cells; every cell is a class, and its images are square crops
(``min_side``..``max_side`` pixels, saved as JPEG at that size) whose centre falls at a random point of
the cell, so neighbouring classes overlap at their borders and no two crops are the same. Train and
val crops are drawn independently (fixed ``seed``). It is a small stand-in for "photos of the user's
own", used to fine-tune and to calibrate INT8 quantization on natural images (benchmarks/int8_study.py).
"""
import os

import numpy as np
from PIL import Image


def write_photo_crops_imagefolder(root, grid=(3, 4), per_class=(40, 10), min_side=72, max_side=128, seed=0):
    """Write ``root/{train,val}/<photo>_r<row>c<col>/NNNN.jpg``; returns {'train': n, 'val': n, 'classes': n}.

    Idempotent: existing files are kept.
    """
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    rows, cols = grid
    for photo, path in zip(sample.images, sample.filenames):
        name = os.path.splitext(os.path.basename(path))[0]
        height, width = photo.shape[:2]
        for r in range(rows):
            for c in range(cols):
                cls = f"{name}_r{r}c{c}"
                for split, n in zip(("train", "val"), per_class):
                    folder = os.path.join(root, split, cls)
                    os.makedirs(folder, exist_ok=True)
                    for i in range(n):
                        side = int(rng.integers(min_side, max_side + 1))
                        cy = rng.uniform(r * height / rows, (r + 1) * height / rows)
                        cx = rng.uniform(c * width / cols, (c + 1) * width / cols)
                        top = int(np.clip(cy - side / 2, 0, height - side))
                        left = int(np.clip(cx - side / 2, 0, width - side))
                        out = os.path.join(folder, f"{i:04d}.jpg")
                        if not os.path.exists(out):
                            Image.fromarray(photo[top:top + side, left:left + side]).save(out, quality=92)
                        counts[split] += 1
    counts["classes"] = rows * cols * len(sample.images)
    return counts
