"""Exact-GELU replacement that MindSpore's ONNX exporter can write (it has no Erf operator).

GELU(x) = x * Phi(x), Phi the standard normal CDF.  Writing e = Phi(-|x|) = erfc(|x| / sqrt 2) / 2:

    x >= 0:  x * (1 - e) = x - |x| e          x < 0:  x * e = -|x| e
    so  GELU(x) = relu(x) - |x| * e

which needs no select and keeps full relative accuracy in the negative tail (no 1 - e cancellation).
erfc(z), z >= 0, uses the Chebyshev-fitted formula of Numerical Recipes (2nd ed., section 6.2,
fractional error < 1.2e-7 everywhere):

    t = 1 / (1 + z/2);  erfc(z) = t * exp(-z^2 + P(t)),  P a degree-9 polynomial

Only Abs, ReLU, Mul, Add, Div and Exp are used; all export to ONNX.  Measured against
``ops.gelu(approximate='none')`` in float32 the difference stays below 1e-6 (see tests/test_export.py).
"""
import math

from mindspore import nn, ops

# Coefficients of P(t), lowest degree first (Numerical Recipes erfcc).
_ERFC_POLY = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
              0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class OnnxGELU(nn.Cell):
    """Exact (erf) GELU written with ONNX-exportable operators: the MLP activation of the onnx backend."""

    def construct(self, x):
        a = ops.abs(x)
        z = a * _INV_SQRT2
        t = ops.div(ops.ones_like(z), 1.0 + 0.5 * z)  # a Div: the exporter has no Reciprocal
        poly = _ERFC_POLY[9]
        for coeff in _ERFC_POLY[8::-1]:  # Horner, unrolled at compile time
            poly = poly * t + coeff
        half_erfc = 0.5 * t * ops.exp(poly - z * z)  # = Phi(-|x|)
        return ops.relu(x) - a * half_erfc

