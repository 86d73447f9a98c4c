// CoaT's factorized attention with its relative-position term, forward and backward, for
// MindSpore's CPU backend (ops.Custom, func_type="aot"), on the token layout.
//
//   out = scale * q_h (softmax_N(k_h)^T v_h) + q * conv        per head h, over all N tokens (CLS too)
//
// q, k, v are read straight out of the qkv tokens (B, N, 3C) (channels [0, C), [C, 2C), [2C, 3C),
// head-major inside each), conv is crpe's depthwise convolution of v (B, N, C), zero on the CLS row.
// Why: the stock-op version needs a split of qkv, a softmax over a strided axis, two batched
// matmuls (per-head products as one block-diagonal masked C x C product: 8x the multiply-adds),
// a product and a sum, each a pass over (B, N, C) in memory. Here every pass reads whole token rows
// (all heads at once: a per-head walk re-read each row's cache lines once per head), the per-head
// (Ch x Ch) products of all heads (C x Ch floats) stay in cache, and the token axis of each image is
// cut into a fixed number of chunks: sums over tokens are per-chunk partials added in chunk order,
// so results do not depend on the thread count. Forward: 3 passes over the tokens, backward: 5.
// The forward's per-head products at the CoaT head widths run as register tiles on heads padded to whole
// vectors (Padded below): for head width 19 the generic loops left most of each vector idle (same floats;
// coat_tiny's serial attention calls took 40 -> 24 ms per batch-8 step in benchmarks/profile_ops.py).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "fastmath.h"

namespace {

using coat_ms::ExpNeg;

constexpr int64_t kChunks = 4;  // token chunks per image (fixed, not the thread count)
constexpr int kTokenBlock = 4;  // token rows per update of the per-head products

struct Shape {
  int64_t batch, tokens, channels, heads, head_chs;
  float scale;
};

bool ReadShape(int *ndims, int64_t **shapes, const float *cfg, Shape *s) {
  if (ndims[0] != 3 || shapes[0][2] % 3 != 0) return false;
  s->batch = shapes[0][0];
  s->tokens = shapes[0][1];
  s->channels = shapes[0][2] / 3;
  s->heads = static_cast<int64_t>(cfg[0]);
  s->scale = cfg[1];
  if (s->heads <= 0 || s->channels % s->heads != 0) return false;
  s->head_chs = s->channels / s->heads;
  return true;
}

// Cost weight of one call for coat_ms::ParallelFor (each pass does ~head-width products per element).
inline int64_t Work(const Shape &s) { return 2 * s.batch * s.tokens * s.channels; }

// Tokens [t0, t1) of chunk i.
inline void Chunk(int64_t n, int64_t i, int64_t *t0, int64_t *t1) {
  *t0 = i * n / kChunks;
  *t1 = (i + 1) * n / kChunks;
}

// Per-head products on one token row, over all heads. A (C x Ch) matrix m holds head h's (Ch x Ch)
// block in rows [h*Ch, (h+1)*Ch). Templates on CH give the CoaT head widths constant trip counts
// (fully vectorised, masked tails); CH = 0 is the generic version.
#define HEAD_CHS const int64_t ch = CH > 0 ? CH : ch_runtime

// m[h][j][:] += a[u][h*Ch + j] * b[u][h*Ch + :] for the TB token rows u = 0, 1, ... in order (the outer
// products of k^T v and q^T dout). Each row of m is loaded and stored once per TB tokens, not once per
// token; the additions happen in the same order as one token at a time, so the floats are the same.
template <int CH, int TB>
inline void OuterAccumulate(const float *const *a, const float *const *b, int64_t heads, int64_t ch_runtime,
                            float *m) {
  HEAD_CHS;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < ch; ++j) {
      float *row = m + (h * ch + j) * ch;
      float f[TB];
      for (int u = 0; u < TB; ++u) f[u] = a[u][h * ch + j];
#pragma omp simd
      for (int64_t i = 0; i < ch; ++i) {
        float acc = row[i];
        for (int u = 0; u < TB; ++u) acc += f[u] * b[u][h * ch + i];
        row[i] = acc;
      }
    }
}

// out[h*Ch + :] += sum_j a[h*Ch + j] * m[h][j][:]  (a token row times each head's block), j in order;
// the sum for each output channel is kept in a register over j.
template <int CH>
inline void RowTimesBlocks(const float *a, const float *m, int64_t heads, int64_t ch_runtime, float *out) {
  HEAD_CHS;
  for (int64_t h = 0; h < heads; ++h) {
    const float *ah = a + h * ch, *mh = m + h * ch * ch;
    float *oh = out + h * ch;
#pragma omp simd
    for (int64_t i = 0; i < ch; ++i) {
      float acc = oh[i];
      for (int64_t j = 0; j < ch; ++j) acc += ah[j] * mh[j * ch + i];
      oh[i] = acc;
    }
  }
}

// out[h*Ch + j] = f * sum_i b[h*Ch + i] * m[h][j][i]
template <int CH>
inline void RowDotBlocks(const float *b, const float *m, int64_t heads, int64_t ch_runtime, float f, float *out) {
  HEAD_CHS;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < ch; ++j) {
      const float *bh = b + h * ch, *row = m + (h * ch + j) * ch;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < ch; ++i) sum += bh[i] * row[i];
      out[h * ch + j] = f * sum;
    }
}

// mx (B, C) = the maximum of k over each image's tokens, from per-chunk partials in part (B * kChunks, C).
void TokenMaxima(const Shape &s, const float *qkv, float *part, float *mx) {
  const int64_t n = s.tokens, c = s.channels, c3 = 3 * c;
  coat_ms::ParallelFor(s.batch * kChunks, Work(s), [&](int64_t p) {
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    float *m = part + p * c;
    std::fill(m, m + c, -INFINITY);
    for (int64_t t = t0; t < t1; ++t) {
      const float *kr = qkv + ((p / kChunks) * n + t) * c3 + c;
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) m[i] = std::max(m[i], kr[i]);
    }
  });
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t i = 0; i < c; ++i) {
      float m = -INFINITY;
      for (int64_t k = 0; k < kChunks; ++k) m = std::max(m, part[(b * kChunks + k) * c + i]);
      mx[b * c + i] = m;
    }
}

// Softmax statistics of k over the tokens (max, 1/sum of exp), kv = scale * softmax(k)^T v per head and,
// when q and dout are given, dkv = q^T dout per head; all per image: mx, inv_sum (B, C), kv, dkv (B, C*Ch).
template <int CH>
void Statistics(const Shape &s, const float *qkv, const float *dout, float *mx, float *inv_sum, float *kv,
                float *dkv) {
  const int64_t n = s.tokens, c = s.channels, c3 = 3 * c, ch = s.head_chs, block = c * ch;
  const int64_t parts = s.batch * kChunks;
  std::vector<float> part(parts * c), part_kv(parts * block), part_dkv(dout ? parts * block : 0);
  TokenMaxima(s, qkv, part.data(), mx);
  coat_ms::ParallelFor(parts, Work(s), [&](int64_t p) {  // partial sums of exp, k^T v and q^T dout
    std::vector<float> e(kTokenBlock * c);
    const int64_t b = p / kChunks;
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    float *sum = part.data() + p * c, *pkv = part_kv.data() + p * block;
    float *pdkv = dout ? part_dkv.data() + p * block : nullptr;
    std::fill(sum, sum + c, 0.0f);
    std::fill(pkv, pkv + block, 0.0f);
    if (pdkv) std::fill(pdkv, pdkv + block, 0.0f);
    const float *m = mx + b * c;
    for (int64_t t = t0; t < t1; t += kTokenBlock) {
      const int64_t tb = std::min<int64_t>(kTokenBlock, t1 - t);
      const float *er[kTokenBlock], *vr[kTokenBlock], *qr[kTokenBlock], *gr[kTokenBlock];
      for (int64_t u = 0; u < tb; ++u) {
        const float *row = qkv + (b * n + t + u) * c3, *kr = row + c;
        float *eu = e.data() + u * c;
#pragma omp simd
        for (int64_t i = 0; i < c; ++i) {
          eu[i] = ExpNeg(kr[i] - m[i]);
          sum[i] += eu[i];
        }
        er[u] = eu;
        vr[u] = row + 2 * c;
        qr[u] = row;
        gr[u] = dout ? dout + (b * n + t + u) * c : nullptr;
      }
      if (tb == kTokenBlock) {
        OuterAccumulate<CH, kTokenBlock>(er, vr, s.heads, ch, pkv);
        if (pdkv) OuterAccumulate<CH, kTokenBlock>(qr, gr, s.heads, ch, pdkv);
      } else {
        for (int64_t u = 0; u < tb; ++u) {
          OuterAccumulate<CH, 1>(er + u, vr + u, s.heads, ch, pkv);
          if (pdkv) OuterAccumulate<CH, 1>(qr + u, gr + u, s.heads, ch, pdkv);
        }
      }
    }
  });
  coat_ms::ParallelFor(s.batch, Work(s), [&](int64_t b) {  // combine the chunks in order
    for (int64_t i = 0; i < c; ++i) {
      float sum = 0.0f;
      for (int64_t k = 0; k < kChunks; ++k) sum += part[(b * kChunks + k) * c + i];
      inv_sum[b * c + i] = 1.0f / sum;
    }
    for (int64_t r = 0; r < block; ++r) {
      float a = 0.0f, d = 0.0f;
      for (int64_t k = 0; k < kChunks; ++k) {
        a += part_kv[(b * kChunks + k) * block + r];
        if (dout) d += part_dkv[(b * kChunks + k) * block + r];
      }
      kv[b * block + r] = s.scale * inv_sum[b * c + r / ch] * a;  // row r of head block = channel r / ch
      if (dout) dkv[b * block + r] = d;
    }
  });
}

void ForwardGeneric(const Shape &s, const float *qkv, const float *conv, float *out) {
  const int64_t n = s.tokens, c = s.channels, c3 = 3 * c, ch = s.head_chs, block = c * ch;
  std::vector<float> mx(s.batch * c), inv_sum(s.batch * c), kv(s.batch * block);
  Statistics<0>(s, qkv, nullptr, mx.data(), inv_sum.data(), kv.data(), nullptr);
  coat_ms::ParallelFor(s.batch * kChunks, Work(s), [&](int64_t p) {  // out = q kv + q * conv
    const int64_t b = p / kChunks;
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) {
      const float *qr = qkv + (b * n + t) * c3, *cr = conv + (b * n + t) * c;
      float *orow = out + (b * n + t) * c;
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) orow[i] = qr[i] * cr[i];
      RowTimesBlocks<0>(qr, kv.data() + b * block, s.heads, ch, orow);
    }
  });
}

// ---- Forward for the compiled head widths: register tiles on a padded per-head layout ----------------
// Each head's Ch channels are padded to NV vectors of L lanes (CHP = NV * L floats): the (Ch x Ch) block
// kv_h is stored as Ch rows of CHP floats, and token rows are copied into padded scratch rows before the
// products, so every product is whole vectors (no tails) and no load reaches past a buffer. The padding
// lanes carry values nobody reads back. Sums run over the same terms in the same order as the generic
// helpers above (kv: over tokens; out: q * conv, then j = 0, 1, ...), so the floats are the same.
// The largest divisor of ch that is at most 28 (a kv row block's accumulators stay in registers).
constexpr int RowBlock(int ch) {
  int rb = ch < 28 ? ch : 28;
  while (ch % rb != 0) --rb;
  return rb;
}

template <int CH>
struct Padded : coat_ms::Lanes<(CH <= 8 ? 8 : 16)> {  // vec, Load, Store of L lanes
  static constexpr int L = CH <= 8 ? 8 : 16;          // lanes per vector
  static constexpr int NV = (CH + L - 1) / L;         // vectors per head row
  static constexpr int CHP = NV * L;                  // padded head width
  static constexpr int RB = RowBlock(CH);             // rows per block of the kv update (<= 28 accumulators)
  static constexpr int TT = 4;                        // tokens per tile of the output product
  // dst[h * CHP + i] = src[h * CH + i] for i < CH (pads untouched)
  static void Spread(const float *src, int64_t heads, float *dst) {
    for (int64_t h = 0; h < heads; ++h) std::memcpy(dst + h * CHP, src + h * CH, sizeof(float) * CH);
  }
  static void Gather(const float *src, int64_t heads, float *dst) {
    for (int64_t h = 0; h < heads; ++h) std::memcpy(dst + h * CH, src + h * CHP, sizeof(float) * CH);
  }
};

// kvp[h][j][:] += sum over the tb tokens u (in order) of e[u][h*Ch + j] * vpad[u][h][:]
template <int CH>
inline void OuterAccumulatePadded(const float *e, int64_t e_stride, const float *vpad, int tb, int64_t heads,
                                  float *kvp) {
  using P = Padded<CH>;
  typedef typename P::vec vec;
  for (int64_t h = 0; h < heads; ++h)
    for (int n = 0; n < P::NV; ++n)
      for (int j0 = 0; j0 < CH; j0 += P::RB) {
        float *base = kvp + (h * CH + j0) * P::CHP + n * P::L;
        vec acc[P::RB];
#pragma GCC unroll 28
        for (int r = 0; r < P::RB; ++r) acc[r] = P::Load(base + r * P::CHP);
        for (int u = 0; u < tb; ++u) {
          const vec v = P::Load(vpad + u * heads * P::CHP + h * P::CHP + n * P::L);
          const float *eu = e + u * e_stride + h * CH + j0;
#pragma GCC unroll 28
          for (int r = 0; r < P::RB; ++r) acc[r] += eu[r] * v;
        }
#pragma GCC unroll 28
        for (int r = 0; r < P::RB; ++r) P::Store(base + r * P::CHP, acc[r]);
      }
}

// acc[u][h][:] (padded, holding q * conv) += sum_j q[u][h*Ch + j] * kvp[h][j][:] for TT token rows u
template <int CH, int TT>
inline void RowsTimesBlocksPadded(const float *const *q, const float *kvp, int64_t heads, float *acc_rows) {
  using P = Padded<CH>;
  typedef typename P::vec vec;
  const int64_t row = heads * P::CHP;
  for (int64_t h = 0; h < heads; ++h) {
    vec acc[TT][P::NV];
#pragma GCC unroll 4
    for (int u = 0; u < TT; ++u)
      for (int n = 0; n < P::NV; ++n) acc[u][n] = P::Load(acc_rows + u * row + h * P::CHP + n * P::L);
    const float *mh = kvp + h * CH * P::CHP;
    for (int j = 0; j < CH; ++j) {
      vec m[P::NV];
      for (int n = 0; n < P::NV; ++n) m[n] = P::Load(mh + j * P::CHP + n * P::L);
#pragma GCC unroll 4
      for (int u = 0; u < TT; ++u) {
        const float f = q[u][h * CH + j];
        for (int n = 0; n < P::NV; ++n) acc[u][n] += f * m[n];
      }
    }
#pragma GCC unroll 4
    for (int u = 0; u < TT; ++u)
      for (int n = 0; n < P::NV; ++n) P::Store(acc_rows + u * row + h * P::CHP + n * P::L, acc[u][n]);
  }
}

// Statistics for the forward only, kv in the padded layout (B, C, CHP).
template <int CH>
void StatisticsPadded(const Shape &s, const float *qkv, float *kvp) {
  using P = Padded<CH>;
  const int64_t n = s.tokens, c = s.channels, c3 = 3 * c, block = c * P::CHP, heads = s.heads;
  const int64_t parts = s.batch * kChunks;
  std::vector<float> mx(s.batch * c), part(parts * c), part_kv(parts * block);
  TokenMaxima(s, qkv, part.data(), mx.data());
  coat_ms::ParallelFor(parts, Work(s), [&](int64_t p) {  // partial sums of exp and of softmax(k)^T v
    constexpr int TB = 8;
    std::vector<float> e(TB * c), vpad(TB * heads * P::CHP, 0.0f);
    const int64_t b = p / kChunks;
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    float *sum = part.data() + p * c, *pkv = part_kv.data() + p * block;
    std::fill(sum, sum + c, 0.0f);
    std::fill(pkv, pkv + block, 0.0f);
    const float *m = mx.data() + b * c;
    for (int64_t t = t0; t < t1; t += TB) {
      const int tb = static_cast<int>(std::min<int64_t>(TB, t1 - t));
      for (int u = 0; u < tb; ++u) {
        const float *row = qkv + (b * n + t + u) * c3, *kr = row + c;
        float *eu = e.data() + u * c;
#pragma omp simd
        for (int64_t i = 0; i < c; ++i) {
          eu[i] = ExpNeg(kr[i] - m[i]);
          sum[i] += eu[i];
        }
        P::Spread(row + 2 * c, heads, vpad.data() + u * heads * P::CHP);
      }
      OuterAccumulatePadded<CH>(e.data(), c, vpad.data(), tb, heads, pkv);
    }
  });
  coat_ms::ParallelFor(s.batch, Work(s), [&](int64_t b) {  // combine the chunks in order
    for (int64_t i = 0; i < c; ++i) {
      float sum = 0.0f;
      for (int64_t k = 0; k < kChunks; ++k) sum += part[(b * kChunks + k) * c + i];
      for (int64_t l = 0; l < P::CHP; ++l) {  // row i of the padded blocks = channel i
        float a = 0.0f;
        for (int64_t k = 0; k < kChunks; ++k) a += part_kv[(b * kChunks + k) * block + i * P::CHP + l];
        kvp[b * block + i * P::CHP + l] = s.scale * (1.0f / sum) * a;
      }
    }
  });
}

template <int CH>
void Forward(const Shape &s, const float *qkv, const float *conv, float *out) {
  if constexpr (CH == 0) {
    ForwardGeneric(s, qkv, conv, out);
  } else {
  using P = Padded<CH>;
  const int64_t n = s.tokens, c = s.channels, c3 = 3 * c, heads = s.heads, row = heads * P::CHP;
  std::vector<float> kvp(s.batch * c * P::CHP + P::L);
  StatisticsPadded<CH>(s, qkv, kvp.data());
  coat_ms::ParallelFor(s.batch * kChunks, Work(s), [&](int64_t p) {  // out = q * conv + q kv
    const int64_t b = p / kChunks;
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    std::vector<float> qc(P::TT * c), rows(P::TT * row, 0.0f);
    for (int64_t t = t0; t < t1; t += P::TT) {
      const int tt = static_cast<int>(std::min<int64_t>(P::TT, t1 - t));
      const float *q[P::TT];
      for (int u = 0; u < tt; ++u) {
        const float *qr = qkv + (b * n + t + u) * c3, *cr = conv + (b * n + t + u) * c;
        float *qcu = qc.data() + u * c;
#pragma omp simd
        for (int64_t i = 0; i < c; ++i) qcu[i] = qr[i] * cr[i];
        P::Spread(qcu, heads, rows.data() + u * row);
        q[u] = qr;
      }
      const float *kvb = kvp.data() + b * c * P::CHP;
      if (tt == P::TT) {
        RowsTimesBlocksPadded<CH, P::TT>(q, kvb, heads, rows.data());
      } else {
        for (int u = 0; u < tt; ++u) RowsTimesBlocksPadded<CH, 1>(q + u, kvb, heads, rows.data() + u * row);
      }
      for (int u = 0; u < tt; ++u) P::Gather(rows.data() + u * row, heads, out + (b * n + t + u) * c);
    }
  });
  }
}

template <int CH>
void Backward(const Shape &s, const float *qkv, const float *conv, const float *dout, float *dqkv, float *dconv) {
  const int64_t n = s.tokens, c = s.channels, c3 = 3 * c, ch = s.head_chs, block = c * ch;
  const int64_t parts = s.batch * kChunks;
  std::vector<float> mx(s.batch * c), inv_sum(s.batch * c), kv(s.batch * block), dkv(s.batch * block);
  std::vector<float> part_dot(parts * c);
  Statistics<CH>(s, qkv, dout, mx.data(), inv_sum.data(), kv.data(), dkv.data());
  coat_ms::ParallelFor(parts, Work(s), [&](int64_t p) {  // dconv, dq, dv, dksm (in dk's place), partial sum(ksm * dksm)
    std::vector<float> e(c);
    const int64_t b = p / kChunks;
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    const float *m = mx.data() + b * c, *is = inv_sum.data() + b * c;
    const float *kvb = kv.data() + b * block, *dkvb = dkv.data() + b * block;
    float *dot = part_dot.data() + p * c;
    std::fill(dot, dot + c, 0.0f);
    for (int64_t t = t0; t < t1; ++t) {
      const float *qr = qkv + (b * n + t) * c3, *kr = qr + c, *vr = qr + 2 * c;
      const float *gr = dout + (b * n + t) * c, *cr = conv + (b * n + t) * c;
      float *dqr = dqkv + (b * n + t) * c3, *dkr = dqr + c, *dvr = dqr + 2 * c;
      float *dcr = dconv + (b * n + t) * c;
      RowDotBlocks<CH>(gr, kvb, s.heads, ch, 1.0f, dqr);
      RowDotBlocks<CH>(vr, dkvb, s.heads, ch, s.scale, dkr);
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) {
        dcr[i] = qr[i] * gr[i];
        dqr[i] += cr[i] * gr[i];
        e[i] = s.scale * ExpNeg(kr[i] - m[i]) * is[i];  // scale * ksm
        dot[i] += e[i] * dkr[i];
        dvr[i] = 0.0f;
      }
      RowTimesBlocks<CH>(e.data(), dkvb, s.heads, ch, dvr);
    }
  });
  coat_ms::ParallelFor(parts, Work(s), [&](int64_t p) {  // dk = ksm * (dksm - sum_N(ksm * dksm))
    const int64_t b = p / kChunks;
    int64_t t0, t1;
    Chunk(n, p % kChunks, &t0, &t1);
    std::vector<float> dot(c, 0.0f);
    for (int64_t k = 0; k < kChunks; ++k)
      for (int64_t i = 0; i < c; ++i) dot[i] += part_dot[(b * kChunks + k) * c + i];
    const float *m = mx.data() + b * c, *is = inv_sum.data() + b * c;
    const float inv_scale = 1.0f / s.scale;  // the partial sums above used scale * ksm
    for (int64_t t = t0; t < t1; ++t) {
      const float *kr = qkv + (b * n + t) * c3 + c;
      float *dkr = dqkv + (b * n + t) * c3 + c;
#pragma omp simd
      for (int64_t i = 0; i < c; ++i) dkr[i] = ExpNeg(kr[i] - m[i]) * is[i] * (dkr[i] - inv_scale * dot[i]);
    }
  });
}

using ForwardFn = void (*)(const Shape &, const float *, const float *, float *);
using BackwardFn = void (*)(const Shape &, const float *, const float *, const float *, float *, float *);

template <int CH>
struct Kernels {
  static constexpr ForwardFn forward = Forward<CH>;
  static constexpr BackwardFn backward = Backward<CH>;
};

// The head widths of the CoaT family (8 to 64) get their own instantiation.
template <typename Fn, typename Get>
Fn ForHeadWidth(int64_t ch, Get get) {
  switch (ch) {
    case 8: return get(Kernels<8>());
    case 16: return get(Kernels<16>());
    case 19: return get(Kernels<19>());
    case 27: return get(Kernels<27>());
    case 32: return get(Kernels<32>());
    case 40: return get(Kernels<40>());
    case 64: return get(Kernels<64>());
    default: return get(Kernels<0>());
  }
}

}  // namespace

extern "C" {

// params = {qkv (B, N, 3C), conv (B, N, C), cfg (2) = [heads, scale], out (B, N, C)}
int FactorAttentionForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  if (nparam != 4) return 1;
  Shape s;
  if (!ReadShape(ndims, shapes, static_cast<const float *>(params[2]), &s)) return 2;
  const ForwardFn fn = ForHeadWidth<ForwardFn>(s.head_chs, [](auto k) { return decltype(k)::forward; });
  fn(s, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]), static_cast<float *>(params[3]));
  return 0;
}

// params = {qkv (B, N, 3C), conv (B, N, C), cfg (2), dout (B, N, C), dqkv (B, N, 3C), dconv (B, N, C)}
//   dconv = q * dout                      dq_h = dout_h kv_h^T + conv_h * dout_h
//   dkv_h = q_h^T dout_h                  dv_h = scale * ksm_h dkv_h
//   dksm_h = scale * v_h dkv_h^T          dk = ksm * (dksm - sum_N(ksm * dksm))
int FactorAttentionBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  if (nparam != 6) return 1;
  Shape s;
  if (!ReadShape(ndims, shapes, static_cast<const float *>(params[2]), &s)) return 2;
  const BackwardFn fn = ForHeadWidth<BackwardFn>(s.head_chs, [](auto k) { return decltype(k)::backward; });
  fn(s, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
     static_cast<const float *>(params[3]), static_cast<float *>(params[4]), static_cast<float *>(params[5]));
  return 0;
}

}  // extern "C"
