"""Every command the README and docs/ show, run as a user runs it (slow: about an hour on 2 cores).

    .venv/bin/python -m pytest -q -m slow tests/test_doc_commands.py

Each document's commands run in their documented order in a workspace of their own (a folder with
the repository's files linked in), so what one command writes (the demo's checkpoint, an export) is
what the next one reads, as for a user following that page.  Placeholders become real files made here from the real producers (timm, mindcv, train.py):
/path/to/imagenet, DIR, X.ckpt, photos/, labels.txt, ...  Overrides are only for data size, run
length and device: a CPU-sized ImageFolder, one epoch, `--device_target CPU`, `mpirun -n 2` for an
8-device command, one variant where "all" would take hours.

``RUNNERS`` maps each documented command (regex) to the overrides it gets; tests/test_docs.py checks
that no documented command is missing from it.  ``None`` marks the commands that run the test suite
itself (pytest, make test: CI runs those).
"""
import os
import re
import subprocess

import pytest

from coat_ms.config import load_yaml
from helpers import BIN, ENV, ROOT, small_imagefolder

SMALL_TRAIN = "--num_classes 2 --epoch_size 1 --batch_size 4 --image_resize 64"
RUNNERS = {
    r"^make test$": None,
    r"-m pytest": None,
    r"^make demo$": "",
    r"-m coat_ms\.demo": "--epochs 2",
    r"train\.py -c configs/coat_lite_tiny_cpu\.yaml": SMALL_TRAIN,
    r"train\.py -c configs/coat_lite_tiny_ascend\.yaml .*--amp_on_cpu": SMALL_TRAIN,
    r"^mpirun -n 8 python train\.py -c configs/coat_lite_tiny_ascend\.yaml": SMALL_TRAIN + " --device_target CPU",
    r"mpirun --allow-run-as-root -n 2 .*train\.py -c configs/demo_digits_cpu\.yaml": "--epoch_size 1",
    r"msrun --worker_num 2 .*train\.py -c configs/demo_digits_cpu\.yaml": "--epoch_size 1",
    r"train\.py -c configs/demo_digits_cpu\.yaml --data_dir demo_data --epoch_size 3": "",
    r"train\.py --config configs/coat_mini_ascend\.yaml .*--ckpt_path \./coat_mini-57c5bce7\.ckpt":
        "--epoch_size 1 --batch_size 4 --image_resize 64 --device_target CPU",
    r"validate\.py": "--device_target CPU",
    r"export\.py --model_name coat_mini --ckpt_file \./coat_mini-57c5bce7\.ckpt":
        "--device_target CPU --image_size 64 64",
    r"export\.py": "--device_target CPU",
    r"-m coat_ms\.predict": "",
    r"-m convert": "",
    r"-m parity_tests\.report --variants all --profile full": "--variants coat_lite_tiny --skip grad,step,mindcv",
    # every variant of every study is a test of its own in `make test-studies`: the command runs once per
    # document on one variant (all seven take an hour each time)
    r"-m parity_tests\.report --variants all --out": "--variants coat_lite_tiny",
    r"-m parity_tests\.report": "",
    r"benchmarks/bench\.py": "--models coat_lite_tiny --batches 1 --reps 1 --mindcv-reps 1 "
                                               "--out bench_out",
    r"benchmarks/profile_ops\.py": "--steps 1",
    r"benchmarks/openmp_spin\.py": "--rounds 1 --calls 1 --batches 1 --settings 1000,300000",
    r"benchmarks/profile_onnx\.py": "--runs 1",
    r"benchmarks/int8_study\.py": "--digits_epochs 2 --photo_epochs 1",
    r"benchmarks/bench_convert\.py": "",
    r"benchmarks/bench_startup\.py": "--files 3000 --small 1000 --repeats 1",
    r"benchmarks/bench_pipeline\.py": "--images 48 --batches 2 --steps 1",
}
LINKED = ["train.py", "validate.py", "export.py", "configs", "coat_ms", "convert", "parity_tests", "benchmarks", "tests",
          "Makefile", "scripts", "pyproject.toml", ".venv", "README.md"]


def runner_for(command):
    for pattern, extra in RUNNERS.items():
        if re.search(pattern, command):
            return pattern, extra
    return None, None


def model_named(command):
    """The model a command runs: its --model/--model_name flag, else its recipe's `model` key."""
    flag = re.search(r"--model(?:_name)? (\w+)", command)
    recipe = re.search(r"(?:-c|--config) (configs/\S+\.yaml)", command)
    if flag:
        return flag.group(1)
    return load_yaml(os.path.join(ROOT, recipe.group(1)))["model"] if recipe else "coat_lite_tiny"


def adapted(command, extra, files):
    """The command with its placeholders replaced and the overrides appended (after the first '#')."""
    for placeholder, real in files.items():  # whole words only: DIR is a placeholder, MINDIR is not
        command = re.sub(rf"(?<![\w/.]){re.escape(placeholder)}(?![\w])", lambda _: real, command)
    if command.startswith("mpirun -n 8 "):  # 8 Ascend devices -> 2 CPU ranks
        command = f"{BIN}/mpirun --allow-run-as-root -n 2 " + command[len("mpirun -n 8 "):]
    command = re.sub(r"(^|\s)python ", rf"\1{BIN}/python ", command)
    return f"{command} {extra}".strip()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The files the documented commands name, made once by their real producers."""
    import mindspore as ms
    import timm
    import torch
    from mindcv.models import create_model as mindcv_create_model
    from PIL import Image
    from safetensors.torch import save_file

    import coat_ms

    made = tmp_path_factory.mktemp("doc_inputs")
    data = small_imagefolder(made / "imagefolder", classes=(0, 1), per_class=8, image_size=64)
    torch.manual_seed(0)
    lite = timm.create_model("coat_lite_tiny").eval()
    torch.save(lite.state_dict(), made / "coat_lite_tiny.pth")
    save_file({k: v.contiguous().clone() for k, v in lite.state_dict().items()}, str(made / "model.safetensors"))
    tiny = timm.create_model("coat_tiny").eval()
    torch.save({"model": tiny.state_dict(), "model_ema": tiny.state_dict()}, made / "checkpoint.pth")
    ms.save_checkpoint(mindcv_create_model("coat_tiny"), str(made / "coat_tiny-071cb792.ckpt"))
    ms.save_checkpoint(mindcv_create_model("coat_mini"), str(made / "coat_mini-57c5bce7.ckpt"))  # mindcv's layout
    # X.ckpt of the model each command names: coat_mini with ImageNet's 1000 classes, coat_lite_tiny with
    # the 2 classes of the ImageFolder (so --class_dir and labels.txt name its outputs)
    ms.save_checkpoint(coat_ms.create_model("coat_mini"), str(made / "X_coat_mini.ckpt"))
    ms.save_checkpoint(coat_ms.create_model("coat_lite_tiny", num_classes=2), str(made / "X_coat_lite_tiny.ckpt"))
    (made / "photos").mkdir()
    for i, digit in enumerate(("0", "1")):
        first = sorted(os.listdir(os.path.join(data, "val", digit)))[0]
        Image.open(os.path.join(data, "val", digit, first)).convert("RGB").save(made / "photos" / f"p{i}.jpg")
    Image.open(made / "photos" / "p0.jpg").save(made / "img.jpg")
    (made / "labels.txt").write_text("zero\none\n")
    return made, data


def workspace(inputs, folder):
    """A fresh folder that looks like the repository to a user, with the documented input files in it."""
    made, data = inputs
    folder.mkdir()
    for name in LINKED:
        os.symlink(os.path.join(ROOT, name), folder / name)
    for name in os.listdir(made):
        if name != "imagefolder" and not name.startswith("X_"):
            os.symlink(made / name, folder / name)
    return {"/path/to/imagefolder": data, "/path/to/imagenet": data, "DIR": data, "data/train": f"{data}/train"}


def documented():
    from test_docs import documented_commands
    return documented_commands()


@pytest.mark.artefacts
@pytest.mark.parametrize("doc", sorted({path for path, _ in documented()}))
def test_every_documented_command_runs(doc, inputs, tmp_path):
    files = workspace(inputs, tmp_path / "ws")
    env = dict(ENV, PATH=f"{BIN}{os.pathsep}{ENV['PATH']}", HF_HUB_OFFLINE="1", COAT_MS_HOME=str(tmp_path / "home"))
    failures, ran = [], 0
    for path, command in documented():
        pattern, extra = runner_for(command)
        if path != doc or extra is None:
            continue
        real = dict(files, **{"X.ckpt": str(inputs[0] / f"X_{model_named(command)}.ckpt")})
        line = adapted(command, extra, real)
        proc = subprocess.run(line, shell=True, cwd=tmp_path / "ws", env=env, capture_output=True, text=True,
                              timeout=3600)
        ran += 1
        if "--file_format AIR" in command:  # AIR needs an Ascend backend: a one-line refusal on CPU
            ok = proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:")
        else:
            ok = proc.returncode == 0
        if not ok:
            failures.append(f"{line}\n  exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    assert ran >= 1
    assert not failures, "\n\n".join(failures)
