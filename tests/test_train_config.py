"""Configs and flags: typed by key the same way from files and flags, checked before any work, mindcv's
recipes read as mindcv reads them, and the CLIs' one-line errors for what the machine or the data lacks."""
import glob
import os
import time

import pytest
from PIL import Image

from coat_ms.config import DEFAULTS, KEYS, ConfigError, load_yaml, merged
import train as train_cli  # noqa: E402  (called in-process for its one-line errors)
from helpers import ROOT, TINY_ARCH, one_error_line, refused, run_script, small_imagefolder

RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
MINDCV_RECIPES = sorted(glob.glob(os.path.join(ROOT, "tests", "mindcv_recipes", "*.yaml")))

# The type mindcv's own argument parser (mindcv config.py, v0.3.0) gives each key its CoaT recipes set.
MINDCV_TYPES = {
    "mode": int, "distribute": bool, "num_parallel_workers": int, "val_while_train": bool, "val_interval": int,
    "dataset": str, "data_dir": str, "shuffle": bool, "dataset_download": bool, "batch_size": int,
    "drop_remainder": bool, "image_resize": int, "scale": (list, tuple), "ratio": (list, tuple), "hflip": float,
    "interpolation": str, "auto_augment": str, "re_prob": float, "mixup": float, "cutmix": float,
    "cutmix_prob": float, "crop_pct": float, "color_jitter": float, "model": str, "num_classes": int,
    "pretrained": bool, "ckpt_path": str, "ckpt_save_policy": str, "keep_checkpoint_max": int,
    "ckpt_save_dir": str, "dataset_sink_mode": bool, "amp_level": str, "loss": str, "label_smoothing": float,
    "scheduler": str, "lr": float, "min_lr": float, "warmup_epochs": int, "decay_epochs": int, "epoch_size": int,
    "num_cycles": int, "cycle_decay": float, "opt": str, "weight_decay": float, "loss_scale": float,
    "use_nesterov": bool, "drop_rate": float, "drop_path_rate": float, "ema": bool, "ema_decay": float,
    "loss_scale_type": str, "drop_overflow_update": bool,
}


def test_unknown_keys_named_with_suggestions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: coat_lite_tiny\nbatch_szie: 3\nfoo_bar: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    msg = str(exc.value)
    assert "batch_szie" in msg and "did you mean batch_size" in msg and "foo_bar" in msg and "\n" not in msg


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(listy)
    twice = tmp_path / "twice.yaml"
    twice.write_text("lr: 0.1\nopt: adamw\nlr: 0.2\n")  # PyYAML alone would keep 0.2 without a word
    with pytest.raises(ConfigError, match="line 3, column 1: key 'lr' is given twice"):
        load_yaml(twice)


def test_every_shipped_and_mindcv_recipe_loads_with_mindcvs_types():
    assert len(RECIPES) == 22 and len(MINDCV_RECIPES) == 4
    for path in RECIPES + MINDCV_RECIPES:
        raw = load_yaml(path)
        cfg = merged(raw, source=path)
        for key in raw:
            if key in MINDCV_TYPES and raw[key] is not None:
                assert isinstance(cfg[key], MINDCV_TYPES[key]), (path, key, cfg[key])
        assert isinstance(cfg["min_lr"], float) and 0 < cfg["min_lr"] < cfg["lr"]  # '5e-06' is a number
        assert cfg["re_value"] == 0 and isinstance(cfg["re_value"], int)       # MindSpore refuses a float
    lite = merged(load_yaml(os.path.join(ROOT, "configs", "coat_lite_tiny_ascend.yaml")))
    assert (lite["batch_size"], lite["opt"], lite["lr"], lite["weight_decay"], lite["amp_level"], lite["loss_scale"]) == \
        (64, "adamw", 0.0008, 0.025, "O2", 1024.0)
    mindcv_tiny = merged(load_yaml(os.path.join(ROOT, "tests", "mindcv_recipes", "coat_tiny_ascend.yaml")))
    assert (mindcv_tiny["opt"], mindcv_tiny["loss_scale_type"], mindcv_tiny["drop_overflow_update"],
            mindcv_tiny["dataset_sink_mode"], mindcv_tiny["min_lr"], mindcv_tiny["weight_decay_filter"],
            mindcv_tiny["eps"]) == ("lion", "dynamic", True, True, 1e-6, "disable", 1e-10)


@pytest.mark.parametrize("text,value", [("5e-06", 5e-06), ("1e-6", 1e-6), (".5", 0.5), ("1_000", 1000.0),
                                        ('"1e-3"', 1e-3), ("0.000005", 5e-06), ("3", 3.0)])
def test_a_number_in_any_spelling_is_a_number(tmp_path, text, value):
    path = tmp_path / "c.yaml"
    path.write_text(f"min_lr: {text}\n")
    cfg = merged(load_yaml(path), source=str(path))
    assert cfg["min_lr"] == value and isinstance(cfg["min_lr"], float)


@pytest.mark.parametrize("line,words", [
    ("batch_size: abc", "batch_size: 'abc' is not valid (expected an integer)"),
    ("batch_size: 64.5", "expected an integer"),
    ("lr: fast", "lr: 'fast' is not valid (expected a number)"),
    ("ema: maybe", "expected true or false"),
    ("scale: 0.5", "expected a list of 2 numbers"),
    ("re_value: 0.5", "re_value"),
    ("opt: adamx", "expected one of sgd, momentum"),
    ("model_args: [1, 2]", "expected a mapping"),
])
def test_wrong_kind_is_one_line_naming_key_value_and_file(tmp_path, line, words):
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as exc:
        merged(load_yaml(path), source=str(path))
    assert words in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("key,value,words", [
    ("lr", -0.002, "climb the loss"), ("batch_size", -3, ">= 1"), ("epoch_size", 0, ">= 1"),
    ("num_classes", 0, ">= 1"), ("image_resize", 30, "multiple of 32"), ("scale", [1.5, 0.2], "0 < min <= max <= 1"),
    ("crop_pct", 1.5, "(0, 1]"), ("hflip", 2, "probability"), ("label_smoothing", 1.0, "[0, 1)"),
])
def test_out_of_range_values_are_refused(key, value, words):
    with pytest.raises(ConfigError) as exc:
        merged({key: value}, source="x.yaml")
    assert f"x.yaml: {key}:" in str(exc.value) and words in str(exc.value)


def test_mixing_needs_an_even_batch():
    with pytest.raises(ConfigError, match="must be even with mixup/cutmix"):
        merged({"mixup": 0.2, "batch_size": 5})


@pytest.mark.parametrize("key, value", [("mixup_off_epoch", 5), ("aug_repeats", 3), ("layer_decay", 0.75),
                                        ("aux_factor", 0.4), ("dataset_download", True), ("eval_shuffle", True)])
def test_mindcv_options_coat_ms_would_ignore_are_errors(key, value):
    with pytest.raises(ConfigError, match=f"{key}: .*not supported by coat_ms"):
        merged({key: value})
    merged({key: DEFAULTS[key]})  # the default value is accepted


def test_flags_follow_the_same_rules_and_override_yaml(tmp_path):
    import argparse

    from coat_ms.config import add_config_flags, settings_from
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nbatch_size: 4\nema: false\nmin_lr: 5e-06\n")
    parser = add_config_flags(argparse.ArgumentParser())
    cfg = settings_from(parser.parse_args(["-c", str(path), "--lr", "5e-1", "--ema", "--re_value", "0",
                                           "--model_args", '{"embed_dims": [8, 8, 8, 8]}', "--scale", "0.2", "1"]))
    assert cfg["lr"] == 0.5 and cfg["batch_size"] == 4 and cfg["ema"] is True and cfg["min_lr"] == 5e-06
    assert cfg["re_value"] == 0 and isinstance(cfg["re_value"], int) and cfg["scale"] == [0.2, 1.0]
    assert cfg["model_args"] == {"embed_dims": [8, 8, 8, 8]} and cfg.source("lr") == "--lr"
    with pytest.raises(ConfigError, match="--batch_size: 'abc' is not valid"):
        settings_from(parser.parse_args(["--batch_size", "abc"]))
    assert set(KEYS) == set(DEFAULTS)


def test_aliases_output_dir_and_mindcv_resume():
    assert merged({}, output_dir="/tmp/x")["ckpt_save_dir"] == "/tmp/x"
    cfg = merged({"ckpt_path": "a.ckpt", "resume_opt": True})
    assert cfg["resume"] == "a.ckpt" and cfg["ckpt_path"] == ""
    assert merged({"filter_bias_and_bn": True})["weight_decay_filter"] == "norm_and_bias"


def test_bad_values_stop_train_py_before_any_work(tmp_path, in_process_cli):
    for flags, words in ((["--lr", "-0.002"], "lr"), (["--image_resize", "30"], "multiple of 32"),
                         (["--batch_size", "abc"], "--batch_size: 'abc'"), (["--epoch_size", "0"], "epoch_size")):
        t0 = time.time()
        line = refused(train_cli.main, "--data_dir", tmp_path, *flags)
        assert words in line and time.time() - t0 < 60
    assert not os.path.exists(tmp_path / "rank_0") and not os.path.exists(tmp_path / "ckpt")


def test_what_the_machine_lacks_is_one_line(tmp_path):
    data = small_imagefolder(tmp_path / "d", classes=(0, 1), per_class=2, image_size=32, fmt="png")
    line = one_error_line(run_script("train.py", "--data_dir", data, "--device_target", "Ascend", cwd=tmp_path))
    assert "device_target Ascend is not available" in line and "--device_target CPU" in line
    line = one_error_line(run_script("train.py", "--data_dir", data, "--distribute", cwd=tmp_path))
    assert "--distribute needs a launcher" in line and "mpirun" in line


def test_train_cli_data_errors_are_one_line(tmp_path, in_process_cli):
    assert "data folder not found" in refused(train_cli.main, "--data_dir", tmp_path / "none")
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)
    (tmp_path / "d" / "train" / "b").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "d" / "train" / "a" / "x.png")
    line = refused(train_cli.main, "--data_dir", tmp_path / "d")
    assert "class folder" in line and "holds no images" in line and os.sep + "b" in line
    (tmp_path / "e" / "train").mkdir(parents=True)
    assert "no class folders" in refused(train_cli.main, "--data_dir", tmp_path / "e")
    # 11 class folders for a 10-class head: refused before training (labels 10.. would have no output)
    data = small_imagefolder(tmp_path / "f", classes=tuple(range(10)), per_class=2, image_size=32, fmt="png")
    (tmp_path / "f" / "train" / "zz_extra").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "f" / "train" / "zz_extra" / "x.png")
    line = refused(train_cli.main, "--data_dir", data, "--num_classes", "10", "--image_resize", "32")
    assert "11 class folders but num_classes=10" in line
    # a val class the model is not trained on: refused (labels would shift silently)
    (tmp_path / "f" / "val" / "zz_other").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "f" / "val" / "zz_other" / "x.png")
    line = refused(train_cli.main, "--data_dir", data, "--num_classes", "11", "--image_resize", "32")
    assert "zz_other" in line and "not trained on" in line


def test_seed_docs_command_shapes(trained_run, tmp_path):
    """--output_dir (alias of ckpt_save_dir; the shared run used it) and --pretrained True --ckpt_path X.ckpt
    (a local checkpoint wins over the hub weights)."""
    data, run, _ = trained_run
    assert (run / "latest.ckpt").is_file() and (run / "config.yaml").is_file()
    tuned = run_script("train.py", "--data_dir", data, "--model", "coat_lite_tiny", "--model_args", TINY_ARCH,
                       "--image_resize", 32, "--batch_size", 16, "--num_samples", 32, "--epoch_size", 1,
                       "--val_while_train", "False", "--device_target", "CPU", "--num_parallel_workers", 1,
                       "--pretrained", "True", "--ckpt_path", run / "latest.ckpt", "--output_dir", tmp_path / "b",
                       cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert "starting from --ckpt_path" in tuned.stderr and (tmp_path / "b" / "latest.ckpt").is_file()
