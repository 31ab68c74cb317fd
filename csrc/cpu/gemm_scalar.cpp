// The portable path: every layout through its scalar reference decoder (packed_cpu.h). Correct on any
// CPU and any legal shape; the SIMD paths are checked against it and against the Python reference.
#include <algorithm>
#include <vector>

#include "packed_cpu.h"

namespace sparsekit {
namespace cpu {

void rows_scalar(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  std::vector<float> w(static_cast<size_t>(p.k));
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t k = 0; k < p.k; ++k) w[k] = weight_at(p, n, k);  // decode the row once for all M tokens
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * p.k;
      float acc = 0.0f;
      for (int64_t k = 0; k < p.k; ++k) acc += xi[k] * w[k];
      out[i * p.n + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

void split_activations(const Packed& p, const float* x, int64_t m, int64_t group, Split& sp) {
  const int64_t K = p.k, half = K / 2, G = (K + group - 1) / group;
  sp.even.resize(m * half);
  sp.odd.resize(m * half);
  sp.sums.resize(m * G);
  for (int64_t t = 0; t < m; ++t) {
    const float* xt = x + t * K;
    for (int64_t i = 0; i < half; ++i) {
      sp.even[t * half + i] = xt[2 * i];
      sp.odd[t * half + i] = xt[2 * i + 1];
    }
    for (int64_t g = 0; g < G; ++g) {
      float sum = 0.0f;
      for (int64_t k = g * group; k < std::min(K, (g + 1) * group); ++k) sum += xt[k];
      sp.sums[t * G + g] = sum;
    }
  }
}

void dequant_scalar(const Packed& p, float* dst, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t k = 0; k < p.k; ++k) dst[(n - n0) * p.k + k] = weight_at(p, n, k);
}

}  // namespace cpu
}  // namespace sparsekit
