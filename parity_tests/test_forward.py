"""Forward parity at every tap: coat_ms vs timm, same weights (via convert) and inputs.

Default run: coat_lite_tiny at 224 (PyNative, batch 2) and the small CoaT in GRAPH_MODE (batch 1) and
PyNative (batch 2).
Full matrix (slow): ``pytest parity_tests -m slow -k forward``.
"""
import pytest

from parity_tests import harness, metrics, studies
from parity_tests.report import ORDER


def assert_all_taps_pass(study):
    worst = max(study.comparisons, key=lambda c: c.rel)
    assert study.passed, (f"{study.variant} {study.label}: taps over {metrics.FORWARD_RTOL}: {study.failed_names}; "
                          f"worst {worst.name} rel {worst.rel:.3g}")
    assert len(study.comparisons) == len(harness.Pair.tap_names.fget(
        harness.Pair(study.variant, 0, 0, None, None, harness.arch_of(study.variant)[2])))


def test_coat_lite_tiny_224_pynative_batch2_via_convert():
    s = studies.forward_study("coat_lite_tiny", 224, batch=2, mode="pynative")
    assert "convert.torch_to_ms" in s.notes[0]
    assert_all_taps_pass(s)


@pytest.mark.parametrize("mode,batch", [("graph", 1), ("pynative", 2)])
def test_tiny_coat_taps_in_both_modes(tiny_coat_pair, mode, batch):
    s = studies.forward_study("tiny_coat", 64, batch=batch, mode=mode, pair=tiny_coat_pair)
    names = [c.name for c in s.comparisons]
    assert "parallel_blocks.1.x4" in names and "aggregate" in names and names[-1] == "logits"
    assert_all_taps_pass(s)


@pytest.mark.studies
def test_tiny_lite_graph_batch1(tiny_lite_pair):
    assert_all_taps_pass(studies.forward_study("tiny_lite", 64, batch=1, mode="graph", pair=tiny_lite_pair))


FULL = [(v, 224, b, m) for v in ORDER for b in (1, 2) for m in ("graph", "pynative")]
FULL += [(v, 384, 1, m) for v in ("coat_lite_tiny", "coat_tiny") for m in ("graph", "pynative")]


@pytest.mark.studies
@pytest.mark.parametrize("variant,img_size,batch,mode", FULL)
def test_full_matrix(variant, img_size, batch, mode):
    assert_all_taps_pass(studies.forward_study(variant, img_size, batch=batch, mode=mode))
