"""Config loading and train.py's bad-input handling (no training, no graph compile)."""
import glob
import os
import subprocess
import sys

import pytest
from PIL import Image

from coat_ms.config import DEFAULTS as ConfigDefaults
from coat_ms.config import ConfigError, KNOWN_KEYS, load_yaml, merged

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GLOG_v="3")


def run_train(*args, timeout=240):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=ENV)


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


def test_every_variant_and_device_has_a_loadable_config():
    variants = ["coat_tiny", "coat_mini", "coat_small", "coat_lite_tiny", "coat_lite_mini", "coat_lite_small",
                "coat_lite_medium"]
    for v in variants:
        for dev in ("ascend", "gpu", "cpu"):
            cfg = load_yaml(os.path.join(ROOT, "configs", f"{v}_{dev}.yaml"))
            assert cfg["model"] == v and set(cfg) <= KNOWN_KEYS
            merged(cfg)  # values coat_ms would ignore are rejected by merged()
    assert len(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))) == 22
    lite = load_yaml(os.path.join(ROOT, "configs", "coat_lite_tiny_ascend.yaml"))  # mindcv's published recipe
    assert (lite["batch_size"], lite["opt"], lite["lr"], lite["weight_decay"], lite["amp_level"], lite["loss_scale"]) == \
        (64, "adamw", 0.0008, 0.025, "O2", 1024)
    assert (lite["auto_augment"], lite["mixup"], lite["cutmix"], lite["re_prob"], lite["label_smoothing"]) == \
        ("randaug-m7-mstd0.5-inc1", 0.2, 1.0, 0.1, 0.1)
    tiny = load_yaml(os.path.join(ROOT, "configs", "coat_tiny_ascend.yaml"))
    assert (tiny["opt"], tiny["lr"], tiny["weight_decay"], tiny["loss_scale_type"], tiny["ema"]) == \
        ("lion", 0.00025, 0.15, "dynamic", True)


def test_flags_override_yaml(tmp_path):
    from coat_ms.train.cli_args import build_parser, resolve
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nbatch_size: 4\nema: false\n")
    cfg = resolve(build_parser("t", "t").parse_args(["-c", str(path), "--lr", "0.5", "--ema", "--model_args",
                                                      '{"embed_dims": [8, 8, 8, 8]}']))
    assert cfg["lr"] == 0.5 and cfg["batch_size"] == 4 and cfg["ema"] is True
    assert cfg["model_args"] == {"embed_dims": [8, 8, 8, 8]} and cfg["epoch_size"] == merged()["epoch_size"]


def _one_error_line(proc):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_train_cli_unknown_config_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lrr: 0.1\n")
    assert "'lrr' (did you mean lr?)" in _one_error_line(run_train("-c", str(path)))


def test_train_cli_missing_and_empty_data(tmp_path):
    assert "data folder not found" in _one_error_line(run_train("--data_dir", str(tmp_path / "none")))
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)
    (tmp_path / "d" / "train" / "b").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "d" / "train" / "a" / "x.png")
    line = _one_error_line(run_train("--data_dir", str(tmp_path / "d")))
    assert "class folder" in line and "holds no images" in line and os.sep + "b" in line
    (tmp_path / "e" / "train").mkdir(parents=True)
    assert "no class folders" in _one_error_line(run_train("--data_dir", str(tmp_path / "e")))


@pytest.mark.parametrize("key, value", [("mixup_off_epoch", 5), ("aug_repeats", 3), ("dataset_sink_mode", True),
                                        ("ckpt_save_policy", "latest_k")])
def test_mindcv_options_coat_ms_would_ignore_are_errors(key, value):
    with pytest.raises(ConfigError, match=f"{key}=.*not supported by coat_ms"):
        merged({key: value})
    merged({key: ConfigDefaults[key]})  # the default value is accepted


def test_accumulation_in_pynative_and_drop_overflow_without_dynamic_scale_are_errors():
    with pytest.raises(ConfigError, match="needs mode: 0"):
        merged({}, gradient_accumulation_steps=2, mode=1)
    merged({}, gradient_accumulation_steps=2, mode=0)
    with pytest.raises(ConfigError, match="needs loss_scale_type: dynamic"):
        merged({}, drop_overflow_update=True)
    merged({}, drop_overflow_update=True, loss_scale_type="dynamic")
