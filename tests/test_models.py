"""The CoaT family in MindSpore: construction, shapes, modes, API, errors, and faithfulness to timm."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import coat_ms
from coat_ms.flops import count_macs, count_params
from conftest import random_images
from helpers import release_models

VARIANTS = ["coat_tiny", "coat_mini", "coat_small", "coat_lite_tiny", "coat_lite_mini", "coat_lite_small",
            "coat_lite_medium"]

# Official unique parameter counts (millions) and GMACs at 224 (CoaT paper / official repo).
OFFICIAL_PARAMS_M = {"coat_tiny": 5.50, "coat_mini": 10.34, "coat_small": 21.69, "coat_lite_tiny": 5.72,
                     "coat_lite_mini": 11.01, "coat_lite_small": 19.84, "coat_lite_medium": 44.57}
OFFICIAL_GMACS = {"coat_lite_tiny": 1.6, "coat_lite_mini": 2.0, "coat_lite_small": 3.96, "coat_tiny": 4.35,
                  "coat_mini": 6.82, "coat_lite_medium": 9.81, "coat_small": 12.61}

# Graph-mode runs of every variant are long on 2 cores (~25 s for coat_tiny): the default run compiles one
# of each shape (CoaT-Lite, CoaT with parallel blocks); `pytest -m artefacts` compiles the other five too.
REPRESENTATIVE = ("coat_lite_tiny", "coat_tiny")
EVERY_VARIANT = [pytest.param(n, marks=() if n in REPRESENTATIVE else pytest.mark.artefacts) for n in VARIANTS]

_built = {}


def built(name):
    """One eval-mode model per variant for the whole session (graph compiles are cached per cell)."""
    if name not in _built:
        model = coat_ms.create_model(name)
        model.set_train(False)
        _built[name] = model
    return _built[name]


def test_list_models_names_the_seven_variants():
    assert coat_ms.list_models() == sorted(VARIANTS)
    assert coat_ms.list_models("coat_lite_*") == sorted(v for v in VARIANTS if "lite" in v)


@pytest.mark.parametrize("name", VARIANTS)
def test_unique_parameter_count_matches_official(name):
    count = count_params(built(name)) / 1e6
    assert abs(count - OFFICIAL_PARAMS_M[name]) / OFFICIAL_PARAMS_M[name] < 1e-3, count


@pytest.mark.parametrize("name", VARIANTS)
def test_mac_count_matches_official_within_2_percent(name):
    gmacs = count_macs(built(name), (224, 224)) / 1e9
    assert abs(gmacs - OFFICIAL_GMACS[name]) / OFFICIAL_GMACS[name] < 0.02, gmacs


@pytest.mark.parametrize("name", EVERY_VARIANT)
def test_forward_non_square_in_graph_mode(name, graph_mode):
    """The full-size model compiles and runs at a non-square size.  Square inputs: coat_lite_tiny at 224 is
    compared with timm below (coat_tiny too under -m slow), and coat_tiny trains at 64x64 in test_recipes.py.
    tests/test_amp.py runs a narrow coat_tiny non-square too, at every amp level."""
    model = built(name)
    x = random_images((1, 3, 192, 256), seed=1)
    first = model(x).asnumpy()
    assert first.shape == (1, 1000)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(model(x).asnumpy(), first)  # eval is deterministic


@pytest.mark.parametrize("name", ["coat_lite_tiny", pytest.param("coat_tiny", marks=pytest.mark.artefacts)])
def test_graph_and_pynative_agree(name):
    model = built(name)
    x = random_images((2, 3, 224, 224), seed=2)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = model(x).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    pynative = model(x).asnumpy()
    assert np.abs(graph - pynative).max() <= 1e-5


def test_tied_modules_are_one_parameter():
    model = built("coat_tiny")
    assert model.serial_blocks1[0].cpe is model.cpe1 and model.serial_blocks1[1].cpe is model.cpe1
    assert model.serial_blocks2[0].factoratt_crpe.crpe is model.crpe2
    block = model.parallel_blocks[0]
    assert block.factoratt_crpe3.crpe is model.crpe3
    assert block.mlp2 is block.mlp3 is block.mlp4
    names = [p.name for p in model.get_parameters()]
    assert len(names) == len(set(names))
    assert "cpe1.proj.weight" in names and "parallel_blocks.0.mlp2.fc1.weight" in names
    assert not any(".mlp3." in n or ".cpe." in n or ".crpe." in n for n in names)


def test_parameter_names_are_pytorch_state_dict_keys():
    """The rule of the model file: MindSpore names = timm's keys minus the aliases of tied modules."""
    import timm

    for name in ("coat_lite_tiny", "coat_tiny"):
        torch_names = set(dict(timm.create_model(name).named_parameters()))  # torch dedups tied params
        ms_shapes = {p.name: tuple(p.shape) for p in built(name).get_parameters()}
        assert set(ms_shapes) == torch_names
        torch_shapes = {k: tuple(v.shape) for k, v in timm.create_model(name).named_parameters()}
        assert ms_shapes == torch_shapes


def _copy_timm_weights(model, timm_model):
    state = timm_model.state_dict()
    for name, param in model.parameters_dict().items():
        param.set_data(ms.Tensor(state[name].detach().numpy()))


@pytest.mark.parametrize("name,size", [("coat_lite_tiny", (224, 224)),
                                       pytest.param("coat_tiny", (224, 224), marks=pytest.mark.artefacts),
                                       pytest.param("coat_tiny", (192, 256), marks=pytest.mark.artefacts)])
def test_logits_match_timm(name, size, graph_mode):
    """Same weights, same input: the official semantics, to fp32 rounding (incl. non-square parallel blocks)."""
    import timm
    import torch

    torch.manual_seed(0)
    reference = timm.create_model(name, img_size=size).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every parameter matters
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model = coat_ms.create_model(name)
    model.set_train(False)
    _copy_timm_weights(model, reference)
    x = np.random.RandomState(3).rand(2, 3, *size).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = model(ms.Tensor(x)).asnumpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() <= 2e-5


def test_in_channels_and_num_classes(graph_mode):
    model = coat_ms.create_model("coat_lite_tiny", in_channels=1, num_classes=10)
    model.set_train(False)
    assert tuple(model.patch_embed1.proj.weight.shape) == (64, 1, 4, 4)
    assert model(random_images((2, 1, 64, 96))).shape == (2, 10)


@pytest.mark.parametrize("name", ["coat_lite_tiny", "coat_tiny"])
def test_headless_model_returns_pooled_features(name, graph_mode):
    model = coat_ms.create_model(name, num_classes=0, embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1),
                                 parallel_depth=1) \
        if name == "coat_tiny" else coat_ms.create_model(name, num_classes=0)
    model.set_train(False)
    assert not any(p.name.startswith("head.") for p in model.get_parameters())
    assert model(random_images((2, 3, 64, 64))).shape == (2, model.num_features)


def test_reset_classifier_and_replacing_the_head(graph_mode):
    model = coat_ms.create_model("coat_lite_tiny", embed_dims=(16, 16, 16, 24), serial_depths=(1, 1, 1, 1))
    model.reset_classifier(5)
    model.set_train(False)
    assert model(random_images((1, 3, 64, 64))).shape == (1, 5)
    assert tuple(model.parameters_dict()["head.weight"].shape) == (5, 24)

    model = coat_ms.create_model("coat_tiny", embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1), parallel_depth=1)
    model.head = nn.Dense(model.num_features, 7)  # what mindcv users do for transfer learning
    model.set_train(False)
    assert model(random_images((1, 3, 64, 64))).shape == (1, 7)
    assert tuple(model.parameters_dict()["head.weight"].shape) == (7, 32)


def _same_weights(reference, **switches):
    model = coat_ms.create_model("coat_tiny", embed_dims=(32, 32, 32, 32), parallel_depth=2, **switches)
    for p in reference.get_parameters():
        model.parameters_dict()[p.name].set_data(p.data)
    model.set_train(False)
    return model


def test_mindcv_switches_change_what_they_name(pynative_mode):
    official = coat_ms.create_model("coat_tiny", embed_dims=(32, 32, 32, 32), parallel_depth=2)
    official.set_train(False)
    x = random_images((1, 3, 64, 64))
    maps = [m.asnumpy() for m in official.forward_feature_maps(x)]

    # align_corners: stage 1 is untouched, the parallel blocks' outputs (scales 2-4) move.
    interp = _same_weights(official, align_corners=True)
    interp_maps = [m.asnumpy() for m in interp.forward_feature_maps(x)]
    np.testing.assert_array_equal(interp_maps[0], maps[0])
    assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(interp_maps[1:], maps[1:]))
    assert interp.parallel_blocks[0].align_corners and not official.parallel_blocks[0].align_corners

    # cpe_residual=False (mindcv's serial block) changes every stage from the first block on.
    residual = _same_weights(official, cpe_residual=False)
    residual_maps = [m.asnumpy() for m in residual.forward_feature_maps(x)]
    assert np.abs(residual_maps[0] - maps[0]).max() > 1e-4


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(coat_ms.UnknownModelError) as err:
        coat_ms.create_model("coat_huge")
    assert "coat_huge" in str(err.value) and "coat_lite_tiny" in str(err.value)


def test_unknown_option_is_named():
    with pytest.raises(coat_ms.CoatError, match="embed_dim"):
        coat_ms.create_model("coat_tiny", embed_dim=3)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE])
def test_bad_input_sizes_and_channels_are_clear_errors(mode):
    model = coat_ms.create_model("coat_lite_tiny", embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1))
    model.set_train(False)
    ms.set_context(mode=mode)
    try:
        with pytest.raises(ValueError, match=r"224x200 .*divisible by 32"):
            model(random_images((1, 3, 224, 200)))
        with pytest.raises(ValueError, match="3 input channels but the input has 1"):
            model(random_images((1, 1, 64, 64)))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_checkpoint_round_trip_is_strict(tmp_path, graph_mode):
    small = dict(embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1), parallel_depth=1)
    source = coat_ms.create_model("coat_tiny", num_classes=10, **small)
    path = str(tmp_path / "m.ckpt")
    ms.save_checkpoint(source, path)
    target = coat_ms.create_model("coat_tiny", num_classes=10, checkpoint_path=path, **small)
    for a, b in zip(source.get_parameters(), target.get_parameters()):
        assert a.name == b.name
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())

    with pytest.raises(coat_ms.CheckpointError, match=r"head.weight: checkpoint \(10, 32\) vs model \(5, 32\)"):
        coat_ms.create_model("coat_tiny", num_classes=5, checkpoint_path=path, **small)
    with pytest.raises(coat_ms.CheckpointError, match="missing"):
        coat_ms.create_model("coat_tiny", num_classes=10, checkpoint_path=path,
                             **dict(small, parallel_depth=2))
    relaxed = coat_ms.create_model("coat_tiny", num_classes=5, checkpoint_path=path, strict=False, **small)
    np.testing.assert_array_equal(relaxed.parameters_dict()["cpe1.proj.weight"].asnumpy(),
                                  source.parameters_dict()["cpe1.proj.weight"].asnumpy())

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(open(path, "rb").read()[:1000])
    with pytest.raises(coat_ms.CheckpointError, match="truncated or not a MindSpore"):
        coat_ms.load_checkpoint(target, str(truncated))
    with pytest.raises(coat_ms.CheckpointError, match="not found"):
        coat_ms.load_checkpoint(target, str(tmp_path / "nope.ckpt"))


def test_buildable_through_mindcv_create_model():
    import coat_ms.mindcv_compat  # noqa: F401  (registers coat_ms_* names)
    from mindcv.models import create_model as mindcv_create_model

    model = mindcv_create_model("coat_ms_lite_tiny", num_classes=10, in_channels=1)
    assert isinstance(model, coat_ms.CoaT)
    assert (model.num_classes, model.in_chans) == (10, 1)


# ------------------------------------------------------------------------------ backend (operator set)

NARROW_TINY = dict(embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1), parallel_depth=1)


KERNEL_ATTRIBUTES = ("kernel", "ones_kernel", "residual_add", "cross_scale_sum")


def _kernel_cells(model):
    """{(cell path, attribute): kernel primitive or None} for every operator a layer or block can run as C++."""
    return {(name, attr): getattr(cell, attr) for name, cell in model.cells_and_names()
            for attr in KERNEL_ATTRIBUTES if hasattr(cell, attr)}


def test_backend_is_chosen_once_at_build_and_passed_to_every_layer(monkeypatch):
    from coat_ms.models.backend import SWITCH

    model = coat_ms.create_model("coat_tiny", **NARROW_TINY)  # the CPU target: C++ kernels
    assert model.backend.name == "cpu_kernels"
    assert model.backend.kernels == {"dwconv", "rowops", "gelu", "attention", "crossscale"}
    assert model.backend.fuses_blocks and model.serial_blocks1[0].fused and model.parallel_blocks[0].fused
    assert None not in _kernel_cells(model).values(), "with every kernel in use, each layer has its kernel"
    assert model.parallel_blocks[0].token_resize == "separable"

    monkeypatch.setenv(SWITCH, "0")  # the documented switch: stock operators on CPU too
    stock = coat_ms.create_model("coat_tiny", **NARROW_TINY)
    assert str(stock.backend) == "stock"
    assert set(_kernel_cells(stock).values()) == {None}
    assert stock.parallel_blocks[0].token_resize == "interpolate"
    assert model.backend.name == "cpu_kernels", "a built model keeps its backend whatever the environment says"


def test_kernels_switched_off_by_name(monkeypatch):
    from coat_ms.models.backend import SWITCH_OFF

    monkeypatch.setenv(SWITCH_OFF, "gelu, rowops")
    model = coat_ms.create_model("coat_lite_tiny", embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1))
    assert model.backend.kernels == {"dwconv", "attention", "crossscale"}
    block = model.serial_blocks1[0]
    assert block.norm1.kernel is None and block.mlp.kernel is None and block.mlp.act.kernel is None
    assert block.cpe.kernel is not None and block.factoratt_crpe.kernel is not None
    assert not block.fused, "the fused block form needs every kernel"

    # the attention kernel reads the dwconv kernel's token-layout output: it goes with it
    monkeypatch.setenv(SWITCH_OFF, "dwconv")
    assert coat_ms.create_model("coat_lite_tiny", embed_dims=(32, 32, 32, 32)).backend.kernels == {
        "rowops", "gelu", "crossscale"}


@pytest.mark.parametrize("env,value,words", [
    ("COAT_MS_CPU_KERNELS_OFF", "gemm", ["unknown kernel(s) gemm", "dwconv, rowops, gelu, attention, crossscale"]),
    ("COAT_MS_CPU_KERNELS", "maybe", ["COAT_MS_CPU_KERNELS='maybe'", "use 0"])])
def test_malformed_kernel_switch_is_a_clear_error(monkeypatch, env, value, words):
    monkeypatch.setenv(env, value)
    with pytest.raises(coat_ms.CoatError) as err:
        coat_ms.create_model("coat_lite_tiny", embed_dims=(32, 32, 32, 32))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_backend_argument_and_device_target():
    from coat_ms.models.backend import resolve_backend

    assert resolve_backend("auto", device_target="Ascend").name == "stock"
    assert resolve_backend("auto", device_target="GPU").name == "stock"
    with pytest.raises(coat_ms.CoatError, match="CPU target only"):
        resolve_backend("cpu_kernels", device_target="Ascend")
    with pytest.raises(coat_ms.CoatError, match="unknown backend 'fast'"):
        coat_ms.create_model("coat_lite_tiny", backend="fast")
    with pytest.raises(coat_ms.CoatError, match="unknown backend 'onnx'"):  # ONNX files: coat_ms/onnx_writer.py
        coat_ms.create_model("coat_lite_tiny", backend="onnx")


def test_with_backend_computes_the_same_function_on_a_copy_of_the_weights(pynative_mode):
    model = coat_ms.create_model("coat_tiny", num_classes=10, **NARROW_TINY)
    model.head = nn.Dense(model.num_features, 7)  # a head of the user's own is carried over
    model.set_train(False)
    x = random_images((2, 3, 64, 96), seed=4)
    want = model(x).asnumpy()
    assert model.with_backend("cpu_kernels") is model
    for name in ("stock",):
        twin = model.with_backend(name)
        assert twin.backend.name == name and not twin.training
        assert twin.head is model.head
        got = twin(x).asnumpy()
        assert got.shape == (2, 7)
        assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5, name
    twin = model.with_backend("stock")
    twin.parameters_dict()["cpe1.proj.weight"].set_data(ms.Tensor(np.zeros((32, 1, 3, 3), np.float32)))
    assert np.abs(model.parameters_dict()["cpe1.proj.weight"].asnumpy()).max() > 0, "weights are copied, not shared"

    model.parallel_blocks[0].mlp2.fc2 = nn.Dense(128, 32, has_bias=False)  # a changed model cannot be rebuilt
    with pytest.raises(coat_ms.CoatError, match="changed after it was built"):
        model.with_backend("stock")


def test_fused_block_form_trains_like_stock_operators(graph_mode):
    """With every kernel, blocks run their fused form (biases inside matmuls and residual adds, one op per
    scale for the cross-scale sums) in evaluation and in training without drop path: loss and every
    parameter's gradient agree with the stock operators. With drop path, training runs the plain form."""
    model = coat_ms.create_model("coat_tiny", num_classes=5, **NARROW_TINY)
    twin = model.with_backend("stock")
    x, y = random_images((2, 3, 64, 64), seed=11), ms.Tensor(np.array([1, 3], np.int32))
    for m in (model, twin):
        m.set_train(True)
    assert all(b.fused and b.deterministic for b in (model.serial_blocks1[0], model.parallel_blocks[0]))

    def loss_and_grads(m):
        net = nn.WithLossCell(m, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
        return ms.value_and_grad(net, None, m.trainable_params())(x, y)

    (loss_k, grads_k), (loss_s, grads_s) = loss_and_grads(model), loss_and_grads(twin)
    assert abs(float(loss_k.asnumpy()) - float(loss_s.asnumpy())) <= 1e-5
    names = [p.name for p in model.trainable_params()]
    assert names == [p.name for p in twin.trainable_params()]
    for name, a, b in zip(names, grads_k, grads_s):
        a, b = a.asnumpy(), b.asnumpy()
        assert np.abs(a - b).max() <= 1e-4 * max(1e-3, np.abs(b).max()), name
    dropping = coat_ms.create_model("coat_tiny", drop_path_rate=0.1, **NARROW_TINY)
    assert dropping.parallel_blocks[0].fused and not dropping.parallel_blocks[0].deterministic
    unbiased = coat_ms.create_model("coat_tiny", qkv_bias=False, **NARROW_TINY)  # no bias to take into the matmul
    assert not unbiased.serial_blocks1[0].fused
    assert unbiased(x).shape == (2, 1000)


def test_building_a_model_changes_no_process_state():
    import os

    before = dict(os.environ)
    coat_ms.create_model("coat_lite_tiny", embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1))
    assert dict(os.environ) == before


@pytest.mark.parametrize("align_corners", [False, True])
def test_the_token_resizes_agree_with_torch(align_corners, pynative_mode):
    """separable (cpu_kernels; matrices made by the block when not passed in) and interpolate (stock:
    ResizeBilinearV2) against torch's bilinear interpolate, to 1-pixel grids too (a 32-pixel input's stage 4)."""
    import torch

    from coat_ms.models.tokens import resize_interpolate, token_resize_factors

    model = coat_ms.create_model("coat_tiny", align_corners=align_corners, **NARROW_TINY)
    block = model.parallel_blocks[0]
    assert block.token_resize == "separable"
    x = random_images((2, 1 + 4 * 6, 5), seed=7)
    for size, target in (((4, 6), (8, 12)), ((4, 6), (2, 3)), ((4, 6), (1, 1)), ((1, 1), (4, 6))):
        img = torch.from_numpy(x.asnumpy()[:, 1:1 + size[0] * size[1]].transpose(0, 2, 1).reshape(2, 5, *size))
        ref = torch.nn.functional.interpolate(img, size=target, mode="bilinear", align_corners=align_corners)
        want = np.concatenate([x.asnumpy()[:, :1], ref.numpy().reshape(2, 5, -1).transpose(0, 2, 1)], axis=1)
        xs = ms.Tensor(x.asnumpy()[:, :1 + size[0] * size[1]])
        got = (resize_interpolate(xs, size, target, align_corners).asnumpy(),
               block.interpolate(xs, size, target).asnumpy(),
               block.interpolate(xs, size, target, token_resize_factors(size, target, align_corners)).asnumpy())
        for g in got:
            np.testing.assert_allclose(g, want, rtol=0, atol=1e-5)


def teardown_module():
    release_models(_built)
