"""Mixed precision against float32 for every variant, timm's weights (via convert) and real photos: logits at
mindcv's O1/O2/O3 and MindSpore's O2 (O2 cosine >= 0.999, top-1 unchanged), timm's float16 autocast as the
reference figure, O2 gradients with a loss scale (cosine per tensor >= 0.99, or timm's own float16 autocast
figure for the tensor where that is lower).  Compiling four float16 graphs
of each full-size variant takes minutes, so the matrix is under -m slow; tests/test_amp.py compiles and trains
the float16 graph in the default run.
"""
import pytest

from parity_tests import amp
from parity_tests.report import ORDER


@pytest.mark.studies
@pytest.mark.parametrize("variant", ORDER)
def test_amp_keeps_the_float32_answer(variant):
    study = amp.amp_study_in_child(variant)
    assert study.passed, "\n".join(amp.markdown_lines(study))
    o2 = [r for r in study.rows if r.bar is not None]
    assert len(o2) == 2 and all(r.top1_agree == 1.0 for r in o2), "\n".join(amp.markdown_lines(study))
    assert len(study.grad_cosines) > 100
