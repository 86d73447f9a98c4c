"""Data faults, fine-tuning head re-initialisation, crash + exact resume, NaN stop and bad resume checkpoints."""
import os
import shutil
import signal
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from coat_ms.config import merged
from coat_ms.datasets.digits import write_digits_imagefolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, GLOG_v="3")
TINY = '{"embed_dims": [16, 16, 16, 16], "serial_depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]}'


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    write_digits_imagefolder(str(root), image_size=32)
    return str(root)


def train(*args, timeout=400, env=ENV):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def tiny_args(data_dir, out, epochs, *extra):
    return ["--data_dir", data_dir, "--ckpt_save_dir", out, "--model", "coat_lite_tiny", "--model_args", TINY,
            "--num_classes", "10", "--image_resize", "32", "--crop_pct", "1.0", "--batch_size", "8",
            "--num_samples", "24", "--deterministic", "--epoch_size", str(epochs), "--opt", "momentum", "--lr", "0.05",
            "--warmup_epochs", "0", "--scheduler", "cosine_decay", "--min_lr", "0.001", "--weight_decay", "0.0001",
            "--num_parallel_workers", "1", "--device_target", "CPU", "--val_split", "val", *extra]


def test_corrupt_image_skipped_and_counted(tmp_path):
    from coat_ms.data import create_split_loader, scan_split
    write_digits_imagefolder(str(tmp_path), image_size=32)
    bad = tmp_path / "val" / "3" / "zz_corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (tmp_path / "val" / "3" / "zz_truncated.png").write_bytes((tmp_path / "val" / "3").glob("0*.png").__next__()
                                                               .read_bytes()[:60])
    scan = scan_split(str(tmp_path), "val")
    assert len(scan.corrupt) == 2 and scan.num_images == 359
    cfg = merged({}, data_dir=str(tmp_path), image_resize=32, crop_pct=1.0, num_classes=10, batch_size=50,
                 num_parallel_workers=1)
    loader, _ = create_split_loader(cfg, "val", is_training=False, scan=scan)
    labels = np.concatenate([y for _, y in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    assert len(labels) == 359 and np.bincount(labels).tolist() == np.bincount([l for _, l in scan.samples]).tolist()


def test_finetune_reinitialises_only_the_head(tmp_path, caplog):
    import coat_ms
    from coat_ms.train.engine import load_finetune_weights
    kw = dict(embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1))
    src = coat_ms.create_model("coat_lite_tiny", num_classes=10, **kw)
    path = str(tmp_path / "src.ckpt")
    ms.save_checkpoint(src, path)
    dst = coat_ms.create_model("coat_lite_tiny", num_classes=5, **kw)
    head_before = dst.parameters_dict()["head.weight"].asnumpy().copy()
    with caplog.at_level("INFO", logger="coat_ms"):
        load_finetune_weights(dst, path)
    assert "re-initialising the classifier" in caplog.text
    s, d = src.parameters_dict(), dst.parameters_dict()
    for name in d:
        if name.startswith("head."):
            continue
        np.testing.assert_array_equal(d[name].asnumpy(), s[name].asnumpy(), err_msg=name)
    np.testing.assert_array_equal(d["head.weight"].asnumpy(), head_before)
    other = coat_ms.create_model("coat_lite_tiny", num_classes=10, embed_dims=(16, 16, 32, 32), serial_depths=(1, 1, 1, 1))
    with pytest.raises(coat_ms.CheckpointError):
        load_finetune_weights(other, path)


def weights(path):
    params = ms.load_checkpoint(path)
    return {n: p.asnumpy() for n, p in params.items()}


def test_resume_matches_uninterrupted_run_and_faults(digits, tmp_path):
    full = str(tmp_path / "full")
    p = train(*tiny_args(digits, full, 3, "--keep_checkpoint_max", "3"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "validation: {'Top_1_Accuracy'" in p.stdout
    for name in ("results.csv", "results.png", "latest.ckpt"):
        assert os.path.getsize(os.path.join(full, name)) > 0
    assert len(open(os.path.join(full, "results.csv")).read().strip().splitlines()) == 4
    # A real crash: the same run SIGKILLs itself in the middle of saving epoch 2 (temp file written, not yet
    # renamed). latest.ckpt must still be epoch 1's, intact; resuming from it ends with the same weights.
    killed = str(tmp_path / "killed")
    p = train(*tiny_args(digits, killed, 3), env=dict(ENV, COAT_MS_KILL_DURING_SAVE="2"))
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    leftovers = [f for f in os.listdir(killed) if f.startswith(".latest.ckpt.tmp")]
    assert len(leftovers) == 1  # the half-finished save is only ever a temp file
    assert int(weights(os.path.join(killed, "latest.ckpt"))["epoch_num"]) == 1
    p = train(*tiny_args(digits, killed, 3, "--resume", os.path.join(killed, "latest.ckpt")))
    assert p.returncode == 0, p.stderr[-3000:]
    assert not [f for f in os.listdir(killed) if ".tmp" in f]
    assert [r.split(",")[0] for r in open(os.path.join(killed, "results.csv")).read().split()[1:]] == ["1", "2", "3"]
    a, b = weights(os.path.join(full, "latest.ckpt")), weights(os.path.join(killed, "latest.ckpt"))
    assert int(a["epoch_num"]) == int(b["epoch_num"]) == 3 and int(a["step_num"]) == int(b["step_num"]) == 9
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6 * max(1.0, np.abs(a[name]).max()), err_msg=name)
    first = [f for f in os.listdir(full) if "-e001-" in f]
    assert len(first) == 1, os.listdir(full)

    # NaN/inf loss (weights that went non-finite): stop with a clear message; the folder's latest.ckpt stays.
    nan_dir = tmp_path / "nan"
    nan_dir.mkdir()
    shutil.copy(os.path.join(full, first[0]), nan_dir / "latest.ckpt")
    before = (nan_dir / "latest.ckpt").read_bytes()
    poisoned = [{"name": n, "data": ms.Tensor(np.full_like(v, np.nan) if n == "head.bias" else v)}
                for n, v in weights(os.path.join(full, first[0])).items()]
    ms.save_checkpoint(poisoned, str(tmp_path / "poisoned.ckpt"))
    p = train(*tiny_args(digits, str(nan_dir), 3, "--resume", str(tmp_path / "poisoned.ckpt")))
    assert p.returncode == 2 and "error: loss became nan" in p.stderr and "last good checkpoint" in p.stderr, \
        p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert (nan_dir / "latest.ckpt").read_bytes() == before

    # Bad resume checkpoints: missing, truncated, weights-only.
    p = train(*tiny_args(digits, str(tmp_path / "x"), 3, "--resume", str(tmp_path / "missing.ckpt")))
    assert p.returncode == 2 and "checkpoint not found" in p.stderr, p.stderr[-2000:]
    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(before[: len(before) // 2])
    p = train(*tiny_args(digits, str(tmp_path / "x"), 3, "--resume", str(trunc)))
    assert p.returncode == 2 and "cannot read checkpoint" in p.stderr, p.stderr[-2000:]
    import coat_ms
    bare = coat_ms.create_model("coat_lite_tiny", num_classes=10, embed_dims=(16, 16, 16, 16),
                                serial_depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))
    coat_ms.load_checkpoint(bare, os.path.join(full, "latest.ckpt"))  # a training checkpoint loads strictly
    ms.save_checkpoint(bare, str(tmp_path / "weights.ckpt"))
    p = train(*tiny_args(digits, str(tmp_path / "x"), 3, "--resume", str(tmp_path / "weights.ckpt")))
    assert p.returncode == 2 and "weights only" in p.stderr, p.stderr[-2000:]
