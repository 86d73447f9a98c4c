// LayerNorm, bias-add and residual adds over the last axis, forward and backward, for MindSpore's CPU backend
// (ops.Custom, func_type="aot").
//
// Why: in a CoaT training step on MindSpore 2.10's CPU backend, LayerNormGrad and BiasAddGrad took
// 16 % and 24 % of the step (benchmarks/profile_ops.py), far more than the memory traffic they need.
// Here each is one or two vectorised passes, rows split across OpenMP threads. Reductions over rows
// (parameter gradients) use a fixed number of row chunks summed in order, so results do not depend
// on the thread count.
//
// LayerNorm and bias-add see any tensor as (M, C): C = last dimension, M = product of the others.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastmath.h"

namespace {

void RowsCols(int ndim, const int64_t *shape, int64_t *m, int64_t *c) {
  *c = shape[ndim - 1];
  *m = 1;
  for (int i = 0; i < ndim - 1; ++i) *m *= shape[i];
}

// mean and 1/sqrt(var + eps) of one row (two passes: exact enough for fp32 parity with torch)
inline void RowStats(const float *x, int64_t c, float eps, float *mean, float *rstd) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < c; ++j) s += x[j];
  const float mu = s / static_cast<float>(c);
  float v = 0.0f;
#pragma omp simd reduction(+ : v)
  for (int64_t j = 0; j < c; ++j) v += (x[j] - mu) * (x[j] - mu);
  *mean = mu;
  *rstd = 1.0f / std::sqrt(v / static_cast<float>(c) + eps);
}

int64_t Chunks(int64_t m) { return m < 64 ? m : 64; }

// y row = (x row - mean) * rstd * gamma + beta
inline void NormRow(const float *xr, const float *g, const float *b, int64_t c, float eps, float *yr) {
  float mu, rs;
  RowStats(xr, c, eps, &mu, &rs);
#pragma omp simd
  for (int64_t j = 0; j < c; ++j) yr[j] = (xr[j] - mu) * rs * g[j] + b[j];
}

// params = {x (M, C), gamma (C), beta (C), eps (1), y (M, C + ones)}; ones: a column of 1 after the C
// normalised channels of each row
int NormForward(void **params, int *ndims, int64_t **shapes, int64_t ones) {
  const float *x = static_cast<const float *>(params[0]);
  const float *g = static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  int64_t m, c;
  RowsCols(ndims[0], shapes[0], &m, &c);
  if (shapes[1][0] != c || shapes[4][ndims[4] - 1] != c + ones) return 2;
  coat_ms::ParallelFor(m, m * c, [&](int64_t i) {
    float *yr = y + i * (c + ones);
    NormRow(x + i * c, g, b, c, eps, yr);
    if (ones) yr[c] = 1.0f;
  });
  return 0;
}

}  // namespace

extern "C" {

// params = {x (M, C), gamma (C), beta (C), eps (1), y (M, C)}
int LayerNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  return nparam != 5 ? 1 : NormForward(params, ndims, shapes, 0);
}

// params = {x (M, C), gamma (C), beta (C), eps (1), y (M, C + 1)}: the LayerNorm with a column of ones
// appended, so that the Linear it feeds takes its bias inside the matmul ([W | b]) instead of in a pass
// of its own over the (much wider) output.
int LayerNormOnesForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                         void *stream, void *extra) {
  return nparam != 5 ? 1 : NormForward(params, ndims, shapes, 1);
}

// params = {x (M, C), gamma (C), dy (M, C), eps (1), dx (M, C)}
// dx = rstd * (dy*gamma - mean(dy*gamma) - xhat * mean(dy*gamma*xhat))
int LayerNormBackwardInput(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (nparam != 5) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *g = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  int64_t m, c;
  RowsCols(ndims[0], shapes[0], &m, &c);
  const float inv_c = 1.0f / static_cast<float>(c);
  coat_ms::ParallelFor(m, 2 * m * c, [&](int64_t i) {
    const float *xr = x + i * c, *dr = dy + i * c;
    float *out = dx + i * c;
    float mu, rs;
    RowStats(xr, c, eps, &mu, &rs);
    float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < c; ++j) {
      const float gy = dr[j] * g[j];
      s1 += gy;
      s2 += gy * (xr[j] - mu) * rs;
    }
    s1 *= inv_c;
    s2 *= inv_c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) out[j] = rs * (dr[j] * g[j] - s1 - (xr[j] - mu) * rs * s2);
  });
  return 0;
}

// params = {x (M, C), dy (M, C), eps (1), dgb (2, C)}: row 0 = dgamma = sum(dy * xhat), row 1 = dbeta = sum(dy)
int LayerNormBackwardParams(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  if (nparam != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  const float eps = *static_cast<const float *>(params[2]);
  float *dgb = static_cast<float *>(params[3]);
  int64_t m, c;
  RowsCols(ndims[0], shapes[0], &m, &c);
  const int64_t chunks = Chunks(m);
  std::vector<float> acc(chunks * 2 * c, 0.0f);
  coat_ms::ParallelFor(chunks, 2 * m * c, [&](int64_t ch) {
    float *dg = acc.data() + ch * 2 * c, *db = dg + c;
    for (int64_t i = ch * m / chunks; i < (ch + 1) * m / chunks; ++i) {
      const float *xr = x + i * c, *dr = dy + i * c;
      float mu, rs;
      RowStats(xr, c, eps, &mu, &rs);
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) {
        dg[j] += dr[j] * (xr[j] - mu) * rs;
        db[j] += dr[j];
      }
    }
  });
  std::memset(dgb, 0, sizeof(float) * 2 * c);
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t j = 0; j < 2 * c; ++j) dgb[j] += acc[ch * 2 * c + j];
  return 0;
}

// params = {x (M, C), b (C), y (M, C)}: y = x + b
int BiasAddForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                   void *extra) {
  if (nparam != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  int64_t m, c;
  RowsCols(ndims[0], shapes[0], &m, &c);
  if (shapes[1][0] != c) return 2;
  coat_ms::ParallelFor(m, m * c / 2, [&](int64_t i) {
    const float *xr = x + i * c;
    float *yr = y + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) yr[j] = xr[j] + b[j];
  });
  return 0;
}

// params = {x (M, C), y (M, C), b (C), out (M, C)}: out = x + (y + b), a residual add taking the branch's
// last Linear before its bias (one pass instead of a bias add and an add; same floats as the two).
int ResidualBiasAdd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  if (nparam != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  float *out = static_cast<float *>(params[3]);
  int64_t m, c;
  RowsCols(ndims[0], shapes[0], &m, &c);
  if (shapes[2][0] != c) return 2;
  coat_ms::ParallelFor(m, m * c / 2, [&](int64_t i) {
    const float *xr = x + i * c, *yr = y + i * c;
    float *o = out + i * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) o[j] = xr[j] + (yr[j] + b[j]);
  });
  return 0;
}

// params = {dy (M, C), db (C)}: db = column sums of dy
int ColumnSum(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
              void *extra) {
  if (nparam != 2) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  float *db = static_cast<float *>(params[1]);
  int64_t m, c;
  RowsCols(ndims[0], shapes[0], &m, &c);
  const int64_t chunks = Chunks(m);
  std::vector<float> acc(chunks * c, 0.0f);
  coat_ms::ParallelFor(chunks, m * c / 2, [&](int64_t ch) {
    float *a = acc.data() + ch * c;
    for (int64_t i = ch * m / chunks; i < (ch + 1) * m / chunks; ++i) {
      const float *dr = dy + i * c;
#pragma omp simd
      for (int64_t j = 0; j < c; ++j) a[j] += dr[j];
    }
  });
  std::memset(db, 0, sizeof(float) * c);
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t j = 0; j < c; ++j) db[j] += acc[ch * c + j];
  return 0;
}

}  // extern "C"
