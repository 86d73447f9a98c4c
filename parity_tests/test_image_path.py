"""image -> logits: real photos through coat_ms's evaluation path and through timm's, same converted weights.

Default run: coat_lite_tiny (tensors and logits of 24 photos).  Every variant, with the exported MINDIR
and the predict CLI: ``pytest parity_tests -m slow -k image``.
"""
import pytest

from parity_tests import image_path
from parity_tests.report import ORDER


def assert_passes(study):
    worst = {kind: max((c for c in study.comparisons if c.name.startswith(kind)), key=lambda c: c.rel)
             for kind in ("input", "logits")}
    assert study.passed, (f"{study.variant} {study.label}: over the bound: {study.failed_names[:6]}; "
                          f"worst input {worst['input'].rel:.3g}, worst logits {worst['logits'].rel:.3g}")


@pytest.mark.studies
def test_coat_lite_tiny_photos_match_timm():
    study = image_path.image_study("coat_lite_tiny")
    assert "timm style" in study.notes[0]
    assert len([c for c in study.comparisons if c.name.startswith("input")]) == 24
    assert_passes(study)


def test_the_study_can_fail():
    """mindcv-style preprocessing of the same photos exceeds the input bound (so the rows above measure)."""
    import numpy as np
    from PIL import Image

    from coat_ms.data.transforms import eval_transforms, preprocessing
    from coat_ms.origin import timm_preprocessing
    from parity_tests.photos import write_photos
    import tempfile

    path = write_photos(tempfile.mkdtemp(), classes=0, names=["china_portrait"])[0]
    image = np.asarray(Image.open(path).convert("RGB"))
    out = {}
    for style in ("timm", "mindcv"):
        x = image
        for op in eval_transforms(preprocessing(dict(timm_preprocessing("coat_lite_tiny"), style=style))):
            x = op(x)
        out[style] = x
    assert np.abs(out["timm"] - out["mindcv"]).max() > 100 * image_path.INPUT_ATOL


@pytest.mark.studies
@pytest.mark.parametrize("variant", ORDER)
def test_every_variant_through_mindir_and_predict(variant):
    assert_passes(image_path.image_study(variant, deploy=True))
