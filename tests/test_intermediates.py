"""CoaT.forward_intermediates: the one API that the parity taps, forward_feature_maps and a neck use.

Small architectures with a different width per scale (CoaT's scales 2-4 must share theirs), so a map
from the wrong scale or a transposed H, W shows; the parity suite compares the same outputs with timm
at every block (parity_tests/test_forward.py, GRAPH_MODE and PyNative).
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import coat_ms
from conftest import random_images

ARCHS = {
    "coat_lite_tiny": dict(embed_dims=(16, 24, 32, 40), serial_depths=(1, 2, 1, 1)),
    "coat_tiny": dict(embed_dims=(16, 32, 32, 32), serial_depths=(1, 1, 1, 1), parallel_depth=1),
}
H, W = 64, 96  # non-square: the stride-32 map is 2 x 3


def small(name):
    model = coat_ms.create_model(name, num_classes=7, **ARCHS[name])
    model.set_train(False)
    return model


class Neck(nn.Cell):
    """What a detection / segmentation neck does with a CoaT backbone: takes the stride 4-32 maps and
    builds one 1x1 lateral convolution per scale from ``feature_info``."""

    def __init__(self, backbone, width=8):
        super().__init__()
        self.backbone = backbone
        self.lateral = nn.CellList([nn.Conv2d(info["num_chs"], width, 1, has_bias=True)
                                    for info in backbone.feature_info])

    def construct(self, x):
        maps = self.backbone.forward_intermediates(x, indices=(0, 1, 2, 3), intermediates_only=True)
        laterals = ()
        for i in range(4):
            laterals = laterals + (self.lateral[i](maps[i]),)
        return maps, laterals


# GRAPH_MODE compiles cost ~10 s (Lite) and ~25 s (CoaT) here; the parity suite already compiles the tap net
# of a small CoaT in GRAPH_MODE, so CoaT's neck compiles only under -m slow.
@pytest.mark.parametrize("name,mode", [("coat_lite_tiny", "graph"), ("coat_tiny", "pynative"),
                                       pytest.param("coat_tiny", "graph", marks=pytest.mark.artefacts)])
def test_neck_gets_the_stride_4_to_32_maps(name, mode):
    backbone = small(name)
    x = random_images((2, 3, H, W))
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        maps, laterals = Neck(backbone)(x)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    dims = ARCHS[name]["embed_dims"]
    assert [(info["num_chs"], info["reduction"]) for info in backbone.feature_info] == list(zip(dims, (4, 8, 16, 32)))
    assert [tuple(m.shape) for m in maps] == [(2, c, H // s, W // s) for c, s in zip(dims, (4, 8, 16, 32))]
    assert [tuple(m.shape) for m in laterals] == [(2, 8, H // s, W // s) for s in (4, 8, 16, 32)]
    for compiled, eager in zip(maps, backbone.forward_feature_maps(x)):
        np.testing.assert_allclose(compiled.asnumpy(), eager.asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(ARCHS))
def test_intermediates_options_in_pynative(name, pynative_mode):
    model = small(name)
    x = random_images((1, 3, H, W))
    names = model.intermediate_names(blocks=True)
    lite = model.parallel_blocks is None
    assert len(names) == 4 + sum(ARCHS[name]["serial_depths"]) + 3 * ARCHS[name].get("parallel_depth", 0)

    # the final output is forward_features', and gives construct's logits
    final, tokens = model.forward_intermediates(x, blocks=True, output_fmt="NLC")
    assert len(tokens) == len(names)
    features = model.forward_features(x)
    np.testing.assert_array_equal(model.forward_head(final).asnumpy(), model(x).asnumpy())
    for a, b in zip(final if not lite else (final,), features if not lite else (features,)):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())

    # blocks=True holds the scale outputs: the last block of each scale (CoaT: the last parallel block)
    maps = model.forward_feature_maps(x)
    last_of_scale = [max(i for i, n in enumerate(names) if n.startswith(f"serial_blocks{s}.")) for s in range(1, 5)]
    if not lite:
        last_of_scale[1:] = [names.index(f"parallel_blocks.0.x{s}") for s in (2, 3, 4)]
    for s, i in enumerate(last_of_scale):
        t = tokens[i].asnumpy()
        as_map = t[:, 1:].transpose(0, 2, 1).reshape(maps[s].shape)
        np.testing.assert_array_equal(as_map, maps[s].asnumpy())

    # indices: an int takes the last n, negatives count from the end, order is depth order
    picked = model.forward_intermediates(x, indices=(-1, 0), blocks=True, output_fmt="NLC", intermediates_only=True)
    np.testing.assert_array_equal(picked[0].asnumpy(), tokens[0].asnumpy())
    np.testing.assert_array_equal(picked[1].asnumpy(), tokens[-1].asnumpy())
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [tuple(m.shape) for m in last2] == [tuple(m.shape) for m in maps[2:]]

    # norm: each scale's final norm where the model has one; stop_early gives the same outputs
    normed = model.forward_intermediates(x, indices=(-1,), norm=True, output_fmt="NLC", intermediates_only=True)
    np.testing.assert_array_equal(normed[0].asnumpy(), model.norm4(tokens[last_of_scale[3]]).asnumpy())
    i = names.index("serial_blocks2.0")
    early_final, early = model.forward_intermediates(x, indices=(i,), blocks=True, stop_early=True, output_fmt="NLC")
    np.testing.assert_array_equal(early[0].asnumpy(), tokens[i].asnumpy())
    np.testing.assert_array_equal(early_final.asnumpy(), tokens[i].asnumpy())  # where it stopped
    scale1 = model.forward_intermediates(x, indices=(0,), stop_early=True, intermediates_only=True)
    np.testing.assert_array_equal(scale1[0].asnumpy(), maps[0].asnumpy())


def test_bad_arguments_are_clear_errors(pynative_mode):
    model = small("coat_lite_tiny")
    x = random_images((1, 3, H, W))
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=(4,))
    with pytest.raises(ValueError, match="last n"):
        model.forward_intermediates(x, indices=0)
