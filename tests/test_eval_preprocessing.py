"""Evaluation preprocessing follows the weights: timm's weights are evaluated as timm evaluates them.

The reference is timm's own validation path on the same files and weights: timm's ``ImageDataset``
(PIL ``convert('RGB')``), ``resolve_data_config`` + ``create_transform``, the model, cross-entropy and
``timm.utils.accuracy``.  The photos are real (scikit-learn's sample photographs in many sizes, aspect
ratios and file modes: parity_tests/photos.py).  pretrained=True runs offline from a Hugging Face cache
holding a file timm wrote (tests/test_pretrained.py).
"""
import ast
import json
import logging

import numpy as np
import pytest
import torch

from coat_ms.data.transforms import preprocessing
from parity_tests.photos import TIMM_FOLDER_FORMATS, write_photos
from test_pretrained import caches, place_in_hub, timm_model, write_full_safetensors  # noqa: F401  (fixture)

LOSS_RTOL = 1e-5


def printed_metrics(text):
    """The metrics dict validate.py printed, and its 'validated ...' line."""
    lines = text.splitlines()
    metrics = next(ast.literal_eval(line) for line in lines if line.startswith("{'Top_1_Accuracy'"))
    return metrics, next(line for line in lines if line.startswith("validated "))


def timm_validation(model, folder):
    """Loss / Top-1 / Top-5 (fractions) as timm's validate.py computes them on ``folder`` (ImageFolder)."""
    from timm.data import ImageDataset, create_transform, resolve_data_config
    from timm.utils import accuracy

    dataset = ImageDataset(str(folder), transform=create_transform(**resolve_data_config({}, model=model)))
    assert len(dataset) == 23
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)
    loss_sum, top1, top5, count = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for images, target in loader:
            out = model(images)
            loss_sum += float(torch.nn.functional.cross_entropy(out, target)) * len(target)
            a1, a5 = accuracy(out, target, topk=(1, 5))
            top1, top5, count = top1 + float(a1) * len(target), top5 + float(a5) * len(target), count + len(target)
    return {"Loss": loss_sum / count, "Top_1_Accuracy": top1 / count / 100, "Top_5_Accuracy": top5 / count / 100}


@pytest.fixture
def photo_folder(tmp_path):
    """23 real photos (those timm's folder reader lists) in three class folders under val/."""
    paths = write_photos(str(tmp_path / "photos" / "val"), classes=3, formats=TIMM_FOLDER_FORMATS)
    assert len(paths) == 23
    return tmp_path / "photos"


@pytest.mark.studies
def test_validate_pretrained_prints_timms_metrics_on_real_photos(caches, photo_folder, capsys):  # noqa: F811
    """Done-when of issue 25: validate.py --pretrained True prints timm's Loss / Top-1 / Top-5."""
    import validate

    hub, _ = caches
    reference = timm_model("coat_lite_tiny", seed=11)
    with torch.no_grad():  # a head scaled up, so that the loss reacts to every input pixel, and biased to the
        reference.head.weight.mul_(40.0)    # three classes of the folder, so that Top-1 is decided by the image
        reference.head.bias[:3] += 200.0
    place_in_hub(hub, "coat_lite_tiny", "model.safetensors", write_full_safetensors, reference, "r")
    want = timm_validation(reference, photo_folder / "val")

    args = ["--model", "coat_lite_tiny", "--pretrained", "True", "--data_dir", str(photo_folder),
            "--device_target", "CPU", "--batch_size", "8", "--num_parallel_workers", "1", "--no_progress"]
    assert validate.main(args) == 0
    got, said = printed_metrics(capsys.readouterr().out)
    assert "on 23 images" in said and "timm style (PIL, antialiased; rounded crop offset): resize 248 bicubic" in said
    print(f"validate.py: {got}; timm: {want}; Loss rel {abs(got['Loss'] - want['Loss']) / want['Loss']:.2e}")
    assert 0.1 < want["Top_1_Accuracy"] < 0.9, want   # a Top-1 the images decide
    assert got["Loss"] == pytest.approx(want["Loss"], rel=LOSS_RTOL), (got, want)
    assert got["Top_1_Accuracy"] == pytest.approx(want["Top_1_Accuracy"], abs=1e-9)
    assert got["Top_5_Accuracy"] == pytest.approx(want["Top_5_Accuracy"], abs=1e-9)

    # The same weights evaluated as mindcv evaluates (a flag overrides the record) are measurably off:
    # the comparison above can fail.
    assert validate.main(args + ["--preprocess_style", "mindcv"]) == 0
    other, said = printed_metrics(capsys.readouterr().out)
    assert "mindcv style" in said
    assert abs(other["Loss"] - want["Loss"]) > 100 * LOSS_RTOL * want["Loss"], (other, want)


def test_each_origin_records_its_preprocessing(caches, tmp_path, caplog):  # noqa: F811
    """timm weights (pretrained cache, converter output) record timm's style; records without a style
    (checkpoints of earlier versions) keep mindcv's; every tool reads the record through one function."""
    import coat_ms
    from convert.cli import main as convert_main
    from coat_ms.checkpoint import read_checkpoint_and_meta
    from coat_ms.factory import model_from_checkpoint
    from coat_ms.origin import read_weights
    from coat_ms.data.transforms import weights_preprocessing
    from coat_ms.export import _metadata

    hub, home = caches
    reference = timm_model("coat_lite_tiny", seed=12)
    place_in_hub(hub, "coat_lite_tiny", "model.safetensors", write_full_safetensors, reference, "r")
    model = coat_ms.create_model("coat_lite_tiny", pretrained=True)
    cached = json.loads((home / "coat_lite_tiny.in1k.ckpt.json").read_text())["record"]
    assert model.weights_meta == cached and cached["preprocessing"]["style"] == "timm"
    pre = weights_preprocessing(model.weights_meta, model)
    assert (pre.style, pre.resize, pre.image_size, pre.crop_pct, pre.interpolation) == \
        ("timm", 248, (224, 224), 0.9, "bicubic")

    pth = tmp_path / "coat_lite_tiny.pth"
    torch.save(reference.state_dict(), pth)
    assert convert_main(["--src", str(pth), "--out", str(tmp_path / "w.ckpt")]) == 0
    _, embedded = read_checkpoint_and_meta(str(tmp_path / "w.ckpt"))          # in the .ckpt itself
    sidecar = json.loads((tmp_path / "w.ckpt.json").read_text())["record"]    # and in the sidecar
    assert embedded == sidecar and embedded["preprocessing"]["style"] == "timm" and embedded["model_args"] == {}
    loaded, meta = model_from_checkpoint(str(tmp_path / "w.ckpt"))            # validate / predict / export
    assert meta == embedded and weights_preprocessing(meta, loaded).style == "timm"
    assert _metadata(loaded, "MINDIR", (1, 3, 224, 224), meta)["preprocessing"]["style"] == "timm"
    direct = coat_ms.create_model("coat_lite_tiny", checkpoint_path=str(tmp_path / "w.ckpt"))
    assert direct.weights_meta == embedded

    # A .ckpt without a record whose converter sidecar (an earlier converter: no 'record') still says timm.
    import mindspore as ms
    bare = tmp_path / "bare.ckpt"
    ms.save_checkpoint([{"name": n, "data": p} for n, p in read_weights(str(tmp_path / "w.ckpt"))[0].items()],
                       str(bare))
    assert read_weights(str(bare))[1] == {}
    old = {k: v for k, v in json.loads((tmp_path / "w.ckpt.json").read_text()).items() if k != "record"}
    (tmp_path / "bare.ckpt.json").write_text(json.dumps(old))
    caplog.set_level(logging.INFO, logger="coat_ms")
    assert read_weights(str(bare))[1]["preprocessing"]["style"] == "timm"
    assert "record read from the converter's bare.ckpt.json" in caplog.text

    # A train.py record written before styles existed: evaluated as it was (mindcv's ops).
    assert preprocessing({"image_size": [64, 64], "crop_pct": 1.0, "interpolation": "bilinear"}).style == "mindcv"
    with pytest.raises(Exception, match="style 'pil' is not valid"):
        preprocessing({"style": "pil"})


def test_a_run_from_timm_weights_trains_with_the_kernel_it_evaluates_with(tmp_path):
    """Fine-tuning timm's weights: the training crop uses PIL's bicubic (Inter.PILCUBIC, bit-exact with PIL),
    the run records timm's style; a run from scratch keeps mindcv's kernels; a given style wins."""
    from mindspore.dataset import vision
    from mindspore.dataset.vision import Inter
    from PIL import Image

    from coat_ms.config import merged
    from coat_ms.data.transforms import TimmResizeCrop, preprocessing_from_config, train_transforms
    from coat_ms.origin import TIMM, record
    from coat_ms.train.engine import resolve_preprocess_style

    for given, start, want in ((None, record("coat_lite_tiny", TIMM), "timm"), (None, {}, "mindcv"),
                               ("mindcv", record("coat_lite_tiny", TIMM), "mindcv"), ("timm", {}, "timm")):
        cfg = merged({"preprocess_style": given} if given else {}, image_resize=64)
        assert resolve_preprocess_style(cfg, start) == want
        crop = train_transforms(cfg)[0]
        assert isinstance(crop, vision.RandomResizedCrop)
        assert crop.interpolation == (Inter.PILCUBIC if want == "timm" else Inter.BICUBIC)
        pre = preprocessing_from_config(cfg)
        assert pre.style == want and (pre.image_size, pre.crop_pct) == ((64, 64), 0.9)

    # PILCUBIC is PIL's bicubic on a real photo (what the training crop and the eval resize share).
    photo = np.asarray(Image.open(write_photos(str(tmp_path), classes=0, names=["china_portrait"])[0]).convert("RGB"))
    ms_resized = vision.Resize((150, 211), Inter.PILCUBIC)(photo)
    pil_resized = np.asarray(Image.fromarray(photo).resize((211, 150), Image.Resampling.BICUBIC))
    assert np.array_equal(ms_resized, pil_resized)
    assert TimmResizeCrop(preprocessing({"style": "timm", "image_size": 64}))(photo).shape == (64, 64, 3)
