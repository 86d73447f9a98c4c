"""The comparison metrics on hand-made arrays (their expected values are computed by hand)."""
import numpy as np

from parity_tests import metrics


def test_identical_arrays_have_zero_error_and_unit_cosine():
    a = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
    c = metrics.compare("t", a, a.copy(), 2e-5)
    assert (c.max_abs, c.rel, c.passed) == (0.0, 0.0, True)
    assert abs(c.cosine - 1.0) < 1e-12


def test_relative_error_is_max_abs_over_max_reference():
    ref = np.array([1.0, -4.0, 2.0])
    got = np.array([1.0, -4.0, 2.001])
    c = metrics.compare("t", ref, got, 2e-5)
    assert abs(c.max_abs - 1e-3) < 1e-12 and abs(c.rel - 2.5e-4) < 1e-12
    assert not c.passed


def test_non_finite_output_fails_and_zero_reference_uses_abs_error():
    assert not metrics.compare("t", np.ones(3), np.array([1.0, np.nan, 1.0]), 1.0).passed
    c = metrics.compare("z", np.zeros(3), np.array([0.0, 1e-6, 0.0]), 2e-5)
    assert c.rel == 1e-6 and c.passed


def test_explained_flag_passes_a_tensor_over_tolerance_but_keeps_it_visible():
    c = metrics.compare("t", np.ones(2), np.array([1.0, 1.1]), 1e-5)
    assert not c.passed and not c.within_tol
    c.explained = True
    assert c.passed and not c.within_tol and c.tol == 1e-5
