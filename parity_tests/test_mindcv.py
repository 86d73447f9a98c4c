"""mindcv 0.3.0's CoaT vs coat_ms in its mindcv mode (align_corners=True, cpe_residual=False), same weights.

mindcv differs from the official model in its parallel-block interpolation and in its serial block
(x + attn(norm1(cpe(x))), official: x = cpe(x) first); coat_ms's two switches reproduce both, tap by tap.
Slow (real variants at 224): ``pytest parity_tests -m slow -k mindcv``.
"""
import pytest

from parity_tests import studies


def check(variant, img_size):
    (study,) = studies.mindcv_study(variant, img_size, batch=2)
    assert study.passed, study.failed_names


def test_tiny_coat_mindcv():
    check("tiny_coat", 64)


@pytest.mark.studies
@pytest.mark.parametrize("variant", ["coat_lite_tiny", "coat_tiny"])
def test_mindcv_real_variants(variant):
    check(variant, 224)
