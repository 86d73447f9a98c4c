"""validate.py: mindcv's metrics on the embedded digits, every sample counted, JSON / per-class / PNG, bad input."""
import ast
import json
import math
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

import coat_ms
from coat_ms.datasets.digits import write_digits_imagefolder
from coat_ms.evaluation import MetricAccumulator, cell_predictor, eval_settings, list_images
from coat_ms.predict import predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = {"embed_dims": [32, 32, 32, 32], "serial_depths": [1, 1, 1, 1]}
CONFIG = """model: coat_lite_tiny
model_args: {embed_dims: [32, 32, 32, 32], serial_depths: [1, 1, 1, 1]}
num_classes: 10
image_resize: 32
batch_size: 64
"""


def test_metrics_by_hand():
    acc = MetricAccumulator(3)
    logits = np.array([[2.0, 1.0, 0.0],    # true 0: top-1 right
                       [0.0, 0.0, 5.0],    # true 1: wrong (predicts 2)
                       [0.0, 0.0, 0.0]])   # true 2: tie -> lowest index 0 wins, wrong
    acc.update(logits, np.array([0, 1, 2]))
    res = acc.result(["a", "b", "c"])
    assert res.num_samples == 3 and res.top1 == pytest.approx(1 / 3) and res.top5 == 1.0
    lse = [math.log(math.exp(2) + math.exp(1) + 1), math.log(2 + math.exp(5)), math.log(3)]
    want = ((lse[0] - 2.0) + lse[1] + lse[2]) / 3
    assert res.loss == pytest.approx(want, rel=1e-12)
    assert res.confusion.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    assert res.per_class == [1.0, 0.0, 0.0]
    assert set(res.metrics()) == {"Top_1_Accuracy", "Top_5_Accuracy", "Loss"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    write_digits_imagefolder(str(root / "digits"), image_size=32)
    ms.set_seed(5)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=10, **ARCH)
    head = model.parameters_dict()["head.weight"]
    head.set_data(head * 30.0)  # random weights, but an accuracy that is not just one class
    ms.save_checkpoint(model, str(root / "tiny.ckpt"))
    (root / "tiny.yaml").write_text(CONFIG)
    return root, model


def run_validate(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "validate.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def test_validate_counts_every_sample_and_matches_per_image_predictions(setup):
    root, model = setup
    proc = run_validate("-c", root / "tiny.yaml", "--data_dir", root / "digits", "--ckpt_path", root / "tiny.ckpt",
                        "--json", root / "v.json", "--per_class", "--confusion", root / "cm.png", "--no_progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("{'Top_1_Accuracy'"))
    printed = ast.literal_eval(line)
    saved = json.loads((root / "v.json").read_text())
    assert printed == {k: saved[k] for k in ("Top_1_Accuracy", "Top_5_Accuracy", "Loss")}
    # 359 images with batch 64: the last batch of 39 counts too
    assert saved["num_samples"] == 359 and np.sum(saved["confusion"]) == 359
    assert proc.stdout.count("  class ") == 10
    assert (root / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Independent path: each image decoded and preprocessed on its own (predict), no padding, no loader.
    model.set_train(False)
    paths = list_images([root / "digits" / "val"])
    settings = eval_settings(model.pretrained_cfg, {"image_resize": 32})
    results, skipped = predict(cell_predictor(model), paths, settings, batch_size=len(paths), k=5,
                               names=[str(d) for d in range(10)])
    assert not skipped and len(results) == 359
    truth = [os.path.basename(os.path.dirname(p)) for p, _ in results]
    top1 = np.mean([t == top[0][0] for t, (_, top) in zip(truth, results)])
    top5 = np.mean([t in [n for n, _ in top] for t, (_, top) in zip(truth, results)])
    assert saved["Top_1_Accuracy"] == pytest.approx(top1, abs=1e-9)
    assert saved["Top_5_Accuracy"] == pytest.approx(top5, abs=1e-9)
    assert 0.0 < saved["Loss"] < 50


def test_batch_size_does_not_change_the_metrics(setup):
    root, _ = setup
    a = json.loads((root / "v.json").read_text())
    proc = run_validate("-c", root / "tiny.yaml", "--data_dir", root / "digits", "--ckpt_path", root / "tiny.ckpt",
                        "--batch_size", 100, "--json", root / "v100.json", "--no_progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = json.loads((root / "v100.json").read_text())
    assert b["num_samples"] == 359
    assert b["Top_1_Accuracy"] == a["Top_1_Accuracy"] and b["Top_5_Accuracy"] == a["Top_5_Accuracy"]
    assert b["Loss"] == pytest.approx(a["Loss"], rel=1e-5)


@pytest.mark.parametrize("extra,words", [
    (["--ckpt_path", "missing.ckpt"], "not found"),
    (["--model", "coat_tiny"], "does not match"),
    (["--data_dir", "nowhere"], "not found"),
    (["--num_classes", "5"], "does not match"),
])
def test_bad_input_is_one_line_error(setup, extra, words):
    root, _ = setup
    base = {"--ckpt_path": root / "tiny.ckpt", "--data_dir": root / "digits"}
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = root / value if flag in ("--ckpt_path", "--data_dir") else value
    args = ["-c", root / "tiny.yaml", "--no_progress"] + [x for kv in base.items() for x in kv]
    proc = run_validate(*args)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr[-2000:]
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_config_key(setup, tmp_path):
    root, _ = setup
    (tmp_path / "bad.yaml").write_text(CONFIG + "batchsize: 3\n")
    proc = run_validate("-c", tmp_path / "bad.yaml", "--data_dir", root / "digits", "--ckpt_path", root / "tiny.ckpt")
    assert proc.returncode != 0 and "batchsize" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_validate_reproduces_the_accuracy_train_reported(setup, tmp_path):
    """train.py (1 epoch on digits) reports val Top-1/Top-5/Loss; validate.py on its checkpoint gives the same.

    Run with: .venv/bin/python -m pytest -q -m slow tests/test_validate.py
    """
    import csv

    root, _ = setup
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "-c", root / "tiny.yaml",
                            "--data_dir", root / "digits", "--epoch_size", "1", "--batch_size", "32",
                            "--ckpt_save_dir", out, "--val_while_train", "True", "--deterministic", "True",
                            "--lr", "0.002", "--warmup_epochs", "0"],
                           capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert train.returncode == 0, train.stderr[-3000:]
    with open(out / "results.csv", newline="") as f:
        row = list(csv.DictReader(f))[-1]
    proc = run_validate("-c", root / "tiny.yaml", "--data_dir", root / "digits", "--ckpt_path", out / "latest.ckpt",
                        "--batch_size", 50, "--json", tmp_path / "v.json", "--no_progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "v.json").read_text())
    assert got["num_samples"] == 359
    # results.csv keeps 6 decimals; one sample of 359 is 2.8e-3, so 1e-6 still means the same samples right
    assert got["Top_1_Accuracy"] == pytest.approx(float(row["top1"]), abs=1e-6)
    assert got["Top_5_Accuracy"] == pytest.approx(float(row["top5"]), abs=1e-6)
    assert got["Loss"] == pytest.approx(float(row["val_loss"]), rel=1e-4)
