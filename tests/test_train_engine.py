"""The training engine through train.py: sink-mode accounting, crash + exact resume, NaN stop,
fine-tuning head re-initialisation, and the failure rules (another run's folder, changed settings on
resume, damaged results.csv, a full disk, Ctrl-C)."""
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from coat_ms.datasets.digits import write_digits_imagefolder
import train as train_cli  # noqa: E402  (called in-process for its one-line errors)
from helpers import ENV, ROOT, TINY_ARCH, one_error_line, refused, run_script


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    write_digits_imagefolder(str(root), image_size=32)
    return str(root)


def train(*args, timeout=600, env=ENV, **kwargs):
    return run_script("train.py", *args, timeout=timeout, env=env, **kwargs)


def tiny_args(data_dir, out, epochs, *extra):
    return ["--data_dir", data_dir, "--ckpt_save_dir", out, "--model", "coat_lite_tiny", "--model_args", TINY_ARCH,
            "--num_classes", "10", "--image_resize", "32", "--crop_pct", "1.0", "--batch_size", "8",
            "--num_samples", "24", "--deterministic", "--epoch_size", str(epochs), "--opt", "momentum", "--lr", "0.05",
            "--warmup_epochs", "0", "--scheduler", "cosine_decay", "--min_lr", "0.001", "--weight_decay", "0.0001",
            "--num_parallel_workers", "1", "--device_target", "CPU", "--val_split", "val", *extra]


def weights(path):
    params = ms.load_checkpoint(str(path))
    return {n: p.asnumpy() for n, p in params.items() if not isinstance(p, str)}


def folder_digest(folder):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in sorted(os.listdir(folder))}


def first_kept(folder):
    kept = [f for f in os.listdir(folder) if "-e001-" in f]
    assert len(kept) == 1, os.listdir(folder)
    return kept[0]


def step_losses(log):
    return [line.split("loss ")[1].split(",")[0] for line in log.splitlines() if " step " in line and "loss " in line]


@pytest.mark.artefacts
def test_sink_mode_trains_exactly_like_the_step_loop(digits, tmp_path):
    """dataset_sink_mode True vs False through train.py on CPU: same losses at every step, same weights, same
    results.csv.  MindSpore 2.10's Model.train runs its step loop on CPU even with sink mode on (it says so at
    INFO level), so this shows the setting changes nothing here; the device sink's once-per-epoch callback is
    checked by the next test, and the default run trains both representative recipes with sink mode on."""
    runs = {}
    for sink in ("False", "True"):
        out = tmp_path / f"sink_{sink}"
        p = train(*tiny_args(digits, out, 2, "--dataset_sink_mode", sink, "--log_interval", "1", "--ema",
                             "--loss_scale_type", "dynamic", "--loss_scale", "1024"))
        assert p.returncode == 0, p.stderr[-3000:]
        assert f"dataset sink mode {'on' if sink == 'True' else 'off'}" in p.stderr
        runs[sink] = (step_losses(p.stderr), weights(out / "latest.ckpt"), (out / "results.csv").read_text())
    (loss_a, w_a, csv_a), (loss_b, w_b, csv_b) = runs["False"], runs["True"]
    assert len(loss_a) == 4 and loss_a == loss_b  # 2 x 3 steps, logged at each step but the epoch end (csv)
    assert set(w_a) == set(w_b)
    for name in w_a:
        np.testing.assert_array_equal(w_a[name], w_b[name], err_msg=name)
    cols = lambda text: [r.split(",")[:4] for r in text.splitlines()]  # epoch, step, lr, train loss
    assert cols(csv_a) == cols(csv_b) and len(csv_a.splitlines()) == 3


def test_a_device_sink_call_covering_a_whole_epoch_is_accounted_as_its_steps(tmp_path):
    """On Ascend/GPU the sink path calls the step-end callback once per epoch, with MindSpore's step counter
    advanced by the whole epoch (on CPU MindSpore's Model.train runs the step loop even with sink mode on,
    so this is driven here through MindSpore's own RunContext, as its sink loop fills it)."""
    from mindspore.train.callback import RunContext, _InternalCallbackParam

    from coat_ms.train.distributed import DistInfo
    from coat_ms.train.engine import RunInfo
    from coat_ms.train.monitor import TrainingDiverged, TrainMonitor
    from coat_ms.train.train_cell import TrainingCell, TrainStep

    net = nn.WithLossCell(nn.Dense(2, 2), nn.MSELoss())
    cell = TrainingCell(TrainStep(net, nn.SGD(net.trainable_params(), 0.1), scale_sense=ms.Tensor(1.0)))
    saved = []
    cfg = {"val_while_train": True, "val_interval": 1, "ckpt_save_interval": 1, "ema": False, "model": "m"}
    run = RunInfo(cfg, DistInfo(), epochs=2, steps_per_epoch=5, global_batch=8, start_step=0, log_interval=2,
                  last_good=lambda: "latest.ckpt" if saved else None)  # results follow the first checkpoint
    rows = []
    monitor = TrainMonitor(run, cell, np.linspace(0.1, 0.01, 10), lambda: {"Loss": 1.0, "Top_1_Accuracy": 0.5,
                           "Top_5_Accuracy": 1.0}, lambda *a: saved.append(a), str(tmp_path / "r.csv"),
                           str(tmp_path / "r.png"), rows, time.time())
    params = _InternalCallbackParam()
    params.cur_step_num, params.cur_epoch_num = 0, 0
    context = RunContext(params)
    monitor.on_train_begin(context)
    for epoch, (loss_sum, bad) in enumerate([(10.0, 3), (float("nan"), 0)], start=1):
        params.cur_epoch_num = epoch
        monitor.on_train_epoch_begin(context)
        cell.loss_sum.set_data(ms.Tensor(loss_sum, ms.float32))  # what the graph summed over the 5 steps
        cell.bad_images.set_data(ms.Tensor(float(bad), ms.float32))
        params.cur_step_num += 5                                  # one call for the whole epoch
        params.net_outputs = ms.Tensor(np.array(loss_sum, np.float32))
        monitor.on_train_step_end(context)
        if epoch == 1:
            monitor.on_train_epoch_end(context)
        else:
            with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2, step 10"):
                monitor.on_train_epoch_end(context)
    assert monitor.step == 10
    assert [(r["epoch"], r["step"], r["train_loss"], r["skipped_images"]) for r in rows] == [(1, 5, 2.0, 3)]
    assert [a[:2] for a in saved] == [(1, 5)]                  # epoch 2 diverged: nothing written for it
    assert monitor.bad_per_epoch[:1] == [3]
    assert len((tmp_path / "r.csv").read_text().strip().splitlines()) == 2


def test_finetune_reinitialises_only_the_head(tmp_path, caplog):
    import coat_ms
    from coat_ms.checkpoint import load_with_fresh_head
    from coat_ms.origin import read_weights
    kw = dict(embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1))
    src = coat_ms.create_model("coat_lite_tiny", num_classes=10, **kw)
    path = str(tmp_path / "src.ckpt")
    ms.save_checkpoint(src, path)
    dst = coat_ms.create_model("coat_lite_tiny", num_classes=5, **kw)
    head_before = dst.parameters_dict()["head.weight"].asnumpy().copy()
    with caplog.at_level("INFO", logger="coat_ms"):
        load_with_fresh_head(dst, read_weights(path)[0], path)
    assert "the classifier for num_classes=5 is freshly initialised" in caplog.text
    s, d = src.parameters_dict(), dst.parameters_dict()
    for name in d:
        if name.startswith("head."):
            continue
        np.testing.assert_array_equal(d[name].asnumpy(), s[name].asnumpy(), err_msg=name)
    np.testing.assert_array_equal(d["head.weight"].asnumpy(), head_before)
    other = coat_ms.create_model("coat_lite_tiny", num_classes=10, embed_dims=(16, 16, 32, 32), serial_depths=(1, 1, 1, 1))
    with pytest.raises(coat_ms.CheckpointError):
        load_with_fresh_head(other, read_weights(path)[0], path)


def test_resume_matches_uninterrupted_run_and_bad_resume_checkpoints(digits, tmp_path, in_process_cli):
    full = tmp_path / "full"
    p = train(*tiny_args(digits, full, 3, "--keep_checkpoint_max", "3"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "validation (359 images): {'Top_1_Accuracy'" in p.stdout
    for name in ("results.csv", "results.png", "latest.ckpt", "config.yaml"):
        assert os.path.getsize(full / name) > 0
    assert len((full / "results.csv").read_text().strip().splitlines()) == 4
    # A real crash: the same run SIGKILLs itself in the middle of saving epoch 2 (temp file written, not yet
    # renamed). latest.ckpt must still be epoch 1's, intact; resuming from it ends with the same weights.
    killed = tmp_path / "killed"
    p = run_script("tests/crash_during_save.py", 2, *tiny_args(digits, killed, 3), timeout=600)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    leftovers = [f for f in os.listdir(killed) if f.startswith(".latest.ckpt.tmp")]
    assert len(leftovers) == 1  # the half-finished save is only ever a temp file
    assert int(weights(killed / "latest.ckpt")["epoch_num"]) == 1
    # resume needs no other flag: the run's settings come from its checkpoint
    p = train("--resume", killed / "latest.ckpt")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not [f for f in os.listdir(killed) if ".tmp" in f]
    assert [r.split(",")[0] for r in (killed / "results.csv").read_text().split()[1:]] == ["1", "2", "3"]
    a, b = weights(full / "latest.ckpt"), weights(killed / "latest.ckpt")
    assert int(a["epoch_num"]) == int(b["epoch_num"]) == 3 and int(a["step_num"]) == int(b["step_num"]) == 9
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6 * max(1.0, np.abs(a[name]).max()), err_msg=name)
    assert first_kept(full)

    # NaN/inf loss (weights gone non-finite): the run stops, naming the last good checkpoint, and writes
    # nothing. Here with sink mode off; tests/test_failure_rules.py stops a run with sink mode on (on CPU
    # MindSpore runs both as its step loop; the setting must not change the stop).
    before = (killed / "latest.ckpt").read_bytes()
    entries = ms.load_checkpoint(str(full / first_kept(full)))  # epoch 1's state, with its coat_ms record
    record = {n: v for n, v in entries.items() if isinstance(v, str)}
    poisoned = [{"name": n, "data": ms.Tensor(np.full_like(v.asnumpy(), np.nan) if n == "head.bias" else v.asnumpy())}
                for n, v in entries.items() if not isinstance(v, str)]
    ms.save_checkpoint(poisoned, str(killed / "poisoned.ckpt"), append_dict=record)
    line = refused(train_cli.main, "--resume", killed / "poisoned.ckpt", "--dataset_sink_mode", "False")
    assert "loss became nan" in line and "last good checkpoint" in line
    assert (killed / "latest.ckpt").read_bytes() == before

    # Changed settings on resume are named, not silently ignored (the schedule lives in the checkpoint).
    line = refused(train_cli.main, "--resume", killed / "latest.ckpt", "--lr", "0.2", "--epoch_size", "5")
    assert "changed settings" in line and "lr: checkpoint 0.05, now 0.2" in line and "epoch_size" in line
    # Bad resume checkpoints: missing, truncated, weights-only.
    assert "checkpoint not found" in refused(train_cli.main, *tiny_args(digits, tmp_path / "x", 3, "--resume",
                                                                      tmp_path / "missing.ckpt"))
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes((full / "latest.ckpt").read_bytes()[:5000])
    assert "cannot read checkpoint" in refused(train_cli.main, *tiny_args(digits, tmp_path / "x", 3, "--resume", trunc))
    import coat_ms
    bare = coat_ms.create_model("coat_lite_tiny", num_classes=10, embed_dims=(16, 16, 16, 16),
                                serial_depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))
    coat_ms.load_checkpoint(bare, str(full / "latest.ckpt"))  # a training checkpoint loads strictly
    ms.save_checkpoint(bare, str(tmp_path / "weights.ckpt"))
    line = refused(train_cli.main, *tiny_args(digits, tmp_path / "y", 3, "--resume", tmp_path / "weights.ckpt"))
    assert "weights only" in line

    # A new run never writes into a folder that holds another run: nothing there changes.
    digest = folder_digest(full)
    line = refused(train_cli.main, *tiny_args(digits, full, 1, "--keep_checkpoint_max", "1"))
    assert "already holds a run" in line and "--resume" in line
    assert folder_digest(full) == digest
    # A damaged results.csv on resume is one line, before any training.
    (killed / "results.csv").write_text("epoch,step,lr\n1,3,zzz\n")
    shutil.copy(full / first_kept(full), killed / "from_epoch1.ckpt")
    assert "results.csv is damaged at line 2" in refused(train_cli.main, "--resume", killed / "from_epoch1.ckpt")


def test_output_folder_that_is_a_file_and_a_full_disk(digits, tmp_path, in_process_cli):
    (tmp_path / "afile").write_text("x")
    assert "is a file" in refused(train_cli.main, *tiny_args(digits, tmp_path / "afile", 1))

    def small_files():  # a 60 KB file-size limit: the first checkpoint cannot be written
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
    out = tmp_path / "full_disk"
    p = train(*tiny_args(digits, out, 1, "--val_while_train", "False"), preexec_fn=small_files)
    line = one_error_line(p)
    assert "cannot write" in line and "latest.ckpt" in line
    assert not out.exists()  # no temp file keeps holding the space, and no empty run folder stays behind


def test_ctrl_c_stops_training_promptly_with_the_last_checkpoint_intact(digits, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(digits, out, 200, "--val_while_train", "False")  # Ctrl-C meets training steps
    args[args.index("--num_samples") + 1] = "400"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "latest.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # inside the next epoch's steps
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - t0 < 15
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "error: interrupted", stderr[-2000:]
    assert int(weights(out / "latest.ckpt")["epoch_num"]) >= 1  # loads: intact


@pytest.mark.parametrize("policy", ["top_k", "latest_k"])
def test_checkpoint_manager_keeps_the_best_or_the_latest_and_deletes_only_its_own(tmp_path, policy):
    from coat_ms.train.run_folder import CheckpointManager, claim_run_folder
    folder = tmp_path / "run"
    claim_run_folder(str(folder))
    (folder / "notes-e001.txt").write_text("mine")                 # the user's file in the run folder
    entries = [{"name": "w", "data": ms.Tensor(np.ones(2, np.float32))}]
    manager = CheckpointManager(str(folder), "m", keep=2, policy=policy)
    for epoch, top1 in ((1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6)):
        manager.save(entries, epoch, {"model": "m"}, top1=top1)
    kept = sorted(f for f in os.listdir(folder) if f.startswith("m-e"))
    if policy == "top_k":
        assert kept == ["m-e002-top1_0.9000.ckpt", "m-e003-top1_0.7000.ckpt"]
        assert manager.best_path.endswith("m-e002-top1_0.9000.ckpt")
    else:
        assert kept == ["m-e003.ckpt", "m-e004.ckpt"]
    assert (folder / "notes-e001.txt").read_text() == "mine" and (folder / "latest.ckpt").is_file()
    meta = ms.load_checkpoint(str(folder / "latest.ckpt"))["coat_ms_meta"]
    assert '"model": "m"' in meta
