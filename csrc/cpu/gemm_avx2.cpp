// AVX2 path (AVX2, FMA, F16C): the design of the AVX-512 path (gemm_avx512.cpp) at 8 lanes, for the x86-64
// CPUs that have no AVX-512 (AMD Zen 1-3, Intel client cores from Alder Lake on, Haswell-Broadwell servers).
//
// Decode must keep up with streaming W, as there; what the narrower ISA changes, and why:
// - 16 ymm registers instead of 32 zmm: tiles hold at most 8 tokens x 1 accumulator, 4 x 2, 1 x 4 (the
//   nibble layouts and int4 + 2:4, which also keep per-group sums: 4 tokens), sized so that accumulators,
//   the decoded weights and the loop's constants stay in registers (a spill in the inner loop costs a
//   store and a reload on an FMA chain).
// - FMA latency (4 cycles) x issue rate (2 a cycle) = 8 chains in flight to hide it; few tokens give few
//   chains, so at 1-2 tokens the loops alternate accumulator sets (more chains, same registers).
// - no vexpandps / vpermt2ps: at 2+ tokens a 2:4 row is expanded to dense (zeros at the pruned inputs) with
//   one 8-lane vpermps per 8 inputs, its indices read from a 256-entry table by the metadata byte, its source
//   zero-padded so that pruned lanes pick a zero; the expanded row serves every token of the tile for one
//   extra FMA each. At one token nothing is shared, and the kept activations are gathered instead, with
//   in-lane shuffles from activations stored in another order (`semi24_gather_rows`).
// - no 16-entry vpermps: E2M1 is sign + 3 magnitude bits, so an 8-entry vpermps on the magnitude and the
//   sign bit XORed in do the lookup (`MXFP4Table`, the per-chunk decoder); int4 codes are converted
//   (vcvtdq2ps), as there. At one token the MXFP4 kernel instead looks codes up as bytes (vpshufb: 2 x E2M1
//   + 12) and converts them as int4 codes (`mxfp4_one_token_rows`): Zen 3 issues vpermps at half vpshufb's rate.
// The nibble layouts split the activations into even / odd inputs and fold the int4 zero point out of
// the loop, exactly as the AVX-512 path does (see Split); the group size rules are the same (the binding's
// `simd_fits`: group % 16 == 0 or one group per row), so a 16-input step never straddles two groups.
// At the end: the int8-activation (a8) kernels of `cpu_a8` for CPUs without AVX-512 VNNI (rows_a8_avx2).
#include <algorithm>
#include <cstring>
#include <vector>

#include "a8_common.h"
#include "packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPARSEKIT_AVX2 1

namespace sparsekit {
namespace cpu {
namespace {

// The lookup tables that a static constructor fills when the library loads, defined before this file's
// `#pragma GCC target`: their constructors are baseline x86-64 code, so loading the library runs no AVX2
// instruction on a CPU without it (each is described where its kernels use it, below).
struct MXFP4Table {
  alignas(32) float lut[256][8];
  MXFP4Table() {
    for (int u = 0; u < 256; ++u)
      for (uint32_t i = 0; i < 8; ++i) {
        const float v = e2m1_to_float(i) * e8m0_to_float(static_cast<uint8_t>(u));
        uint32_t b;
        std::memcpy(&b, &v, 4);
        b ^= i << 28;
        std::memcpy(&lut[u][i], &b, 4);
      }
  }
};
const MXFP4Table kMXFP4;

struct E8M0Table {
  float v[256];
  E8M0Table() {
    for (int u = 0; u < 256; ++u) v[u] = e8m0_to_float(static_cast<uint8_t>(u));
  }
};
const E8M0Table kE8M0;

// 2 x E2M1 + 12 of each 4-bit code (integers 0..24: unsigned bytes that `mxfp4_one_token_rows` converts)
struct BiasedE2M1Table {
  alignas(16) uint8_t u[16];
  BiasedE2M1Table() {
    for (uint32_t i = 0; i < 16; ++i) u[i] = static_cast<uint8_t>(2.0f * e2m1_to_float(i) + 12.0f);
  }
};
const BiasedE2M1Table kBiasedE2M1;

}  // namespace
}  // namespace cpu
}  // namespace sparsekit

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "avx2_common.h"  // hsum

namespace sparsekit {
namespace cpu {
namespace {

// The decoders' small functions are called from large templated loops, where GCC's size heuristics
// otherwise leave some of them out of line: a call per 16 weights, and the vectors through memory.
#define SK_INLINE inline __attribute__((always_inline))

// Each weight stream is prefetched once per 64-byte line of it (`prefetch_ahead`, packed_cpu.h: measured 2x).

// fp16 -> fp32 in one instruction (F16C), exact as `fp16_to_float` (which GCC leaves out of line: a call, and
// vzeroupper with every live ymm spilled around it, once per group)
SK_INLINE float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// ---------------------------------------------------------------- decoding helpers

// vpermps indices of one 2:4 metadata byte (2 groups of 4 inputs): dense lane 4h + i takes source lane
// 2h (the group's first kept value) or 2h + 1 (its second) when i is their position, else lane 4, which the
// callers keep zero. The first position is tested first, as `weight_at` does. constexpr, so that loading the
// library runs no code compiled for AVX2 (see gemm_avx512.cpp's MaskTable).
struct ExpandTable {
  alignas(32) int32_t idx[256][8] = {};
  constexpr ExpandTable() {
    for (int b = 0; b < 256; ++b)
      for (int h = 0; h < 2; ++h) {
        const int nib = (b >> (4 * h)) & 15, p0 = nib & 3, p1 = nib >> 2;
        for (int i = 0; i < 4; ++i) idx[b][4 * h + i] = i == p0 ? 2 * h : i == p1 ? 2 * h + 1 : 4;
      }
  }
};
constexpr ExpandTable kExpand;

// 4 kept values (the 2 groups of one metadata byte; lanes 4-7 of `kept` zero) at their 8 dense positions
SK_INLINE __m256 expand8(__m256 kept, uint8_t meta) {
  return _mm256_permutevar8x32_ps(kept, _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.idx[meta])));
}

SK_INLINE __m256 expand8(__m128 kept, uint8_t meta) { return expand8(_mm256_zextps128_ps256(kept), meta); }

// the high half of v in lanes 0-3, zeros above: one vperm2f128 (an extract and the zero extension GCC emits
// after it are two)
SK_INLINE __m256 high_half(__m256 v) { return _mm256_permute2f128_ps(v, v, 0x81); }

// 16 nibbles (8 bytes, low nibble first) as two vectors of 8 int32 in input order
SK_INLINE void nibbles16(const uint8_t* p, __m256i& a, __m256i& b) {
  const __m128i x = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i lo = _mm_and_si128(x, _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), _mm_set1_epi8(0x0F));
  const __m128i v = _mm_unpacklo_epi8(lo, hi);
  a = _mm256_cvtepu8_epi32(v);
  b = _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v, v));
}

// 8 nibbles (4 bytes, low nibble first) as 8 int32 in order: one variable shift of the broadcast word
SK_INLINE __m256i nibbles8(const uint8_t* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(w)), shifts), _mm256_set1_epi32(15));
}

// E2M1 through an 8-entry vpermps (it reads only the low 3 bits of each index: the magnitude). The sign,
// bit 3 of the code, reaches bit 31 by a left shift of the code by 28, which also drops bits 0-2 into
// bits 28-30 (the exponent); the table entries are pre-XORed with their own index << 28, so one XOR with
// (code << 28) cancels those and flips the sign: lut[c & 7] ^ (c << 28) = +-|value| bit for bit, whatever
// the entry (a subnormal, a NaN). One table per E8M0 exponent (256 x 32 bytes), its entries |E2M1| x 2^e
// rounded as `weight_at` rounds them: a block costs a byte load and the table row as vpermps's memory
// operand, no arithmetic.
// (MXFP4Table kMXFP4: at the top of the file, built with baseline instructions)

SK_INLINE __m256 mxfp4_values(const float* lut, __m256i codes) {
  return _mm256_castsi256_ps(_mm256_xor_si256(
      _mm256_castps_si256(_mm256_permutevar8x32_ps(_mm256_load_ps(lut), codes)), _mm256_slli_epi32(codes, 28)));
}

// ---------------------------------------------------------------- 16-input decoders
//
// chunk(k0, w0, w1): W[n, k0 .. k0 + 15] in input order (k0 % 16 == 0); ahead(k0): prefetch, called every
// chunk; row_scale(): a factor of the whole row left out of the chunks (int8) and applied to the row's sum.

// Group scale (and zero point) of a row, advanced as k grows: chunks of 16 are visited in order from k = 0
// and never straddle two groups, so each group starts at a chunk and the next group is always gi + 1.
struct GroupTrack {
  const uint16_t* scales = nullptr;
  const uint8_t* zeros = nullptr;
  int64_t group = 0, end = 0, gi = -1;
  __m256 scale, zero;

  SK_INLINE void begin(const Packed& p, int64_t n) {
    const int64_t G = p.groups();
    scales = p.scales + n * G;
    zeros = p.zeros ? p.zeros + n * G : nullptr;
    group = p.group;
    gi = -1;
    end = 0;
  }
  SK_INLINE void at(int64_t k0) {
    if (k0 >= end) {
      ++gi;
      end += group;
      scale = _mm256_set1_ps(half_to_float(scales[gi]));
      zero = _mm256_set1_ps(zeros ? static_cast<float>(zeros[gi]) : 8.0f);
    }
  }
};

struct Int4Decoder {
  const Packed& p;
  const uint8_t* codes = nullptr;
  GroupTrack g;
  explicit Int4Decoder(const Packed& pk) : p(pk) {}
  SK_INLINE void begin(int64_t n) {
    codes = p.codes + n * (p.k / 2);
    g.begin(p, n);
  }
  float row_scale() const { return 1.0f; }
  SK_INLINE void ahead(int64_t k0) {
    if ((k0 & 127) == 0) prefetch_ahead(p, codes + (k0 >> 1));
  }
  SK_INLINE void chunk(int64_t k0, __m256& w0, __m256& w1) {
    g.at(k0);
    __m256i a, b;
    nibbles16(codes + (k0 >> 1), a, b);
    w0 = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(a), g.zero), g.scale);
    w1 = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(b), g.zero), g.scale);
  }
};

// int4 + 2:4: the 8 kept codes of 16 inputs (4 bytes) become values, then are expanded like 2:4 values
// (dequant; decode runs int4_semi24_tile, which scales per group instead of per weight)
struct Int4Semi24Decoder {
  const Packed& p;
  const uint8_t* codes = nullptr;
  const uint8_t* meta = nullptr;
  GroupTrack g;
  explicit Int4Semi24Decoder(const Packed& pk) : p(pk) {}
  SK_INLINE void begin(int64_t n) {
    codes = p.codes + n * (p.k / 4);
    meta = p.meta + n * (p.k / 8);
    g.begin(p, n);
  }
  float row_scale() const { return 1.0f; }
  SK_INLINE void ahead(int64_t k0) {
    if ((k0 & 255) == 0) prefetch_ahead(p, codes + (k0 >> 2));  // 64 bytes of codes per 256 inputs, 32 of positions
    if ((k0 & 511) == 0) prefetch_ahead(p, meta + (k0 >> 3));
  }
  SK_INLINE void chunk(int64_t k0, __m256& w0, __m256& w1) {
    g.at(k0);
    const __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(nibbles8(codes + (k0 >> 2))), g.zero), g.scale);
    w0 = expand8(_mm256_castps256_ps128(v), meta[k0 >> 3]);
    w1 = expand8(high_half(v), meta[(k0 >> 3) + 1]);
  }
};

// 2:4 values of one type, templated so that the type is not re-tested in the inner loop
template <ValueType VT>
struct Semi24Decoder {
  static constexpr int kBytes = VT == ValueType::kFloat32 ? 4 : 2;
  const Packed& p;
  const uint8_t* meta = nullptr;
  const char* values = nullptr;
  explicit Semi24Decoder(const Packed& pk) : p(pk) {}
  SK_INLINE void begin(int64_t n) {
    meta = p.meta + n * (p.k / 8);
    values = static_cast<const char*>(p.values) + n * (p.k / 2) * kBytes;
  }
  float row_scale() const { return 1.0f; }
  SK_INLINE void ahead(int64_t k0) {
    if ((k0 & (128 / kBytes - 1)) == 0) prefetch_ahead(p, values + (k0 >> 1) * kBytes);  // 64 bytes of values
    if ((k0 & 511) == 0) prefetch_ahead(p, meta + (k0 >> 3));
  }
  static SK_INLINE __m128 kept4(const char* v) {
    if (VT == ValueType::kFloat32) return _mm_loadu_ps(reinterpret_cast<const float*>(v));
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(v));
    if (VT == ValueType::kBFloat16) return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(h), 16));
    return _mm_cvtph_ps(h);
  }
  SK_INLINE void chunk(int64_t k0, __m256& w0, __m256& w1) {
    const char* v = values + (k0 >> 1) * kBytes;  // the 8 kept values of these 16 inputs
    w0 = expand8(kept4(v), meta[k0 >> 3]);
    w1 = expand8(kept4(v + 4 * kBytes), meta[(k0 >> 3) + 1]);
  }
};

struct MXFP4Decoder {
  const Packed& p;
  const uint8_t* codes = nullptr;
  const uint8_t* e8m0 = nullptr;
  explicit MXFP4Decoder(const Packed& pk) : p(pk) {}
  SK_INLINE void begin(int64_t n) {
    codes = p.codes + n * (p.k / 2);
    e8m0 = p.e8m0 + n * (p.k / 32);
  }
  float row_scale() const { return 1.0f; }
  SK_INLINE void ahead(int64_t k0) {
    if ((k0 & 127) == 0) prefetch_ahead(p, codes + (k0 >> 1));
  }
  SK_INLINE void chunk(int64_t k0, __m256& w0, __m256& w1) {
    const float* lut = kMXFP4.lut[e8m0[k0 / 32]];
    __m256i a, b;
    nibbles16(codes + (k0 >> 1), a, b);
    w0 = mxfp4_values(lut, a);
    w1 = mxfp4_values(lut, b);
  }
};

SK_INLINE __m256 w8(const int8_t* c) {  // 8 int8 codes as fp32
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c))));
}

// kScaled: the per-channel scale in every weight (dequant); else applied once to the row's sum (decode:
// one multiply fewer per 8 weights, and int8 is the layout closest to the memory stream's rate)
template <bool kScaled>
struct Int8Decoder {
  const Packed& p;
  const int8_t* codes = nullptr;
  float s = 1.0f;
  __m256 scale;
  explicit Int8Decoder(const Packed& pk) : p(pk) {}
  SK_INLINE void begin(int64_t n) {
    codes = reinterpret_cast<const int8_t*>(p.codes) + n * p.k;
    s = half_to_float(p.scales[n]);
    scale = _mm256_set1_ps(s);
  }
  float row_scale() const { return kScaled ? 1.0f : s; }
  SK_INLINE void ahead(int64_t k0) {
    if ((k0 & 63) == 0) prefetch_ahead(p, codes + k0);
  }
  SK_INLINE void chunk(int64_t k0, __m256& w0, __m256& w1) {
    w0 = w8(codes + k0);
    w1 = w8(codes + k0 + 8);
    if (kScaled) {
      w0 = _mm256_mul_ps(w0, scale);
      w1 = _mm256_mul_ps(w1, scale);
    }
  }
};

// rows n0..n1, tokens [t0, t0 + MT): the row is decoded once per tile of MT tokens. NA accumulator sets
// per token, the chunks' two vectors and consecutive chunks going to different sets: 4 chains at one token,
// 2 per token up to 4 tokens (8 registers), 1 from 5 (each chain then takes 2 FMAs per chunk, hidden by the
// 2 x MT FMAs that issue meanwhile).
template <int MT, class D>
inline void tile(D& d, const Packed& p, const float* x, int64_t t0, float* out, const float* bias, int64_t n0,
                 int64_t n1) {
  constexpr int NA = MT == 1 ? 4 : (MT <= 4 ? 2 : 1);
  const int64_t K = p.k, simd_k = K & ~int64_t(15);
  const float* xt = x + t0 * K;
  for (int64_t n = n0; n < n1; ++n) {
    d.begin(n);
    __m256 acc[NA][MT];
    for (int a = 0; a < NA; ++a)
      for (int t = 0; t < MT; ++t) acc[a][t] = _mm256_setzero_ps();
    auto step = [&](int64_t k0, int s) __attribute__((always_inline)) {  // s: the first set of this chunk
      d.ahead(k0);
      __m256 w0, w1;
      d.chunk(k0, w0, w1);
      constexpr int kNext = NA > 1 ? 1 : 0;
      for (int t = 0; t < MT; ++t) {
        acc[s][t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt + t * K + k0), acc[s][t]);
        acc[s + kNext][t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + t * K + k0 + 8), acc[s + kNext][t]);
      }
    };
    int64_t k0 = 0;
    for (; k0 + 32 <= simd_k; k0 += 32) {
      step(k0, 0);
      step(k0 + 16, NA == 4 ? 2 : 0);
    }
    if (k0 < simd_k) step(k0, 0);
    const float rs = d.row_scale();
    for (int t = 0; t < MT; ++t) {
      __m256 sum = acc[0][t];
      for (int a = 1; a < NA; ++a) sum = _mm256_add_ps(sum, acc[a][t]);
      float s = hsum(sum) * rs;
      for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * xt[t * K + k];
      out[(t0 + t) * p.n + n] = s + (bias ? bias[n] : 0.0f);
    }
  }
}

// The tile-size switch is written out per caller (see gemm_avx512.cpp: a generic dispatch through a
// templated lambda measured slower there).
template <class D>
void rows_with(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  D d(p);
  for (int64_t t0 = 0; t0 < m; t0 += 8) {
    switch (std::min<int64_t>(8, m - t0)) {
      case 1: tile<1>(d, p, x, t0, out, bias, n0, n1); break;
      case 2: tile<2>(d, p, x, t0, out, bias, n0, n1); break;
      case 3: tile<3>(d, p, x, t0, out, bias, n0, n1); break;
      case 4: tile<4>(d, p, x, t0, out, bias, n0, n1); break;
      case 5: tile<5>(d, p, x, t0, out, bias, n0, n1); break;
      case 6: tile<6>(d, p, x, t0, out, bias, n0, n1); break;
      case 7: tile<7>(d, p, x, t0, out, bias, n0, n1); break;
      default: tile<8>(d, p, x, t0, out, bias, n0, n1); break;
    }
  }
}

template <class D>
void dequant_with(const Packed& p, float* dst, int64_t n0, int64_t n1) {
  D d(p);
  const int64_t K = p.k, simd_k = K & ~int64_t(15);
  for (int64_t n = n0; n < n1; ++n) {
    d.begin(n);
    float* row = dst + (n - n0) * K;
    for (int64_t k0 = 0; k0 < simd_k; k0 += 16) {
      d.ahead(k0);
      __m256 w0, w1;
      d.chunk(k0, w0, w1);
      _mm256_storeu_ps(row + k0, w0);
      _mm256_storeu_ps(row + k0 + 8, w1);
    }
    for (int64_t k = simd_k; k < K; ++k) row[k] = weight_at(p, n, k);
  }
}

// ---------------------------------------------------------------- int8 at one token: four rows at a time
//
// `tile<1>` reads 4 bytes of fp32 activations per byte of int8 weights, one row at a time, and at K = 14336 a
// token's activations (56 KiB) overflow Zen 3's 32 KiB L1: the core read the weight stream 4x over again from L2.
// Four rows at once load each activation vector once into a register for all four (1 byte a weight byte), and
// their 8 chains (2 a row) keep 8 FMAs in flight where `tile<1>`'s 4 chains left the loop waiting on the FMA's
// 4-cycle latency. On the Zen 3 VM (bench/kernels/ab_builds.py, docs/cpu-kernels.md) against one row a step: -29%
// in cache, -32% / -25% from memory at one / two threads (4096 x 14336), -15% / -5% on SmolLM2's shapes; four rows
// were 12-16% faster than two, and eight (one chain a row) no faster than four: their row pointers no longer fit
// the general registers.

// rows n .. n + R - 1 (R = 1 or 4) over the SIMD inputs: their unscaled sums, 8 lanes each. Every row takes
// the same two chains in the same order whatever R, so a row's sum does not depend on the rows beside it (or
// on where a thread's range starts).
template <int R>
SK_INLINE void int8_one_token_sums(const Packed& p, const float* x, int64_t n, __m256* sums) {
  const int64_t K = p.k, simd_k = K & ~int64_t(15), k32 = K & ~int64_t(31);
  const int8_t* c[R];
  for (int r = 0; r < R; ++r) c[r] = reinterpret_cast<const int8_t*>(p.codes) + (n + r) * K;
  __m256 a[R][2];
  for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
  auto block = [&](int64_t k0) __attribute__((always_inline)) {  // inputs k0 .. k0 + 31
    const __m256 x0 = _mm256_loadu_ps(x + k0), x1 = _mm256_loadu_ps(x + k0 + 8);
    const __m256 x2 = _mm256_loadu_ps(x + k0 + 16), x3 = _mm256_loadu_ps(x + k0 + 24);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      a[r][0] = _mm256_fmadd_ps(w8(c[r] + k0), x0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(w8(c[r] + k0 + 8), x1, a[r][1]);
      a[r][0] = _mm256_fmadd_ps(w8(c[r] + k0 + 16), x2, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(w8(c[r] + k0 + 24), x3, a[r][1]);
    }
  };
  int64_t k0 = 0;
  for (; k0 + 64 <= k32; k0 += 64) {  // a 64-byte line of each row a step: one prefetch each
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) prefetch_ahead(p, c[r] + k0);
    block(k0);
    block(k0 + 32);
  }
  if (k0 < k32) block(k0);
  if (k32 < simd_k) {  // a last 16 inputs
    const __m256 x0 = _mm256_loadu_ps(x + k32), x1 = _mm256_loadu_ps(x + k32 + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      a[r][0] = _mm256_fmadd_ps(w8(c[r] + k32), x0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(w8(c[r] + k32 + 8), x1, a[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) sums[r] = _mm256_add_ps(a[r][0], a[r][1]);
}

void int8_one_token_rows(const Packed& p, const float* x, float* out, const float* bias, int64_t n0, int64_t n1) {
  const int64_t K = p.k, simd_k = K & ~int64_t(15);
  auto finish = [&](int64_t n, __m256 sum) {  // the per-channel scale once on the row's sum, as `tile` does
    float s = hsum(sum) * half_to_float(p.scales[n]);
    for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * x[k];
    out[n] = s + (bias ? bias[n] : 0.0f);
  };
  __m256 sums[4];
  int64_t n = n0;
  for (; n + 3 < n1; n += 4) {
    int8_one_token_sums<4>(p, x, n, sums);
    for (int r = 0; r < 4; ++r) finish(n + r, sums[r]);
  }
  for (; n < n1; ++n) {  // up to 3 rows left over
    int8_one_token_sums<1>(p, x, n, sums);
    finish(n, sums[0]);
  }
}

// ---------------------------------------------------------------- 2:4 at one token: gather
//
// At one token the expansion above spends, per 16 inputs, two lane-crossing vpermps (their indices loaded from
// a 256-entry table by each metadata byte) and two FMAs of which half multiply zeros: ~5 cycles per 16 inputs
// on a Zen 3 core (3.1 GHz), 11 GB/s of 2:4 bf16 from cache, under half of its 23 GB/s read; this runs at ~3
// (19 GB/s; bench/kernels/ab_builds.py, docs/cpu-kernels.md; bf16 values, two rows at a time as below: ~2.6). Gathering the 8 kept
// activations needs only in-lane shuffles once the activations' 4-input groups A B C D of every 16 inputs are
// stored as A C B D (once per call, `gather_order`): vpermilps of [A | C] and of [B | D] by one index vector
// picks the kept inputs of all four groups, because vpermilps reads only the low 2 bits of each dword, so the
// 16 metadata bits broadcast and shifted right by 0, 2, .., 14 are that vector whatever the bits above; a blend
// keeps [A A B B | C C D D], the order the kept values are stored in. Per 16 inputs: a variable shift, two
// vpermilps, a blend, the values' conversion and one FMA. (A pair whose two positions are equal, which the
// packer never writes, counts both values there, as the AVX-512 gather does.)

// x in the gathers' order: within every 16 inputs, inputs 4-7 and 8-11 trade places (the tail stays); with
// kPairs (the bf16 values' two-step loop below), every whole 32 inputs' groups A B C D E F G H are stored as
// A E B F C G D H, and a last 16 inputs as above
template <bool kPairs = false>
void gather_order(const float* x, int64_t K, float* xr) {
  const int64_t k16 = K & ~int64_t(15), k32 = kPairs ? K & ~int64_t(31) : 0;
  for (int64_t k0 = 0; k0 < k32; k0 += 32) {
    for (int j = 0; j < 8; ++j) _mm_storeu_ps(xr + k0 + 4 * j, _mm_loadu_ps(x + k0 + 4 * ((j >> 1) + 4 * (j & 1))));
  }
  for (int64_t k0 = k32; k0 < k16; k0 += 16) {
    _mm_storeu_ps(xr + k0, _mm_loadu_ps(x + k0));
    _mm_storeu_ps(xr + k0 + 4, _mm_loadu_ps(x + k0 + 8));
    _mm_storeu_ps(xr + k0 + 8, _mm_loadu_ps(x + k0 + 4));
    _mm_storeu_ps(xr + k0 + 12, _mm_loadu_ps(x + k0 + 12));
  }
  std::memcpy(xr + k16, x + k16, static_cast<size_t>(K - k16) * sizeof(float));
}

// the 8 kept activations of inputs [k0, k0 + 16) (xr in gather order; m: the 16 metadata bits as the low half
// of a 32-bit word, k0's byte first), in the kept values' order
SK_INLINE __m256 gather8(const float* xr, uint32_t m) {
  const __m256i idx = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(m)),
                                        _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
  const __m256 ac = _mm256_permutevar_ps(_mm256_loadu_ps(xr), idx);      // [A A A A | C C C C] picks
  const __m256 bd = _mm256_permutevar_ps(_mm256_loadu_ps(xr + 8), idx);  // [B B B B | D D D D] picks
  return _mm256_blend_ps(ac, bd, 0xCC);
}

// the 8 kept values of 16 inputs as fp32, in stored order
template <ValueType VT>
SK_INLINE __m256 kept8(const char* v) {
  if (VT == ValueType::kFloat32) return _mm256_loadu_ps(reinterpret_cast<const float*>(v));
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v));
  if (VT == ValueType::kBFloat16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

// the 16 metadata bits of inputs [k0, k0 + 16) of a row at `m`, in the low half of every lane of a word: a
// broadcast load of 4 bytes, whose upper 2 (the next 16 inputs') the index ignores; kLast: the row's last 16
// inputs, read as 2 bytes (nothing past the row, nor past the tensor)
template <bool kLast = false>
SK_INLINE uint32_t meta16(const uint8_t* m) {
  uint32_t w = 0;
  std::memcpy(&w, m, kLast ? 2 : 4);
  return w;
}

// bf16 values, 32 inputs (two steps) at a time, two rows at once.
// - Widening: one 32-byte load of 16 values and an interleave with zeros (vpunpck{l,h}wd) widen 8 values to fp32 each:
//   1 shuffle where `kept8` takes 2 (vpmovzxwd, vpslld). Zen 3 issues those, vpsrlvd, vpermilps and vpshufb at 2 a
//   cycle (vector_throughput_avx2.cpp: 0.48 cycles each; blends 0.24): 5 of them a step in semi24_gather_rows'
//   `step`, 4 here. The interleave works per 128-bit half, so its low half holds values 0-3 of each 8 (groups A B,
//   E F of 32 inputs) and its high half values 4-7 (C D, G H): the activations' pair order (`gather_order<true>`)
//   and the index's shift counts follow.
// - Two rows: at K = 14336 a token's fp32 activations (56 KiB) overflow the 32 KiB L1, and a row's step reads 64
//   bytes of them from L2 for 18 of weights; two rows share every activation load. The 32-byte loads need `xr`
//   line-aligned: at a std::vector's 16 bytes half of them split a cache line (harness: 2.72 against 2.34 cycles).
// Scratch harness (64 rows x 14336 inputs, weights in L2): 2.42-2.55 cycles a step for two rows at once, 2.72-2.95
// for one row in pairs of steps, 2.80-3.01 for `step`; four rows at once 1-4% under two (not kept). The kernel
// against `step` (ab_builds.py p10, one thread): -13.5% from cache at 1024 x 14336, -22% / -16% at SmolLM2's
// 1536 x 576 / 576 x 1536.
struct PairActs {  // the activations of 32 inputs, in pair order: [A | E] [B | F] [C | G] [D | H]
  __m256 ae, bf, cg, dh;
  SK_INLINE explicit PairActs(const float* xk)
      : ae(_mm256_loadu_ps(xk)), bf(_mm256_loadu_ps(xk + 8)), cg(_mm256_loadu_ps(xk + 16)),
        dh(_mm256_loadu_ps(xk + 24)) {}
};

SK_INLINE void pair_step_bf16(const char* v, uint32_t m, const PairActs& x, __m256& a, __m256& b) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
  const __m256 lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), w));  // A A B B | E E F F
  const __m256 hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), w));  // C C D D | G G H H
  const __m256i mm = _mm256_set1_epi32(static_cast<int>(m));
  const __m256i i_lo = _mm256_srlv_epi32(mm, _mm256_setr_epi32(0, 2, 4, 6, 16, 18, 20, 22));
  const __m256i i_hi = _mm256_srlv_epi32(mm, _mm256_setr_epi32(8, 10, 12, 14, 24, 26, 28, 30));
  a = _mm256_fmadd_ps(lo, _mm256_blend_ps(_mm256_permutevar_ps(x.ae, i_lo), _mm256_permutevar_ps(x.bf, i_lo), 0xCC), a);
  b = _mm256_fmadd_ps(hi, _mm256_blend_ps(_mm256_permutevar_ps(x.cg, i_hi), _mm256_permutevar_ps(x.dh, i_hi), 0xCC), b);
}

// rows n .. n + R - 1 (R = 1 or 2) of 2:4 bf16 values over the SIMD inputs: their sums, 8 lanes each
template <int R>
SK_INLINE void semi24_bf16_rows(const Packed& p, const float* xr, int64_t n, __m256* sums) {
  const int64_t K = p.k, simd_k = K & ~int64_t(15), k32 = K & ~int64_t(31);
  const char* v0 = static_cast<const char*>(p.values) + n * K;  // K / 2 values of 2 bytes a row
  const char* v1 = R == 2 ? v0 + K : v0;  // (one row: never read)
  const uint8_t* m0 = p.meta + n * (K / 8);
  const uint8_t* m1 = R == 2 ? m0 + K / 8 : m0;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  auto block = [&](int64_t k0, __m256& a, __m256& b, __m256& c, __m256& d) __attribute__((always_inline)) {
    const PairActs x(xr + k0);
    pair_step_bf16(v0 + k0, meta16(m0 + k0 / 8), x, a, b);  // (32 inputs' metadata: exactly the 4 bytes read)
    if (R == 2) pair_step_bf16(v1 + k0, meta16(m1 + k0 / 8), x, c, d);
  };
  int64_t k0 = 0;
  for (; k0 + 64 <= k32; k0 += 64) {
    prefetch_ahead(p, v0 + k0);  // 32 values: 64 bytes
    if (R == 2) prefetch_ahead(p, v1 + k0);
    if ((k0 & 511) == 0) {
      prefetch_ahead(p, m0 + k0 / 8);
      if (R == 2) prefetch_ahead(p, m1 + k0 / 8);
    }
    block(k0, a0, a1, b0, b1);
    block(k0 + 32, a0, a1, b0, b1);
  }
  if (k0 < k32) block(k0, a0, a1, b0, b1);
  if (k32 < simd_k) {  // a last 16 inputs, in `gather8`'s order; their metadata read as 2 bytes
    const float* xk = xr + k32;
    a0 = _mm256_fmadd_ps(kept8<ValueType::kBFloat16>(v0 + k32), gather8(xk, meta16<true>(m0 + k32 / 8)), a0);
    if (R == 2)
      b0 = _mm256_fmadd_ps(kept8<ValueType::kBFloat16>(v1 + k32), gather8(xk, meta16<true>(m1 + k32 / 8)), b0);
  }
  sums[0] = _mm256_add_ps(a0, a1);
  if (R == 2) sums[1] = _mm256_add_ps(b0, b1);
}

template <ValueType VT>
void semi24_gather_rows(const Packed& p, const float* x, float* out, const float* bias, int64_t n0, int64_t n1) {
  constexpr int kBytes = VT == ValueType::kFloat32 ? 4 : 2;
  const int64_t K = p.k, simd_k = K & ~int64_t(15);
  LineVector<float> xr(static_cast<size_t>(K));
  gather_order<VT == ValueType::kBFloat16>(x, K, xr.data());
  auto finish = [&](int64_t n, __m256 sum) {
    float s = hsum(sum);
    for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * x[k];
    out[n] = s + (bias ? bias[n] : 0.0f);
  };
  if constexpr (VT == ValueType::kBFloat16) {  // (the 16-input step below: fp32 and fp16 values only)
    __m256 sums[2];
    int64_t n = n0;
    for (; n + 1 < n1; n += 2) {
      semi24_bf16_rows<2>(p, xr.data(), n, sums);
      finish(n, sums[0]);
      finish(n + 1, sums[1]);
    }
    if (n < n1) {
      semi24_bf16_rows<1>(p, xr.data(), n, sums);
      finish(n, sums[0]);
    }
  } else {
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* mp = p.meta + n * (K / 8);
      const char* v = static_cast<const char*>(p.values) + n * (K / 2) * kBytes;
      const float* xk = xr.data();
      // four chains: a step issues 7 vector instructions (~3 cycles on Zen 3) against the FMA's 4-cycle latency.
      // Named accumulators and advancing pointers: an array indexed through the step made GCC store a chain to the
      // stack every step.
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      auto step = [&](int o, uint32_t m, __m256& a) __attribute__((always_inline)) {  // inputs +16 o
        a = _mm256_fmadd_ps(kept8<VT>(v + 8 * o * kBytes), gather8(xk + 16 * o, m), a);
      };
      int64_t k0 = 0;
      for (; k0 + 64 < simd_k; k0 += 64, mp += 8, v += 32 * kBytes, xk += 64) {  // (the row's last 16 inputs: below)
        prefetch_ahead(p, v);  // 32 values: 64 bytes of fp16 (fp32: 128)
        if (kBytes == 4) prefetch_ahead(p, v + 64);
        if ((k0 & 511) == 0) prefetch_ahead(p, mp);
        step(0, meta16(mp), a0);
        step(1, meta16(mp + 2), a1);
        step(2, meta16(mp + 4), a2);
        step(3, meta16(mp + 6), a3);
      }
      for (; k0 + 16 < simd_k; k0 += 16, mp += 2, v += 8 * kBytes, xk += 16) step(0, meta16(mp), a0);
      if (k0 < simd_k) step(0, meta16<true>(mp), a1);
      finish(n, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    }
  }
}

// ---------------------------------------------------------------- int4 + 2:4 at decode
//
// Per group, as the AVX-512 path: the codes become q - z (the stored zero point, or 8), are expanded to the
// 16 dense inputs of each step, and the group scale multiplies the group's partial sums once, not every
// weight (per 16 inputs ~9 instructions for 6 bytes: 4 of codes, 2 of positions). Tiles of up to 4 tokens:
// the group sums and the row sums must both stay in registers.
template <int MT>
void int4_semi24_tile(const Packed& p, const float* x, int64_t t0, float* out, const float* bias, int64_t n0,
                      int64_t n1) {
  constexpr int NA = MT == 1 ? 4 : (MT <= 3 ? 2 : 1);  // chains per token, as in `tile`
  constexpr int kNext = NA > 1 ? 1 : 0;
  const int64_t K = p.k, G = p.groups(), simd_k = K & ~int64_t(15);
  const float* xt = x + t0 * K;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * (K / 4);
    const uint8_t* meta = p.meta + n * (K / 8);
    __m256 acc[MT];
    for (int t = 0; t < MT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G && g * p.group < simd_k; ++g) {
      const int64_t k_end = std::min(simd_k, (g + 1) * p.group);  // a multiple of 16 (group % 16 == 0 or G == 1)
      const __m256 zero = _mm256_set1_ps(p.zeros ? static_cast<float>(p.zeros[n * G + g]) : 8.0f);
      __m256 ag[NA][MT];
      for (int a = 0; a < NA; ++a)
        for (int t = 0; t < MT; ++t) ag[a][t] = _mm256_setzero_ps();
      // c, m: this chunk's 4 code bytes and 2 metadata bytes; xk: its activations
      auto step = [&](const uint8_t* c, const uint8_t* m, const float* xk, int s) __attribute__((always_inline)) {
        const __m256 v = _mm256_sub_ps(_mm256_cvtepi32_ps(nibbles8(c)), zero);
        const __m256 w0 = expand8(_mm256_castps256_ps128(v), m[0]);
        const __m256 w1 = expand8(high_half(v), m[1]);
        for (int t = 0; t < MT; ++t) {
          ag[s][t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xk + t * K), ag[s][t]);
          ag[s + kNext][t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xk + t * K + 8), ag[s + kNext][t]);
        }
      };
      int64_t k0 = g * p.group;
      const uint8_t* c = codes + (k0 >> 2);  // pointers advanced by the loop: fewer scalar instructions than
      const uint8_t* m = meta + (k0 >> 3);   // indexing from k0 in every chunk (issue-bound loop: ~6% measured)
      const float* xk = xt + k0;
      for (; k0 + 32 <= k_end; k0 += 32, c += 8, m += 4, xk += 32) {
        // 64 bytes of codes per 256 inputs, 32 of positions: a pair [k0, k0 + 32) holds a line start when
        // k0 % 256 is 0 or 240 (pairs start at any multiple of 16 when group % 32 == 16)
        if (((k0 + 16) & 255) < 32) {
          prefetch_ahead(p, codes + ((k0 + 16) >> 2));
          if (((k0 + 16) & 511) < 32) prefetch_ahead(p, meta + ((k0 + 16) >> 3));
        }
        step(c, m, xk, 0);
        step(c + 4, m + 2, xk + 16, NA == 4 ? 2 : 0);
      }
      if (k0 < k_end) step(c, m, xk, 0);
      const __m256 sv = _mm256_set1_ps(half_to_float(p.scales[n * G + g]));
      for (int t = 0; t < MT; ++t) {
        __m256 sum = ag[0][t];
        for (int a = 1; a < NA; ++a) sum = _mm256_add_ps(sum, ag[a][t]);
        acc[t] = _mm256_fmadd_ps(sv, sum, acc[t]);
      }
    }
    for (int t = 0; t < MT; ++t) {
      float s = hsum(acc[t]);
      for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * xt[t * K + k];
      out[(t0 + t) * p.n + n] = s + (bias ? bias[n] : 0.0f);
    }
  }
}

// One token: the kept activations gathered as for 2:4 values (semi24_gather_rows), so a step converts the 8
// kept codes and makes one FMA, where the expansion above makes two and shuffles across lanes twice. As
// `int4_one_token_rows`: a group's steps unrolled for the common group sizes (kSteps: 16-input steps a group),
// two chains per group started by a multiply, the group scale by an FMA into the row's two sums.
//
// One group's two sums: `steps` steps of 16 inputs from input k0 (a multiple of 16); kLast: the group ends the
// row, whose last 16 positions are read as 2 bytes (meta16<true>). The pointers are the group's, so that each
// step's loads take constant offsets: the index arithmetic of k (4 scalar instructions a step) made a loop of
// ~13 vector instructions a step wait on Zen 3's 6-wide dispatch.
template <int kSteps, bool kLast>
SK_INLINE void int4_semi24_group_sums(const Packed& p, const uint8_t* codes, const uint8_t* meta, const float* xr,
                                      int64_t k0, int64_t steps, __m256 zero, __m256 (&a)[2]) {
  const uint8_t* c = codes + (k0 >> 2);
  const uint8_t* m = meta + (k0 >> 3);
  const float* xk = xr + k0;
  // first: the step that starts its chain (a multiply, unrolled loops only; a loop of `steps` starts from zeros)
  auto step = [&](int64_t i, uint32_t bits, bool first) __attribute__((always_inline)) {
    // 64 bytes of codes per 256 inputs, 32 of positions. Whole groups of 16 x kSteps inputs (a power of two up to
    // 256) start at multiples of their size, so only a group's first step can start a 256-input block.
    const int64_t k = k0 + 16 * i;
    if ((kSteps > 0 && 256 % (16 * kSteps) == 0) ? (i == 0 && (k0 & 255) == 0) : ((k & 255) == 0)) {
      prefetch_ahead(p, c + 4 * i);
      if ((k & 511) == 0) prefetch_ahead(p, m + 2 * i);
    }
    const __m256 v = _mm256_sub_ps(_mm256_cvtepi32_ps(nibbles8(c + 4 * i)), zero);
    const __m256 x = gather8(xk + 16 * i, bits);
    a[i & 1] = first ? _mm256_mul_ps(v, x) : _mm256_fmadd_ps(v, x, a[i & 1]);
  };
  if (kSteps > 0) {
    if (kSteps == 1) a[1] = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < kSteps; ++i)
      step(i, kLast && i == kSteps - 1 ? meta16<true>(m + 2 * i) : meta16(m + 2 * i), i < 2);
  } else {
    a[0] = a[1] = _mm256_setzero_ps();
    const int64_t body = kLast ? steps - 1 : steps;
    for (int64_t i = 0; i < body; ++i) step(i, meta16(m + 2 * i), false);
    if (kLast) step(body, meta16<true>(m + 2 * body), false);
  }
}

template <int kSteps>
void int4_semi24_gather_rows(const Packed& p, const float* x, float* out, const float* bias, int64_t n0,
                             int64_t n1) {
  const int64_t K = p.k, G = p.groups(), simd_k = K & ~int64_t(15);
  const int64_t gk = std::min(simd_k, p.group);  // inputs a group (a multiple of 16, or one group per row)
  std::vector<float> xr(static_cast<size_t>(K));
  gather_order(x, K, xr.data());
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * (K / 4);
    const uint8_t* meta = p.meta + n * (K / 8);
    const uint16_t* scales = p.scales + n * G;
    const uint8_t* zeros = p.zeros ? p.zeros + n * G : nullptr;
    __m256 r0 = _mm256_setzero_ps(), r1 = r0;
    __m256 a[2] = {};  // (each group sets it before its scale: initialised only for the compiler's warning)
    auto zero = [&](int64_t g) __attribute__((always_inline)) {
      return _mm256_set1_ps(zeros ? static_cast<float>(zeros[g]) : 8.0f);
    };
    auto scale = [&](int64_t g) __attribute__((always_inline)) {
      const __m256 sv = _mm256_set1_ps(half_to_float(scales[g]));
      r0 = _mm256_fmadd_ps(sv, a[0], r0);
      r1 = _mm256_fmadd_ps(sv, a[1], r1);
    };
    // every group but the last whole and unrolled; the last (whole or short) ends the row
    int64_t g = 0, k0 = 0;
    for (; k0 + gk < simd_k; ++g, k0 += gk) {
      int4_semi24_group_sums<kSteps, false>(p, codes, meta, xr.data(), k0, gk / 16, zero(g), a);
      scale(g);
    }
    if (k0 < simd_k) {
      // unrolled where its length is one the loop knows: the whole group's, or 64 inputs (SmolLM2's K = 576 at
      // g128) starting at a multiple of 64, as the unrolled prefetch test assumes
      const int64_t steps = (simd_k - k0) / 16;
      if (steps == kSteps) {
        int4_semi24_group_sums<kSteps, true>(p, codes, meta, xr.data(), k0, steps, zero(g), a);
      } else if (steps == 4 && k0 % 64 == 0) {
        int4_semi24_group_sums<4, true>(p, codes, meta, xr.data(), k0, steps, zero(g), a);
      } else {
        int4_semi24_group_sums<0, true>(p, codes, meta, xr.data(), k0, steps, zero(g), a);
      }
      scale(g);
    }
    float s = hsum(_mm256_add_ps(r0, r1));
    for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * x[k];
    out[n] = s + (bias ? bias[n] : 0.0f);
  }
}

void int4_semi24_rows(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                      int64_t n1) {
  if (m == 1) {
    switch (std::min(p.group, p.k & ~int64_t(15))) {
      case 64: return int4_semi24_gather_rows<4>(p, x, out, bias, n0, n1);
      case 128: return int4_semi24_gather_rows<8>(p, x, out, bias, n0, n1);
      default: return int4_semi24_gather_rows<0>(p, x, out, bias, n0, n1);
    }
  }
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    switch (std::min<int64_t>(4, m - t0)) {
      case 1: int4_semi24_tile<1>(p, x, t0, out, bias, n0, n1); break;
      case 2: int4_semi24_tile<2>(p, x, t0, out, bias, n0, n1); break;
      case 3: int4_semi24_tile<3>(p, x, t0, out, bias, n0, n1); break;
      default: int4_semi24_tile<4>(p, x, t0, out, bias, n0, n1); break;
    }
  }
}

// ---------------------------------------------------------------- nibble layouts at decode
//
// The activations are split once per call into even and odd inputs, so that code
// byte j (input 2j low, 2j + 1 high) meets even[j] and odd[j]; 8 code bytes become two 8-lane vectors with
// one zero-extension, an AND and a shift, instead of an interleave back to input order. The int4 zero
// point is folded out: sum (q - z) s x = s (sum q x - z sum x), sum x per group and token computed once per
// call (Split and split_activations: packed_cpu.h).

// Chains: even and odd inputs accumulate apart (2 per token); at 2 tokens the two 8-byte halves of each
// 16-byte step alternate between 2 sets, for 8 chains (one token: 4, `int4_one_token_rows`, MXFP4's byte loop).
template <int MT>
constexpr int nibble_sets() {
  return MT <= 2 ? 2 : 1;
}

// out[t, n] for int4 rows whose groups are whole 32-input steps (group % 32 == 0, K % 32 == 0), 2-4 tokens
template <int MT>
void int4_tile(const Packed& p, const Split& sp, int64_t t0, float* out, const float* bias, int64_t n0, int64_t n1) {
  constexpr int NC = nibble_sets<MT>();
  const int64_t K = p.k, half = K / 2, G = p.groups();
  const __m256i low = _mm256_set1_epi32(0x0F);
  const float* even = sp.even.data() + t0 * half;
  const float* odd = sp.odd.data() + t0 * half;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    __m256 acc[MT];
    float corr[MT];
    for (int t = 0; t < MT; ++t) {
      acc[t] = _mm256_setzero_ps();
      corr[t] = 0.0f;
    }
    for (int64_t g = 0; g < G; ++g) {
      const int64_t b0 = g * p.group / 2, b1 = std::min(half, (g + 1) * p.group / 2);  // code bytes of group g
      // [set][even, odd][token], indexed by constants once the lambda is inlined: a loop over the two halves
      // indexing a[h % NC] made GCC keep one set in memory, a store and a reload on its FMA chain every step
      // (int4 4096 x 14336, one token: 6.2 ms, 5.2 with this and the forced inlining)
      __m256 a[NC][2][MT];
      for (int c = 0; c < NC; ++c)
        for (int t = 0; t < MT; ++t) a[c][0][t] = a[c][1][t] = _mm256_setzero_ps();
      auto eight = [&](int64_t j, __m256 (&ac)[2][MT]) __attribute__((always_inline)) {  // code bytes j .. j + 7
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
        const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(v, low));
        const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
        for (int t = 0; t < MT; ++t) {
          ac[0][t] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(even + t * half + j), ac[0][t]);
          ac[1][t] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(odd + t * half + j), ac[1][t]);
        }
      };
      for (int64_t b = b0; b < b1; b += 16) {
        if ((b & 63) == 0) prefetch_ahead(p, codes + b);
        eight(b, a[0]);
        eight(b + 8, a[NC - 1]);
      }
      const float s = half_to_float(p.scales[n * G + g]);
      const float z = p.zeros ? static_cast<float>(p.zeros[n * G + g]) : 8.0f;
      const __m256 sv = _mm256_set1_ps(s);
      for (int t = 0; t < MT; ++t) {
        __m256 sum = _mm256_add_ps(a[0][0][t], a[0][1][t]);
        if (NC > 1) sum = _mm256_add_ps(sum, _mm256_add_ps(a[NC - 1][0][t], a[NC - 1][1][t]));
        acc[t] = _mm256_fmadd_ps(sv, sum, acc[t]);
        corr[t] += s * z * sp.sums[(t0 + t) * G + g];
      }
    }
    for (int t = 0; t < MT; ++t) out[(t0 + t) * p.n + n] = hsum(acc[t]) - corr[t] + (bias ? bias[n] : 0.0f);
  }
}

// One group's partial sums at one token: `steps` steps of 16 code bytes (32 inputs) from c, the even / odd
// activations from e / o, into four chains (the low / high nibbles of each step's two 8-byte halves). kSteps > 0:
// the count known at compile time, the loop unrolled (constant offsets) and its first step multiplying; else a
// loop from zeros. `off`: c's byte offset in its row, for the prefetch of each 64-byte line of the row (whole
// groups of 64 bytes start at multiples of 64).
template <int kSteps>
SK_INLINE void int4_group_sums(const Packed& p, const uint8_t* c, const float* e, const float* o, int64_t steps,
                               int64_t off, __m256 (&a)[4]) {
  const __m256i low = _mm256_set1_epi32(0x0F);
  auto step = [&](int64_t i, bool first) __attribute__((always_inline)) {
    const int64_t j = 16 * i;
    if (kSteps > 0 && kSteps % 4 == 0 ? i % 4 == 0 : ((off + j) & 63) == 0) prefetch_ahead(p, c + j);
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + j)));
    const __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + j + 8)));
    const __m256 w0 = _mm256_cvtepi32_ps(_mm256_and_si256(v, low)), w1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    const __m256 w2 = _mm256_cvtepi32_ps(_mm256_and_si256(w, low)), w3 = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 4));
    const __m256 x[4] = {_mm256_loadu_ps(e + j), _mm256_loadu_ps(o + j), _mm256_loadu_ps(e + j + 8),
                         _mm256_loadu_ps(o + j + 8)};
    const __m256 wv[4] = {w0, w1, w2, w3};
    for (int q = 0; q < 4; ++q) a[q] = first ? _mm256_mul_ps(wv[q], x[q]) : _mm256_fmadd_ps(wv[q], x[q], a[q]);
  };
  if (kSteps > 0) {
#pragma GCC unroll 8
    for (int i = 0; i < kSteps; ++i) step(i, i == 0);
  } else {
    a[0] = a[1] = a[2] = a[3] = _mm256_setzero_ps();
    for (int64_t i = 0; i < steps; ++i) step(i, false);
  }
}

// out[t, n] for int4 rows at one token (`int4_tile` at 2-4 tokens). Per group the four chains start afresh and
// their sums take the group scale by four FMAs into the row's four sums, and the zero point's fold (s z sum x) is
// one scalar FMA. `int4_tile<1>` ended each group with three adds, its 4 chains zeroed, its bounds recomputed
// (~35 instructions against ~80 in a g128 group's steps) and tested every 16-byte step for its prefetch; without
// that a call is 2-7% faster on Llama shapes (bench/kernels/ab_builds.py, Zen 3: docs/cpu-kernels.md). (The scales converted
// once per row, as the a8 kernels do: ~3% faster again in cache, ~9% slower at SmolLM2's K = 576, 5 groups a row.)
template <int kSteps>
void int4_one_token_rows(const Packed& p, const Split& sp, int64_t t, float* out, const float* bias, int64_t n0,
                         int64_t n1) {
  const int64_t K = p.k, half = K / 2, G = p.groups();
  const int64_t gb = std::min(half, p.group / 2);  // code bytes a group (a multiple of 16: nibble_fits)
  const int64_t whole = half / gb, rest = half - whole * gb;  // whole groups, the short last group's bytes
  const float* even = sp.even.data() + t * half;
  const float* odd = sp.odd.data() + t * half;
  const float* sums = sp.sums.data() + t * G;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    const uint16_t* scales = p.scales + n * G;
    const uint8_t* zeros = p.zeros ? p.zeros + n * G : nullptr;
    __m256 r[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 a[4] = {};  // (each group sets it before its scale: initialised only for the compiler's warning)
    float fold = 0.0f;  // sum_g s_g z_g sum_g(x)
    auto scale = [&](int64_t g) __attribute__((always_inline)) {
      const float s = half_to_float(scales[g]);
      const __m256 sv = _mm256_set1_ps(s);
      for (int i = 0; i < 4; ++i) r[i] = _mm256_fmadd_ps(sv, a[i], r[i]);
      fold += s * (zeros ? static_cast<float>(zeros[g]) : 8.0f) * sums[g];
    };
    int64_t g = 0, b = 0;
    for (; g < whole; ++g, b += gb) {
      int4_group_sums<kSteps>(p, codes + b, even + b, odd + b, gb / 16, b, a);
      scale(g);
    }
    if (rest) {
      if (rest == 32) {  // SmolLM2's K = 576 at g128 ends in 64 inputs
        int4_group_sums<2>(p, codes + b, even + b, odd + b, 2, b, a);
      } else {
        int4_group_sums<0>(p, codes + b, even + b, odd + b, rest / 16, b, a);
      }
      scale(g);
    }
    const float sum = hsum(_mm256_add_ps(_mm256_add_ps(r[0], r[1]), _mm256_add_ps(r[2], r[3])));
    out[t * p.n + n] = sum - fold + (bias ? bias[n] : 0.0f);
  }
}

// sum_b scale_b x[b] over a row's B blocks, the E8M0 scales as fp32 bits 8 at a time (e << 23, as
// e8m0_to_float; e = 0 is 2^-127, a subnormal: patched; e = 255 reads as inf, not NaN, but the block's sum was
// scaled by NaN already): the bias fold's term, per row and token
SK_INLINE float e8m0_dot(const uint8_t* e, const float* x, int64_t B) {
  const __m256i zero = _mm256_setzero_si256();
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= B; b += 8) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(e + b)));
    __m256i bits = _mm256_slli_epi32(v, 23);
    bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x00400000), _mm256_cmpeq_epi32(v, zero));
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(bits), _mm256_loadu_ps(x + b), acc);
  }
  float s = hsum(acc);
  for (; b < B; ++b) s += kE8M0.v[e[b]] * x[b];
  return s;
}

// out[0, n] for MXFP4 rows at one token: one 16-byte step is one 32-input block. Each code becomes u = 2 x E2M1
// + 12, an integer in 0..24, through a 16-entry byte table (vpshufb), and the bytes reach fp32 lanes by in-lane
// vpshufb spreads and conversions, int4's arithmetic from there: sum_block (u - 12) x = sum u x - 12 sum x (the
// block sums of the split), times the block's E8M0 scale and 1/2 (exact powers of two). Why not the E2M1 value
// through vpermps (`mxfp4_tile`, below): Zen 3 issues a vpermps every 1.0-1.3 cycles, two per 16 weights, where
// vpshufb issues 2 a cycle: 6.5 cycles per 32 weights this way against 4.65 per 16
// (bench/kernels/cpu/vector_throughput_avx2.cpp, docs/cpu-kernels.md). The 16 code bytes are broadcast to both 128-bit halves, so one
// split and one table lookup per nibble serve four spreads (half 0 takes bytes 0-3 / 8-11, half 1 4-7 / 12-15).
// The block's sum is one chain, then one FMA by the scale into the row's. At 2+ tokens the decode is shared and
// the FMAs bind: scaling the weights (4 multiplies a block) or each token's sums cost as much as the vpermps
// saved (+0.5% at 2 tokens, +12% at 4: bench/kernels/ab_builds.py --m, Zen 3), so `mxfp4_tile` runs those.
void mxfp4_one_token_rows(const Packed& p, const Split& sp, int64_t t, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  const int64_t K = p.k, half = K / 2, B = K / 32;
  const float* even = sp.even.data() + t * half;  // token t (a tile of one after tiles of 4)
  const float* odd = sp.odd.data() + t * half;
  const float* sums = sp.sums.data() + t * B;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kBiasedE2M1.u)));
  // byte i of a half to dword i (bit 7 set: a zero byte)
  const __m256i spread0 = _mm256_setr_epi8(0, -1, -1, -1, 1, -1, -1, -1, 2, -1, -1, -1, 3, -1, -1, -1, 4, -1, -1, -1,
                                           5, -1, -1, -1, 6, -1, -1, -1, 7, -1, -1, -1);
  const __m256i spread1 = _mm256_add_epi8(spread0, _mm256_set1_epi32(8));  // (the -1 bytes stay negative)
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    const uint8_t* e8m0 = p.e8m0 + n * B;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;  // consecutive blocks alternate (the FMA latency)
    auto block = [&](int64_t b, __m256& acc) __attribute__((always_inline)) {  // code bytes b .. b + 15
      const __m256i c = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b)));
      const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(c, low4));
      const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(c, 4), low4));
      // u of even inputs b .. b + 7 (lo, spread0), b + 8 .. b + 15 (lo, spread1), odd inputs (hi) likewise
      auto weights = [&](__m256i nib, __m256i spread) __attribute__((always_inline)) {
        return _mm256_cvtepi32_ps(_mm256_shuffle_epi8(nib, spread));
      };
      __m256 sb = _mm256_mul_ps(weights(lo, spread0), _mm256_loadu_ps(even + b));
      sb = _mm256_fmadd_ps(weights(hi, spread0), _mm256_loadu_ps(odd + b), sb);
      sb = _mm256_fmadd_ps(weights(lo, spread1), _mm256_loadu_ps(even + b + 8), sb);
      sb = _mm256_fmadd_ps(weights(hi, spread1), _mm256_loadu_ps(odd + b + 8), sb);
      acc = _mm256_fmadd_ps(_mm256_set1_ps(kE8M0.v[e8m0[b / 16]]), sb, acc);
    };
    int64_t b = 0;
    for (; b + 32 <= half; b += 32) {
      if ((b & 63) == 0) prefetch_ahead(p, codes + b);
      block(b, acc0);
      block(b + 16, acc1);
    }
    if (b < half) {
      if ((b & 63) == 0) prefetch_ahead(p, codes + b);
      block(b, acc0);
    }
    // the table held 2 x E2M1 + 12
    out[t * p.n + n] = 0.5f * (hsum(_mm256_add_ps(acc0, acc1)) - 12.0f * e8m0_dot(e8m0, sums, B)) +
                       (bias ? bias[n] : 0.0f);
  }
}

// out[t, n] for MXFP4 rows at 2-4 tokens: one 16-byte step is one 32-input block, its E8M0 scale in the table
// it reads (the E2M1 values through vpermps, MXFP4Table)
template <int MT>
void mxfp4_tile(const Packed& p, const Split& sp, int64_t t0, float* out, const float* bias, int64_t n0,
                int64_t n1) {
  constexpr int NC = nibble_sets<MT>();
  const int64_t K = p.k, half = K / 2;
  const float* even = sp.even.data() + t0 * half;
  const float* odd = sp.odd.data() + t0 * half;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    const uint8_t* e8m0 = p.e8m0 + n * (K / 32);
    __m256 a[NC][2][MT];  // [set][even, odd][token], as in int4_tile
    for (int c = 0; c < NC; ++c)
      for (int t = 0; t < MT; ++t) a[c][0][t] = a[c][1][t] = _mm256_setzero_ps();
    auto eight = [&](int64_t j, const float* lut, __m256 (&ac)[2][MT]) __attribute__((always_inline)) {  // code bytes j .. j + 7
      const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
      const __m256 lo = mxfp4_values(lut, v);  // vpermps reads bits 0-2, the shift drops bits 4-7
      const __m256 hi = mxfp4_values(lut, _mm256_srli_epi32(v, 4));
      for (int t = 0; t < MT; ++t) {
        ac[0][t] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(even + t * half + j), ac[0][t]);
        ac[1][t] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(odd + t * half + j), ac[1][t]);
      }
    };
    for (int64_t b = 0; b < half; b += 16) {
      if ((b & 63) == 0) prefetch_ahead(p, codes + b);
      const float* lut = kMXFP4.lut[e8m0[b / 16]];
      eight(b, lut, a[0]);
      eight(b + 8, lut, a[NC - 1]);
    }
    for (int t = 0; t < MT; ++t) {
      __m256 sum = _mm256_add_ps(a[0][0][t], a[0][1][t]);
      if (NC > 1) sum = _mm256_add_ps(sum, _mm256_add_ps(a[NC - 1][0][t], a[NC - 1][1][t]));
      out[(t0 + t) * p.n + n] = hsum(sum) + (bias ? bias[n] : 0.0f);
    }
  }
}

template <int MT>
struct Int4Tile {
  static void run(const Packed& p, const Split& sp, int64_t t0, float* out, const float* bias, int64_t n0,
                  int64_t n1) {
    if constexpr (MT == 1) {
      // a group's steps unrolled for the common group sizes
      switch (std::min(p.group, p.k)) {
        case 64: return int4_one_token_rows<2>(p, sp, t0, out, bias, n0, n1);
        case 128: return int4_one_token_rows<4>(p, sp, t0, out, bias, n0, n1);
        case 256: return int4_one_token_rows<8>(p, sp, t0, out, bias, n0, n1);
        default: return int4_one_token_rows<0>(p, sp, t0, out, bias, n0, n1);
      }
    } else {
      int4_tile<MT>(p, sp, t0, out, bias, n0, n1);
    }
  }
};

template <int MT>
struct MXFP4Tile {
  static void run(const Packed& p, const Split& sp, int64_t t0, float* out, const float* bias, int64_t n0,
                  int64_t n1) {
    if constexpr (MT == 1) {
      mxfp4_one_token_rows(p, sp, t0, out, bias, n0, n1);
    } else {
      mxfp4_tile<MT>(p, sp, t0, out, bias, n0, n1);
    }
  }
};

template <template <int> class T>
void nibble_rows(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  Split sp;  // per row range: each thread splits its own copy (K x m floats: small next to the rows it streams)
  split_activations(p, x, m, p.kind == Kind::kMXFP4 ? 32 : p.group, sp);
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    switch (std::min<int64_t>(4, m - t0)) {
      case 1: T<1>::run(p, sp, t0, out, bias, n0, n1); break;
      case 2: T<2>::run(p, sp, t0, out, bias, n0, n1); break;
      case 3: T<3>::run(p, sp, t0, out, bias, n0, n1); break;
      default: T<4>::run(p, sp, t0, out, bias, n0, n1); break;
    }
  }
}

inline bool nibble_fits(const Packed& p) {
  if (p.k % 32) return false;
  return p.kind == Kind::kMXFP4 || (p.kind == Kind::kInt4 && p.group % 32 == 0);
}


// ---------------------------------------------------------------- int8 activations (the a8 variant)
//
// The a8 kernels of gemm_avx512_vnni.cpp for CPUs without AVX-512 VNNI, on QActs (acts_int8.cpp; int4 + 2:4
// reads int4's arrangement here, A8Path::kAvx2): llama.cpp's AVX2 Q4_0 x Q8_0 dot. AVX2 has no vpdpbusd; its
// integer dot is vpmaddubsw (32 unsigned x signed byte products, adjacent pairs summed to int16 *with
// saturation*) then vpmaddwd against ones (pairs of int16 summed to int32, exact), so every kernel below bounds
// its int16 sums: they stay exact.
// - A chunk is 64 inputs (a ymm of 32 code bytes, or 16 for int4 + 2:4): two activation blocks, each inside one
//   weight group (a8_fits), so each int32 lane has one block scale d and one group scale: the lanes convert to
//   fp32 and take one FMA per chunk and token, with a vector of the 8 lanes' scale products.
// - The operand that is the same for every token of a tile (the weights) is prepared once per chunk; the
//   per-token work is two activation loads, the integer dot (two vpmaddubsw and a vpmaddwd for 64 weights:
//   int4, MXFP4, and int4 + 2:4 expanded to dense int4), the conversion and one FMA. Measured (forced on an
//   AVX-512 machine, 4096 x 14336, M = 1, one thread): int4 a8 1.7x the exact AVX2 int4 kernel (docs/cpu-kernels.md,
//   bench/results/cpu/cpu_gemm_avx2_a8.json).
// - Tiles of up to 4 tokens (a8_rows): accumulators, the chunk's weight vectors and the constants stay in the 16
//   ymm registers; at 1-2 tokens consecutive chunks alternate two accumulator sets (the FMA latency).

// A row's fp16 group scales as fp32 (F16C, 8 at a time) and, for int4, scale x zero point per group: converted
// once per row, not once per chunk
struct RowScalesA8 {
  std::vector<float> s, sz;  // [G] scale, scale x zero point
  void load(const Packed& p, int64_t n, bool with_zero) {
    const int64_t G = p.groups();
    const uint16_t* sc = p.scales + n * G;
    const uint8_t* z = p.zeros ? p.zeros + n * G : nullptr;
    s.resize(G);
    sz.resize(G);
    int64_t g = 0;
    for (; g + 8 <= G; g += 8) {
      const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g)));
      _mm256_storeu_ps(&s[g], sv);
      if (with_zero) {
        const __m256 zv = z ? _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(z + g))))
                            : _mm256_set1_ps(8.0f);
        _mm256_storeu_ps(&sz[g], _mm256_mul_ps(sv, zv));
      }
    }
    for (; g < G; ++g) {
      s[g] = half_to_float(sc[g]);
      sz[g] = s[g] * (z ? static_cast<float>(z[g]) : 8.0f);
    }
  }
};

// sum_g a[g] b[g]
inline float dot_a8(const float* a, const float* b, int64_t G) {
  __m256 acc = _mm256_setzero_ps();
  int64_t g = 0;
  for (; g + 8 <= G; g += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + g), _mm256_loadu_ps(b + g), acc);
  float s = hsum(acc);
  for (; g < G; ++g) s += a[g] * b[g];
  return s;
}

// [lo x 4 | hi x 4]: the scales of the chunk's two blocks, one per 128-bit half (the nibble layouts: a half is
// 16 code bytes, 32 inputs, one block)
SK_INLINE __m256 halves(float lo, float hi) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(lo)), _mm_set1_ps(hi), 1);
}

// The int16 pair sums of even and odd inputs added, then to int32 lanes: lane i holds the 8 products of inputs
// 8i .. 8i + 7 of the chunk (even bytes 4i .. 4i + 3 meet odd bytes 4i .. 4i + 3), one activation block's.
SK_INLINE __m256i pairs_to_lanes(__m256i even_pairs, __m256i odd_pairs) {
  return _mm256_madd_epi16(_mm256_add_epi16(even_pairs, odd_pairs), _mm256_set1_epi16(1));
}

// the even / odd activation bytes and lane scales of tokens t0 .. t0 + MT - 1 (the nibble layouts)
template <int MT>
struct EvenOddA8 {
  const uint8_t* ev[MT];
  const uint8_t* od[MT];
  const float* ln[MT];
  EvenOddA8(const QActs& qa, int64_t t0) {
    for (int t = 0; t < MT; ++t) {
      ev[t] = &qa.even[(t0 + t) * (qa.kpad / 2)];
      od[t] = &qa.odd[(t0 + t) * (qa.kpad / 2)];
      ln[t] = &qa.lanes[(t0 + t) * (qa.kpad / 8)];
    }
  }
};

// The chunk loop of a row of K inputs, 64 at a time: chunk(k0, full, set) for the full chunks and, when K % 64
// is 32, a last half chunk (full = false); consecutive chunks alternate accumulator sets 0 and NA - 1.
// ahead(k0) is called for every other chunk (k0 % 128 == 0).
template <int NA, class Chunk, class Ahead>
SK_INLINE void chunks64(int64_t K, Chunk&& chunk, Ahead&& ahead) {
  const int64_t full = K / 64;
  int64_t c = 0;
  for (; c + 2 <= full; c += 2) {
    ahead(c * 64);
    chunk(c * 64, true, 0);
    chunk(c * 64 + 64, true, NA - 1);
  }
  if (c < full) chunk(c * 64, true, 0), ++c;
  if (c * 64 < K) chunk(c * 64, false, NA - 1);
}

// ------------------------------------------ int4: codes (u8, 0..15) x q (s8)
//
// vpmaddubsw takes the codes as its unsigned operand and q (-127..127) as the signed one: a pair sum is at most
// 2 x 15 x 127 = 3810, and even + odd pairs 7620, far from the int16 limit (32767): exact, no saturation. The
// activations are the VNNI int4 kernel's (unbiased even / odd bytes); the zero point is folded out as there:
// sum d q (c - z) s = s sum d q c - s z sum d q, the last sum per group and token from QActs::gsum.
//
// kGroupScale (groups of 128k inputs or one per row, group_scale_fits): each group's chunks accumulate d x
// (the lanes' block scales) apart, and the group scale multiplies that sum once per group. Per chunk and token
// that leaves the conversion and one FMA with the block scales as its memory operand; the per-chunk scale vector
// (two broadcasts, an insert, a multiply: 4 of 14 vector instructions, 2 of 6 loads at one token) made a chunk
// issue at 3.75 cycles against 2.78 without it (bench/kernels/cpu/vector_throughput_avx2.cpp on Zen 3, docs/cpu-kernels.md).
template <int MT, bool kGroupScale>
void int4_a8_avx2_rows(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                       int64_t n1) {
  constexpr int NA = MT <= 2 ? 2 : 1;
  const int64_t G = p.groups();
  const __m256i low = _mm256_set1_epi8(0x0F);
  const EvenOddA8<MT> eo(qa, t0);
  std::vector<int32_t> group_of;
  block_groups(p, group_of, 1);
  RowScalesA8 rs;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * (p.k / 2);
    rs.load(p, n, true);
    __m256 acc[NA][MT], accg[NA][MT];  // accg: the group's sums before its scale (kGroupScale)
    for (int a = 0; a < NA; ++a)
      for (int t = 0; t < MT; ++t) acc[a][t] = accg[a][t] = _mm256_setzero_ps();
    auto chunk = [&](int64_t k0, bool full, int a) __attribute__((always_inline)) {
      const int64_t b = k0 >> 1;  // even / odd byte of input k0 (int4: also its code byte)
      const int32_t g0 = group_of[k0 >> 5], g1 = group_of[(k0 >> 5) + 1];
      // past K (a half chunk) the codes are zero: their products vanish whatever the activation bytes
      const __m256i v = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + b))
                             : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b)));
      const __m256i lo = _mm256_and_si256(v, low), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      const __m256 sv = kGroupScale ? __m256() : halves(rs.s[g0], rs.s[g1]);
      for (int t = 0; t < MT; ++t) {
        const __m256i d = pairs_to_lanes(
            _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(eo.ev[t] + b))),
            _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(eo.od[t] + b))));
        const __m256 ln = _mm256_loadu_ps(eo.ln[t] + b / 4);  // the lanes' activation block scales
        if constexpr (kGroupScale) {
          accg[a][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), ln, accg[a][t]);
        } else {
          acc[a][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(sv, ln), acc[a][t]);
        }
      }
    };
    // 64 bytes of codes per 128 inputs: a prefetch per line
    auto ahead = [&](int64_t k0) __attribute__((always_inline)) { prefetch_ahead(p, codes + k0 / 2); };
    if constexpr (kGroupScale) {
      // one flat loop over pairs of chunks (a loop per group cost more scalar work than g128's two chunks),
      // each group's sums scaled after its last pair; the row's last group may end in a tail of 32-96 inputs
      auto scale_group = [&](int64_t g) __attribute__((always_inline)) {
        const __m256 sv = _mm256_set1_ps(rs.s[g]);
        for (int c = 0; c < NA; ++c)
          for (int t = 0; t < MT; ++t) {
            acc[c][t] = _mm256_fmadd_ps(sv, accg[c][t], acc[c][t]);
            accg[c][t] = _mm256_setzero_ps();
          }
      };
      const int64_t whole = p.k & ~int64_t(127), per = G == 1 ? INT64_MAX : p.group / 128;
      int64_t k0 = 0, g = 0, left = per;
      for (; k0 < whole; k0 += 128) {  // the sets by constants: a variable index keeps them in memory
        ahead(k0);
        chunk(k0, true, 0);
        chunk(k0 + 64, true, NA - 1);
        if (--left == 0) scale_group(g++), left = per;
      }
      if (k0 < p.k) {
        chunk(k0, k0 + 64 <= p.k, 0);
        if (k0 + 64 < p.k) chunk(k0 + 64, false, NA - 1);
      }
      if (g < G) scale_group(g);
    } else {
      chunks64<NA>(p.k, chunk, ahead);
    }
    for (int t = 0; t < MT; ++t) {
      const __m256 sum = NA > 1 ? _mm256_add_ps(acc[0][t], acc[NA - 1][t]) : acc[0][t];
      out[(t0 + t) * p.n + n] =
          hsum(sum) - dot_a8(rs.sz.data(), &qa.gsum[(t0 + t) * G], G) + (bias ? bias[n] : 0.0f);
    }
  }
}

// kGroupScale's rule: groups of a multiple of 128 inputs (the last may end at K), or one group per row. Each
// group then gives both accumulator sets a chunk; at 64 the sets would alternate between groups, a variable index.
inline bool group_scale_fits(const Packed& p) { return p.groups() == 1 || p.group % 128 == 0; }

template <int MT>
void int4_a8_avx2_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                       int64_t n1) {
  if (group_scale_fits(p)) return int4_a8_avx2_rows<MT, true>(p, qa, t0, out, bias, n0, n1);
  int4_a8_avx2_rows<MT, false>(p, qa, t0, out, bias, n0, n1);
}

// ------------------------------------------ int4 + 2:4: (q + 128) (u8) x (c - z) (s8), 8 rows a tile
//
// Reads `Int4Semi24TilesAvx2` (packed_cpu.h: the order and why). Per block of 32 inputs and tile: the positions of
// the 4 steps come out of one 32-byte load in 7 instructions (two ANDs with 0x33, two shifts by 4, one by 2, and
// an OR that sets bit 2 in the bytes of each step's second group), the codes of two steps out of each of two
// 32-byte loads (AND; shift, AND) less z; then per token and step a broadcast qword of q + 128, one vpshufb, one
// vpmaddubsw and an int16 add. vpmaddubsw wants its unsigned operand first: the biased activations, against
// signed c - z (|c - z| <= 15: a pair sum at most 2 x 255 x 15 = 7650, four steps 30600 < 32767, exact). The bias
// comes out per block, 128 sum (c - z) over each row's group of kept slots, from the steps' c - z added bytewise
// (|4 x 15| fits a byte) and one vpmaddubsw against bytes of 128, shared by the tokens; one vpmaddwd then adds a
// row's two groups into its int32 lane, converted and scaled by the block's d once for 8 rows. The row-at-a-time
// gather this replaces (73e152c and before: per 64 inputs of a row, 15 vector instructions including the
// conversion and an FMA) ran at half this kernel's rate in L1 on Zen 3 (docs/cpu-kernels.md).
template <int MT, bool kZeros>
void int4_semi24_a8_avx2_tiles(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias,
                               int64_t n0, int64_t n1) {
  constexpr int64_t R = Int4Semi24TilesAvx2::kRows, B = Int4Semi24TilesAvx2::kBlockBytes;
  const int64_t N = p.n, K = p.k, G = p.groups(), nb = K / kActBlock;
  const int64_t per_group = G == 1 ? nb : p.group / kActBlock;  // a8_fits: group % 32 == 0 or one group
  const __m256i low4 = _mm256_set1_epi8(0x0F), m33 = _mm256_set1_epi8(0x33), b128 = _mm256_set1_epi8(-128),
                ones16 = _mm256_set1_epi16(1);
  const __m256i second = _mm256_set1_epi32(0x44440000);  // bytes 2, 3 of each row's dword: the second group (+4)
  // byte i <- zero point of row i / 4 (8 bytes broadcast to both halves)
  const __m256i zrow = _mm256_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6,
                                        6, 6, 7, 7, 7, 7);
  const NaturalA8<MT> acts(qa, t0);
  for (int64_t tile = n0 / R; tile * R < n1; ++tile) {
    const uint8_t* stream = p.tiles + tile * nb * B;
    __m256 o[MT];
    for (int t = 0; t < MT; ++t) o[t] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      __m256i z = _mm256_set1_epi8(8);
      if constexpr (kZeros) {
        int64_t z8;
        std::memcpy(&z8, p.tile_zeros + (tile * G + g) * R, 8);
        z = _mm256_shuffle_epi8(_mm256_set1_epi64x(z8), zrow);
      }
      __m256 f[MT];
      for (int t = 0; t < MT; ++t) f[t] = _mm256_setzero_ps();
      for (int64_t b = g * per_group; b < std::min(nb, (g + 1) * per_group); ++b) {
        const uint8_t* blk = stream + b * B;
        // 96 bytes a block: two prefetches cover its one or two lines (the tile is one sequential stream)
        prefetch_ahead(p, blk);
        prefetch_ahead(p, blk + 64);
        const __m256i pos = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64));
        const __m256i even = _mm256_or_si256(_mm256_and_si256(pos, m33), second);  // steps 0 (bits 0-1), 2 (4-5)
        const __m256i odd = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(pos, 2), m33), second);  // 1, 3
        const __m256i idx[4] = {even, odd, _mm256_srli_epi16(even, 4), _mm256_srli_epi16(odd, 4)};
        const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
        const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32));
        const __m256i w[4] = {_mm256_sub_epi8(_mm256_and_si256(v0, low4), z),
                              _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v0, 4), low4), z),
                              _mm256_sub_epi8(_mm256_and_si256(v1, low4), z),
                              _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v1, 4), low4), z)};
        const __m256i wsum = _mm256_add_epi8(_mm256_add_epi8(w[0], w[1]), _mm256_add_epi8(w[2], w[3]));
        const __m256i bias128 = _mm256_maddubs_epi16(b128, wsum);
        for (int t = 0; t < MT; ++t) {
          const uint8_t* x8 = acts.x[t] + b * kActBlock;
          __m256i acc = _mm256_setzero_si256();
          for (int s = 0; s < 4; ++s) {
            int64_t q8;
            std::memcpy(&q8, x8 + 8 * s, 8);
            const __m256i kept = _mm256_shuffle_epi8(_mm256_set1_epi64x(q8), idx[s]);  // each byte's q + 128
            acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(kept, w[s]));
          }
          const __m256i rows = _mm256_madd_epi16(_mm256_sub_epi16(acc, bias128), ones16);
          f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(rows), _mm256_set1_ps(acts.d[t][b]), f[t]);
        }
      }
      const uint16_t* scales = p.tile_scales + (tile * G + g) * R;  // the 8 rows' group scales (fp16)
      const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
      for (int t = 0; t < MT; ++t) o[t] = _mm256_fmadd_ps(f[t], sv, o[t]);
    }
    // rows [n0, n1) of this tile (the binding passes whole tiles; a range that cuts one writes only its rows)
    const int64_t lo = std::max<int64_t>(0, n0 - tile * R), hi = std::min(R, n1 - tile * R);
    for (int t = 0; t < MT; ++t) {
      float* dst = out + (t0 + t) * N + tile * R;
      if (lo == 0 && hi == R) {
        _mm256_storeu_ps(dst, bias ? _mm256_add_ps(o[t], _mm256_loadu_ps(bias + tile * R)) : o[t]);
      } else {
        alignas(32) float row[R];
        _mm256_store_ps(row, o[t]);
        for (int64_t r = lo; r < hi; ++r) dst[r] = row[r] + (bias ? bias[tile * R + r] : 0.0f);
      }
    }
  }
}

template <int MT>
void int4_semi24_a8_avx2_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias,
                              int64_t n0, int64_t n1) {
  if (p.tile_zeros) return int4_semi24_a8_avx2_tiles<MT, true>(p, qa, t0, out, bias, n0, n1);
  int4_semi24_a8_avx2_tiles<MT, false>(p, qa, t0, out, bias, n0, n1);
}

// ------------------------------------------ MXFP4: |2 E2M1| (u8) x sign(w) q (s8)
//
// The weights are signed and so are the activations; vpmaddubsw wants one unsigned operand. The weights' magnitudes
// come from a byte table of |2 x E2M1| (integers in [0, 12]) and their signs move onto q (vpsignb), as in the int8
// kernel: a pair sum is at most 2 x 12 x 127 = 3048, even + odd pairs 6096 < 32767: exact. A code's sign is its bit
// 3, so the sign bytes cost one shift: the code byte itself carries the high code's sign in bit 7, and the byte
// shifted left by 4 the low code's (the bits shifted in from the next byte sit below bit 7; a byte that is 0, or
// positive for a code whose magnitude is 0, multiplies a zero). Against activations biased by 128 (the VNNI
// kernels' bytes, which this kernel read until 1a8eba5) each token takes two vpsignb instead of subtracting 128 sum
// w, and each chunk the shift instead of sum w (two vpmaddubsw against ones, an add, a vpmaddwd, a shift): 3 vector
// instructions fewer per 64 inputs at one token, as many at four (docs/cpu-kernels.md: -4% from memory, -10% in
// cache at one token on Zen 3).
// The E8M0 scales come from a table of exact fp32 values, one per 128-bit half of a chunk.
// (E8M0Table kE8M0: at the top of the file, built with baseline instructions)

template <int MT>
void mxfp4_a8_avx2_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                        int64_t n1) {
  constexpr int NA = MT <= 2 ? 2 : 1;
  const int64_t half = p.k / 2;
  alignas(16) int8_t table[16];
  mxfp4_x2_table(table);
  for (int8_t& v : table) v = static_cast<int8_t>(v < 0 ? -v : v);
  const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(table)));
  const __m256i low = _mm256_set1_epi8(0x0F);
  const EvenOddA8<MT> eo(qa, t0);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    const uint8_t* e8m0 = p.e8m0 + n * (p.k / 32);
    __m256 acc[NA][MT];
    for (int a = 0; a < NA; ++a)
      for (int t = 0; t < MT; ++t) acc[a][t] = _mm256_setzero_ps();
    auto chunk = [&](int64_t k0, bool full, int a) __attribute__((always_inline)) {
      const int64_t b = k0 / 2;
      // past K (a half chunk): codes 0 are the weight +0, and the scale there is 0, not a byte past the row
      const __m256i v = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + b))
                             : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b)));
      const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
      const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
      const __m256i lo_sign = _mm256_slli_epi16(v, 4);  // bit 7: the low code's bit 3; v's: the high code's
      const __m256 sv = halves(kE8M0.v[e8m0[k0 / 32]], full ? kE8M0.v[e8m0[k0 / 32 + 1]] : 0.0f);
      for (int t = 0; t < MT; ++t) {
        const __m256i ev = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(eo.ev[t] + b));
        const __m256i od = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(eo.od[t] + b));
        const __m256i d = pairs_to_lanes(_mm256_maddubs_epi16(lo, _mm256_sign_epi8(ev, lo_sign)),
                                         _mm256_maddubs_epi16(hi, _mm256_sign_epi8(od, v)));
        acc[a][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(sv, _mm256_loadu_ps(eo.ln[t] + b / 4)),
                                    acc[a][t]);
      }
    };
    chunks64<NA>(p.k, chunk, [&](int64_t k0) __attribute__((always_inline)) { prefetch_ahead(p, codes + k0 / 2); });
    for (int t = 0; t < MT; ++t) {  // the table held 2 x E2M1
      const __m256 sum = NA > 1 ? _mm256_add_ps(acc[0][t], acc[NA - 1][t]) : acc[0][t];
      out[(t0 + t) * p.n + n] = 0.5f * hsum(sum) + (bias ? bias[n] : 0.0f);
    }
  }
}

// ------------------------------------------ int8: |w| (u8) x sign(w) q (s8)
//
// Both operands are signed and vpmaddubsw wants one unsigned: the VNNI kernel's bias, (q + 128) w, would make pair
// sums up to 2 x 255 x 128, past int16. llama.cpp's AVX2 Q8_0 dot moves w's sign onto q instead (vpabsb, vpsignb):
// |w| <= 128 (the code -128), |sign(w) q| <= 127, so a pair sum is at most 2 x 128 x 127 = 32512 <= 32767: exact,
// with no bias to take back. A chunk is one activation block (32 codes, one ymm): |w| once per chunk for every
// token of the tile; per token a load of q, vpsignb, vpmaddubsw, vpmaddwd, the conversion and one FMA with the
// block's scale broadcast from memory, ~6 vector instructions per 32 weight bytes against ~12 in the exact kernel
// (a pmovsx, a conversion and an FMA per 8 codes), which on Zen 3 could not keep up with one core's read.
template <int MT>
void int8_a8_avx2_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                       int64_t n1) {
  constexpr int NA = MT <= 2 ? 2 : 1;
  const int64_t K = p.k;
  const __m256i ones = _mm256_set1_epi16(1);
  const NaturalA8<MT> acts(qa, t0);  // q as it is (s8)
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* codes = reinterpret_cast<const int8_t*>(p.codes) + n * K;
    __m256 acc[NA][MT];
    for (int a = 0; a < NA; ++a)
      for (int t = 0; t < MT; ++t) acc[a][t] = _mm256_setzero_ps();
    auto chunk = [&](int64_t k0, int a) __attribute__((always_inline)) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + k0));
      const __m256i aw = _mm256_abs_epi8(w);
      for (int t = 0; t < MT; ++t) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts.x[t] + k0));
        const __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(q, w)), ones);
        acc[a][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(acts.d[t] + k0 / 32), acc[a][t]);
      }
    };
    int64_t k0 = 0;
    for (; k0 + 64 <= K; k0 += 64) {  // a line of codes a step (a8_fits: K % 32 == 0, so at most a block is left)
      prefetch_ahead(p, codes + k0);
      chunk(k0, 0);
      chunk(k0 + 32, NA - 1);
    }
    if (k0 < K) chunk(k0, 0);
    const float s = half_to_float(p.scales[n]);
    for (int t = 0; t < MT; ++t) {
      const __m256 sum = NA > 1 ? _mm256_add_ps(acc[0][t], acc[NA - 1][t]) : acc[0][t];
      out[(t0 + t) * p.n + n] = s * hsum(sum) + (bias ? bias[n] : 0.0f);
    }
  }
}

SPARSEKIT_A8_TILE(Int4A8Avx2, int4_a8_avx2_tile)
SPARSEKIT_A8_TILE(MXFP4A8Avx2, mxfp4_a8_avx2_tile)
SPARSEKIT_A8_TILE(Int4Semi24A8Avx2, int4_semi24_a8_avx2_tile)
SPARSEKIT_A8_TILE(Int8A8Avx2, int8_a8_avx2_tile)
}  // namespace

void rows_avx2(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  if (nibble_fits(p)) {
    if (p.kind == Kind::kInt4) return nibble_rows<Int4Tile>(p, x, m, out, bias, n0, n1);
    return nibble_rows<MXFP4Tile>(p, x, m, out, bias, n0, n1);
  }
  switch (p.kind) {
    case Kind::kSemi24:
      if (m == 1) {  // one token: gather the kept activations (above); 2+ share each expanded row
        switch (p.value_type) {
          case ValueType::kFloat32: return semi24_gather_rows<ValueType::kFloat32>(p, x, out, bias, n0, n1);
          case ValueType::kBFloat16: return semi24_gather_rows<ValueType::kBFloat16>(p, x, out, bias, n0, n1);
          default: return semi24_gather_rows<ValueType::kFloat16>(p, x, out, bias, n0, n1);
        }
      }
      switch (p.value_type) {
        case ValueType::kFloat32: return rows_with<Semi24Decoder<ValueType::kFloat32>>(p, x, m, out, bias, n0, n1);
        case ValueType::kBFloat16: return rows_with<Semi24Decoder<ValueType::kBFloat16>>(p, x, m, out, bias, n0, n1);
        default: return rows_with<Semi24Decoder<ValueType::kFloat16>>(p, x, m, out, bias, n0, n1);
      }
    case Kind::kInt4: return rows_with<Int4Decoder>(p, x, m, out, bias, n0, n1);
    case Kind::kInt4Semi24: return int4_semi24_rows(p, x, m, out, bias, n0, n1);
    case Kind::kMXFP4: return rows_with<MXFP4Decoder>(p, x, m, out, bias, n0, n1);
    case Kind::kInt8:
      if (m == 1) return int8_one_token_rows(p, x, out, bias, n0, n1);
      return rows_with<Int8Decoder<false>>(p, x, m, out, bias, n0, n1);
  }
}

void dequant_avx2(const Packed& p, float* dst, int64_t n0, int64_t n1) {
  switch (p.kind) {
    case Kind::kSemi24:
      switch (p.value_type) {
        case ValueType::kFloat32: return dequant_with<Semi24Decoder<ValueType::kFloat32>>(p, dst, n0, n1);
        case ValueType::kBFloat16: return dequant_with<Semi24Decoder<ValueType::kBFloat16>>(p, dst, n0, n1);
        default: return dequant_with<Semi24Decoder<ValueType::kFloat16>>(p, dst, n0, n1);
      }
    case Kind::kInt4: return dequant_with<Int4Decoder>(p, dst, n0, n1);
    case Kind::kInt4Semi24: return dequant_with<Int4Semi24Decoder>(p, dst, n0, n1);
    case Kind::kMXFP4: return dequant_with<MXFP4Decoder>(p, dst, n0, n1);
    case Kind::kInt8: return dequant_with<Int8Decoder<true>>(p, dst, n0, n1);
  }
}

bool avx2_compiled() { return true; }

void rows_a8_avx2(const Packed& p, const QActs& qa, int64_t m, float* out, const float* bias, int64_t n0,
                  int64_t n1) {
  switch (p.kind) {
    case Kind::kInt4: return a8_rows<Int4A8Avx2>(p, qa, m, out, bias, n0, n1);
    case Kind::kMXFP4: return a8_rows<MXFP4A8Avx2>(p, qa, m, out, bias, n0, n1);
    case Kind::kInt4Semi24: return a8_rows<Int4Semi24A8Avx2>(p, qa, m, out, bias, n0, n1);
    case Kind::kInt8: return a8_rows<Int8A8Avx2>(p, qa, m, out, bias, n0, n1);
    default: return;  // a8_fits() is false: the binding never calls it
  }
}

}  // namespace cpu
}  // namespace sparsekit

#undef SK_INLINE
#pragma GCC pop_options

#else  // another compiler or architecture: the scalar path serves (avx2_compiled() is false)

namespace sparsekit {
namespace cpu {

bool avx2_compiled() { return false; }
void rows_avx2(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  rows_scalar(p, x, m, out, bias, n0, n1);
}
void dequant_avx2(const Packed& p, float* dst, int64_t n0, int64_t n1) { dequant_scalar(p, dst, n0, n1); }
void rows_a8_avx2(const Packed&, const QActs&, int64_t, float*, const float*, int64_t, int64_t) {}

}  // namespace cpu
}  // namespace sparsekit

#endif
