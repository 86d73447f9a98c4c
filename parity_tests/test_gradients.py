"""Gradients of a fixed cross-entropy loss w.r.t. every parameter and the input, coat_ms vs timm.

Tied parameters (cpe_i, crpe_i, mlp2 = mlp3 = mlp4) are one Parameter on both sides, so each holds
the sum over all its uses in both frameworks.  Slow: ``pytest parity_tests -m slow -k gradients``.
"""
import pytest

from parity_tests import metrics, studies


def assert_grads_pass(s):
    worst = max(s.comparisons, key=lambda c: c.rel)
    assert s.passed, f"{s.variant} {s.label}: over {metrics.GRAD_RTOL}: {s.failed_names[:5]}; worst {worst.name} {worst.rel:.3g}"


def test_tiny_coat_gradients_pynative(tiny_coat_pair):
    s = studies.grad_study("tiny_coat", 64, batch=2, mode="pynative", pair=tiny_coat_pair)
    names = [c.name for c in s.comparisons]
    # the tied tensors appear once, under their canonical name
    assert "crpe3.conv_list.2.weight" in names and "parallel_blocks.1.mlp2.fc1.weight" in names
    assert not any(".mlp3." in n or ".cpe." in n or "factoratt_crpe.crpe" in n for n in names)
    assert names[:2] == ["loss", "input"]
    assert_grads_pass(s)


def test_tiny_lite_gradients_graph(tiny_lite_pair):
    assert_grads_pass(studies.grad_study("tiny_lite", 64, batch=2, mode="graph", pair=tiny_lite_pair))


@pytest.mark.studies
@pytest.mark.parametrize("variant", ["coat_lite_tiny", "coat_lite_mini", "coat_lite_small", "coat_lite_medium",
                                     "coat_tiny", "coat_mini", "coat_small"])
@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_full_variant_gradients(variant, mode):
    assert_grads_pass(studies.grad_study(variant, 224, batch=2, mode=mode))
