// Depthwise 2-D convolution (stride 1, zero 'same' padding) on channels-last token maps, for
// MindSpore's CPU backend through ops.Custom(func_type="aot").
//
// Why: MindSpore 2.10 hands oneDNN plain NCHW tensors and oneDNN falls back to a reference kernel
// (~400 ms for a 3x3 conv on 8x152x56x56). CoaT keeps its features as tokens (B, T, C), which is
// already NHWC, so a direct loop with the channel axis innermost vectorises and needs no transposes.
//
// Tensors (all float32 except meta):
//   x    (B, T, Cx)   tokens; image token (y, x) is row off + y*W + x; channels [c0, c0 + C) are used
//   w    (K*K, C)     taps, row-major (ky, kx), centred in a K x K window (smaller kernels zero-padded)
//   b    (C)          bias
//   meta (7 + C) i32  [H, W, off, c0, C, K, mode, k_0 .. k_{C-1}]  (k_c: the true kernel size of channel c)
// mode 0: y = conv(x) + b, rows before off are zero (crpe: zero CLS row)
// mode 1: y = x + conv(x) + b, rows before off copied from x (cpe: CLS passes through)
// Output y is (B, T, C).
//
// Channels with the same kernel size form runs; each run is processed with its own tap range so
// the fused 3/5/7 crpe convolution does no work on the zero padding.
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

struct Meta {
  int64_t H, W, off, c0, C, K, mode;
  std::vector<int64_t> run_start, run_end, run_k;  // channel runs of equal kernel size
};

Meta ReadMeta(const int32_t *m) {
  Meta s{m[0], m[1], m[2], m[3], m[4], m[5], m[6], {}, {}, {}};
  for (int64_t c = 0; c < s.C; ++c) {
    int64_t k = m[7 + c];
    if (s.run_k.empty() || s.run_k.back() != k) {
      s.run_start.push_back(c);
      s.run_end.push_back(c + 1);
      s.run_k.push_back(k);
    } else {
      s.run_end.back() = c + 1;
    }
  }
  return s;
}

// out_row[c] += sum over taps of in(y + dy, x + dx)[c] * w[tap][c]; flip = use w[-dy, -dx] (input grad).
void ConvRow(const float *in, int64_t in_stride_tok, const float *w, const Meta &s, int64_t y, float *out_row_base,
             int64_t out_stride_tok, bool flip) {
  const int64_t P = s.K / 2;
  for (size_t r = 0; r < s.run_k.size(); ++r) {
    const int64_t cs = s.run_start[r], ce = s.run_end[r], p = s.run_k[r] / 2;
    for (int64_t dy = -p; dy <= p; ++dy) {
      const int64_t yy = y + dy;
      if (yy < 0 || yy >= s.H) continue;
      for (int64_t dx = -p; dx <= p; ++dx) {
        const int64_t ty = flip ? -dy : dy, tx = flip ? -dx : dx;
        const float *wt = w + ((ty + P) * s.K + (tx + P)) * s.C;
        const int64_t x_lo = dx < 0 ? -dx : 0, x_hi = dx > 0 ? s.W - dx : s.W;
        for (int64_t x = x_lo; x < x_hi; ++x) {
          const float *src = in + (yy * s.W + x + dx) * in_stride_tok;
          float *dst = out_row_base + x * out_stride_tok;
#pragma omp simd
          for (int64_t c = cs; c < ce; ++c) dst[c] += src[c] * wt[c];
        }
      }
    }
  }
}

}  // namespace

extern "C" {

// Forward: params = {x, w, b, meta, y}.
int DwConvForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                  void *extra) {
  if (nparam != 5) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  const Meta s = ReadMeta(static_cast<const int32_t *>(params[3]));
  float *y = static_cast<float *>(params[4]);
  const int64_t B = shapes[0][0], T = shapes[0][1], Cx = shapes[0][2];
  if (s.off + s.H * s.W != T || s.c0 + s.C > Cx) return 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n) {
    for (int64_t row = 0; row < s.H; ++row) {
      const float *xin = x + (n * T + s.off) * Cx + s.c0;
      float *yout = y + (n * T + s.off + row * s.W) * s.C;
      for (int64_t i = 0; i < s.W; ++i) {
        float *dst = yout + i * s.C;
        const float *src = xin + (row * s.W + i) * Cx;
        for (int64_t c = 0; c < s.C; ++c) dst[c] = s.mode == 1 ? src[c] + b[c] : b[c];
      }
      ConvRow(xin, Cx, w, s, row, yout, s.C, false);
      if (row == 0) {  // leading (CLS) rows
        for (int64_t t = 0; t < s.off; ++t) {
          float *dst = y + (n * T + t) * s.C;
          const float *src = x + (n * T + t) * Cx + s.c0;
          for (int64_t c = 0; c < s.C; ++c) dst[c] = s.mode == 1 ? src[c] : 0.0f;
        }
      }
    }
  }
  return 0;
}

// Input gradient: params = {dy (B, T, C), w, meta, x (shape only), dx (B, T, Cx)};
// channels outside [c0, c0 + C) get 0.
int DwConvBackwardInput(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                        void *stream, void *extra) {
  if (nparam != 5) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const Meta s = ReadMeta(static_cast<const int32_t *>(params[2]));
  float *dx = static_cast<float *>(params[4]);
  const int64_t B = shapes[4][0], T = shapes[4][1], Cx = shapes[4][2];
  if (s.off + s.H * s.W != T || s.c0 + s.C > Cx || shapes[0][2] != s.C) return 2;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < B; ++n) {
    for (int64_t row = 0; row < s.H; ++row) {
      const float *g = dy + (n * T + s.off) * s.C;
      float *out = dx + (n * T + s.off + row * s.W) * Cx;
      for (int64_t i = 0; i < s.W; ++i) {
        float *dst = out + i * Cx;
        const float *src = g + (row * s.W + i) * s.C;
        std::memset(dst, 0, sizeof(float) * Cx);
        if (s.mode == 1)
          for (int64_t c = 0; c < s.C; ++c) dst[s.c0 + c] = src[c];
      }
      ConvRow(g, s.C, w, s, row, out + s.c0, Cx, true);
      if (row == 0) {
        for (int64_t t = 0; t < s.off; ++t) {
          float *dst = dx + (n * T + t) * Cx;
          std::memset(dst, 0, sizeof(float) * Cx);
          if (s.mode == 1)
            for (int64_t c = 0; c < s.C; ++c) dst[s.c0 + c] = dy[(n * T + t) * s.C + c];
        }
      }
    }
  }
  return 0;
}

// Weight and bias gradient: params = {x (B, T, Cx), dy (B, T, C), w (shape only), meta, dwb (K*K + 1, C)};
// rows 0..K*K-1 are dW (taps outside a channel's own kernel stay 0), the last row is db.
int DwConvBackwardWeight(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                         void *stream, void *extra) {
  if (nparam != 5) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  const Meta s = ReadMeta(static_cast<const int32_t *>(params[3]));
  float *dwb = static_cast<float *>(params[4]);
  const int64_t B = shapes[0][0], T = shapes[0][1], Cx = shapes[0][2];
  if (s.off + s.H * s.W != T || s.c0 + s.C > Cx) return 2;
  const int64_t KK = s.K * s.K, P = s.K / 2, rows = B * s.H;
  // One accumulator block per image row chunk; summed at the end (deterministic order).
  const int64_t chunks = rows < 64 ? rows : 64;
  std::vector<float> acc(chunks * (KK + 1) * s.C, 0.0f);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    float *a = acc.data() + ch * (KK + 1) * s.C;
    for (int64_t r = ch * rows / chunks; r < (ch + 1) * rows / chunks; ++r) {
      const int64_t n = r / s.H, y = r % s.H;
      const float *xin = x + (n * T + s.off) * Cx + s.c0;
      const float *g = dy + (n * T + s.off + y * s.W) * s.C;
      for (int64_t i = 0; i < s.W; ++i)
        for (int64_t c = 0; c < s.C; ++c) a[KK * s.C + c] += g[i * s.C + c];
      for (size_t q = 0; q < s.run_k.size(); ++q) {
        const int64_t cs = s.run_start[q], ce = s.run_end[q], p = s.run_k[q] / 2;
        for (int64_t dy_ = -p; dy_ <= p; ++dy_) {
          const int64_t yy = y + dy_;
          if (yy < 0 || yy >= s.H) continue;
          for (int64_t dx_ = -p; dx_ <= p; ++dx_) {
            float *at = a + ((dy_ + P) * s.K + (dx_ + P)) * s.C;
            const int64_t x_lo = dx_ < 0 ? -dx_ : 0, x_hi = dx_ > 0 ? s.W - dx_ : s.W;
            for (int64_t i = x_lo; i < x_hi; ++i) {
              const float *src = xin + (yy * s.W + i + dx_) * Cx;
              const float *gi = g + i * s.C;
#pragma omp simd
              for (int64_t c = cs; c < ce; ++c) at[c] += src[c] * gi[c];
            }
          }
        }
      }
    }
  }
  std::memset(dwb, 0, sizeof(float) * (KK + 1) * s.C);
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const float *a = acc.data() + ch * (KK + 1) * s.C;
    for (int64_t j = 0; j < (KK + 1) * s.C; ++j) dwb[j] += a[j];
  }
  return 0;
}

}  // extern "C"
