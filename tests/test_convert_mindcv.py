"""mindcv 0.3.0 CoaT checkpoints (random weights, saved by mindcv itself) -> coat_ms.

mindcv builds each model for one input size (``image_size``, 224 by default) and is slow on CPU, so each mindcv
model is built and run once, at 64 x 64 (the weights do not depend on the size), in PyNative mode.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root: convert/

import mindspore as ms  # noqa: E402
from mindspore.nn.utils import no_init_parameters  # noqa: E402
import coat_ms  # noqa: E402
import convert  # noqa: E402
from coat_ms.conversion import mindcv_rules, readers  # noqa: E402

import mindcv.models as mindcv_models  # noqa: E402

NAMES = ["coat_lite_tiny", "coat_tiny"]
SIZE = 64
TOL = 2e-5


@pytest.fixture(scope="session")
def mindcv_refs(tmp_path_factory):
    """name -> (checkpoint path, {name: array}, logits) of a mindcv model with every weight randomised."""
    folder = tmp_path_factory.mktemp("mindcv")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = np.random.RandomState(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    refs = {}
    for i, name in enumerate(NAMES):
        with no_init_parameters():  # skip mindcv's init: every weight is drawn below
            model = mindcv_models.create_model(name, image_size=SIZE)
        model.set_train(False)
        rng = np.random.RandomState(10 + i)
        for p in model.get_parameters():  # LayerNorm gamma/beta too, so a swapped norm would show
            value = 0.05 * rng.standard_normal(p.shape) + (1.0 if p.name.endswith("gamma") else 0.0)
            p.set_data(ms.Tensor(value.astype(np.float32)))
        path = str(folder / f"{name}.ckpt")
        ms.save_checkpoint(model, path)
        params = {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}
        refs[name] = (path, params, model(ms.Tensor(x)).asnumpy(), x)
    return refs


def rel_err(out, ref):
    return float(np.max(np.abs(out.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def logits(result, x, **kwargs):
    with no_init_parameters():  # every parameter is loaded below
        model = coat_ms.create_model(result.variant, **kwargs)
    model.set_train(False)
    from coat_ms.checkpoint import load_state
    load_state(model, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in result.params.items()})
    return model(ms.Tensor(x)).asnumpy()


@pytest.mark.parametrize("name", NAMES)
def test_mindcv_values_are_mapped(name, mindcv_refs, tmp_path):
    path, params, _, _ = mindcv_refs[name]
    assert mindcv_rules.is_mindcv(params)
    result = convert.mindcv_to_ms(readers.read_mindspore(path))
    assert result.variant == name
    assert set(result.params) == set(coat_ms.create_model(name).parameters_dict())
    pre = "serial_blocks2.1.factoratt_crpe"
    np.testing.assert_array_equal(result.params[f"{pre}.qkv.weight"],
                                  np.concatenate([params[f"{pre}.{x}.weight"] for x in "qkv"]))
    np.testing.assert_array_equal(result.params["patch_embed1.norm.weight"], params["patch_embed1.norm.gamma"])
    np.testing.assert_array_equal(result.params["serial_blocks1.0.norm2.bias"], params["serial_blocks1.0.norm2.beta"])
    # every mindcv value lands somewhere: total sizes agree
    assert sum(v.size for v in result.params.values()) == sum(v.size for v in params.values())
    if name == "coat_tiny":
        np.testing.assert_array_equal(result.params["aggregate.weight"], params["aggregate.weight"].reshape(1, 3, 1))
    assert result.model_kwargs["align_corners"] is True


@pytest.mark.parametrize("name", NAMES)
def test_mindcv_checkpoint_reproduces_mindcv(name, mindcv_refs, pynative_mode):
    _, params, ref, x = mindcv_refs[name]
    result = convert.mindcv_to_ms(params)
    assert rel_err(logits(result, x, **result.model_kwargs), ref) <= TOL
