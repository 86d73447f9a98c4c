"""The data path: listing without decoding, decoding inside the parallel pipeline, bad files handled there
(training replaces and counts them, evaluation skips and counts them), shares that cover a split once."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from coat_ms.config import merged
from coat_ms.data import list_split
from coat_ms.data.decode import decode_file
from coat_ms.data.pipeline import eval_dataset, train_dataset
from coat_ms.data.transforms import preprocessing
from helpers import TINY_ARCH, metrics_line, one_error_line, run_script, small_imagefolder

BAD_FILES = {  # the four kinds of unreadable file the scale issue names
    "corrupt.jpg": lambda good_jpg: good_jpg[:200] + os.urandom(600) + good_jpg[-200:],
    "truncated.png": lambda good_png: good_png[: len(good_png) // 2],
    "empty.jpg": lambda _: b"",
    "notes.jpg": lambda _: b"these are my notes, not an image\n",
}


def encoded(fmt, size=(40, 30), seed=0):
    array = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def plant_bad_and_odd_files(class_dir):
    """The four unreadable images, readable GIF/WebP images, and non-image files; returns the bad names."""
    good_jpg, good_png = encoded("JPEG"), encoded("PNG")
    for name, make in BAD_FILES.items():
        (class_dir / f"zz_{name}").write_bytes(make(good_png if name.endswith(".png") else good_jpg))
    (class_dir / "zz_anim.gif").write_bytes(encoded("GIF", seed=1))
    (class_dir / "zz_photo.webp").write_bytes(encoded("WEBP", seed=2))
    (class_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (class_dir / "readme.txt").write_text("not an image")
    return sorted(f"zz_{n}" for n in BAD_FILES)


def test_pil_decoding_equals_mindspores_decode_on_clean_files(tmp_path):
    from mindspore.dataset import vision
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp")):
        path = tmp_path / f"x.{ext}"
        path.write_bytes(encoded(fmt, size=(97, 61), seed=3))
        ours, theirs = decode_file(path), vision.Decode()(np.fromfile(path, np.uint8))
        assert ours.shape == theirs.shape == (61, 97, 3) and np.array_equal(ours, theirs), fmt


def test_listing_opens_no_image_and_filters_by_name(tmp_path):
    data = small_imagefolder(tmp_path / "d", classes=(0, 1), per_class=5, image_size=32, fmt="png")
    bad = plant_bad_and_odd_files(tmp_path / "d" / "train" / "1")
    images = list_split(data, "train")
    names = [os.path.basename(images.path(i)) for i in range(len(images))]
    # every image-named file is listed, readable or not (nothing was decoded); .DS_Store and readme.txt are not
    assert len(images) == 10 + len(bad) + 2 and set(bad) <= set(names)
    assert ".DS_Store" not in names and "readme.txt" not in names and images.ignored == 2
    assert images.classes == ["0", "1"] and images.labels.tolist().count(1) == 5 + len(bad) + 2


def test_eval_shares_cover_the_split_exactly_once(tmp_path):
    data = small_imagefolder(tmp_path / "d", classes=(0, 1, 2), per_class=7, image_size=32, fmt="png")
    images = list_split(data, "val")
    pre = preprocessing(image_size=32, crop_pct=1.0)
    seen = []
    for rank in range(3):
        dataset, count = eval_dataset(images, pre, batch_size=4, workers=2, rank=rank, size=3)
        labels = np.concatenate([y for _, y, _ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)])
        assert len(labels) == count
        seen.append(labels)
    assert sum(len(s) for s in seen) == len(images) == 21
    assert sorted(np.concatenate(seen).tolist()) == sorted(images.labels.tolist())


def test_mixup_and_cutmix_give_soft_labels_and_the_bad_column_travels(tmp_path):
    data = small_imagefolder(tmp_path / "d", classes=(0, 1, 2, 3), per_class=16, image_size=32, fmt="png")
    cfg = merged({}, data_dir=data, image_resize=32, batch_size=8, mixup=0.2, cutmix=1.0, num_parallel_workers=2,
                 scale=[0.5, 1.0])
    loader = train_dataset(cfg, list_split(data, "train"), num_classes=4)
    assert loader.get_col_names() == ["image", "label", "bad"]
    labels = np.concatenate([y for _, y, _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    assert labels.shape == (64, 4) and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    assert ((labels > 0).sum(axis=1) == 2).mean() > 0.5  # most rows mix two classes


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A 300-image training split (digits, 10 classes x 30) with bad and odd files planted in class 3."""
    root = tmp_path_factory.mktemp("planted")
    dirty = small_imagefolder(root / "dirty", classes=tuple(range(10)), per_class=30, image_size=32, fmt="png")
    bad = plant_bad_and_odd_files(root / "dirty" / "train" / "3")
    for name in bad:  # the same files in val, so that validation meets them too
        (root / "dirty" / "val" / "3" / name).write_bytes((root / "dirty" / "train" / "3" / name).read_bytes())
    return dirty, bad


def train_small(data, out, cwd, *extra):
    return run_script("train.py", "--data_dir", data, "--ckpt_save_dir", out, "--model", "coat_lite_tiny",
                      "--model_args", TINY_ARCH, "--image_resize", 32, "--crop_pct", 1.0, "--batch_size", 20,
                      "--epoch_size", 1, "--num_parallel_workers", 2, "--device_target", "CPU", "--opt", "momentum",
                      "--lr", 0.001, "--log_interval", 25, *extra, cwd=cwd, timeout=900)


def test_unreadable_images_never_stop_training_or_validation(planted, tmp_path, run_in_process):
    dirty, bad = planted
    proc = train_small(dirty, tmp_path / "dirty_run", tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # 306 listed images (300 + gif + webp) in 15 full batches: the epoch keeps its length
    assert "306 train images" in log and "15 step(s)/epoch" in log
    assert "unreadable images: 4 replaced in training (4 per epoch" in proc.stdout
    for name in bad:  # each named in the log (by the worker that met it), at least once
        assert f"unreadable image replaced: {os.path.join(dirty, 'train', '3', name)}" in log
        assert f"unreadable image skipped: {os.path.join(dirty, 'val', '3', name)}" in log
    assert "(4 unreadable val images skipped)" in log
    assert "data: 2 worker(s)" in log  # the pipeline kept its parallel workers
    assert metrics_line(proc.stdout)["Top_1_Accuracy"] >= 0.0
    assert not list(tmp_path.glob("unsupported_image*"))  # MindSpore's decoder never saw them
    csv_rows = (tmp_path / "dirty_run" / "results.csv").read_text().splitlines()
    assert csv_rows[0].endswith("skipped_images") and csv_rows[1].endswith(",4")

    import validate as validate_cli
    code, out, _ = run_in_process(validate_cli.main, "--data_dir", dirty, "--ckpt_path",
                                  tmp_path / "dirty_run" / "latest.ckpt", "--batch_size", 16, "--no_progress",
                                  "--json", tmp_path / "v.json")
    assert code == 0  # no SIGFPE, no decoder crash
    assert "4 unreadable images skipped" in out
    import json
    saved = json.loads((tmp_path / "v.json").read_text())
    val_images = len(list_split(dirty, "val"))
    assert saved["num_samples"] == val_images - 4 and saved["skipped"] == 4
    assert not list(tmp_path.glob("unsupported_image*"))


def test_a_split_of_nothing_but_bad_files_is_one_line(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / "d" / split / cls
            folder.mkdir(parents=True)
            (folder / "x.jpg").write_bytes(b"")
            (folder / "y.png").write_bytes(b"nope")
    proc = train_small(tmp_path / "d", tmp_path / "run", tmp_path, "--batch_size", 2)
    line = one_error_line(proc)
    assert "no readable image among" in line and "check the dataset" in line
