// AVX-512 BF16 path: 2:4 with bf16 values times bf16 activations (a bf16 model), one vdpbf16ps per 32 kept
// weights and token.
//
// The fp32-activation kernel (kept_bf16_tile, gemm_avx512.cpp) widens each kept value to fp32 and gathers fp32
// activations: per 64 inputs and token 4 activation loads, 2 vpermt2ps and 2 FMAs. With bf16 activations the
// products can stay in bf16 pairs: the 32 kept values of 64 inputs are one zmm as stored (group j's two kept
// values in words 2j, 2j + 1), one vpermt2w gathers the 32 activations they meet from the 64 inputs' two zmm,
// and vdpbf16ps adds both products of each group into one fp32 lane: 2 loads, 1 permute, 1 dot per 64 inputs
// and token. Every product of two bf16 numbers is exact in fp32 (8 + 8 significant bits), so the result is
// the fp32 sum of the exact products, as the fp32 kernel computes it on the same bf16 inputs (vdpbf16ps
// flushes subnormal bf16 inputs and fp32 results to zero; bf16 subnormals are below 1e-38).
//
// At 4-16 tokens the fp32 kernel is bound by its activation loads (4 per 64 inputs and token, shared by one
// row): at 16 tokens on 4096 x 14336 it ran at 0.84x dense fp32 and a third of dense bf16 (oneDNN's
// vdpbf16ps GEMM). Here a step multiplies R = 4 rows by up to 4 tokens (16 accumulators; 8 rows at one
// token), so 2 activation loads serve 4 rows, and the rows' bytes come from memory once for all the token
// tiles (rows outer, tiles inner: a block of 4 rows, 4 x 2.25 bytes per input, stays in L2 while its tiles
// pass over it).
#include <algorithm>
#include <cstring>

#include "packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16")
#include <immintrin.h>

namespace sparsekit {
namespace cpu {
namespace {

// Rows a step: at one token 8 (8 accumulators + 16 row registers + 2 activations + 3 constants), more streams
// in flight: from DRAM on 4096 x 14336 at one thread, 1 row a step took 4.6 ms, 2 rows 4.1, 4 rows 3.2-3.4 and
// 8 rows 2.8 (alternating with the fp32 kernel's 2.9-3.2 on the same weights, ad hoc). With more tokens 4
// (4 x 4 accumulators + 8 + 2 + 3): 8 rows would spill.
constexpr int kRowsOneToken = 8;
constexpr int kRows = 4;
constexpr int kTokens = 4;  // tokens a tile

// The word indices of the 32 activations that the 32 kept values of 64 inputs meet. The metadata qword of the
// 64 inputs holds kept value j's position in its group at bits 2j, 2j + 1; vpmultishiftqb (the qword
// broadcast to every lane) moves each field to the low byte of word j, and vpternlogd keeps its 2 bits and
// ORs in the group's base 4 (j / 2) (whose low 2 bits are 0): 3 instructions for 32 indices.
struct KeptIndex {
  __m512i ctrl, base, three;
  KeptIndex() {
    alignas(64) uint8_t ctrl_b[64] = {};
    alignas(64) uint16_t base_b[32];
    for (int j = 0; j < 32; ++j) {
      ctrl_b[2 * j] = static_cast<uint8_t>(2 * j);
      base_b[j] = static_cast<uint16_t>(4 * (j / 2));
    }
    ctrl = _mm512_load_si512(ctrl_b);
    base = _mm512_load_si512(base_b);
    three = _mm512_set1_epi16(3);
  }
  __m512i operator()(const uint8_t* meta64) const {
    uint64_t mw;
    std::memcpy(&mw, meta64, 8);
    const __m512i fields = _mm512_multishift_epi64_epi8(ctrl, _mm512_set1_epi64(static_cast<long long>(mw)));
    return _mm512_ternarylogic_epi32(fields, three, base, 0xEA);  // (fields & three) | base
  }
};

// rows n .. n + R - 1 times tokens t0 .. t0 + MT - 1 (x: [m, K] bf16 bits) into sums[r * MT + t]; inputs
// [0, k64) only. `ahead`: prefetch the lines of the rows R on (the first tile over a block of rows; the later
// tiles read from L2).
template <int MT, int R>
inline void block(const Packed& p, KeptIndex& ix, const uint16_t* x, int64_t t0, int64_t n, bool ahead,
                  float* sums) {
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  const uint16_t* values[R];
  const uint8_t* meta[R];
  for (int r = 0; r < R; ++r) {
    values[r] = static_cast<const uint16_t*>(p.values) + (n + r) * (K / 2);
    meta[r] = p.meta + (n + r) * (K / 8);
  }
  __m512 acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < k64; k0 += 64) {
    // the constants stay in registers (GCC otherwise reloads them as memory operands every step)
    asm("" : "+v"(ix.ctrl), "+v"(ix.base), "+v"(ix.three));
    __m512i idx[R], w[R];
    for (int r = 0; r < R; ++r) {
      if (ahead) prefetch_kept_bf16<R>(p, values[r], meta[r], k0);  // the rows R on, as kept_bf16_tile does
      idx[r] = ix(meta[r] + k0 / 8);
      w[r] = _mm512_loadu_si512(values[r] + k0 / 2);
    }
    for (int t = 0; t < MT; ++t) {
      const uint16_t* xk = x + (t0 + t) * K + k0;
      const __m512i xa = _mm512_loadu_si512(xk), xb = _mm512_loadu_si512(xk + 32);
      for (int r = 0; r < R; ++r)
        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)w[r], (__m512bh)_mm512_permutex2var_epi16(xa, idx[r], xb));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) sums[r * MT + t] = _mm512_reduce_add_ps(acc[r][t]);
}

// every token of rows n .. n + R - 1: tiles of up to kTokens, then the inputs past k64 (fewer than 64) by the
// scalar decoder, and the bias
template <int R>
void rows_block(const Packed& p, KeptIndex& ix, const uint16_t* x, int64_t m, float* out, const float* bias,
                int64_t n) {
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  float sums[R * kTokens];
  for (int64_t t0 = 0; t0 < m; t0 += kTokens) {
    const int64_t mt = std::min<int64_t>(kTokens, m - t0);
    const bool ahead = t0 == 0;
    if constexpr (R > kRows) {  // one token only (rows_semi24_bf16_dot): more tokens would spill
      block<1, R>(p, ix, x, t0, n, ahead, sums);
    } else {
      switch (mt) {
        case 1: block<1, R>(p, ix, x, t0, n, ahead, sums); break;
        case 2: block<2, R>(p, ix, x, t0, n, ahead, sums); break;
        case 3: block<3, R>(p, ix, x, t0, n, ahead, sums); break;
        default: block<4, R>(p, ix, x, t0, n, ahead, sums); break;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int64_t t = 0; t < mt; ++t) {
        float s = sums[r * mt + t];
        for (int64_t k = k64; k < K; ++k) s += weight_at(p, n + r, k) * bf16_to_float(x[(t0 + t) * K + k]);
        out[(t0 + t) * p.n + n + r] = s + (bias ? bias[n + r] : 0.0f);
      }
  }
}

}  // namespace

void rows_semi24_bf16_dot(const Packed& p, const uint16_t* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  KeptIndex ix;
  int64_t n = n0;
  if (m == 1)
    for (; n + kRowsOneToken <= n1; n += kRowsOneToken) rows_block<kRowsOneToken>(p, ix, x, m, out, bias, n);
  for (; n + kRows <= n1; n += kRows) rows_block<kRows>(p, ix, x, m, out, bias, n);
  for (; n < n1; ++n) rows_block<1>(p, ix, x, m, out, bias, n);
}

bool bf16_dot_compiled() { return true; }

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: never called (bf16_dot_compiled() is false)

namespace sparsekit {
namespace cpu {

bool bf16_dot_compiled() { return false; }
void rows_semi24_bf16_dot(const Packed& p, const uint16_t* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  for (int64_t t = 0; t < m; ++t)
    for (int64_t n = n0; n < n1; ++n) {
      float s = 0.0f;
      for (int64_t k = 0; k < p.k; ++k) s += weight_at(p, n, k) * bf16_to_float(x[t * p.k + k]);
      out[t * p.n + n] = s + (bias ? bias[n] : 0.0f);
    }
}

}  // namespace cpu
}  // namespace sparsekit

#endif
