"""The failure rules (README "Failure behaviour"), each fed the bad case a user met (issue 21):

* flags override the file, aliases included; two flags that contradict each other are an error;
* no output may be an input (compared by real path, before any work, without per-image work);
* every value is checked where it enters: flag, YAML, checkpoint record, export sidecar, model_args;
  a value the device cannot run is refused up front by name;
* nothing blocks forever: non-regular data files are skipped with a line, SIGINT/SIGTERM end a tool
  even while it waits inside MindSpore;
* a refused or failed start leaves the disk as it found it; a resume continues in its checkpoint's folder.

The one-line errors are checked in-process (``main(argv)`` raising the CoatError that run_cli prints);
the exit-code contract and the hangs run as subprocesses.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

import coat_ms
from coat_ms.checkpoint import META_KEY, make_meta
from coat_ms.config import OPTIMIZERS, ConfigError, add_config_flags, load_yaml, merged, settings_from
from coat_ms.errors import CoatError
from helpers import ENV, ROOT, TINY_ARCH, one_error_line, refused, run_script, small_imagefolder

import train as train_cli  # noqa: E402  (the repository's CLIs, called in-process)
import validate as validate_cli  # noqa: E402
import export as export_cli  # noqa: E402
from coat_ms import predict as predict_cli  # noqa: E402
from convert import cli as convert_cli  # noqa: E402

TINY = json.loads(TINY_ARCH)
RECIPE = os.path.join(ROOT, "configs", "coat_lite_tiny_ascend.yaml")


pytestmark = pytest.mark.usefixtures("in_process_cli")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_imagefolder(tmp_path_factory.mktemp("rules") / "data", classes=(0, 1), per_class=8,
                             image_size=32, fmt="png")


def save_with_record(path, meta_text, num_classes=2, arch=TINY):
    """A checkpoint of a tiny coat_lite_tiny whose coat_ms record is the JSON text ``meta_text``."""
    ms.set_seed(0)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=num_classes, **arch)
    ms.save_checkpoint(model, str(path), append_dict={META_KEY: meta_text})
    return str(path)


def good_record(**changes):
    meta = make_meta("coat_lite_tiny", 2, ["0", "1"], {"image_size": [32, 32], "crop_pct": 1.0,
                                                       "interpolation": "bilinear", "mean": [0.5] * 3,
                                                       "std": [0.5] * 3}, TINY)
    meta.update(changes)
    return meta


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_with_record(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", json.dumps(good_record()))


def tiny_train_args(data, out, *extra):
    return ["--data_dir", data, "--model", "coat_lite_tiny", "--model_args", TINY_ARCH, "--image_resize", 32,
            "--batch_size", 8, "--num_parallel_workers", 1, "--device_target", "CPU", "--log_interval", 1,
            "--ckpt_save_dir", out, *extra]


# ------------------------------------------------------------------------------------------------
# Flags override the file, aliases included
# ------------------------------------------------------------------------------------------------

def settings(*argv):
    return settings_from(add_config_flags(argparse.ArgumentParser()).parse_args([str(a) for a in argv]))


def test_a_flag_wins_over_the_file_whichever_alias_each_uses(tmp_path):
    # the seed docs' command: every shipped recipe sets ckpt_save_dir, --output_dir names this run's folder
    cfg = settings("--config", RECIPE, "--output_dir", "./train_output")
    assert cfg["ckpt_save_dir"] == "./train_output"
    own = tmp_path / "own.yaml"
    own.write_text("output_dir: from_file\n")
    assert settings("-c", own, "--ckpt_save_dir", "from_flag")["ckpt_save_dir"] == "from_flag"
    # older mindcv's filter_bias_and_bn in the file against weight_decay_filter as a flag: the flag wins
    assert settings("-c", RECIPE, "--weight_decay_filter", "disable")["weight_decay_filter"] == "disable"
    own.write_text("weight_decay_filter: disable\n")
    assert settings("-c", own, "--filter_bias_and_bn", "True")["weight_decay_filter"] == "norm_and_bias"
    # mindcv's resume spelling (ckpt_path + resume_opt) in the file, --resume as a flag: the flag wins
    own.write_text("ckpt_path: a.ckpt\nresume_opt: True\n")
    assert settings("-c", own, "--resume", "b.ckpt")["resume"] == "b.ckpt"


def test_two_flags_that_contradict_each_other_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match="--output_dir.*--ckpt_save_dir|--ckpt_save_dir.*--output_dir"):
        settings("--output_dir", "a", "--ckpt_save_dir", "b")
    with pytest.raises(ConfigError, match="filter_bias_and_bn"):
        settings("--filter_bias_and_bn", "True", "--weight_decay_filter", "disable")
    assert settings("--output_dir", "a", "--ckpt_save_dir", "a")["ckpt_save_dir"] == "a"  # agreeing: fine
    both = tmp_path / "both.yaml"
    both.write_text("output_dir: a\nckpt_save_dir: b\n")  # a file that contradicts itself
    with pytest.raises(ConfigError, match="output_dir"):
        settings("-c", both)
    assert settings("-c", both, "--output_dir", "c")["ckpt_save_dir"] == "c"  # ... unless a flag decides


# ------------------------------------------------------------------------------------------------
# Every value checked where it enters
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line,key", [("lr: .inf", "lr"), ("lr: .nan", "lr"), ("weight_decay: .inf", "weight_decay"),
                                      ("min_lr: -.inf", "min_lr"), ("loss_scale: .inf", "loss_scale")])
def test_non_finite_numbers_in_yaml_are_refused_like_the_flag(tmp_path, line, key):
    path = tmp_path / "c.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=f"{key}: .*expected a number"):
        merged(load_yaml(path), source=str(path))
    with pytest.raises(ConfigError, match=f"--{key}: .*expected a number"):
        settings(f"--{key}", "inf")


@pytest.mark.parametrize("key,value,words", [
    ("seed", -1, "0 .. 4294967295"), ("seed", 2**32, "0 .. 4294967295"),
    ("batch_size", 1e12, "2147483647"), ("num_samples", 10**10, "2147483647"),
    ("interpolation", "antialias", "bicubic"),
])
def test_values_mindspore_would_refuse_are_refused_first(key, value, words):
    with pytest.raises(ConfigError) as info:
        merged({key: value}, source="x.yaml")
    assert f"x.yaml: {key}:" in str(info.value) and words in str(info.value)
    with pytest.raises(ConfigError, match=f"--{key}"):
        settings(f"--{key}", value)


def test_an_optimizer_the_device_cannot_run_is_refused_by_name(data, tmp_path):
    # mindcv's lamb uses MindSpore's Lamb operator, which has no CPU kernel (every other optimizer compiles)
    message = refused(train_cli.main, *tiny_train_args(data, tmp_path / "out", "--opt", "lamb"))
    assert "lamb" in message and "CPU" in message and "adamw" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.artefacts
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_which_optimizers_run_on_cpu(opt):
    """The measured fact behind the refusal: on CPU every optimizer train.py accepts takes a step through
    mindcv's create_optimizer except those refused up front, which fail to compile there."""
    from mindcv.optim import create_optimizer
    from mindspore import nn

    from coat_ms.train.preflight import UNSUPPORTED_OPTIMIZERS
    ms.set_context(mode=ms.GRAPH_MODE)
    net = nn.Dense(4, 2)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()),
                               create_optimizer(net.trainable_params(), opt=opt, lr=0.01, weight_decay=0.01))
    x, y = ms.Tensor(np.ones((3, 4), np.float32)), ms.Tensor(np.zeros((3, 2), np.float32))
    if opt in UNSUPPORTED_OPTIMIZERS["CPU"]:
        with pytest.raises(RuntimeError, match="Unsupported op"):
            step(x, y)
    else:
        assert np.isfinite(step(x, y).asnumpy()).all()


@pytest.mark.parametrize("args,words", [
    ({"embed_dims": [64, 64]}, ["embed_dims", "4 values"]),
    ({"num_heads": 3}, ["num_heads", "divide", "64"]),
    ({"embed_dims": "abc"}, ["embed_dims", "list"]),
    ({"serial_depths": [1, 1, 1, -1]}, ["serial_depths", ">= 0"]),
    ({"crpe_window": {"3": 2, "5": 3}}, ["crpe_window", "5 heads"]),
    ({"mlp_ratios": [4, 4, 4, "x"]}, ["mlp_ratios"]),
])
def test_model_args_are_checked_against_the_constructor_before_the_model_is_built(data, tmp_path, args, words):
    message = refused(train_cli.main, "--data_dir", data, "--model_args", json.dumps(args), "--ckpt_save_dir",
                      tmp_path / "out", "--device_target", "CPU", "--batch_size", 8, "--image_resize", 32,
                      "--num_parallel_workers", 1)
    assert all(w in message for w in words) and "--model_args" in message, message
    assert not (tmp_path / "out").exists()
    with pytest.raises(CoatError) as info:  # the Python door says the same
        coat_ms.create_model("coat_lite_tiny", **args)
    assert all(w in str(info.value) for w in words)


def test_every_constructor_option_has_a_check():
    """The validator follows the constructor: a new CoaT option without a check fails here."""
    from coat_ms.model_options import CHECKS, OWN_ARGUMENTS, constructor_options
    assert set(CHECKS) | set(OWN_ARGUMENTS) == set(constructor_options())


def test_model_args_through_the_other_tools(ckpt, tmp_path):
    bad = json.dumps({"num_heads": 3})
    assert "num_heads" in refused(export_cli.main, "--model_name", "coat_lite_tiny", "--model_args", bad,
                                  "--file_name", tmp_path / "m")
    assert "num_heads" in refused(predict_cli.main, tmp_path, "--ckpt_path", ckpt, "--model_name", "coat_lite_tiny",
                                  "--model_args", bad)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("record,words", [
    ("[1, 2, 3]", ["record", "mapping"]),
    (json.dumps(good_record(model_args="abc")), ["model_args", "mapping"]),
    (json.dumps(good_record(model_args={"num_heads": 3})), ["num_heads", "divide"]),
    (json.dumps(good_record(preprocessing={"mean": "abc"})), ["mean", "three numbers"]),
    (json.dumps(good_record(preprocessing={"interpolation": "antialias"})), ["interpolation", "antialias"]),
    (json.dumps(good_record(class_names=5)), ["class_names", "list"]),
    (json.dumps(good_record(num_classes="x")), ["num_classes"]),
    (json.dumps(good_record(model=7)), ["model"]),
])
def test_a_checkpoint_record_is_checked_where_it_is_read(tmp_path, data, record, words):
    from coat_ms.factory import model_from_checkpoint
    path = save_with_record(tmp_path / "odd.ckpt", record)
    with pytest.raises(CoatError) as info:
        model_from_checkpoint(path)
    message = str(info.value)
    assert path in message and all(w in message for w in words) and "\n" not in message, message
    message = refused(validate_cli.main, "--data_dir", data, "--ckpt_path", path, "--device_target", "CPU")
    assert all(w in message for w in words), message


@pytest.fixture(scope="module")
def mindir(tmp_path_factory):
    from coat_ms.export import export_model
    root = tmp_path_factory.mktemp("mindir")
    ms.set_seed(0)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=2, **TINY)
    export_model(model, root / "tiny", "MINDIR", batch_size=1, image_size=(32, 32), verify=False)
    return root / "tiny.mindir"


@pytest.mark.parametrize("sidecar,words", [
    ("[1, 2]", ["mapping"]),
    (json.dumps({"preprocessing": {"mean": "abc"}}), ["mean", "three numbers"]),
    (json.dumps({"preprocessing": {"crop_pct": "big"}}), ["crop_pct"]),
    (json.dumps({"preprocessing": {"interpolation": "antialias"}}), ["antialias"]),
    (json.dumps({"class_names": "cat"}), ["class_names", "list"]),
    (json.dumps({"input_shape": [1, 3, 64, 64]}), ["input_shape", "1x3x32x32"]),
])
def test_an_export_sidecar_is_checked_where_it_is_read(mindir, data, tmp_path, sidecar, words):
    import shutil
    target = tmp_path / "m.mindir"
    shutil.copy(mindir, target)
    (tmp_path / "m.mindir.json").write_text(sidecar)
    message = refused(predict_cli.main, os.path.join(data, "val", "0"), "--mindir", target)
    assert "m.mindir.json" in message and all(w in message for w in words), message


def test_other_flags_of_the_tools_are_checked(ckpt, mindir, data, tmp_path):
    val = os.path.join(data, "val")
    assert "--num_parallel_workers" in refused(predict_cli.main, val, "--mindir", mindir,
                                               "--num_parallel_workers", 0)
    assert "--seed" in refused(export_cli.main, "--model_name", "coat_lite_tiny", "--seed", -1,
                               "--file_name", tmp_path / "m")
    assert "--num_classes" in refused(export_cli.main, "--model_name", "coat_lite_tiny", "--num_classes", -2,
                                      "--file_name", tmp_path / "m")
    assert "--image_size" in refused(export_cli.main, "--model_name", "coat_lite_tiny", "--image_size", 30, 30,
                                     "--file_name", tmp_path / "m")
    assert "--tolerance" in refused(convert_cli.main, "--src", ckpt, "--out", tmp_path / "o.pth", "--tolerance", "nan")
    assert "--image-size" in refused(convert_cli.main, "--src", ckpt, "--out", tmp_path / "o.pth", "--verify",
                                     "--image-size", 30)
    assert os.listdir(tmp_path) == []


def test_pickled_hub_file_says_what_to_do_from_this_tool(tmp_path, monkeypatch):
    """train.py --pretrained True (create_model(pretrained=True)) with timm's pytorch_model.bin holding Python
    objects: the hint is a command that exists (convert it, then --ckpt_path), not a flag train.py lacks."""
    import hashlib

    import torch
    hub = tmp_path / "hub"
    repo = hub / "models--timm--coat_lite_tiny.in1k"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    staging = repo / "blobs" / "incoming"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)}, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    os.replace(staging, repo / "blobs" / digest)
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "pytorch_model.bin").symlink_to(os.path.join("..", "..", "blobs", digest))
    (repo / "refs" / "main").write_text("abc")
    for name, value in (("HF_HUB_CACHE", hub), ("HF_HOME", tmp_path / "hf"), ("COAT_MS_HOME", tmp_path / "home"),
                        ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, str(value))
    with pytest.raises(CoatError) as info:
        coat_ms.create_model("coat_lite_tiny", pretrained=True)
    message = str(info.value)
    assert "python -m convert --src" in message and "--trust-pickle" in message and "--ckpt_path" in message
    assert "pytorch_model.bin" in message and "\n" not in message


def test_convert_refuses_integer_and_bool_tensors(tmp_path):
    from safetensors.numpy import save_file
    model = coat_ms.create_model("coat_lite_tiny")
    state = {n: p.asnumpy() for n, p in model.parameters_dict().items()}
    for name, dtype in (("patch_embed1.proj.weight", np.int8), ("head.bias", np.bool_)):
        odd = dict(state, **{name: state[name].astype(dtype)})
        src = tmp_path / f"{np.dtype(dtype).name}.safetensors"
        save_file(odd, str(src))
        message = refused(convert_cli.main, "--src", src, "--out", tmp_path / "out.ckpt")
        assert name in message and np.dtype(dtype).name in message
        assert not (tmp_path / "out.ckpt").exists()


# ------------------------------------------------------------------------------------------------
# No output may be an input
# ------------------------------------------------------------------------------------------------

def test_validate_never_writes_over_the_data_it_reads(data, ckpt, tmp_path):
    image = os.path.join(data, "val", "0", sorted(os.listdir(os.path.join(data, "val", "0")))[0])
    before = open(image, "rb").read()
    common = ["--data_dir", data, "--ckpt_path", ckpt, "--device_target", "CPU", "--no_progress"]
    for flag in ("--confusion", "--json"):
        message = refused(validate_cli.main, *common, flag, image)
        assert flag in message and "refusing to overwrite" in message
    # a new file inside a class folder would become an image of the split
    assert "inside the data" in refused(validate_cli.main, *common, "--confusion",
                                        os.path.join(data, "val", "1", "cm.png"))
    # a hard link elsewhere is the same file
    os.link(image, tmp_path / "link.json")
    assert "refusing to overwrite" in refused(validate_cli.main, *common, "--json", tmp_path / "link.json")
    # and so is a symlink pointing at it
    os.symlink(image, tmp_path / "sym.png")
    assert "refusing to overwrite" in refused(validate_cli.main, *common, "--confusion", tmp_path / "sym.png")
    # two outputs that are one file
    assert "same file" in refused(validate_cli.main, *common, "--json", tmp_path / "x", "--confusion", tmp_path / "x")
    assert open(image, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["link.json", "sym.png"]


def test_predict_and_train_never_write_into_their_inputs(data, ckpt, tmp_path):
    val = os.path.join(data, "val")
    image = os.path.join(val, "1", sorted(os.listdir(os.path.join(val, "1")))[0])
    before = open(image, "rb").read()
    assert "refusing to overwrite" in refused(predict_cli.main, val, "--ckpt_path", ckpt, "--json", image)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    assert "refusing to overwrite" in refused(predict_cli.main, val, "--ckpt_path", ckpt, "--labels",
                                              tmp_path / "labels.txt", "--json", tmp_path / "labels.txt")
    # a training run's folder inside a split it reads
    for inside in (os.path.join(data, "train", "run"), os.path.join(data, "val", "0")):
        message = refused(train_cli.main, *tiny_train_args(data, inside))
        assert "inside the data" in message and "--ckpt_save_dir" in message
    assert not os.path.exists(os.path.join(data, "train", "run"))
    assert open(image, "rb").read() == before


def test_an_output_the_tool_does_not_read_may_sit_beside_its_inputs(data):
    """A report beside the photos is not an input (only image names are read from a folder)."""
    from coat_ms.fileio import check_outputs
    val = os.path.join(data, "val")
    assert not check_outputs([("--json", os.path.join(val, "results.json"))], folders=[("image folder", val)])
    with pytest.raises(CoatError, match="inside the data"):
        check_outputs([("--json", os.path.join(val, "0", "new.png"))], folders=[("image folder", val)])


# ------------------------------------------------------------------------------------------------
# Nothing blocks forever
# ------------------------------------------------------------------------------------------------

def test_non_regular_files_and_broken_class_links_are_named(tmp_path, caplog):
    from coat_ms.data.files import DataError, list_split
    root = small_imagefolder(tmp_path / "d", classes=(0, 1), per_class=2, image_size=32, fmt="png")
    os.mkfifo(os.path.join(root, "train", "0", "pipe.jpg"))
    os.symlink(os.path.join(root, "nowhere.png"), os.path.join(root, "train", "1", "dangling.png"))
    with caplog.at_level("WARNING", logger="coat_ms"):
        images = list_split(root, "train")
    assert len(images) == 4
    assert "pipe.jpg" in caplog.text and "not a regular file" in caplog.text and "dangling.png" in caplog.text
    os.symlink(os.path.join(root, "gone"), os.path.join(root, "train", "2"))  # a class folder that is not there
    with pytest.raises(DataError, match="train/2.*broken symbolic link"):
        list_split(root, "train")


def test_predict_skips_a_fifo_instead_of_blocking(ckpt, tmp_path):
    """A FIFO named x.jpg in a folder (and given by name) used to block predict forever."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    small = small_imagefolder(tmp_path / "d", classes=(3,), per_class=1, image_size=32, fmt="png")
    os.link(os.path.join(small, "train", "3", os.listdir(os.path.join(small, "train", "3"))[0]), folder / "a.png")
    os.mkfifo(folder / "x.jpg")
    os.mkfifo(tmp_path / "named.png")
    proc = run_script("-m coat_ms.predict", folder, tmp_path / "named.png", "--ckpt_path", ckpt, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x.jpg" in proc.stderr and "named.png" in proc.stderr and "not a regular file" in proc.stderr
    assert "1 images classified" in proc.stdout


HANG = """
import sys, time
from coat_ms.cli import run_cli

def main(argv=None):
    import numpy as np
    import mindspore.dataset as ds
    from coat_ms.cli import use_device
    use_device("CPU")

    def stuck(x):  # a data worker that never returns (a hung network file system, a FIFO, ...)
        time.sleep(10000)
        return x
    data = ds.NumpySlicesDataset({"x": np.arange(4)}, shuffle=False).map(stuck, input_columns="x")
    print("waiting", flush=True)
    for _ in data.create_tuple_iterator(output_numpy=True):
        pass
    return 0

run_cli(main)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_end_a_tool_that_waits_inside_mindspore(tmp_path, sig):
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(1.0)  # the main thread now waits in MindSpore's iterator (C++), not in Python
        proc.send_signal(sig)
        t0 = time.time()
        _, stderr = proc.communicate(timeout=20)
        assert time.time() - t0 < 10
        assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "error: interrupted", stderr[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------
# A refused or failed start leaves the disk as it found it; a resume continues where it is
# ------------------------------------------------------------------------------------------------

def test_a_refused_start_creates_no_run_folder(tmp_path):
    data = small_imagefolder(tmp_path / "d", classes=(0, 1), per_class=2, image_size=32, fmt="png")
    os.mkdir(os.path.join(data, "train", "empty_class"))  # found while listing, after the device is set up
    message = refused(train_cli.main, *tiny_train_args(data, tmp_path / "out"))
    assert "holds no images" in message
    assert not (tmp_path / "out").exists()


def test_a_folder_without_a_checkpoint_is_not_offered_for_resume(tmp_path):
    from coat_ms.train.run_folder import claim_run_folder
    (tmp_path / "dead").mkdir()
    (tmp_path / "dead" / "config.yaml").write_text("model: coat_lite_tiny\n")  # what older versions left
    with pytest.raises(CoatError) as info:
        claim_run_folder(str(tmp_path / "dead"))
    assert "--resume" not in str(info.value) and "no checkpoint" in str(info.value)


def test_a_run_that_stops_before_its_first_checkpoint_leaves_nothing(data, tmp_path):
    out = tmp_path / "out"
    # an lr that makes the loss NaN in epoch 1 (before any checkpoint), with sink mode on (the resume test of
    # tests/test_train_engine.py stops a run with it off)
    line = refused(train_cli.main, *tiny_train_args(data, out, "--lr", 1e30, "--epoch_size", 1, "--val_while_train",
                                                    "False", "--dataset_sink_mode", "True"))
    assert "loss became nan" in line and "no checkpoint was written" in line
    assert not out.exists()


@pytest.mark.artefacts
def test_resume_continues_in_the_checkpoints_folder(data, tmp_path):
    """-c recipe.yaml (ckpt_save_dir: A) and --resume X/latest.ckpt: the run continues in X, as
    docs/training.md says, and the temp file the crash left there is removed."""
    config = tmp_path / "c.yaml"
    config.write_text("ckpt_save_dir: A\nepoch_size: 2\nnum_samples: 16\nval_while_train: False\n")
    x = tmp_path / "X"
    crashed = run_script("tests/crash_during_save.py", 2, "-c", config, *tiny_train_args(data, x), cwd=tmp_path)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    assert [f for f in os.listdir(x) if ".tmp" in f]
    resumed = run_script("train.py", "-c", config, "--resume", x / "latest.ckpt", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "A").exists()
    assert [r.split(",")[0] for r in (x / "results.csv").read_text().split()[1:]] == ["1", "2"]
    assert not [f for f in os.listdir(x) if ".tmp" in f]
