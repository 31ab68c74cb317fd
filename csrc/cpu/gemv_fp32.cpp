// Dense fp32 weights at decode: y[M, N] = x[M, K] . W^T (+ bias) for M <= 16 tokens, W fp32 [N, K] as torch stores
// it (not a packed layout: the op sparsekit::dense_linear, sparsekit/ops/dense_linear.py). What it is for: the LM
// head that a converted model keeps in fp32 (tied to the input embeddings: SmolLM2-135M's is 49152 x 576, 113 MB,
// more bytes a token than all its int4 projections), and dense models run through the same kernel for comparison.
//
// Why sparsekit has its own: torch's fp32 GEMV (MKL sgemv under F.linear, torch 2.13 on an AMD EPYC Zen 3)
// streams one thread's worth of bandwidth however many threads torch has (49152 x 576: 7.9 ms at one thread and
// at two, 14 GB/s), and short rows (576 inputs: 2.3 KB) read slower than long ones there (4096 x 14336 reaches
// 24 GB/s at one thread). Decode is a pure stream of W: each thread takes a contiguous range of rows and reads
// them in address order (short rows one at a time, long ones four at a time: `dense_rows_avx2`). No software
// prefetch: unlike the packed kernels' several streams of a row (codes, positions, scales), a dense row is one
// plain sequential stream, which the hardware prefetchers follow; prefetcht0 2 KB ahead (the packed kernels'
// plan on this CPU) only took L1 miss buffers from them (Zen 3, one token, from memory, ab_builds.py against it:
// 49152 x 576 -18.5% at one thread and -13.5% at two, 4096 x 14336 -16.4% and -21.4%:
// bench/results/cpu/ab_zen3_fp32_gemv_prefetch_*.json).
//
// One scalar reference (`dense_rows_scalar`) and an AVX2 + FMA path, also the one AVX-512 CPUs run: one FMA per
// 8 weights and token is far below any of these CPUs' FMA rate at the bytes memory delivers, so wider vectors
// would change nothing but the code size.
#include <algorithm>

#include "packed_cpu.h"

namespace sparsekit {
namespace cpu {

void dense_rows_scalar(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                       int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const float* w = d.w + n * d.k;
    for (int64_t t = 0; t < m; ++t) {
      const float* xt = x + t * d.k;
      float acc = 0.0f;
      for (int64_t k = 0; k < d.k; ++k) acc += w[k] * xt[k];
      out[t * d.n + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

}  // namespace cpu
}  // namespace sparsekit

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#include "avx2_common.h"  // hsum

namespace sparsekit {
namespace cpu {
namespace {

// Rows n .. n + R - 1 times tokens t0 .. t0 + T - 1. Two accumulators per row and token where R x T <= 4, else
// one: 8 FMA chains at most, with the weights and loads within AVX2's 16 registers; at one token and one row, two
// chains of K / 16 FMAs (~4 cycles of latency per 64-byte line, far below what memory takes to deliver it). Token
// tiles after a row's first read it again from L1 / L2.
template <int R, int T>
inline void dense_tile(const Dense& d, const float* x, int64_t t0, float* out, const float* bias, int64_t n) {
  constexpr int A = R * T <= 4 ? 2 : 1;
  const int64_t K = d.k;
  const float* w = d.w + n * K;
  const float* xt = x + t0 * K;
  __m256 acc[R][T][A];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      for (int a = 0; a < A; ++a) acc[r][t][a] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    for (int r = 0; r < R; ++r) {
      const float* wr = w + r * K + k;
      const __m256 w0 = _mm256_loadu_ps(wr), w1 = _mm256_loadu_ps(wr + 8);
      for (int t = 0; t < T; ++t) {
        acc[r][t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + t * K + k), acc[r][t][0]);
        acc[r][t][A - 1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + t * K + k + 8), acc[r][t][A - 1]);
      }
    }
  }
  if (k < K) {  // the last 1-15 inputs: masked loads read nothing past a row (or past x's last token)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - k)), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - k - 8)), lane);
    for (int r = 0; r < R; ++r) {
      const __m256 w0 = _mm256_maskload_ps(w + r * K + k, m0), w1 = _mm256_maskload_ps(w + r * K + k + 8, m1);
      for (int t = 0; t < T; ++t) {
        acc[r][t][0] = _mm256_fmadd_ps(w0, _mm256_maskload_ps(xt + t * K + k, m0), acc[r][t][0]);
        acc[r][t][A - 1] = _mm256_fmadd_ps(w1, _mm256_maskload_ps(xt + t * K + k + 8, m1), acc[r][t][A - 1]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const float b = bias ? bias[n + r] : 0.0f;
    for (int t = 0; t < T; ++t) {
      const __m256 s = A == 2 ? _mm256_add_ps(acc[r][t][0], acc[r][t][A - 1]) : acc[r][t][0];
      out[(t0 + t) * d.n + n + r] = hsum(s) + b;
    }
  }
}

// All m tokens against rows n .. n + R - 1: tiles of up to 4 tokens for one row, 2 for four rows (8 accumulators).
template <int R>
inline void dense_rows(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n) {
  for (int64_t t0 = 0; t0 < m;) {
    const int64_t left = m - t0;
    if constexpr (R == 1) {
      if (left >= 4) {
        dense_tile<R, 4>(d, x, t0, out, bias, n);
        t0 += 4;
        continue;
      }
      if (left == 3) {
        dense_tile<R, 3>(d, x, t0, out, bias, n);
        t0 += 3;
        continue;
      }
    }
    if (left >= 2) {
      dense_tile<R, 2>(d, x, t0, out, bias, n);
      t0 += 2;
    } else {
      dense_tile<R, 1>(d, x, t0, out, bias, n);
      t0 += 1;
    }
  }
}

}  // namespace

bool dense_avx2_compiled() { return true; }

// Which rows go together (one thread, M = 1, AMD EPYC Zen 3, a scratch harness of this loop): rows of 576 inputs
// (2.3 KB, SmolLM2's LM head) stream at 19 GB/s one at a time and 12 GB/s four at a time (four streams 2.3 KB
// apart, each too short for the prefetchers to ramp up before it ends); rows of 2048+ inputs the other way round
// (4096 x 14336: 18.5 GB/s one at a time, 27 four at a time: one stream leaves too few lines in flight); 1536
// inputs alike (19-20). So rows of 4 KiB or more go four at a time.
void dense_rows_avx2(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1) {
  int64_t n = n0;
  if (d.k >= 1024)
    for (; n + 4 <= n1; n += 4) dense_rows<4>(d, x, m, out, bias, n);
  for (; n < n1; ++n) dense_rows<1>(d, x, m, out, bias, n);
}

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: the scalar path serves (dense_avx2_compiled() is false)

namespace sparsekit {
namespace cpu {

bool dense_avx2_compiled() { return false; }
void dense_rows_avx2(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1) {
  dense_rows_scalar(d, x, m, out, bias, n0, n1);
}

}  // namespace cpu
}  // namespace sparsekit

#endif
