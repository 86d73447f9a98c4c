"""python -m coat_ms.predict: the same top-5 from a .ckpt and from its exported MindIR; labels; bad input;
the MindIR's own input shape; a train.py checkpoint predicts with the preprocessing it was trained with.

predict runs in-process through its ``main(argv)`` (what it prints and logs is read back); its exit-code
contract, as a user's shell sees it, is checked once as a subprocess."""
import functools
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

import coat_ms
from coat_ms.datasets.digits import write_digits_imagefolder
from coat_ms.export import export_model
from coat_ms import predict as predict_cli
from helpers import one_error_line, refused

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = {"embed_dims": [32, 32, 32, 32], "serial_depths": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Digits ImageFolder, a narrow coat_lite_tiny .ckpt with 10 classes and its verified MindIR (batch 2)."""
    root = tmp_path_factory.mktemp("predict")
    write_digits_imagefolder(str(root / "digits"), image_size=32)
    ms.set_seed(3)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=10, **ARCH)
    head = model.parameters_dict()["head.weight"]
    head.set_data(head * 30.0)  # spread the random logits so the top-5 order is meaningful
    model.set_train(False)
    ms.save_checkpoint(model, str(root / "tiny.ckpt"))
    result = export_model(model, root / "tiny", "MINDIR", batch_size=2, image_size=(32, 32))
    assert result.rel_diff <= 1e-6 and "fresh process" in result.verified_by
    images = root / "imgs"
    images.mkdir()
    for digit in ("3", "7"):  # 6 real images and one broken file
        for name in sorted(os.listdir(root / "digits" / "val" / digit))[:3]:
            os.link(root / "digits" / "val" / digit / name, images / f"{digit}_{name}")
    (images / "broken.png").write_bytes(b"this is not a png")
    return root


def run_predict(*args):
    return subprocess.run([sys.executable, "-m", "coat_ms.predict", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


@pytest.fixture
def predict(run_in_process):
    """predict's ``main(argv)`` in this process: returns (exit code, what it printed, what it logged)."""
    return functools.partial(run_in_process, predict_cli.main)


def test_ckpt_and_mindir_give_the_same_top5(setup, predict):
    root = setup
    common = [root / "imgs", "--class_dir", root / "digits" / "train", "--topk", "5"]
    a = predict(*common, "--ckpt_path", root / "tiny.ckpt", "--model_name", "coat_lite_tiny",
                "--model_args", json.dumps(ARCH), "--image_size", 32, 32, "--batch_size", 4,
                "--json", root / "ckpt.json")
    b = predict(*common, "--mindir", root / "tiny.mindir", "--json", root / "mindir.json")
    assert a[0] == b[0] == 0
    ra, rb = (json.loads((root / f).read_text()) for f in ("ckpt.json", "mindir.json"))
    assert len(ra["results"]) == len(rb["results"]) == 6
    for x, y in zip(ra["results"], rb["results"]):
        assert x["path"] == y["path"]
        assert [t["label"] for t in x["topk"]] == [t["label"] for t in y["topk"]]
        np.testing.assert_allclose([t["prob"] for t in x["topk"]], [t["prob"] for t in y["topk"]], atol=1e-5)
        assert len(x["topk"]) == 5 and all(t["label"] in "0123456789" for t in x["topk"])
        probs = [t["prob"] for t in x["topk"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # the broken file is reported and skipped, in both runs
    for (_, out, err), res in ((a, ra), (b, rb)):
        assert "unreadable image skipped" in err and "broken.png" in err
        assert [p.endswith("broken.png") for p in res["skipped"]] == [True]
        assert "6 images classified, 1 skipped" in out


def test_labels_from_file(setup, predict):
    root = setup
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    code, out, _ = predict(root / "imgs" / "broken.png", root / "digits" / "val" / "7", "--mindir",
                           root / "tiny.mindir", "--labels", root / "labels.txt", "--topk", "2")
    assert code == 0
    lines = [line for line in out.splitlines() if line.endswith(tuple("0123456789")) and ": " in line]
    assert lines
    for line in lines:
        pairs = line.split(": ", 1)[1].split(", ")
        assert len(pairs) == 2 and all(p.split()[0] in names for p in pairs)


@pytest.mark.parametrize("args,words", [
    (["--mindir", "missing.mindir"], "not found"),
    (["--ckpt_path", "tiny.ckpt"], "pass --model"),
    (["--mindir", "tiny.mindir", "--image_size", "64", "64"], "exported for 32x32 images"),
    (["--mindir", "tiny.mindir", "--json", "tiny.mindir"], "refusing to overwrite"),
    (["--ckpt_path", "tiny.ckpt", "--model_name", "coat_tiny"], "does not match"),
    (["--mindir", "tiny.mindir", "--labels", "tiny.ckpt"], "not text"),
])
def test_bad_input_is_one_line_error(setup, args, words, in_process_cli):
    root = setup
    digest = (root / "tiny.mindir").read_bytes()
    args = [str(root / a) if a.endswith((".mindir", ".ckpt")) else a for a in args]
    assert words in refused(predict_cli.main, root / "imgs", *args)
    assert (root / "tiny.mindir").read_bytes() == digest


def test_only_unreadable_files_fails(setup):
    """predict's exit-code contract, as a user's shell sees it: one error line, exit code 2."""
    proc = run_predict(setup / "imgs" / "broken.png", "--mindir", setup / "tiny.mindir")
    assert "no image could be read: 1 of 1" in one_error_line(proc) and "broken.png" in proc.stderr


def test_mindir_without_its_sidecar_reads_the_shape_from_the_file(setup, tmp_path, predict):
    import shutil
    shutil.copy(setup / "tiny.mindir", tmp_path / "bare.mindir")  # no bare.mindir.json next to it
    code, out, err = predict(setup / "imgs", "--mindir", tmp_path / "bare.mindir", "--topk", 1)
    assert code == 0
    assert "export metadata) not found" in err and "6 images classified" in out
    assert "centre crop 32x32" in out


def test_a_trained_checkpoint_predicts_at_its_own_resolution_and_classes(trained_run, tmp_path, predict):
    """A train.py checkpoint (32x32, crop_pct 1.0, bilinear) needs no flags: predict and its export use
    the recorded preprocessing and class names."""
    import export as export_cli
    data, run, _ = trained_run
    val7 = data / "val" / "7"
    code, out, _ = predict(val7, "--ckpt_path", run / "latest.ckpt", "--topk", 1, "--json", tmp_path / "p.json")
    assert code == 0
    assert "resize 32 bilinear, centre crop 32x32" in out
    results = json.loads((tmp_path / "p.json").read_text())["results"]
    assert len(results) == len(os.listdir(val7)) and all(r["topk"][0]["label"] in "0123456789" for r in results)
    assert export_cli.main(["--ckpt_file", str(run / "latest.ckpt"), "--file_name", str(tmp_path / "trained"),
                            "--batch_size", "4"]) == 0
    sidecar = json.loads((tmp_path / "trained.mindir.json").read_text())
    assert sidecar["input_shape"] == [4, 3, 32, 32] and sidecar["class_names"] == [str(d) for d in range(10)]
    assert sidecar["preprocessing"]["interpolation"] == "bilinear" and sidecar["preprocessing"]["crop_pct"] == 1.0
    code, _, _ = predict(val7, "--mindir", tmp_path / "trained.mindir", "--topk", 1, "--json", tmp_path / "m.json")
    assert code == 0
    mindir = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [r["topk"][0]["label"] for r in mindir] == [r["topk"][0]["label"] for r in results]


def predict_json(tmp_path, tag, *args):
    """predict's main() in this process; returns the --json results."""
    from coat_ms.predict import main

    out = tmp_path / f"{tag}.json"
    assert main([*map(str, args), "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.artefacts
def test_dynamic_exports_predict_mixed_size_images(setup, tmp_path):
    """Images of several sizes through a --dynamic shape ONNX file and a --dynamic batch MindIR: each image is
    brought to the recorded preprocessing (32x32 here) or to the --image_size the shape-dynamic file is
    asked for, at any batch size, and the top-5 equals the checkpoint's at the same preprocessing."""
    from PIL import Image

    root = setup
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, name in enumerate(sorted(os.listdir(root / "imgs"))):
        if name.endswith(".png") and name != "broken.png":
            size = [(32, 32), (50, 37), (120, 90), (41, 77)][i % 4]
            Image.open(root / "imgs" / name).convert("RGB").resize(size, Image.BICUBIC).save(mixed / name)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=10, **ARCH)
    ms.load_param_into_net(model, ms.load_checkpoint(str(root / "tiny.ckpt")), strict_load=True)
    onnx = export_model(model, tmp_path / "any_shape", "ONNX", batch_size=2, image_size=(32, 32), dynamic="shape")
    mindir = export_model(model, tmp_path / "any_batch", "MINDIR", batch_size=2, image_size=(32, 32), dynamic="batch")
    ckpt = ["--ckpt_path", root / "tiny.ckpt", "--model_name", "coat_lite_tiny", "--model_args", json.dumps(ARCH)]
    runs = {
        "ckpt32": predict_json(tmp_path, "a", mixed, *ckpt, "--image_size", 32, 32, "--batch_size", 4),
        "onnx32": predict_json(tmp_path, "b", mixed, "--onnx", onnx.path, "--batch_size", 3),
        "mindir32": predict_json(tmp_path, "c", mixed, "--mindir", mindir.path, "--batch_size", 5),
        "ckpt64": predict_json(tmp_path, "d", mixed, *ckpt, "--image_size", 64, 64),
        "onnx64": predict_json(tmp_path, "e", mixed, "--onnx", onnx.path, "--image_size", 64, 64),
    }
    assert runs["onnx32"]["preprocessing"]["image_size"] == [32, 32]
    assert runs["onnx64"]["preprocessing"]["image_size"] == [64, 64]
    for want, got in (("ckpt32", "onnx32"), ("ckpt32", "mindir32"), ("ckpt64", "onnx64")):
        a, b = runs[want]["results"], runs[got]["results"]
        assert len(a) == len(b) == 6
        for x, y in zip(a, b):
            assert x["path"] == y["path"]
            assert [t["label"] for t in x["topk"]] == [t["label"] for t in y["topk"]], (want, got)
            np.testing.assert_allclose([t["prob"] for t in x["topk"]], [t["prob"] for t in y["topk"]], atol=1e-5)
    # a fixed batch or size is still enforced
    from coat_ms.errors import CoatError
    from coat_ms.predict import main
    with pytest.raises(CoatError, match="exported for 32x32"):
        main([str(mixed), "--mindir", mindir.path, "--image_size", "64", "64"])
