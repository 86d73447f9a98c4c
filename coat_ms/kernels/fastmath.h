// Shared vectorisable math for the CPU kernels (header-only, included by the .cc files).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace coat_ms {

// Waking OpenMP's sleeping worker thread is expensive inside a MindSpore graph on the 2-core VMs
// measured here (a chain of small Custom ops ran about ten times slower per op with two threads than with
// one); a LayerNorm over 800 tokens of 152 channels takes about as long on one thread. So a kernel call
// splits its loop across threads only when its `work` (elements x a per-kernel cost weight) reaches
// ParallelWork(); below it the loop runs on the calling thread without entering OpenMP at all (an
// `if(false)` clause would still start a one-thread team). coat_ms/openmp.py sets
// COAT_MS_KERNEL_PARALLEL_WORK=0 (split every call) where libgomp's worker spins long after each region.
constexpr int64_t kParallelWork = int64_t{1} << 17;

inline int64_t ParallelWork() {
  static const int64_t work = [] {
    const char *v = std::getenv("COAT_MS_KERNEL_PARALLEL_WORK");
    return v && *v ? std::atoll(v) : kParallelWork;
  }();
  return work;
}

template <typename Body>
inline void ParallelFor(int64_t n, int64_t work, Body body) {
  if (work >= ParallelWork()) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

// L float lanes as one GCC vector (AVX-512, AVX2 or NEON registers, whatever -march gives), loaded and
// stored unaligned.
template <int L>
struct Lanes {
  typedef float vec __attribute__((vector_size(4 * L)));
  static vec Load(const float *p) {
    vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static void Store(float *p, vec v) { std::memcpy(p, &v, sizeof(v)); }
};

inline float ExpNeg(float x) {  // exp(x) for x <= 0
  x = x < -87.0f ? -87.0f : x;
  // round to nearest by the 1.5 * 2^23 trick (std::floor/nearbyint block gcc's vectoriser)
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));  // 2^k
  return p * scale;
}

}  // namespace coat_ms
