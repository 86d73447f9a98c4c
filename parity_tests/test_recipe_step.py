"""One training step of the shipped recipes against the same step written with torch (parity_tests.recipe_step).

Default run: the two recipes on the small test architectures in PyNative.  Slow: the real variants at 224,
the compiled (GRAPH_MODE) cell train.py runs, gradient clipping, and a reference whose clipping differs.
"""
import pytest

from parity_tests import metrics, recipe_step


def assert_recipe_step_pass(s):
    failed = [c for c in s.comparisons if not c.passed]
    assert not failed, [(c.name, c.rel) for c in failed[:5]]
    assert s.extra["ok"], s.notes  # same weight-decay groups on both sides
    assert not s.extra["skipped"]
    # the step moved every tensor far beyond the bound, so the comparison can see a wrong update
    assert s.extra["moved"] > 10 * metrics.STEP_RTOL, s.extra["moved"]
    assert s.passed


def test_tiny_lite_adamw_recipe_step():
    s = recipe_step.recipe_step_study("tiny_lite", img_size=64)
    assert_recipe_step_pass(s)
    assert s.extra["mix"] == "mixup" and not [c for c in s.comparisons if c.name.startswith("ema ")]


def test_tiny_coat_lion_ema_dynamic_scale_recipe_step():
    s = recipe_step.recipe_step_study("tiny_coat", img_size=64)
    assert_recipe_step_pass(s)
    assert s.extra["mix"] == "cutmix"
    scale = {c.name: c for c in s.comparisons}["loss scale after the step"]
    assert scale.ref_max == 8192.0 and scale.max_abs == 0.0  # 4096 grew on both sides (window completed)
    assert len([c for c in s.comparisons if c.name.startswith("ema ")]) == \
        len([c for c in s.comparisons if c.name.startswith("w ")])


def test_a_reference_with_other_decay_groups_fails():
    # torch decays every tensor (filter off) while the recipe spares 1-D ones and cls tokens: the study must
    # see it, in the groups and in the weights of exactly the spared tensors.
    s = recipe_step.recipe_step_study("tiny_lite", img_size=64, reference_overrides=dict(weight_decay_filter="disable"))
    assert not s.passed and not s.extra["ok"] and "DIFFER" in s.notes[-1]
    weights = [c for c in s.comparisons if c.name.startswith("w ")]
    spared = {c.name for c in weights if len(c.shape) <= 1 or c.name.startswith("w cls_token")}
    failed = {c.name for c in weights if not c.passed}
    assert failed <= spared and len(failed) > len(spared) // 2, (sorted(failed), sorted(spared))


@pytest.mark.studies
@pytest.mark.parametrize("variant", ["coat_lite_tiny", "coat_tiny"])
def test_full_variant_recipe_step(variant):
    assert_recipe_step_pass(recipe_step.recipe_step_study(variant, img_size=224))


@pytest.mark.studies
def test_tiny_coat_recipe_step_compiled():
    # train.py runs the cell in GRAPH_MODE (the recipes' mode: 0)
    assert_recipe_step_pass(recipe_step.recipe_step_study("tiny_coat", img_size=64, mode="graph"))


@pytest.mark.studies
def test_clipping_is_compared_and_can_fail():
    s = recipe_step.recipe_step_study("tiny_lite", img_size=64, clip_grad=True, clip_value=0.5)
    assert_recipe_step_pass(s)
    assert s.extra["clip_coef"] < 0.5  # clipping was active
    other = recipe_step.recipe_step_study("tiny_lite", img_size=64, clip_grad=True, clip_value=0.5,
                                          reference_overrides=dict(clip_grad=False))
    assert not other.passed
