"""mindcv's released CoaT weights work where the seed documentation uses them, and compute what mindcv computes.

The checkpoint is in mindcv's own layout: mindcv 0.3.0's coat_mini with every weight randomised, saved
by ``mindspore.save_checkpoint`` under the released file's name.  The seed documentation's three
commands run as written, from a folder holding that file and the repository's configs/, with
overrides only for data size and device (``--image_resize 64``, ``--epoch_size 1``, ``--batch_size``,
``--device_target CPU``).  mindcv's model is built at the same size (its ``image_size`` argument).

Reference for validate.py: mindcv's own evaluation path (``create_dataset`` / ``create_transforms`` /
``create_loader``: MindSpore's decoder, ``Resize`` and ``CenterCrop``) and mindcv's model; the Loss is
plain cross-entropy on its logits (coat_ms's Loss has no label smoothing).  The photos are real ones
in RGB, greyscale, palette, alpha and CMYK modes; no 16-bit PNG, because MindSpore's decoder keeps their
high byte while PIL (coat_ms, and timm) clips them.
"""
import logging
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore.nn.utils import no_init_parameters

from helpers import ROOT, run_script
from parity_tests.photos import write_photos

# Shapes and modes that take different paths (crop offset, upscaling, panorama, greyscale, palette, alpha,
# CMYK); mindcv's model is slow on CPU, so nine files.
PHOTO_NAMES = ["china_portrait", "flower_square", "china_small", "china_panorama", "china_gray", "china_palette",
               "flower_gray_alpha", "china_rgba", "china_cmyk"]
RELEASED = "coat_mini-57c5bce7.ckpt"   # mindcv's released coat_mini, as the seed documentation names it
SIZE = 64                              # data-size override of every command
LOSS_RTOL = 1e-5
LOGITS_RTOL = 2e-5
SWITCHES_SAID = "converted in memory to coat_ms names, model built with align_corners=True, cpe_residual=False"


def mindcv_coat(name, image_size=SIZE, seed=0):
    """mindcv 0.3.0's own model with every weight drawn (LayerNorm gammas around 1; a head 30x larger, so
    that the loss reacts to the input, biased to the photo folders' three classes, so that the images
    decide Top-1)."""
    import mindcv.models as mindcv_models
    with no_init_parameters():
        model = mindcv_models.create_model(name, image_size=image_size)
    rng = np.random.RandomState(seed)
    for p in model.get_parameters():
        value = 0.05 * rng.standard_normal(p.shape) + (1.0 if p.name.endswith("gamma") else 0.0)
        if p.name == "head.weight":
            value *= 30.0
        elif p.name == "head.bias":
            value[:3] += 100.0
        p.set_data(ms.Tensor(value.astype(np.float32)))
    model.set_train(False)
    return model


def rel_err(out, ref):
    return float(np.max(np.abs(np.asarray(out, np.float64) - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(folder, mindcv model): the folder holds the released file's name, configs/ (the repository's) and
    D/{train,val} of real photos; commands run there as written."""
    folder = tmp_path_factory.mktemp("seed_docs")
    model = mindcv_coat("coat_mini")
    ms.save_checkpoint(model, str(folder / RELEASED))
    os.symlink(os.path.join(ROOT, "configs"), folder / "configs")
    for split in ("train", "val"):
        write_photos(str(folder / "D" / split), classes=3, names=PHOTO_NAMES)
    return folder, model


def mindcv_validation(model, data_dir, image_resize=SIZE):
    """Loss (plain cross-entropy) / Top-1 / Top-5 of mindcv's model through mindcv's own eval pipeline,
    with the recipe's settings (crop_pct 0.9, bicubic, ImageNet mean/std)."""
    from mindcv.data import create_dataset, create_loader, create_transforms

    from coat_ms.evaluation import MetricSums
    dataset = create_dataset(name="imagenet", root=str(data_dir), split="val", shuffle=False,
                             num_parallel_workers=1)
    transforms = create_transforms(dataset_name="imagenet", image_resize=image_resize, is_training=False,
                                   crop_pct=0.9, interpolation="bicubic")
    loader = create_loader(dataset=dataset, batch_size=8, drop_remainder=False, is_training=False,
                           transform=transforms, num_parallel_workers=1)
    sums = MetricSums(3)
    for image, label in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
        sums.update(model(ms.Tensor(image)).asnumpy(), label)
    return sums.result(["class0", "class1", "class2"]).metrics(), sums.count


@pytest.mark.artefacts
def test_validate_seed_command_reports_what_mindcv_computes(released, monkeypatch, capsys, caplog):
    """python validate.py -c configs/coat_mini_ascend.yaml --data_dir D --ckpt_path ./coat_mini-57c5bce7.ckpt"""
    import ast

    import validate
    folder, mindcv_model = released
    monkeypatch.chdir(folder)
    caplog.set_level(logging.INFO, logger="coat_ms")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    want, count = mindcv_validation(mindcv_model, folder / "D")

    assert validate.main(["-c", "configs/coat_mini_ascend.yaml", "--data_dir", "D", "--ckpt_path", f"./{RELEASED}",
                          "--device_target", "CPU", "--image_resize", str(SIZE), "--no_progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    said = next(line for line in out if line.startswith("validated "))
    got = ast.literal_eval(next(line for line in out if line.startswith("{'Top_1_Accuracy'")))
    assert f"on {count} images" in said and "mindcv style (mindspore.dataset ops): resize 71 bicubic" in said
    lines = [r.getMessage() for r in caplog.records if SWITCHES_SAID in r.getMessage()]
    assert len(lines) == 1 and "mindcv CoaT checkpoint (coat_mini" in lines[0]
    print(f"validate.py: {got}; mindcv: {want}; Loss rel {abs(got['Loss'] - want['Loss']) / want['Loss']:.2e}")
    assert 0.1 < want["Top_1_Accuracy"] < 0.9, want   # a Top-1 the images decide
    assert got["Loss"] == pytest.approx(want["Loss"], rel=LOSS_RTOL), (got, want)
    assert (got["Top_1_Accuracy"], got["Top_5_Accuracy"]) == (want["Top_1_Accuracy"], want["Top_5_Accuracy"])


def test_every_loader_builds_what_mindcv_computes(released):
    """create_model(checkpoint_path=...), the fine-tuning builder of train.py and the loader of validate,
    predict and export all recognise the layout and build mindcv's computation."""
    import coat_ms
    from coat_ms.factory import model_from_checkpoint
    from coat_ms.config import merged
    from coat_ms.train.engine import build_model, starting_weights

    folder, mindcv_model = released
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = np.random.RandomState(3).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    want = mindcv_model(ms.Tensor(x)).asnumpy()
    path = str(folder / RELEASED)

    direct = coat_ms.create_model("coat_mini", checkpoint_path=path)
    loaded, meta = model_from_checkpoint(path)
    cfg = merged({"model": "coat_mini", "ckpt_path": path, "pretrained": True})
    tuned = build_model(cfg, 1000, starting_weights(cfg))
    weights = {n: p.asnumpy() for n, p in direct.parameters_dict().items()}
    for model in (direct, loaded, tuned):   # the same switches and the same values: one forward tells for all
        assert (model.parallel_blocks[0].align_corners, model.serial_blocks1[0].cpe_residual) == (True, False)
        assert all(np.array_equal(p.asnumpy(), weights[n]) for n, p in model.parameters_dict().items())
    direct.set_train(False)
    assert rel_err(direct(ms.Tensor(x)).asnumpy(), want) <= LOGITS_RTOL
    assert meta["model_args"] == {"align_corners": True, "cpe_residual": False}
    assert meta["preprocessing"]["style"] == "mindcv" and direct.weights_meta == meta

    # Without the switches the same weights compute something else: the comparison above can fail, and
    # loading them into a model built without the switches is refused rather than silently wrong.
    plain = coat_ms.create_model("coat_mini", checkpoint_path=path, align_corners=False, cpe_residual=True)
    plain.set_train(False)
    assert rel_err(plain(ms.Tensor(x)).asnumpy(), want) > 1e-2
    with pytest.raises(coat_ms.CheckpointError, match="need the model built with align_corners=True, "
                                                      "cpe_residual=False"):
        coat_ms.load_checkpoint(coat_ms.create_model("coat_mini"), path)


@pytest.mark.artefacts
def test_fine_tune_seed_command_starts_from_mindcv_weights(released, tmp_path):
    """python train.py --config configs/coat_mini_ascend.yaml --data_dir D --distribute False --lr 0.001 \\
           --epoch_size 20 --pretrained True --ckpt_path ./coat_mini-57c5bce7.ckpt"""
    from coat_ms.checkpoint import read_checkpoint_and_meta
    folder, _ = released
    proc = run_script("train.py", "--config", "configs/coat_mini_ascend.yaml", "--data_dir", "D", "--distribute",
                      "False", "--lr", "0.001", "--epoch_size", "20", "--pretrained", "True", "--ckpt_path",
                      f"./{RELEASED}", "--epoch_size", 1, "--batch_size", 4, "--image_resize", SIZE,
                      "--device_target", "CPU", "--ckpt_save_dir", tmp_path / "run", cwd=folder, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count(SWITCHES_SAID) == 1 and "starting from --ckpt_path" in log
    assert "preprocessing: mindcv style (the starting weights are mindcv's" in log
    _, meta = read_checkpoint_and_meta(str(tmp_path / "run" / "latest.ckpt"))
    assert meta["model_args"] == {"align_corners": True, "cpe_residual": False}   # the run computes as mindcv
    assert meta["preprocessing"]["style"] == "mindcv" and meta["num_classes"] == 1000


@pytest.mark.artefacts
def test_export_seed_command_writes_what_mindcv_computes(released, tmp_path):
    """python export.py --model_name coat_mini --ckpt_file ./coat_mini-57c5bce7.ckpt --file_format MINDIR"""
    import json

    from mindspore import nn
    folder, mindcv_model = released
    proc = run_script("export.py", "--model_name", "coat_mini", "--ckpt_file", f"./{RELEASED}", "--file_format",
                      "MINDIR", "--image_size", SIZE, SIZE, cwd=folder, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert SWITCHES_SAID in proc.stderr and "verified with" in proc.stdout
    mindir = folder / "coat_mini.mindir"
    sidecar = json.loads((folder / "coat_mini.mindir.json").read_text())
    assert sidecar["preprocessing"]["style"] == "mindcv" and sidecar["input_shape"] == [1, 3, SIZE, SIZE]
    x = np.random.RandomState(4).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    want = mindcv_model(ms.Tensor(x)).asnumpy()
    got = nn.GraphCell(ms.load(str(mindir)))(ms.Tensor(x)).asnumpy()
    assert rel_err(got, want) <= LOGITS_RTOL
