// Exact (erf) GELU forward and backward for MindSpore's CPU backend (ops.Custom, func_type="aot").
//
// Why: MindSpore 2.10 lowers exact GELU on CPU to Div, Erf, Add and Mul kernels, four passes over
// the largest activation of the network (B x N x 4C); one fused loop reads and writes it once.
//   forward  y  = x Phi(x),            Phi(x) = 0.5 (1 + erf(x / sqrt 2)) = 0.5 erfc(-x / sqrt 2)
//   backward dx = dy (Phi(x) + x exp(-x^2 / 2) / sqrt(2 pi))
// libm's erff/expf do not vectorise without -ffast-math, so both are written out here in
// branch-free form: erfc by its Chebyshev fit (fractional error < 1.2e-7, Numerical Recipes 6.2)
// and exp by range reduction + a degree-7 polynomial (relative error < 1e-7). Phi is taken from
// erfc on the side where it is small, so it keeps its relative accuracy in both tails.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastmath.h"

namespace {

using coat_ms::ExpNeg;

inline float Erfc(float z) {  // z >= 0
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return t * ExpNeg(p - z * z);
}

inline float Phi(float x) {  // standard normal CDF
  const float half_tail = 0.5f * Erfc(std::fabs(x) * 0.70710678118654752f);
  return x >= 0.0f ? 1.0f - half_tail : half_tail;
}

int64_t NumElements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr int64_t kBlock = 8192;  // elements per parallel chunk; the inner loop is SIMD
}  // namespace

extern "C" {

// params = {x, y}
int GeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                void *extra) {
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t n = NumElements(ndims[0], shapes[0]);
  coat_ms::ParallelFor((n + kBlock - 1) / kBlock, n, [&](int64_t block) {
    const int64_t b = block * kBlock;
    const int m = static_cast<int>(b + kBlock < n ? kBlock : n - b);
    const float *xb = x + b;
    float *yb = y + b;
#pragma omp simd
    for (int i = 0; i < m; ++i) yb[i] = xb[i] * Phi(xb[i]);
  });
  return 0;
}

// params = {x, dy, dx}
int GeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                 void *extra) {
  if (nparam != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t n = NumElements(ndims[0], shapes[0]);
  coat_ms::ParallelFor((n + kBlock - 1) / kBlock, 2 * n, [&](int64_t block) {
    const int64_t b = block * kBlock;
    const int m = static_cast<int>(b + kBlock < n ? kBlock : n - b);
    const float *xb = x + b, *gb = dy + b;
    float *db = dx + b;
#pragma omp simd
    for (int i = 0; i < m; ++i) {
      const float v = xb[i];
      db[i] = gb[i] * (Phi(v) + v * kInvSqrt2Pi * ExpNeg(-0.5f * v * v));
    }
  });
  return 0;
}

// Bias + GELU (the MLP's fc1 bias fused into its activation): y = gelu(x + b), x (M, C), b (C).
// params = {x, b, y}
int GeluBiasForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t c = shapes[0][ndims[0] - 1], m = NumElements(ndims[0], shapes[0]) / c;
  if (shapes[1][0] != c) return 2;
  coat_ms::ParallelFor(m, m * c, [&](int64_t i) {
    const float *xr = x + i * c;
    float *yr = y + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float v = xr[j] + bias[j];
      yr[j] = v * Phi(v);
    }
  });
  return 0;
}

// params = {x, b, dy, dx}: dx = dy * gelu'(x + b)  (the bias gradient is the column sum of dx)
int GeluBiasBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  if (nparam != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t c = shapes[0][ndims[0] - 1], m = NumElements(ndims[0], shapes[0]) / c;
  coat_ms::ParallelFor(m, 2 * m * c, [&](int64_t i) {
    const float *xr = x + i * c, *gr = dy + i * c;
    float *out = dx + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const float v = xr[j] + bias[j];
      out[j] = gr[j] * (Phi(v) + v * kInvSqrt2Pi * ExpNeg(-0.5f * v * v));
    }
  });
  return 0;
}

}  // extern "C"
