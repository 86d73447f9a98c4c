"""python -m coat_ms.predict: the same top-5 from a .ckpt and from its exported MindIR; labels; bad input."""
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


def test_ckpt_and_mindir_give_the_same_top5(setup):
    root = setup
    common = [root / "imgs", "--class_dir", root / "digits" / "train", "--topk", "5"]
    a = run_predict(*common, "--ckpt_path", root / "tiny.ckpt", "--model_name", "coat_lite_tiny",
                    "--model_args", json.dumps(ARCH), "--image_size", 32, 32, "--batch_size", 4,
                    "--json", root / "ckpt.json")
    b = run_predict(*common, "--mindir", root / "tiny.mindir", "--json", root / "mindir.json")
    assert a.returncode == 0, a.stderr[-2000:]
    assert b.returncode == 0, b.stderr[-2000:]
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
    for proc, res in ((a, ra), (b, rb)):
        assert "skipped" in proc.stderr and "broken.png" in proc.stderr
        assert [s["path"].endswith("broken.png") for s in res["skipped"]] == [True]
        assert "6 images classified, 1 skipped" in proc.stdout


def test_labels_from_file(setup):
    root = setup
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    proc = run_predict(root / "imgs" / "broken.png", root / "digits" / "val" / "7", "--mindir", root / "tiny.mindir",
                       "--labels", root / "labels.txt", "--topk", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.endswith(tuple("0123456789")) and ": " in line]
    assert lines
    for line in lines:
        pairs = line.split(": ", 1)[1].split(", ")
        assert len(pairs) == 2 and all(p.split()[0] in names for p in pairs)


@pytest.mark.parametrize("args,words", [
    (["--mindir", "missing.mindir"], "not found"),
    (["--ckpt_path", "tiny.ckpt"], "--model_name"),
    (["--ckpt_path", "tiny.ckpt", "--model_name", "coat_tiny"], "does not match"),
    (["--mindir", "tiny.mindir", "--labels", "tiny.ckpt"], "not text"),
])
def test_bad_input_is_one_line_error(setup, args, words):
    root = setup
    args = [str(root / a) if a.endswith((".mindir", ".ckpt")) else a for a in args]
    proc = run_predict(root / "imgs", *args)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_only_unreadable_files_fails(setup):
    proc = run_predict(setup / "imgs" / "broken.png", "--mindir", setup / "tiny.mindir")
    assert proc.returncode != 0 and "broken.png" in proc.stderr and "0 images classified" in proc.stdout
