"""The training features one by one, through the engine's own builders (mindcv TrainStep, optimizer,
loss, loader): gradient accumulation, gradient clipping, EMA, AMP on CPU, mixup/cutmix, label smoothing.

Each check compares against an independent computation (plain ms.grad, numpy), not against itself.
"""
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import coat_ms
from coat_ms.config import merged
from coat_ms.train import engine

NARROW = dict(embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))
RNG = np.random.default_rng(7)
IMAGES = RNG.standard_normal((8, 3, 32, 32)).astype(np.float32)
LABELS = RNG.integers(0, 5, 8).astype(np.int32)


@pytest.fixture(autouse=True)
def _graph(graph_mode):
    """train.py's default (mode 0): TrainStep runs compiled."""
    yield


def small_mlp():
    """The features below do not depend on the network: a small MLP compiles in a second."""
    return nn.SequentialCell(nn.Flatten(), nn.Dense(3 * 32 * 32, 32), nn.GELU(approximate=False), nn.Dense(32, 5))


def make(seed=0, coat=False, **overrides):
    """A model (narrow CoaT-Lite, or a small MLP) and its TrainStep built by the engine (SGD without
    momentum, constant lr)."""
    cfg = merged({}, model="coat_lite_tiny", num_classes=5, opt="sgd", momentum=0.0, lr=0.5, weight_decay=0.0,
                 scheduler="constant", warmup_epochs=0, epoch_size=4, loss="ce", **overrides)
    ms.set_seed(seed)
    model = coat_ms.create_model("coat_lite_tiny", num_classes=5, **NARROW) if coat else small_mlp()
    optimizer, _ = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=4)
    step = engine.build_train_step(cfg, model, optimizer, engine.resolve_amp(cfg, "CPU"))
    step.set_train(True)
    return model, step


def weights(model):
    return {p.name: p.asnumpy().copy() for p in model.trainable_params()}


def reference_grads(model, x, y):
    """Plain mean cross-entropy gradients, independent of TrainStep."""
    net = nn.WithLossCell(model, nn.CrossEntropyLoss())
    grads = ms.grad(net, grad_position=None, weights=model.trainable_params())(ms.Tensor(x), ms.Tensor(y))
    return {p.name: g.asnumpy() for p, g in zip(model.trainable_params(), grads)}


def max_rel(a, b):
    scale = max(np.abs(v).max() for v in b.values())
    return max(np.abs(a[k] - b[k]).max() for k in b) / scale


@pytest.mark.studies
def test_gradient_accumulation_equals_one_full_batch_step():
    """On CoaT itself: mindcv's accumulation re-parents the optimizer, and the state-dict names must survive."""
    accum_model, accum_step = make(coat=True, gradient_accumulation_steps=2)
    full_model, full_step = make(coat=True)
    assert "head.weight" in accum_model.parameters_dict()
    w0 = weights(accum_model)
    assert max_rel(w0, weights(full_model)) == 0  # same initial weights
    accum_step(ms.Tensor(IMAGES[:4]), ms.Tensor(LABELS[:4]))
    assert max_rel(weights(accum_model), w0) == 0  # first micro-batch: no update yet
    accum_step(ms.Tensor(IMAGES[4:]), ms.Tensor(LABELS[4:]))
    full_step(ms.Tensor(IMAGES), ms.Tensor(LABELS))
    assert max_rel(weights(full_model), w0) > 1e-4  # the step really moved the weights
    assert max_rel(weights(accum_model), weights(full_model)) <= 1e-5


def test_gradient_clipping_scales_the_update_to_the_global_norm():
    model, step = make(clip_grad=True, clip_value=0.01)
    w0 = weights(model)
    grads = reference_grads(model, IMAGES, LABELS)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    assert norm > 0.01  # the clip is active
    step(ms.Tensor(IMAGES), ms.Tensor(LABELS))
    w1 = weights(model)
    update = {k: (w0[k] - w1[k]) / 0.5 for k in w0}  # SGD: w1 = w0 - lr * clipped grad
    expected = {k: g * (0.01 / norm) for k, g in grads.items()}
    assert max_rel(update, expected) <= 1e-4
    got_norm = np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in update.values()))
    assert abs(got_norm - 0.01) <= 1e-4 * 0.01 * 100


def test_ema_follows_mindcvs_warmed_up_decay_and_is_what_validation_sees():
    model, step = make(ema=True, ema_decay=0.9, coat=True)
    ema = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    names = list(ema)
    for t in (1, 2, 3):
        step(ms.Tensor(IMAGES), ms.Tensor(LABELS))
        decay = 0.9 * (1 - np.exp(-t / 2000))  # mindcv's TrainStep: decay corrected by 1 - exp(-t / T)
        current = weights(model)
        ema = {k: ema[k] * decay + current[k] * (1 - decay) for k in names}
    stored = step.parameters_dict()
    assert max(np.abs(stored["ema." + k].asnumpy() - ema[k]).max() for k in names) <= 1e-6
    # validation evaluates a twin of the model holding the EMA weights; the trained weights stay as they are
    trained = weights(model)
    cfg = merged({}, model="coat_lite_tiny", num_classes=5, model_args=NARROW)
    twin = engine.EvalNetwork(cfg, 5, "O0").load(step.parameters_dict(), prefix="ema.")
    seen = {p.name: p.asnumpy() for p in twin.trainable_params()}
    assert max(np.abs(seen[k] - ema[k]).max() for k in names) <= 1e-6
    assert all(np.array_equal(weights(model)[k], trained[k]) for k in names)


def test_amp_level_on_cpu_runs_as_o0_unless_asked_and_says_so(caplog):
    recipe = merged({"amp_level": "O2", "loss_scale_type": "dynamic", "loss_scale": 1024}, source="r.yaml")
    with caplog.at_level(logging.INFO, logger="coat_ms"):
        assert engine.resolve_amp(recipe, "CPU") == engine.AmpPlan("O0", "O0", "dynamic", 1024.0)
    assert "amp: amp_level O2 -> O0 on CPU" in caplog.text and "--amp_on_cpu runs O2" in caplog.text
    assert engine.resolve_amp(recipe, "Ascend") == engine.AmpPlan("O2", "O0", "dynamic", 1024.0)
    # the device's level on CPU: amp_on_cpu, or the level given as a flag (a flag is the user's intent)
    on_cpu = merged({"amp_level": "O2"}, source="r.yaml", amp_on_cpu=True)
    assert engine.resolve_amp(on_cpu, "CPU").level == "O2"
    assert engine.resolve_amp(merged({}, flags={"amp_level": "O3"}), "CPU").level == "O3"
    assert engine.resolve_amp(merged({}, amp_level="auto"), "GPU").level == "O2"
    assert engine.resolve_amp(merged({}, amp_level="O2", loss_scale_type="auto"), "GPU").scale_type == "dynamic"
    assert engine.resolve_amp(merged({}, val_amp_level="O2"), "GPU").val_level == "O2"


def test_dynamic_loss_scale_step_trains_like_fixed_scale_without_overflow():
    """Loss scaling must cancel out: dynamic scale 1024 gives the same update as no scaling."""
    plain_model, plain = make()
    scaled_model, scaled = make(loss_scale_type="dynamic", loss_scale=1024.0)
    plain(ms.Tensor(IMAGES), ms.Tensor(LABELS))
    scaled(ms.Tensor(IMAGES), ms.Tensor(LABELS))
    assert max_rel(weights(scaled_model), weights(plain_model)) <= 1e-5


def test_dynamic_loss_scale_skips_an_overflowing_step_and_lowers_the_scale_on_cpu():
    """mindcv's overflow check needs NPU float-status ops; coat_ms's TrainStep checks the gradients on any
    device.  (A plain linear model: its stock operators carry inf through the backward pass.)"""
    cfg = merged({}, opt="sgd", momentum=0.0, lr=0.5, weight_decay=0.0, scheduler="constant", warmup_epochs=0,
                 epoch_size=4, loss_scale_type="dynamic", loss_scale=3.0e38, scale_factor=2.0)
    ms.set_seed(0)
    model = nn.SequentialCell(nn.Flatten(), nn.Dense(3 * 32 * 32, 5))
    optimizer, _ = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=4)
    step = engine.build_train_step(cfg, model, optimizer, engine.resolve_amp(cfg, "CPU"))
    step.set_train(True)
    w0 = weights(model)
    big = ms.Tensor(IMAGES * 1e3)
    step(big, ms.Tensor(LABELS))  # loss gradients * 3e38 overflow float32: the update is skipped
    assert max_rel(weights(model), w0) == 0
    assert float(step.scale_sense.asnumpy()) == pytest.approx(1.5e38, rel=1e-6)
    for _ in range(40):  # the scale keeps halving until the gradients are finite, then training moves
        step(big, ms.Tensor(LABELS))
        if max_rel(weights(model), w0) > 0:
            break
    assert max_rel(weights(model), w0) > 0 and float(step.scale_sense.asnumpy()) < 1e36


def engine_loss(cfg):
    from mindcv.loss import create_loss
    return create_loss(name=cfg["loss"], label_smoothing=cfg["label_smoothing"], aux_factor=cfg["aux_factor"],
                       reduction=cfg["reduction"])


def test_label_smoothing_matches_its_definition():
    loss = engine_loss(merged({}, label_smoothing=0.1))
    z = RNG.standard_normal((6, 10))
    y = RNG.integers(0, 10, 6)
    got = float(loss(ms.Tensor(z.astype(np.float32)), ms.Tensor(y.astype(np.int32))).asnumpy())
    target = np.full((6, 10), 0.1 / 10)
    target[np.arange(6), y] += 0.9
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    assert got == pytest.approx(float(-(target * logp).sum(1).mean()), rel=1e-5)


def test_drop_path_drops_whole_samples_and_rescales():
    from coat_ms.models.layers import DropPath
    layer = DropPath(0.25)
    layer.set_train(True)
    ms.set_seed(3)
    x = np.ones((4000, 5, 3), np.float32)
    y = layer(ms.Tensor(x)).asnumpy()
    per_sample = y.reshape(4000, -1)
    assert np.all((per_sample == 0).all(axis=1) | np.isclose(per_sample, 1 / 0.75).all(axis=1))
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    layer.set_train(False)
    assert np.array_equal(layer(ms.Tensor(x)).asnumpy(), x)


def test_eps_given_for_the_run_reaches_adamw_and_is_refused_where_it_means_nothing():
    """mindcv's factory hands eps to RMSProp only; a value given for the run reaches AdamW too (a large eps
    shrinks the first Adam step), and eps or betas for an optimizer without them are one-line errors."""
    moves = {}
    for eps in (None, 10.0):
        flags = {"eps": eps} if eps else {}
        cfg = merged({}, flags=flags, opt="adamw", lr=0.01, weight_decay=0.0, scheduler="constant",
                     warmup_epochs=0, epoch_size=1)
        ms.set_seed(0)
        model = small_mlp()
        optimizer, _ = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=1)
        assert float(optimizer.eps.asnumpy().ravel()[0]) == pytest.approx(eps or 1e-8)
        step = engine.build_train_step(cfg, model, optimizer)
        step.set_train(True)
        w0 = weights(model)
        step(ms.Tensor(IMAGES), ms.Tensor(LABELS))
        moves[eps] = max(np.abs(weights(model)[k] - w0[k]).max() for k in w0)
    assert moves[10.0] < moves[None] / 10
    with pytest.raises(coat_ms.errors.CoatError, match="--eps: lion has no epsilon"):
        engine.optimizer_keywords(merged({}, flags={"eps": 1e-6}, opt="lion"))
    with pytest.raises(coat_ms.errors.CoatError, match="momentum has no betas"):
        engine.optimizer_keywords(merged({}, flags={"betas": [0.9, 0.99]}, opt="momentum"))
