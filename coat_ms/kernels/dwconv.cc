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

#include "fastmath.h"

namespace {

struct Meta {
  int64_t H, W, off, c0, C, K, mode;
  std::vector<int64_t> run_start, run_end, run_k;  // channel runs of equal kernel size
  std::vector<int64_t> k;                          // kernel size per channel
};

Meta ReadMeta(const int32_t *m) {
  Meta s{m[0], m[1], m[2], m[3], m[4], m[5], m[6], {}, {}, {}, {}};
  for (int64_t c = 0; c < s.C; ++c) {
    int64_t k = m[7 + c];
    s.k.push_back(k);
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


// ---- Forward, register-blocked (the hot path) ----
// The channels are cut into blocks of L lanes (16, then 8, 4, 1 for the tail), each held as a GCC
// vector (AVX-512, AVX2 or NEON registers, whatever -march gives). For one output row and block, XB
// outputs along x accumulate in registers; for each kernel row dy every input token of the window
// is loaded once and multiplied into all outputs it touches, with the k taps of that row kept in
// registers. A block runs the largest kernel of its channels: the taps table is zero outside each
// channel's own kernel (see pack_weights), so the extra products add exact zeros. Per output the
// sum runs over dy, then dx, from the bias (and x, mode 1), in the order of ConvRow: the results are
// the same floats.
using coat_ms::Lanes;

constexpr int64_t kXB = 8;  // outputs along x per register tile

struct RowArgs {
  const float *in;   // image token (0, 0) at channel 0 of this block
  int64_t in_stride;  // floats between tokens of `in`
  const float *taps;  // (K*K, C) at this block's first channel
  int64_t C, K, H, W;
  const float *bias;  // at this block's first channel
  bool residual;      // mode 1: add the input token itself
  float *out;         // output token (y, 0) at this block's channel
  int64_t out_stride;
};

template <int L, int k, bool Edge>
inline void ConvTile(const RowArgs &a, int64_t y, int64_t x0, int64_t n_out) {
  using V = Lanes<L>;
  typedef typename V::vec vec;
  constexpr int p = k / 2;
  const int64_t P = a.K / 2;
  vec acc[kXB];
  const vec b = V::Load(a.bias);
#pragma GCC unroll 8
  for (int i = 0; i < kXB; ++i) {
    acc[i] = b;
    if (a.residual && (!Edge || i < n_out)) acc[i] += V::Load(a.in + (y * a.W + x0 + i) * a.in_stride);
  }
  for (int dy = -p; dy <= p; ++dy) {
    const int64_t yy = y + dy;
    if (yy < 0 || yy >= a.H) continue;
    vec w[k];
#pragma GCC unroll 8
    for (int dx = 0; dx < k; ++dx) w[dx] = V::Load(a.taps + ((dy + P) * a.K + (dx - p + P)) * a.C);
    const float *row = a.in + yy * a.W * a.in_stride;
#pragma GCC unroll 16
    for (int j = 0; j < kXB + 2 * p; ++j) {  // input token x0 - p + j
      const int64_t xx = x0 - p + j;
      if (Edge && (xx < 0 || xx >= a.W)) continue;
      const vec s = V::Load(row + xx * a.in_stride);
#pragma GCC unroll 8
      for (int dx = -p; dx <= p; ++dx) {  // feeds output i = j - p - dx
        const int i = j - p - dx;
        if (i < 0 || i >= kXB || (Edge && i >= n_out)) continue;
        acc[i] += s * w[dx + p];
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < kXB; ++i)
    if (!Edge || i < n_out) V::Store(a.out + (x0 + i) * a.out_stride, acc[i]);
}

template <int L, int k>
void ConvBlockRow(const RowArgs &a, int64_t y) {
  constexpr int p = k / 2;
  for (int64_t x0 = 0; x0 < a.W; x0 += kXB) {
    const int64_t n_out = a.W - x0 < kXB ? a.W - x0 : kXB;
    if (x0 - p >= 0 && x0 + kXB + p <= a.W)
      ConvTile<L, k, false>(a, y, x0, kXB);
    else
      ConvTile<L, k, true>(a, y, x0, n_out);
  }
}

template <int L>
bool ConvBlockRowAnyK(const RowArgs &a, int64_t k, int64_t y) {
  switch (k) {
    case 1: ConvBlockRow<L, 1>(a, y); return true;
    case 3: ConvBlockRow<L, 3>(a, y); return true;
    case 5: ConvBlockRow<L, 5>(a, y); return true;
    case 7: ConvBlockRow<L, 7>(a, y); return true;
    default: return false;
  }
}

// The kernel sizes the register-blocked path has instances for.
bool FastKernel(int64_t k) { return k == 1 || k == 3 || k == 5 || k == 7; }

// Channel blocks [start, start + lanes) and the largest kernel size in each.
struct Blocks {
  std::vector<int64_t> start, lanes, k;
};

Blocks MakeBlocks(const Meta &s) {
  Blocks bl;
  for (int64_t c = 0; c < s.C;) {
    const int64_t left = s.C - c, lanes = left >= 16 ? 16 : left >= 8 ? 8 : left >= 4 ? 4 : 1;
    int64_t k = 0;
    for (int64_t i = c; i < c + lanes; ++i) k = s.k[i] > k ? s.k[i] : k;
    bl.start.push_back(c);
    bl.lanes.push_back(lanes);
    bl.k.push_back(k);
    c += lanes;
  }
  return bl;
}

bool FastPathApplies(const Meta &s, const Blocks &bl) {
  for (int64_t k : bl.k)
    if (!FastKernel(k) || k > s.K) return false;
  return true;
}

void ConvRowFast(const float *xin, int64_t Cx, const float *w, const float *b, const Meta &s, const Blocks &bl,
                 int64_t y, float *yout) {
  for (size_t q = 0; q < bl.start.size(); ++q) {
    const int64_t c = bl.start[q];
    const RowArgs a{xin + c, Cx, w + c, s.C, s.K, s.H, s.W, b + c, s.mode == 1, yout + c, s.C};
    switch (bl.lanes[q]) {
      case 16: ConvBlockRowAnyK<16>(a, bl.k[q], y); break;
      case 8: ConvBlockRowAnyK<8>(a, bl.k[q], y); break;
      case 4: ConvBlockRowAnyK<4>(a, bl.k[q], y); break;
      default: ConvBlockRowAnyK<1>(a, bl.k[q], y); break;
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
  const Blocks blocks = MakeBlocks(s);
  const bool fast = FastPathApplies(s, blocks);
  coat_ms::ParallelFor(B * s.H, B * T * s.C, [&](int64_t r) {  // one image row per task
    const int64_t n = r / s.H, row = r % s.H;
    const float *xin = x + (n * T + s.off) * Cx + s.c0;
    float *yout = y + (n * T + s.off + row * s.W) * s.C;
    if (fast) {
      ConvRowFast(xin, Cx, w, b, s, blocks, row, yout);
    } else {
      for (int64_t i = 0; i < s.W; ++i) {
        float *dst = yout + i * s.C;
        const float *src = xin + (row * s.W + i) * Cx;
        for (int64_t c = 0; c < s.C; ++c) dst[c] = s.mode == 1 ? src[c] + b[c] : b[c];
      }
      ConvRow(xin, Cx, w, s, row, yout, s.C, false);
    }
    if (row == 0) {  // leading (CLS) rows
      for (int64_t t = 0; t < s.off; ++t) {
        float *dst = y + (n * T + t) * s.C;
        const float *src = x + (n * T + t) * Cx + s.c0;
        for (int64_t c = 0; c < s.C; ++c) dst[c] = s.mode == 1 ? src[c] : 0.0f;
      }
    }
  });
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
  coat_ms::ParallelFor(B * s.H, B * T * s.C, [&](int64_t r) {  // one image row per task
    const int64_t n = r / s.H, row = r % s.H;
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
  });
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
  coat_ms::ParallelFor(chunks, B * T * s.C, [&](int64_t ch) {
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
  });
  std::memset(dwb, 0, sizeof(float) * (KK + 1) * s.C);
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const float *a = acc.data() + ch * (KK + 1) * s.C;
    for (int64_t j = 0; j < (KK + 1) * s.C; ++j) dwb[j] += a[j];
  }
  return 0;
}

}  // extern "C"
