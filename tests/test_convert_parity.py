"""Conversion parity: timm (random weights) -> file -> convert -> coat_ms, logits compared with timm.

Every variant goes through a real .pth file; official-format and .safetensors files, the reverse
direction and mindcv 0.3.0 checkpoints are covered for one CoaT and one CoaT-Lite variant.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: convert/

import mindspore as ms  # noqa: E402
import coat_ms  # noqa: E402
import convert  # noqa: E402
from coat_ms.conversion import readers, writers  # noqa: E402

import torch  # noqa: E402  (the reference side is part of the dev install: fail, never skip)
import timm  # noqa: E402

VARIANTS = ["coat_tiny", "coat_mini", "coat_small", "coat_lite_tiny", "coat_lite_mini", "coat_lite_small",
            "coat_lite_medium"]
TOL = 2e-5
SIZE = 64  # timm is built for this size (img_size=64); the converter does not depend on it (slow test: 224)


def rel_err(out, ref):
    return float(np.max(np.abs(out.astype(np.float64) - ref)) / np.max(np.abs(ref)))


class TimmCache:
    """Each timm model built once per session, all weights randomised (LayerNorms too) under a fixed seed."""

    def __init__(self, size=SIZE):
        self.size, self.models, self.logits = size, {}, {}
        self.x = np.random.RandomState(0).standard_normal((1, 3, size, size)).astype(np.float32)

    def model(self, name):
        if name not in self.models:
            torch.manual_seed(VARIANTS.index(name))
            with torch.device("meta"):  # skip timm's init: every weight is drawn below anyway
                model = timm.create_model(name, img_size=self.size)
            model = model.to_empty(device="cpu").eval()
            with torch.no_grad():
                for key, p in model.named_parameters():  # visits tied tensors once: ties stay tied
                    if p.ndim == 1 and "norm" in key and key.endswith("weight"):
                        p.uniform_(0.5, 1.5)
                    else:
                        p.normal_(0.0, 0.05)
            self.models[name] = model
        return self.models[name]

    def reference(self, name):
        if name not in self.logits:
            with torch.no_grad():
                self.logits[name] = self.model(name)(torch.from_numpy(self.x)).numpy()
        return self.logits[name]


@pytest.fixture(scope="session")
def timm_cache():
    return TimmCache()


def coat_ms_logits(ckpt_path, name, x, **kwargs):
    from mindspore.nn.utils import no_init_parameters
    with no_init_parameters():  # every parameter comes from the checkpoint
        model = coat_ms.create_model(name, **kwargs)
    coat_ms.load_checkpoint(model, ckpt_path)  # strict: any missing / unused / mis-shaped name fails
    model.set_train(False)
    return model(ms.Tensor(x)).asnumpy()


def check_variant(name, timm_cache, tmp_path):
    pth, ckpt = tmp_path / f"{name}.pth", str(tmp_path / f"{name}.ckpt")
    torch.save(timm_cache.model(name).state_dict(), pth)
    src = readers.read_source(str(pth))
    result = convert.torch_to_ms(src.state_dict)  # variant inferred
    assert result.variant == name
    writers.write_mindspore(result.params, ckpt, metadata={"variant": name})
    out = coat_ms_logits(ckpt, name, timm_cache.x)  # strict load: names and shapes must all match
    assert rel_err(out, timm_cache.reference(name)) <= TOL


@pytest.mark.parametrize("name", VARIANTS)
def test_timm_pth_to_ckpt_matches_timm(name, timm_cache, tmp_path):
    check_variant(name, timm_cache, tmp_path)


@pytest.mark.studies
@pytest.mark.parametrize("name", VARIANTS)
def test_timm_pth_to_ckpt_matches_timm_224(name, tmp_path):
    """The same at 224 x 224 (python -m pytest -m slow tests/test_convert_parity.py)."""
    check_variant(name, TimmCache(224), tmp_path)


@pytest.mark.parametrize("name", ["coat_tiny", "coat_lite_tiny"])
def test_official_format_drops_unused_norms(name, timm_cache, tmp_path):
    sd = dict(timm_cache.model(name).state_dict())
    dims = coat_ms.models.coat.VARIANTS[name]["embed_dims"]
    extra = ["norm1"] + (["norm2", "norm3"] if "lite" in name else [])
    for norm in extra:
        dim = dims[int(norm[-1]) - 1]
        sd[f"{norm}.weight"], sd[f"{norm}.bias"] = torch.randn(dim), torch.randn(dim)
    pth, ckpt = tmp_path / "official.pth", str(tmp_path / "official.ckpt")
    torch.save({"model": sd}, pth)
    src = readers.read_source(str(pth))
    assert src.container == "model"
    result = convert.torch_to_ms(src.state_dict, name)
    assert sorted(k for k, _ in result.report.dropped) == sorted(f"{n}.{p}" for n in extra for p in ("weight", "bias"))
    writers.write_mindspore(result.params, ckpt)
    assert rel_err(coat_ms_logits(ckpt, name, timm_cache.x), timm_cache.reference(name)) <= TOL


@pytest.mark.parametrize("name", ["coat_mini", "coat_lite_mini"])
def test_safetensors_input_matches(name, timm_cache, tmp_path):
    from safetensors.torch import save_file
    sd = timm_cache.model(name).state_dict()
    # safetensors refuses shared storage: keep one key per tie, as hub exports do (here: the *last* alias,
    # so the converter must map an alias back to the MindSpore name).
    groups = {}
    for key, value in sd.items():
        groups.setdefault(value.data_ptr(), []).append(key)
    kept = {keys[-1]: sd[keys[-1]].clone().contiguous() for keys in groups.values()}
    path, ckpt = tmp_path / "w.safetensors", str(tmp_path / "w.ckpt")
    save_file(kept, str(path))
    src = readers.read_source(str(path))
    assert src.format == "safetensors"
    result = convert.torch_to_ms(src.state_dict, name)
    writers.write_mindspore(result.params, ckpt)
    assert rel_err(coat_ms_logits(ckpt, name, timm_cache.x), timm_cache.reference(name)) <= TOL


@pytest.mark.parametrize("name", ["coat_tiny", "coat_lite_tiny"])
def test_round_trip_pth_ckpt_pth_bit_exact(name, timm_cache, tmp_path):
    sd = timm_cache.model(name).state_dict()
    pth, ckpt, back = tmp_path / "a.pth", str(tmp_path / "a.ckpt"), str(tmp_path / "b.pth")
    torch.save(sd, pth)
    result = convert.torch_to_ms(readers.read_source(str(pth)).state_dict)
    writers.write_mindspore(result.params, ckpt)
    restored = convert.ms_to_torch(readers.read_mindspore(ckpt), name)
    writers.write_torch(restored, back)
    loaded = torch.load(back, weights_only=True)
    assert list(loaded) == list(sd)  # same keys, same order as timm's state_dict
    for key, value in sd.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    with torch.device("meta"):
        fresh = timm.create_model(name, img_size=SIZE)
    fresh = fresh.to_empty(device="cpu").eval()
    fresh.load_state_dict(loaded, strict=True)
    with torch.no_grad():
        assert np.array_equal(fresh(torch.from_numpy(timm_cache.x)).numpy(), timm_cache.reference(name))
