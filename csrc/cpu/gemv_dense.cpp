// Dense weights at decode: y[M, N] = x[M, K] . W^T (+ bias) for M <= 16 tokens, W [N, K] as torch stores it, in fp32
// or bf16 (not a packed layout: the op sparsekit::dense_linear, sparsekit/ops/dense_linear.py). What it is for: the LM
// head that a converted model keeps dense (tied to the input embeddings: SmolLM2-135M's is 49152 x 576, 113 MB in
// fp32, more bytes a token than all its int4 projections), and dense models run through the same kernel for
// comparison.
//
// Why sparsekit has its own: torch's fp32 GEMV (MKL sgemv under F.linear, torch 2.13 on an AMD EPYC Zen 3)
// streams one thread's worth of bandwidth however many threads torch has (49152 x 576: 7.9 ms at one thread and
// at two, 14 GB/s), and short rows (576 inputs: 2.3 KB) read slower than long ones there (4096 x 14336 reaches
// 24 GB/s at one thread). Its bf16 GEMV on a CPU without bf16 instructions reads bf16 at 9-10 GB/s at one thread
// (the same Zen 3), under its own fp32 rate: half the bytes bought no time. Decode is a pure stream of W: each
// thread takes a contiguous range of rows and reads them in address order (short rows one at a time, long ones
// four at a time: `dense_rows_avx2`). No software prefetch: unlike the packed kernels' several streams of a row
// (codes, positions, scales), a dense row is one plain sequential stream, which the hardware prefetchers follow;
// prefetcht0 2 KB ahead (the packed kernels' plan on this CPU) only took L1 miss buffers from them (Zen 3, fp32, one
// token, from memory, ab_builds.py against it: 49152 x 576 -18.5% at one thread and -13.5% at two, 4096 x 14336
// -16.4% and -21.4%: bench/results/cpu/ab_zen3_fp32_gemv_prefetch_*.json).
//
// A bf16 weight is exactly the fp32 number whose top 16 bits it is: widened by a zero extension and a 16-bit shift
// (2 instructions per 8 weights, shared by the tile's tokens), then the fp32 loop as is, so a bf16 row's result is
// the fp32 kernel's on W.float(), and the caller rounds it to bf16 once.
//
// One scalar reference (`dense_rows_scalar`) and an AVX2 + FMA path, also the one AVX-512 CPUs run: one FMA per
// 8 weights and token is far below any of these CPUs' FMA rate at the bytes memory delivers, so wider vectors
// would change nothing but the code size.
#include <algorithm>
#include <cstring>

#include "packed_cpu.h"

namespace sparsekit {
namespace cpu {

namespace {

inline float weight_value(float w) { return w; }
inline float weight_value(uint16_t w) { return bf16_to_float(w); }

template <class W>
void rows_scalar(const DenseOf<W>& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const W* w = d.w + n * d.k;
    for (int64_t t = 0; t < m; ++t) {
      const float* xt = x + t * d.k;
      float acc = 0.0f;
      for (int64_t k = 0; k < d.k; ++k) acc += weight_value(w[k]) * xt[k];
      out[t * d.n + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

}  // namespace

void dense_rows_scalar(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                       int64_t n1) {
  rows_scalar(d, x, m, out, bias, n0, n1);
}

void dense_rows_scalar(const DenseBf16& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                       int64_t n1) {
  rows_scalar(d, x, m, out, bias, n0, n1);
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

// 8 weights as fp32: fp32 as stored; bf16 zero-extended to 32 bits and shifted into the top half (exact)
inline __attribute__((always_inline)) __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
inline __attribute__((always_inline)) __m256 load8(const uint16_t* w) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

// The last 1-15 weights of a row (`left` of them) as two vectors, zeros past them, reading nothing past the row:
// masked loads for fp32; bf16 (16-bit lanes, which vmaskmovps cannot mask) through a zeroed copy, once a row
inline __attribute__((always_inline)) void tail16(const float* w, int64_t left, __m256i m0, __m256i m1, __m256& w0,
                                                  __m256& w1) {
  (void)left;
  w0 = _mm256_maskload_ps(w, m0);
  w1 = _mm256_maskload_ps(w + 8, m1);
}
inline __attribute__((always_inline)) void tail16(const uint16_t* w, int64_t left, __m256i, __m256i, __m256& w0,
                                                  __m256& w1) {
  uint16_t buf[16] = {};
  std::memcpy(buf, w, static_cast<size_t>(left) * sizeof(uint16_t));
  w0 = load8(buf);
  w1 = load8(buf + 8);
}

// Rows n .. n + R - 1 times tokens t0 .. t0 + T - 1. Two accumulators per row and token where R x T <= 4, else
// one: 8 FMA chains at most, with the weights and loads within AVX2's 16 registers; at one token and one row, two
// chains of K / 16 FMAs (~4 cycles of latency per 64-byte line, far below what memory takes to deliver it). Token
// tiles after a row's first read it again from L1 / L2.
template <int R, int T, class W>
inline void dense_tile(const DenseOf<W>& d, const float* x, int64_t t0, float* out, const float* bias, int64_t n) {
  constexpr int A = R * T <= 4 ? 2 : 1;
  const int64_t K = d.k;
  const W* w = d.w + n * K;
  const float* xt = x + t0 * K;
  __m256 acc[R][T][A];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t)
      for (int a = 0; a < A; ++a) acc[r][t][a] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    for (int r = 0; r < R; ++r) {
      const W* wr = w + r * K + k;
      const __m256 w0 = load8(wr), w1 = load8(wr + 8);
      for (int t = 0; t < T; ++t) {
        acc[r][t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + t * K + k), acc[r][t][0]);
        acc[r][t][A - 1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + t * K + k + 8), acc[r][t][A - 1]);
      }
    }
  }
  if (k < K) {  // the last 1-15 inputs: nothing read past a row (tail16) or past x's last token (masked loads)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - k)), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - k - 8)), lane);
    for (int r = 0; r < R; ++r) {
      __m256 w0, w1;
      tail16(w + r * K + k, K - k, m0, m1, w0, w1);
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
template <int R, class W>
inline void dense_rows(const DenseOf<W>& d, const float* x, int64_t m, float* out, const float* bias, int64_t n) {
  for (int64_t t0 = 0; t0 < m;) {
    const int64_t left = m - t0;
    if constexpr (R == 1) {
      if (left >= 4) {
        dense_tile<R, 4, W>(d, x, t0, out, bias, n);
        t0 += 4;
        continue;
      }
      if (left == 3) {
        dense_tile<R, 3, W>(d, x, t0, out, bias, n);
        t0 += 3;
        continue;
      }
    }
    if (left >= 2) {
      dense_tile<R, 2, W>(d, x, t0, out, bias, n);
      t0 += 2;
    } else {
      dense_tile<R, 1, W>(d, x, t0, out, bias, n);
      t0 += 1;
    }
  }
}

// Which rows go together (one thread, M = 1, AMD EPYC Zen 3, a scratch harness of this loop on fp32): rows of 576
// inputs (2.3 KB, SmolLM2's LM head) stream at 19 GB/s one at a time and 12 GB/s four at a time (four streams 2.3 KB
// apart, each too short for the prefetchers to ramp up before it ends); rows of 2048+ inputs the other way round
// (4096 x 14336: 18.5 GB/s one at a time, 27 four at a time: one stream leaves too few lines in flight); 1536
// inputs alike (19-20). So rows of 4 KiB or more go four at a time, in bytes whatever the weight type.
template <class W>
void rows_avx2(const DenseOf<W>& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if (d.k * static_cast<int64_t>(sizeof(W)) >= 4096)
    for (; n + 4 <= n1; n += 4) dense_rows<4>(d, x, m, out, bias, n);
  for (; n < n1; ++n) dense_rows<1>(d, x, m, out, bias, n);
}

}  // namespace

bool dense_avx2_compiled() { return true; }

void dense_rows_avx2(const Dense& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1) {
  rows_avx2(d, x, m, out, bias, n0, n1);
}

void dense_rows_avx2(const DenseBf16& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1) {
  rows_avx2(d, x, m, out, bias, n0, n1);
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
void dense_rows_avx2(const DenseBf16& d, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1) {
  dense_rows_scalar(d, x, m, out, bias, n0, n1);
}

}  // namespace cpu
}  // namespace sparsekit

#endif
