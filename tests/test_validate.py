"""validate.py: mindcv's metrics on the embedded digits, every sample counted, JSON / per-class / PNG, bad input,
the checkpoint's record (classes, preprocessing) honoured, outputs never overwrite inputs."""
import ast
import functools
import json
import math
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

import coat_ms
from coat_ms.datasets.digits import write_digits_imagefolder
from coat_ms.data.transforms import preprocessing
from coat_ms.evaluation import MetricSums, cell_predictor
from coat_ms.inference import classify, list_image_files
from helpers import one_error_line, refused

import validate as validate_cli  # noqa: E402  (called in-process; its exit-code contract once as a subprocess)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = {"embed_dims": [32, 32, 32, 32], "serial_depths": [1, 1, 1, 1]}
CONFIG = """model: coat_lite_tiny
model_args: {embed_dims: [32, 32, 32, 32], serial_depths: [1, 1, 1, 1]}
num_classes: 10
image_resize: 32
batch_size: 64
"""


def test_metrics_by_hand():
    acc = MetricSums(3, confusion=True)
    logits = np.array([[2.0, 1.0, 0.0],    # true 0: top-1 right
                       [0.0, 0.0, 5.0],    # true 1: wrong (predicts 2)
                       [0.0, 0.0, 0.0]])   # true 2: tie -> lowest index 0 wins, wrong
    acc.update(np.concatenate([logits, [[9.0, 0.0, 0.0]]]), np.array([0, 1, 2, 1]), bad=np.array([0, 0, 0, 1]))
    res = acc.result(["a", "b", "c"])  # the 4th row is an unreadable image: left out, counted
    assert res.skipped == 1
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


@pytest.fixture
def validate(run_in_process):
    """validate.py's ``main(argv)`` in this process: returns (exit code, what it printed, what it logged)."""
    return functools.partial(run_in_process, validate_cli.main)


def run_validate(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "validate.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def test_validate_counts_every_sample_and_matches_per_image_predictions(setup, validate):
    root, model = setup
    code, out, _ = validate("-c", root / "tiny.yaml", "--data_dir", root / "digits", "--ckpt_path", root / "tiny.ckpt",
                            "--json", root / "v.json", "--per_class", "--confusion", root / "cm.png", "--no_progress")
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("{'Top_1_Accuracy'"))
    printed = ast.literal_eval(line)
    saved = json.loads((root / "v.json").read_text())
    assert printed == {k: saved[k] for k in ("Top_1_Accuracy", "Top_5_Accuracy", "Loss")}
    # 359 images with batch 64: the last batch of 39 counts too
    assert saved["num_samples"] == 359 and np.sum(saved["confusion"]) == 359
    assert out.count("  class ") == 10
    assert (root / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Independent path: each image decoded and preprocessed on its own (predict), no padding, no loader.
    model.set_train(False)
    paths = list_image_files([root / "digits" / "val"])
    settings = preprocessing(model.pretrained_cfg, image_size=32)
    results, skipped = classify(cell_predictor(model), paths, settings, batch_size=len(paths), k=5,
                                names=[str(d) for d in range(10)], progress=False)
    assert not skipped and len(results) == 359
    truth = [os.path.basename(os.path.dirname(p)) for p, _ in results]
    top1 = np.mean([t == top[0][0] for t, (_, top) in zip(truth, results)])
    top5 = np.mean([t in [n for n, _ in top] for t, (_, top) in zip(truth, results)])
    assert saved["Top_1_Accuracy"] == pytest.approx(top1, abs=1e-9)
    assert saved["Top_5_Accuracy"] == pytest.approx(top5, abs=1e-9)
    assert 0.0 < saved["Loss"] < 50


def test_batch_size_does_not_change_the_metrics(setup, validate):
    root, _ = setup
    a = json.loads((root / "v.json").read_text())
    code, _, _ = validate("-c", root / "tiny.yaml", "--data_dir", root / "digits", "--ckpt_path", root / "tiny.ckpt",
                          "--batch_size", 100, "--json", root / "v100.json", "--no_progress")
    assert code == 0
    b = json.loads((root / "v100.json").read_text())
    assert b["num_samples"] == 359
    assert b["Top_1_Accuracy"] == a["Top_1_Accuracy"] and b["Top_5_Accuracy"] == a["Top_5_Accuracy"]
    assert b["Loss"] == pytest.approx(a["Loss"], rel=1e-5)


@pytest.mark.parametrize("extra,words", [
    (["--ckpt_path", "missing.ckpt"], "not found"),
    (["--model", "coat_tiny"], "does not match"),
    (["--data_dir", "nowhere"], "not found"),
    (["--num_classes", "5"], "does not match"),
    (["--json", "tiny.ckpt"], "refusing to overwrite"),
    (["--confusion", "tiny.yaml"], "refusing to overwrite"),
    (["--image_resize", "30"], "multiple of 32"),
])
def test_bad_input_is_one_line_error(setup, extra, words, in_process_cli):
    root, _ = setup
    base = {"--ckpt_path": root / "tiny.ckpt", "--data_dir": root / "digits"}
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = root / value if flag in ("--ckpt_path", "--data_dir", "--json", "--confusion") else value
    args = ["-c", root / "tiny.yaml", "--no_progress"] + [x for kv in base.items() for x in kv]
    assert words in refused(validate_cli.main, *args)


def test_unknown_config_key(setup, tmp_path):
    """validate.py's exit-code contract, as a user's shell sees it: one error line, exit code 2."""
    root, _ = setup
    (tmp_path / "bad.yaml").write_text(CONFIG + "batchsize: 3\n")
    proc = run_validate("-c", tmp_path / "bad.yaml", "--data_dir", root / "digits", "--ckpt_path", root / "tiny.ckpt")
    assert "batchsize" in one_error_line(proc)


def test_mindcvs_validate_flags_and_the_checkpoint_record(trained_run, tmp_path, validate):
    """mindcv's own test passes --dataset imagenet --device_target CPU; a train.py checkpoint needs no model
    flags: model, classes (matched by name) and preprocessing come from its record; with --ema its EMA
    weights are evaluated, as train-time validation did."""
    data, run, train = trained_run
    trained = ast.literal_eval(next(l for l in train.stdout.splitlines() if l.startswith("validation"))
                               .split(": ", 1)[1])
    # a val split holding only some classes: labels still follow the training classes, by name
    partial = tmp_path / "partial"
    shutil.copytree(data / "val" / "7", partial / "val" / "7")
    shutil.copytree(data / "val" / "2", partial / "val" / "2")
    for folder, expect_same in ((data, True), (partial, False)):
        code, out, err = validate("--dataset", "imagenet", "--device_target", "CPU", "--data_dir", folder,
                                  "--ckpt_path", run / "latest.ckpt", "--ema", "--no_progress", "--json",
                                  tmp_path / "v.json")
        assert code == 0
        assert "evaluating its EMA weights" in err and "resize 32 bilinear, centre crop 32x32" in out
        got = json.loads((tmp_path / "v.json").read_text())
        if expect_same:  # the same numbers training-time validation printed (4 decimals there)
            assert got["num_samples"] == 359
            for key in ("Top_1_Accuracy", "Top_5_Accuracy", "Loss"):
                assert got[key] == pytest.approx(trained[key], abs=6e-5)
        else:
            assert got["num_samples"] == len(os.listdir(partial / "val" / "7")) + len(os.listdir(partial / "val" / "2"))
            assert len(got["class_names"]) == 10 and got["per_class"]["7"] is not None and got["per_class"]["0"] is None
    code, _, err = validate("--data_dir", data, "--ckpt_path", run / "latest.ckpt", "--no_progress")
    assert code == 0 and "EMA" not in err  # the trained weights, as asked
