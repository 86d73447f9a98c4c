"""Mixed precision as the Ascend/GPU recipes run it, exercised on CPU with MindSpore's own float16 kernels.

Every amp level goes through the call train.py makes (mindcv's ``auto_mixed_precision``), O2/O3 also
through MindSpore's ``mindspore.amp.auto_mixed_precision``; the model is the stock-operator one that
Ascend and GPU run, compiled in GRAPH_MODE.  The default run compiles a narrow CoaT with a parallel block
(every layer kind) at the recipes' level O2 through both calls and trains it through train.py's builders;
the other levels, MindSpore's O2 training and every full-size variant run under ``-m slow``.  Precision
against float32 with timm's weights on real photos: parity_tests/test_amp.py.
"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import mindspore as ms
import numpy as np
import pytest
from mindcv.utils.amp import auto_mixed_precision
from mindspore import nn

import coat_ms
from coat_ms.amp import AmpError, apply_amp, parse_cast_list
from coat_ms.config import ConfigError, merged
from coat_ms.train import engine

# CoaT layout (serial + parallel blocks, aggregate) at a width that compiles in seconds
NARROW = dict(embed_dims=(16, 24, 24, 24), serial_depths=(1, 1, 1, 1), parallel_depth=1, mlp_ratios=(2, 2, 2, 2))
# stage 4 twice: CoaT-Lite's head reads only the last block's CLS token, so the shared crpe4 learns through the first
NARROW_LITE = dict(embed_dims=(16, 24, 24, 24), serial_depths=(1, 1, 1, 2), mlp_ratios=(2, 2, 2, 2))
RNG = np.random.default_rng(3)
IMAGES = RNG.standard_normal((4, 3, 32, 64)).astype(np.float32)  # non-square: each token grid too
LABELS = np.array([0, 1, 2, 1], np.int32)


@pytest.fixture(autouse=True)
def _graph(graph_mode):
    yield


def narrow(level="O0", **kwargs):
    ms.set_seed(0)
    return coat_ms.create_model("coat_tiny", num_classes=3, backend="stock" if level != "O0" else "auto",
                                **dict(NARROW, **kwargs))


@pytest.fixture(scope="module")
def fp32_logits():
    """The float32 answer, in PyNative mode (no graph to compile; graph and PyNative agree to 1e-5,
    tests/test_models.py); the amp levels under test run as graphs."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        model = narrow()
        model.set_train(False)
        return model(ms.Tensor(IMAGES)).asnumpy()
    finally:
        ms.set_context(mode=mode)


def slow_but(*fast):
    """Levels as pytest params: those in ``fast`` in the default run, the others under -m slow."""
    return lambda *levels: [pytest.param(lv, marks=() if lv in fast else (pytest.mark.studies,)) for lv in levels]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("level", slow_but("O2")("O1", "O2", "O3"))
def test_mindcv_amp_levels_compile_and_keep_the_float32_answer(level, fp32_logits):
    reference = fp32_logits
    model = narrow(level)
    auto_mixed_precision(model, amp_level=level)
    model.set_train(False)
    out = model(ms.Tensor(IMAGES))
    assert out.dtype == (ms.float32 if level == "O1" else ms.float16)  # mindcv casts no output back
    assert cosine(out.asnumpy(), reference) >= 0.999
    assert all(p.dtype == ms.float32 for p in model.get_parameters())  # float32 masters


@pytest.mark.parametrize("level", slow_but("O2")("O2", "O3"))
def test_mindspore_amp_levels_compile_and_keep_the_float32_answer(level, fp32_logits):
    reference = fp32_logits
    net = ms.amp.auto_mixed_precision(narrow(level), level)
    net.set_train(False)
    out = net(ms.Tensor(IMAGES))
    assert out.dtype == ms.float32  # MindSpore casts the output back
    assert cosine(out.asnumpy(), reference) >= 0.999


@pytest.mark.studies
def test_mindspore_amp_o2_trains_with_a_loss_scale():
    net = ms.amp.auto_mixed_precision(narrow("O2"), "O2")
    w0 = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    # MindSpore's own TrainOneStepWithLossScaleCell asks for the NPU float-status op, which the CPU lacks:
    # coat_ms's TrainStep (mindcv's, with a fixed scale) is the loss-scaled step here
    from coat_ms.train.train_cell import TrainStep
    step = TrainStep(nn.WithLossCell(net, nn.CrossEntropyLoss()), nn.Adam(net.trainable_params(), 1e-3),
                     scale_sense=ms.Tensor(1024.0, ms.float32))
    step.set_train(True)
    assert np.isfinite(float(step(ms.Tensor(IMAGES), ms.Tensor(LABELS)).asnumpy()))
    still = [p.name for p in net.trainable_params() if np.array_equal(p.asnumpy(), w0[p.name])]
    assert not still, still


@pytest.mark.studies
@pytest.mark.parametrize("level", ["O0", "O1", "O2", "O3"])
def test_every_level_trains_through_the_engine_with_float32_masters_and_torch_names(level):
    """train.py's own builders: the level given as a flag runs on CPU, on MindSpore's operators."""
    cfg = merged({}, flags={"amp_level": level}, model="coat_tiny", model_args=NARROW, num_classes=3, opt="adamw",
                 lr=1e-3, weight_decay=0.05, scheduler="constant", warmup_epochs=0, epoch_size=2,
                 loss_scale_type="fixed", loss_scale=1024.0, label_smoothing=0.1)
    plan = engine.resolve_amp(cfg, "CPU")
    assert plan.level == level
    ms.set_seed(0)
    model = engine.build_model(cfg, 3, plan.level)
    assert model.backend.name == ("stock" if level != "O0" else "cpu_kernels")
    names = [p.name for p in model.trainable_params()]
    optimizer, _ = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=2)
    step = engine.build_train_step(cfg, model, optimizer, plan)
    step.set_train(True)
    w0 = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    losses = [float(step(ms.Tensor(IMAGES), ms.Tensor(LABELS)).asnumpy()) for _ in range(2)]
    assert all(np.isfinite(losses))
    assert [p.name for p in model.trainable_params()] == names  # checkpoints keep the state-dict keys
    assert all(p.dtype == ms.float32 for p in model.trainable_params())
    assert all(not np.array_equal(p.asnumpy(), w0[p.name]) for p in model.trainable_params())


def test_o2_trains_through_the_engine_and_a_real_float16_overflow_is_skipped():
    """train.py's builders at O2 with a dynamic scale that doubles after every good step (scale_window 1) until the float16 backward
    pass overflows for real: that step leaves the weights alone, is counted, and halves the scale.  On a narrow
    CoaT-Lite (half the compile time of a CoaT); coat_tiny trains at every level under -m slow (the study below)."""
    cfg = merged({}, flags={"amp_level": "O2"}, model="coat_lite_tiny", model_args=NARROW_LITE, num_classes=3, opt="adamw",
                 lr=1e-3, weight_decay=0.0, scheduler="constant", warmup_epochs=0, epoch_size=1,
                 loss_scale_type="dynamic", loss_scale=4096.0, scale_factor=2.0, scale_window=1)
    plan = engine.resolve_amp(cfg, "CPU")
    model = engine.build_model(cfg, 3, plan.level)
    names = [p.name for p in model.trainable_params()]
    optimizer, _ = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch=40)
    step = engine.build_train_step(cfg, model, optimizer, plan)
    step.set_train(True)
    assert [p.name for p in model.trainable_params()] == names  # checkpoints keep the state-dict keys
    x, y = ms.Tensor(IMAGES), ms.Tensor(LABELS)
    w0 = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    scale = step.loss_scale_value()
    for _ in range(40):
        before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
        assert np.isfinite(float(step(x, y).asnumpy()))
        new_scale = step.loss_scale_value()
        if new_scale < scale:  # the overflowing step
            assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in model.trainable_params())
            assert new_scale == scale / 2 and scale > 4096  # it grew first: a scale the float16 range cannot carry
            assert float(step.skipped_steps.asnumpy()) == 1
            break
        assert new_scale == scale * 2
        scale = new_scale
    else:
        pytest.fail(f"no float16 overflow up to loss scale {scale}")
    # the good steps trained every float32 master weight
    still = [p.name for p in model.trainable_params() if np.array_equal(p.asnumpy(), w0[p.name])]
    assert all(p.dtype == ms.float32 for p in model.trainable_params()) and not still, still


def test_the_kernel_backend_refuses_amp_by_name():
    model = coat_ms.create_model("coat_lite_tiny", num_classes=3, embed_dims=(16, 16, 16, 16))
    assert model.backend.kernels  # built with the machine's g++ (tests/test_kernels.py)
    with pytest.raises(AmpError, match="backend='stock'"):
        apply_amp(model, "O2")


@pytest.mark.studies
def test_amp_cast_list_replaces_the_black_list(fp32_logits):
    """The O2 black list it names is what stays float32: LayerNorm left out of it runs as a float16 cell (and
    still takes its statistics in float32 inside, see coat_ms/amp.py)."""
    model = narrow("O2")
    apply_amp(model, "O2", merged({}, amp_cast_list="[nn.BatchNorm2d]")["amp_cast_list"])
    model.set_train(False)
    assert cosine(model(ms.Tensor(IMAGES)).asnumpy(), fp32_logits) >= 0.999


def test_amp_cast_list_is_parsed_from_fixed_names_never_evaluated():
    assert parse_cast_list("[nn.Dense, nn.LayerNorm]") == "[nn.Dense, nn.LayerNorm]"
    assert parse_cast_list("Dense,LayerNorm") == "[nn.Dense, nn.LayerNorm]"
    for bad in ("[__import__('os').system('touch /tmp/x')]", "[nn.Dense, print]", "[]"):
        with pytest.raises(ConfigError, match="amp_cast_list"):
            merged({"amp_cast_list": bad}, source="r.yaml")


def o2_cosines(name):
    """Cosine to float32 of the full variant at O2 through mindcv's and MindSpore's auto_mixed_precision."""
    ms.set_context(mode=ms.GRAPH_MODE)
    x = ms.Tensor(np.random.default_rng(0).random((1, 3, 224, 224), np.float32))
    ms.set_seed(0)
    reference = coat_ms.create_model(name, backend="stock")
    reference.set_train(False)
    want = reference(x).asnumpy()
    model = coat_ms.create_model(name, backend="stock")
    model.set_train(False)
    ms.load_param_into_net(model, reference.parameters_dict())
    auto_mixed_precision(model, amp_level="O2")
    twin = coat_ms.create_model(name, backend="stock")
    ms.load_param_into_net(twin, reference.parameters_dict())
    twin = ms.amp.auto_mixed_precision(twin, "O2")
    twin.set_train(False)
    return cosine(model(x).asnumpy(), want), cosine(twin(x).asnumpy(), want)


@pytest.mark.artefacts
@pytest.mark.parametrize("name", coat_ms.list_models())
def test_every_full_variant_compiles_at_o2_through_mindcv_and_mindspore(name):
    # a process per variant: MindSpore keeps each compiled full-size graph for the life of the process
    # (three per variant here; all seven variants in one process reached 12 GB and were killed for memory)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        through_mindcv, through_mindspore = pool.submit(o2_cosines, name).result()
    assert through_mindcv >= 0.999
    assert through_mindspore >= 0.999


@pytest.mark.studies
def test_the_digits_demo_trained_at_o2_on_cpu_reaches_its_o0_accuracy(tmp_path):
    """End to end on real data: the demo's recipe through train.py at O0 and at O2 (MindSpore's float16 CPU
    kernels, dynamic loss scale from 1024): Top-1 within one point."""
    from coat_ms.datasets.digits import write_digits_imagefolder
    from helpers import ROOT, metrics_line, run_script

    data = tmp_path / "digits"
    write_digits_imagefolder(str(data), image_size=32)
    recipe = f"{ROOT}/configs/demo_digits_cpu.yaml"
    top1 = {}
    for level, extra in (("O0", ()), ("O2", ("--loss_scale_type", "dynamic", "--loss_scale", 1024))):
        proc = run_script("train.py", "-c", recipe, "--data_dir", data, "--ckpt_save_dir", tmp_path / level,
                          "--amp_level", level, *extra, cwd=tmp_path, timeout=3600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"amp: {level} on CPU" in proc.stderr
        top1[level] = metrics_line(proc.stdout)["Top_1_Accuracy"]
    assert top1["O2"] >= top1["O0"] - 0.01, top1
