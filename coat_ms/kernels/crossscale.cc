// A CoaT parallel block's cross-scale exchange for one scale, for MindSpore's CPU backend (ops.Custom,
// func_type="aot"): the scale's residual, its own attention output and the bilinear resizes of the other
// two scales' attention outputs, summed in one pass on the token layout:
//
//   out = x + ((cur + resize(a)) + resize(b))     (B, 1 + H*W, C); the CLS rows add unresized
//
// Why: as stock operators each resize is a slice of the CLS row, two batched matmuls with broadcast
// factors and a concat, and the sum two more passes: at batch 1 coat_tiny's parallel blocks launched
// about 300 operators for this, and their launch cost was more than their arithmetic.
//
// The resize is separable, as tokens.py's: ra (H, Ha) and ca (W, Wa) are the bilinear matrices of the
// rows and columns (token_resize_factors); a row of them has at most two non-zeros. An output row i of
// scale a is first the row mix t[w] = sum_h ra[i][h] a[h][w] over the non-zero h in order, then each
// output token j = sum_w ca[j][w] t[w] over the non-zero w in order.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastmath.h"

namespace {

struct Taps {  // the non-zeros of each row of a (rows x cols) resize matrix
  std::vector<int64_t> start, index;
  std::vector<float> weight;
};

Taps NonZeros(const float *m, int64_t rows, int64_t cols) {
  Taps t;
  for (int64_t r = 0; r < rows; ++r) {
    t.start.push_back(static_cast<int64_t>(t.index.size()));
    for (int64_t c = 0; c < cols; ++c)
      if (m[r * cols + c] != 0.0f) {
        t.index.push_back(c);
        t.weight.push_back(m[r * cols + c]);
      }
  }
  t.start.push_back(static_cast<int64_t>(t.index.size()));
  return t;
}

struct Source {  // one resized scale: tokens (B, 1 + h*w, C) and its row and column taps
  const float *tokens;
  int64_t h, w;
  Taps rows, cols;
};

// dst[j][:] = sum over the column taps of output j of weight * (row mix of output row i)[w][:]
void ResizedRow(const Source &s, int64_t b, int64_t i, int64_t W, int64_t C, float *mix, float *dst) {
  const float *img = s.tokens + (b * (1 + s.h * s.w) + 1) * C;
  for (int64_t w = 0; w < s.w; ++w) {
    float *m = mix + w * C;
    std::memset(m, 0, sizeof(float) * C);
    for (int64_t k = s.rows.start[i]; k < s.rows.start[i + 1]; ++k) {
      const float f = s.rows.weight[k], *src = img + (s.rows.index[k] * s.w + w) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) m[c] += f * src[c];
    }
  }
  for (int64_t j = 0; j < W; ++j) {
    float *d = dst + j * C;
    std::memset(d, 0, sizeof(float) * C);
    for (int64_t k = s.cols.start[j]; k < s.cols.start[j + 1]; ++k) {
      const float f = s.cols.weight[k], *m = mix + s.cols.index[k] * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) d[c] += f * m[c];
    }
  }
}

}  // namespace

extern "C" {

// params = {x, cur (B, 1 + H*W, C), a (B, 1 + Ha*Wa, C), b (B, 1 + Hb*Wb, C), ra (H, Ha), ca (W, Wa),
//           rb (H, Hb), cb (W, Wb), out (B, 1 + H*W, C)}
int CrossScaleSum(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                  void *extra) {
  if (nparam != 9) return 1;
  for (int i = 0; i < 4; ++i)
    if (ndims[i] != 3) return 2;
  const int64_t B = shapes[0][0], N = shapes[0][1], C = shapes[0][2];
  const int64_t H = shapes[4][0], W = shapes[5][0];
  if (N != 1 + H * W || shapes[6][0] != H || shapes[7][0] != W) return 3;
  Source src[2];
  for (int s = 0; s < 2; ++s) {
    const float *r = static_cast<const float *>(params[4 + 2 * s]), *c = static_cast<const float *>(params[5 + 2 * s]);
    const int64_t h = shapes[4 + 2 * s][1], w = shapes[5 + 2 * s][1];
    if (shapes[2 + s][0] != B || shapes[2 + s][1] != 1 + h * w || shapes[2 + s][2] != C) return 4;
    src[s] = Source{static_cast<const float *>(params[2 + s]), h, w, NonZeros(r, H, h), NonZeros(c, W, w)};
  }
  const float *x = static_cast<const float *>(params[0]), *cur = static_cast<const float *>(params[1]);
  float *out = static_cast<float *>(params[8]);
  int64_t wmax = src[0].w > src[1].w ? src[0].w : src[1].w;
  coat_ms::ParallelFor(B * (H + 1), 8 * B * N * C, [&](int64_t p) {  // one output row (or the CLS row)
    const int64_t b = p / (H + 1), i = p % (H + 1) - 1;
    const int64_t first = i < 0 ? 0 : 1 + i * W, count = i < 0 ? 1 : W;
    const float *xr = x + (b * N + first) * C, *cr = cur + (b * N + first) * C;
    float *o = out + (b * N + first) * C;
    if (i < 0) {  // CLS rows ride along
      const float *a0 = src[0].tokens + b * (1 + src[0].h * src[0].w) * C;
      const float *b0 = src[1].tokens + b * (1 + src[1].h * src[1].w) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] = xr[c] + ((cr[c] + a0[c]) + b0[c]);
      return;
    }
    std::vector<float> mix(wmax * C), ra(count * C), rb(count * C);
    ResizedRow(src[0], b, i, W, C, mix.data(), ra.data());
    ResizedRow(src[1], b, i, W, C, mix.data(), rb.data());
#pragma omp simd
    for (int64_t k = 0; k < count * C; ++k) o[k] = xr[k] + ((cr[k] + ra[k]) + rb[k]);
  });
  return 0;
}

// params = {src (B, 1 + h*w, C), r (H, h), c (W, w), out (B, 1 + H*W, C)}: the resize alone, CLS row copied
// (with the matrices transposed: the input gradient of a resize, for CrossScaleSum's backward)
int ResizeTokens(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                 void *extra) {
  if (nparam != 4 || ndims[0] != 3) return 1;
  const int64_t B = shapes[0][0], C = shapes[0][2], H = shapes[1][0], h = shapes[1][1];
  const int64_t W = shapes[2][0], w = shapes[2][1];
  if (shapes[0][1] != 1 + h * w || shapes[3][1] != 1 + H * W) return 2;
  const Source s{static_cast<const float *>(params[0]), h, w, NonZeros(static_cast<const float *>(params[1]), H, h),
                 NonZeros(static_cast<const float *>(params[2]), W, w)};
  float *out = static_cast<float *>(params[3]);
  coat_ms::ParallelFor(B * (H + 1), 4 * B * H * W * C, [&](int64_t p) {
    const int64_t b = p / (H + 1), i = p % (H + 1) - 1;
    float *o = out + b * (1 + H * W) * C;
    if (i < 0) {
      std::memcpy(o, s.tokens + b * (1 + h * w) * C, sizeof(float) * C);
      return;
    }
    std::vector<float> mix(w * C);
    ResizedRow(s, b, i, W, C, mix.data(), o + (1 + i * W) * C);
  });
  return 0;
}

}  // extern "C"
