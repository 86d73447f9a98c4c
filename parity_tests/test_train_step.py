"""One AdamW step from the same weights and batch: loss and every updated weight, coat_ms vs torch.

torch.optim.AdamW == mindspore.experimental.optim.AdamW (same definition); nn.AdamWeightDecay has no
bias correction and matches only with lr/eps/wd rescaled for the step (harness.ms_optimizer).
Slow: ``pytest parity_tests -m slow -k train_step``.
"""
import numpy as np
import pytest

from parity_tests import harness, studies


def assert_step_pass(s):
    assert s.comparisons[0].name == "loss" and s.comparisons[0].within_tol, s.comparisons[0]
    assert not s.extra["unexplained"], f"unexplained weight differences in {s.extra['unexplained'][:5]}"
    assert s.passed


# nn.AdamWeightDecay is on no user path (train.py builds mindcv's AdamW: parity_tests/test_recipe_step.py): a study
@pytest.mark.parametrize("kind", ["adamw", pytest.param("adamweightdecay", marks=pytest.mark.studies)])
def test_tiny_lite_adamw_step(kind):
    assert_step_pass(studies.step_study("tiny_lite", 64, batch=2, mode="pynative", kind=kind))


@pytest.mark.studies
def test_tiny_coat_adamw_step_graph():
    assert_step_pass(studies.step_study("tiny_coat", 64, batch=2, mode="graph", kind="adamw"))


def test_bound_explains_only_what_the_gradient_difference_allows():
    # A weight that moved by lr (a full Adam step) where the gradients agree is not explained.
    cfg = harness.ADAMW
    w0 = np.array([0.5, 0.5])
    g = np.array([1e-3, 1e-3])
    w_pt = w0 - cfg["lr"] * np.sign(g)
    w_ms = w_pt.copy()
    w_ms[1] += cfg["lr"]
    rows = harness.step_excess(w_pt, w_ms, w0, g, g.copy())
    assert [r["index"] for r in rows] == [(1,)] and not rows[0]["explained"]
    # The same difference where the gradient is ~0 and differs by 1e-8 is explained (slope lr/eps).
    g_ms = np.array([1e-3, 1e-8])
    rows = harness.step_excess(w_pt, w_ms, w0, np.array([1e-3, 0.0]), g_ms)
    assert rows[0]["explained"] and rows[0]["bound"] >= cfg["lr"]



def test_bound_covers_the_exact_update_difference_across_zero():
    # The bound must cover |f(g_pt) - f(g_ms)| for Adam's step-1 update f(g) = lr * g / (|g| + eps), evaluated
    # in float64, also when the two gradients straddle 0 (k's bias: exact gradient 0, measured +-4e-10).
    # Using min(|g_pt|, |g_ms|) there (the interval's ends, not its point nearest 0) under-estimated it:
    # the four full-variant step studies that failed before.
    cfg = harness.ADAMW
    rng = np.random.RandomState(0)
    g_pt = rng.standard_normal(2000) * 10.0 ** rng.uniform(-11, -6, 2000)
    g_ms = g_pt + rng.standard_normal(2000) * 10.0 ** rng.uniform(-11, -8, 2000)
    g_pt[:3], g_ms[:3] = [3.71e-10, 4.95e-10, -4.22e-10], [-3.42e-10, -4.22e-10, 5.38e-10]  # measured pairs
    f = lambda g: cfg["lr"] * g / (np.abs(g) + cfg["eps"])  # noqa: E731
    w0 = np.full(g_pt.shape, 0.02)
    w_pt, w_ms = w0 - f(g_pt), w0 - f(g_ms)
    rows = harness.step_excess(w_pt, w_ms, w0, g_pt, g_ms, tol=0.0)
    assert len(rows) > 1000 and any(r["g_pt"] * r["g_ms"] < 0 for r in rows)
    for r in rows:
        assert r["diff"] <= r["bound"] * (1 + 1e-9), r
    crossing = [r for r in rows if r["g_pt"] * r["g_ms"] < 0]
    assert all(r["bound"] == pytest.approx(cfg["lr"] * abs(r["g_ms"] - r["g_pt"]) / cfg["eps"]) for r in crossing)

@pytest.mark.studies
@pytest.mark.parametrize("variant", ["coat_lite_tiny", "coat_lite_mini", "coat_lite_small", "coat_lite_medium",
                                     "coat_tiny", "coat_mini", "coat_small"])
def test_full_variant_adamw_step(variant):
    assert_step_pass(studies.step_study(variant, 224, batch=2, mode="pynative"))
