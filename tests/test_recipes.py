"""Every shipped recipe (configs/*.yaml) and mindcv's published CoaT recipes train one epoch through
train.py as a user runs them, with ALL their settings active.

Only what a small CPU run must change is overridden: data_dir, num_classes, epoch_size, batch_size,
image_resize, device_target, distribute, and amp_on_cpu, which makes the CPU run the recipe's own amp_level
(O2 on the Ascend/GPU recipes) on MindSpore's float16 operators, as the device would, instead of O0.  The
run's resolved settings (config.yaml in the output folder) must equal the recipe's own values for every other
key it sets, and the log must show the features at work (transforms, mixing, loss scale, EMA, sink mode).
The matrix is the artefacts tier (make test-artefacts, or):

    .venv/bin/python -m pytest -q -m slow tests/test_recipes.py
"""
import glob
import os
import time

import pytest
import yaml

from coat_ms.config import load_yaml, merged
from helpers import ROOT, metrics_line, run_script, small_imagefolder

RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))) + \
    sorted(glob.glob(os.path.join(ROOT, "tests", "mindcv_recipes", "*.yaml")))
# The dynamic loss scale at O2 overflowing for real: tests/test_amp.py, and the coat_tiny Ascend recipe below.
SMALL_RUN = {"num_classes": 2, "epoch_size": 1, "batch_size": 4, "image_resize": 64, "device_target": "CPU",
             "distribute": False, "amp_on_cpu": True}


def recipe_params():
    return [pytest.param(path, id=os.path.relpath(path, ROOT)) for path in RECIPES]


def test_the_matrix_covers_every_shipped_file():
    rels = [os.path.relpath(p, ROOT) for p in RECIPES]
    assert len([r for r in rels if r.startswith("configs/")]) == 22
    assert len([r for r in rels if r.startswith("tests/mindcv_recipes/")]) == 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_imagefolder(tmp_path_factory.mktemp("recipes") / "data")


def small_run_args(data):
    args = ["--data_dir", data]
    for key, value in SMALL_RUN.items():
        args += [f"--{key}", value]
    return args


# Every file in the artefacts tier; the default run trains configs/coat_lite_tiny_ascend.yaml at its amp O2 as
# the seed docs' mpirun command (tests/test_distributed.py).
@pytest.mark.artefacts
@pytest.mark.parametrize("recipe", recipe_params())
def test_recipe_trains_one_epoch_as_shipped(recipe, data, tmp_path, record_property):
    rel = os.path.relpath(recipe, ROOT)
    t0 = time.time()
    proc = run_script("train.py", "--config", recipe, *small_run_args(data), cwd=tmp_path, timeout=1500)
    record_property("recipe_seconds", time.time() - t0)  # printed in the terminal summary (conftest.py)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "done: 1 epochs" in proc.stdout and "Traceback" not in log

    raw = load_yaml(recipe)
    want = merged(raw, source=recipe, **SMALL_RUN)
    out = tmp_path / want["ckpt_save_dir"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    for key in raw:
        if key not in SMALL_RUN and key != "data_dir":
            assert saved[key] == want[key], f"{key}: recipe {want[key]!r}, run {saved[key]!r}"
    assert saved["weight_decay_filter"] == want["weight_decay_filter"]

    # The features at work, as the run reports them.
    if want["auto_augment"]:
        assert "RandAugment" in log
    if want["re_prob"] > 0:
        assert f"RandomErasing(p={want['re_prob']})" in log
    if want["mixup"] + want["cutmix"] > 0:
        assert f"mixup {want['mixup']}, cutmix {want['cutmix']}" in log
    level = "O2" if want["amp_level"] == "auto" else want["amp_level"]
    scale_type = want["loss_scale_type"] if want["loss_scale_type"] != "auto" else \
        ("dynamic" if level in ("O2", "O3") else "fixed")
    assert f"amp: {level} on CPU" in log  # the recipe's own level ran
    assert f"loss scale {scale_type} {float(want['loss_scale'])}" in log
    assert log.count(f"optimizer {want['opt']}: weight decay") == 1  # the groups, once (test_param_groups.py)
    assert f"dataset sink mode {'on' if want['dataset_sink_mode'] else 'off'}" in log
    if want["dataset_sink_mode"]:  # and says that MindSpore runs it as its step loop on this CPU run
        assert "dataset sink mode on (MindSpore runs it as its step loop on CPU)" in log
    if want["ema"]:
        assert (out / "ema_weights.ckpt").is_file() and "val (EMA) Top-1" in log
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and (out / "latest.ckpt").is_file()
    trained = metrics_line(proc.stdout)

    if rel == "configs/coat_lite_tiny_ascend.yaml":
        # One evaluation path: validate.py on the run's checkpoint, with the same recipe (label smoothing
        # 0.1, which the Loss leaves out in both), reports what training-time validation reported.  (The
        # EMA case: tests/test_validate.py.)
        check = run_script("validate.py", "-c", recipe, "--data_dir", data, "--ckpt_path", out / "latest.ckpt",
                           "--device_target", "CPU", "--image_resize", 64, "--batch_size", 4, "--no_progress",
                           cwd=tmp_path, timeout=900)
        assert check.returncode == 0, check.stderr[-3000:]
        got = metrics_line(check.stdout, prefix="")
        assert got["Top_1_Accuracy"] == pytest.approx(trained["Top_1_Accuracy"], abs=1e-4)
        assert got["Top_5_Accuracy"] == pytest.approx(trained["Top_5_Accuracy"], abs=1e-4)
        assert got["Loss"] == pytest.approx(trained["Loss"], abs=1e-4)


@pytest.mark.artefacts
def test_a_dynamic_loss_scale_recipe_skips_real_float16_overflows_and_says_so(data, tmp_path):
    """coat_tiny's Ascend recipe (O2, dynamic scale from 4096) with the scale doubling after every good step
    (scale_window 1 instead of 2000, so that a short run reaches the float16 limit): the overflowing steps are
    skipped and the scale lowered, and the epoch's log line says so."""
    recipe = os.path.join(ROOT, "configs", "coat_tiny_ascend.yaml")
    proc = run_script("train.py", "--config", recipe, *small_run_args(data), "--batch_size", 2, "--scale_window", 1,
                      cwd=tmp_path, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "amp: O2 on CPU" in log and "loss scale dynamic 4096.0" in log
    line = [ln for ln in log.splitlines() if "skipped on float overflow" in ln]
    assert line, log[-3000:]
    skipped = int(line[0].split(":")[1].split()[0])
    start, end = (float(v) for v in line[0].rsplit("loss scale ", 1)[1].split(" -> "))
    assert skipped >= 1 and start == 4096.0 and end != start
