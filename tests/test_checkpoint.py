"""Loading checkpoints: float16 weights are upcast with a note (create_model, validate.py and export.py
all load through the same function), and a checkpoint's coat_ms record round-trips."""
import logging

import mindspore as ms
import numpy as np

import coat_ms
from coat_ms.checkpoint import make_meta, meta_entry, read_checkpoint_and_meta
from coat_ms.factory import model_from_checkpoint
from coat_ms.data.transforms import preprocessing
from conftest import random_images
from helpers import run_script, small_imagefolder

ARCH = dict(embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))


def test_float16_weights_load_upcast_with_a_note(tmp_path, caplog):
    ms.set_seed(2)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=3, **ARCH)
    model.set_train(False)
    entries = [{"name": n, "data": ms.Tensor(p.asnumpy().astype(np.float16))} for n, p in model.parameters_dict().items()]
    ms.save_checkpoint(entries, str(tmp_path / "half.ckpt"))
    with caplog.at_level(logging.INFO, logger="coat_ms"):
        loaded = coat_ms.create_model("coat_lite_tiny", num_classes=3, checkpoint_path=str(tmp_path / "half.ckpt"), **ARCH)
    assert "stored as Float16 were upcast to float32" in caplog.text
    loaded.set_train(False)
    x = random_images((2, 3, 32, 32), seed=3)
    want, got = model(x).asnumpy(), loaded(x).asnumpy()
    assert np.abs(got - want).max() <= 5e-3 * max(1.0, np.abs(want).max())  # the float16 rounding, no more
    for name, param in loaded.parameters_dict().items():
        assert param.dtype == ms.float32, name

    data = small_imagefolder(tmp_path / "d", classes=(0, 1, 2), per_class=3, image_size=32, fmt="png")
    proc = run_script("validate.py", "--data_dir", data, "--ckpt_path", tmp_path / "half.ckpt", "--model",
                      "coat_lite_tiny", "--model_args", '{"embed_dims": [16, 16, 16, 16], "serial_depths": [1, 1, 1, 1], '
                      '"mlp_ratios": [2, 2, 2, 2]}', "--image_resize", 32, "--no_progress")
    assert proc.returncode == 0 and "upcast to float32" in proc.stderr, proc.stderr[-2000:]


def test_the_record_travels_with_the_checkpoint(tmp_path):
    model = coat_ms.create_model("coat_lite_tiny", num_classes=2, **ARCH)
    pre = preprocessing(image_size=64, crop_pct=1.0, interpolation="bilinear")
    meta = make_meta("coat_lite_tiny", 2, ["cat", "dog"], pre, {k: list(v) for k, v in ARCH.items()})
    ms.save_checkpoint(model, str(tmp_path / "m.ckpt"), append_dict=meta_entry(meta))
    params, record = read_checkpoint_and_meta(str(tmp_path / "m.ckpt"))
    assert record == meta and all(not isinstance(v, str) for v in params.values())
    rebuilt, _ = model_from_checkpoint(str(tmp_path / "m.ckpt"))  # no model name, options or head size given
    assert rebuilt.num_classes == 2 and list(rebuilt.embed_dims) == [16, 16, 16, 16]
    assert preprocessing(record["preprocessing"]) == pre
