"""Weight-decay groups: what the optimizer train.py builds decays, for every shipped recipe and variant.

The reference is timm's optimizer factory (``create_optimizer_v2``, ``filter_bias_and_bn=True``: no decay for
1-D parameters and ``model.no_weight_decay()``), which is the official CoaT recipe.  The groups are read back
from the MindSpore optimizer itself (its parameters, decay flags and per-parameter weight decay), and one
step on zero gradients shows which weights the decay actually moves.
"""
import glob
import logging
import os
import re

import mindspore as ms
import numpy as np
import pytest
import timm
from timm.optim import create_optimizer_v2

import coat_ms
from coat_ms.config import load_yaml, merged
from coat_ms.train import engine
from coat_ms.train.param_groups import exempt_from_decay, weight_decay_groups
from helpers import release_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
CHEAP = ("coat_lite_tiny_ascend.yaml", "coat_tiny_ascend.yaml", "demo_digits_cpu.yaml")
NARROW_COAT = dict(embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1), parallel_depth=1, mlp_ratios=(2, 2, 2, 2))
_MODELS = {}


def models(variant, model_args=None, cfg=None):
    """(coat_ms model, timm model) of a variant, built once per session (random weights); with ``cfg``
    the coat_ms model is the one train.py builds from it (engine.build_model)."""
    key = (variant, repr(model_args))
    if key not in _MODELS:
        kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in (model_args or {}).items()}
        ours = engine.build_model(cfg, cfg["num_classes"]) if cfg else coat_ms.create_model(variant)
        _MODELS[key] = ours, timm.create_model(variant, num_classes=ours.num_classes, **kwargs)
    return _MODELS[key]


def timm_decayed(model, weight_decay):
    """Names of the parameters timm's factory decays (the official recipe's groups)."""
    names = {id(p): n for n, p in model.named_parameters()}
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=weight_decay, filter_bias_and_bn=True)
    return {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}


def optimizer_groups(opt):
    """{parameter name: weight decay} read from a built MindSpore optimizer (0.0 where its decay flag is off)."""
    assert len(opt.decay_flags) == len(opt.parameters) == len(opt.weight_decay)
    return {p.name: float(wd.asnumpy()) if flag else 0.0
            for p, flag, wd in zip(opt.parameters, opt.decay_flags, opt.weight_decay)}


def config_params():
    return [pytest.param(p, id=os.path.basename(p), marks=() if os.path.basename(p) in CHEAP else (pytest.mark.artefacts,))
            for p in CONFIGS]


def test_every_shipped_config_is_listed():
    assert len(CONFIGS) == 22 and {os.path.basename(p) for p in CONFIGS} >= set(CHEAP)


@pytest.mark.parametrize("path", config_params())
def test_recipe_groups_equal_the_official_recipe(path, caplog):
    cfg = merged(load_yaml(path), source=path)
    model, reference = models(cfg["model"], cfg["model_args"], cfg)
    with caplog.at_level(logging.INFO, logger="coat_ms"):
        opt, _ = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=1)
    got = optimizer_groups(opt)
    assert list(got) == [p.name for p in model.trainable_params()]  # the model's order (optimizer state, checkpoints)
    decayed = {n for n, wd in got.items() if wd > 0}
    assert cfg["weight_decay_filter"] == "norm_and_bias" and cfg["weight_decay"] > 0
    assert decayed == timm_decayed(reference, cfg["weight_decay"])
    assert all(got[n] == pytest.approx(cfg["weight_decay"]) for n in decayed)
    shapes = {p.name: p.shape for p in model.trainable_params()}
    assert not [n for n in decayed if len(shapes[n]) <= 1 or n.startswith("cls_token")]
    # the run's log states the groups (once: train.py builds the optimizer once)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"optimizer {cfg['opt']}:")]
    n_cls = len(model.no_weight_decay())
    assert len(lines) == 1 and f"on {len(decayed)} of {len(got)} parameter tensors" in lines[0], lines
    assert f"none on {len(got) - len(decayed)} ({len(got) - len(decayed) - n_cls} 1-D" in lines[0]
    assert f"{n_cls} in model.no_weight_decay()" in lines[0] and "AUTO weight decay filter" not in caplog.text
    print(f"{os.path.basename(path)}: {lines[0]}")


@pytest.mark.parametrize("variant", ["coat_lite_mini", "coat_lite_small", "coat_lite_medium", "coat_mini",
                                     "coat_small"])
@pytest.mark.studies
def test_variant_groups_equal_timm(variant):
    # the configs cover every variant already; this lists each variant's groups with the default weight decay
    model, reference = models(variant)
    groups, text = weight_decay_groups(model, 0.05, "norm_and_bias")
    assert {p.name for p in groups[0]["params"]} == timm_decayed(reference, 0.05)
    assert sorted(model.no_weight_decay()) == sorted(reference.no_weight_decay())
    print(variant, text)


def test_no_weight_decay_lists_the_cls_tokens():
    lite, coat = coat_ms.create_model("coat_lite_tiny", **NARROW_COAT | {"parallel_depth": 0}), \
        coat_ms.create_model("coat_tiny", **NARROW_COAT)
    for model in (lite, coat):
        assert model.no_weight_decay() == {f"cls_token{i}" for i in (1, 2, 3, 4)}


def test_filter_values_keep_mindcv_meaning():
    model = coat_ms.create_model("coat_tiny", **NARROW_COAT)
    names = [p.name for p in model.trainable_params()]
    one_d = {p.name for p in model.trainable_params() if len(p.shape) == 1}
    norms = {n for n in names if re.search(r"(^|\.)norm\w*\.(weight|bias)$", n)}
    biases = {n for n in names if n.endswith(".bias")}
    assert norms and biases - norms  # both kinds exist in this model
    assert exempt_from_decay(model, "disable") == {}
    assert set(exempt_from_decay(model, "auto")) == norms  # MindSpore's own filter: norm layers only
    assert set(exempt_from_decay(model, "norm_and_bias")) == one_d | model.no_weight_decay() == \
        norms | biases | model.no_weight_decay()
    with pytest.raises(ValueError, match="weight_decay_filter"):
        exempt_from_decay(model, "norm")


@pytest.mark.parametrize("recipe", ["coat_lite_tiny_ascend.yaml", "coat_tiny_ascend.yaml"])
def test_decay_moves_exactly_the_decayed_weights(recipe, pynative_mode):
    # One optimizer step on zero gradients: AdamW's and Lion's gradient terms are 0, so only the decoupled
    # decay w <- w - lr * wd * w moves a weight; the exempt ones stay bit-identical.
    path = os.path.join(ROOT, "configs", recipe)
    cfg = merged(load_yaml(path), source=path)
    model = coat_ms.create_model(cfg["model"], **(NARROW_COAT if cfg["model"] == "coat_tiny" else
                                                  NARROW_COAT | {"parallel_depth": 0}))
    opt, schedule = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=1)
    step = cfg["warmup_epochs"] + 5
    opt.global_step.set_data(ms.Tensor([step], ms.int32))
    lr = schedule[step]
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    opt(tuple(ms.ops.zeros(p.shape, ms.float32) for p in model.trainable_params()))
    exempt = exempt_from_decay(model, "norm_and_bias")
    for p in model.trainable_params():
        w0, w1 = before[p.name], p.asnumpy()
        if p.name in exempt:
            assert np.array_equal(w0, w1), p.name
        else:
            np.testing.assert_allclose(w1, w0 * (1 - lr * cfg["weight_decay"]), rtol=1e-6, atol=1e-9, err_msg=p.name)
    assert len(exempt) > 4 and len(exempt) < len(before)


def teardown_module():
    release_models(_MODELS)
