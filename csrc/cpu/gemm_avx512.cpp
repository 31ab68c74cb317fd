// AVX-512 path (F, BW, VL, VBMI2 for the 2:4 expand, VBMI for the 2:4 bf16 positions): decode 16 weights of a
// row into one zmm, FMA them with up to 8 token rows at once.
//
// Why it can beat dense: at decode (a few tokens) the product is bound by streaming W from memory, and
// the packed row is 2-8x fewer bytes than fp32. The decode must keep up with that stream, so each layout
// turns 16 weights into one register with a handful of instructions and no memory round trip:
//   int4 / MXFP4: 8 code bytes -> 16 nibbles in input order (mask, shift, byte unpack) -> int32 lanes ->
//     a 16-entry lookup (vpermps: the int4 code - 8 or the E2M1 value) -> times the group scale;
//   2:4: the 16-bit keep-mask of 4 groups comes from 2 metadata bytes through a 256-entry table, and
//     vexpandps / vpexpandw put the 8 kept values at their positions (zeros elsewhere): the zeros cost
//     FMAs, not bytes;
//   int8: sign-extend 16 codes (vpmovsxbd), convert, scale.
// The row's group scale is tracked as k advances (no division per chunk); a group size that is not a
// multiple of 16 takes the scalar path (the binding decides), so a chunk never straddles two groups.
// int4 and MXFP4 whose groups fit 128-input chunks (nibble_chunks_fit: groups of 8k inputs) decode in
// gemm_lookup_fp32.cpp (row tiles: 8 rows at one token, 4 rows by up to 4 tokens), and so does int4 + 2:4 at 2+
// tokens; these decoders serve the other groups and the prefill's dequantization.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPARSEKIT_AVX512 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vbmi2,fma,f16c")
#include <immintrin.h>

namespace sparsekit {
namespace cpu {
namespace {

#include "decode_rows.h"  // kept_index32

// keep-mask bits of two 2:4 groups (one metadata byte: positions p0 | p1 << 2 per nibble). constexpr: a
// table built by a static constructor would run this file's AVX-512 code when the library loads, which is
// an illegal instruction on a CPU without AVX-512 (the dispatcher never calls in here on such a CPU).
struct MaskTable {
  uint8_t bits[256] = {};
  constexpr MaskTable() {
    for (int b = 0; b < 256; ++b) {
      const int lo = b & 15, hi = b >> 4;
      bits[b] = static_cast<uint8_t>(((1 << (lo & 3)) | (1 << (lo >> 2))) | (((1 << (hi & 3)) | (1 << (hi >> 2))) << 4));
    }
  }
};
constexpr MaskTable kMask;

inline __mmask16 keep16(const uint8_t* meta_row, int64_t k0) {
  uint16_t m;
  std::memcpy(&m, meta_row + k0 / 8, 2);
  return static_cast<__mmask16>(kMask.bits[m & 0xFF] | (kMask.bits[m >> 8] << 8));
}

// Every row loop prefetches each line of its weight streams (`prefetch_ahead`, packed_cpu.h): without it the
// decode waits on DRAM latency (measured on a Xeon: int4 4096 x 14336 from DRAM 8.7 ms vs 4.0 ms from L3).

// 16 nibbles (8 bytes at `p`, low nibble first) as int32 lanes in input order
inline __m512i nibbles16(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
  return _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
}

// 8 nibbles (4 bytes) as the low 8 int32 lanes
inline __m512i nibbles8(const uint8_t* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  const __m128i b = _mm_cvtsi32_si128(static_cast<int>(w));
  const __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
  return _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
}

// Group scale (and zero point) of a row, advanced as k grows: chunks of 16 never straddle two groups.
struct GroupTrack {
  const uint16_t* scales = nullptr;
  const uint8_t* zeros = nullptr;
  int64_t group = 0, end = 0, gi = -1;
  __m512 scale, zero;

  void begin(const Packed& p, int64_t n) {
    const int64_t G = p.groups();
    scales = p.scales + n * G;
    zeros = p.zeros ? p.zeros + n * G : nullptr;
    group = p.group;
    gi = -1;
    end = 0;
  }
  inline void at(int64_t k0) {
    if (k0 >= end) {
      gi = k0 / group;
      end = (gi + 1) * group;
      scale = _mm512_set1_ps(fp16_to_float(scales[gi]));
      zero = _mm512_set1_ps(zeros ? static_cast<float>(zeros[gi]) : 8.0f);
    }
  }
};

struct Int4Decoder {
  const Packed& p;
  const uint8_t* codes = nullptr;
  GroupTrack g;
  explicit Int4Decoder(const Packed& pk) : p(pk) {}
  void begin(int64_t n) {
    codes = p.codes + n * (p.k / 2);
    g.begin(p, n);
  }
  inline void ahead(int64_t k0) { prefetch_ahead(p, codes + k0 / 2); }
  inline __m512 chunk(int64_t k0) {
    g.at(k0);
    const __m512 q = _mm512_cvtepi32_ps(nibbles16(codes + k0 / 2));
    return _mm512_mul_ps(_mm512_sub_ps(q, g.zero), g.scale);
  }
};

struct Int4Semi24Decoder {
  const Packed& p;
  const uint8_t* codes = nullptr;
  const uint8_t* meta = nullptr;
  GroupTrack g;
  explicit Int4Semi24Decoder(const Packed& pk) : p(pk) {}
  void begin(int64_t n) {
    codes = p.codes + n * (p.k / 4);
    meta = p.meta + n * (p.k / 8);
    g.begin(p, n);
  }
  inline void ahead(int64_t k0) { prefetch_ahead(p, codes + k0 / 4); }
  inline __m512 chunk(int64_t k0) {
    g.at(k0);
    const __m512 q = _mm512_cvtepi32_ps(nibbles8(codes + k0 / 4));  // the 8 kept codes of 16 inputs
    const __m512 v = _mm512_mul_ps(_mm512_sub_ps(q, g.zero), g.scale);
    return _mm512_maskz_expand_ps(keep16(meta, k0), v);
  }
};

struct Semi24Decoder {
  const Packed& p;
  const uint8_t* meta = nullptr;
  const char* values = nullptr;
  int vbytes = 4;
  explicit Semi24Decoder(const Packed& pk)
      : p(pk), vbytes(pk.value_type == ValueType::kFloat32 ? 4 : 2) {}
  void begin(int64_t n) {
    meta = p.meta + n * (p.k / 8);
    values = static_cast<const char*>(p.values) + n * (p.k / 2) * vbytes;
  }
  inline void ahead(int64_t k0) { prefetch_ahead(p, values + (k0 / 2) * vbytes); }
  inline __m512 chunk(int64_t k0) {
    const __mmask16 keep = keep16(meta, k0);
    const char* v = values + (k0 / 2) * vbytes;  // the 8 kept values of these 16 inputs
    switch (p.value_type) {
      case ValueType::kFloat32: return _mm512_maskz_expandloadu_ps(keep, v);
      case ValueType::kBFloat16: {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v))));
        return _mm512_maskz_expand_ps(keep, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      }
      default: {
        const __m256i h = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v)));
        return _mm512_maskz_expand_ps(keep, _mm512_cvtph_ps(h));
      }
    }
  }
};

struct MXFP4Decoder {
  const Packed& p;
  const uint8_t* codes = nullptr;
  const uint8_t* e8m0 = nullptr;
  __m512 lut;
  explicit MXFP4Decoder(const Packed& pk) : p(pk) {
    alignas(64) float t[16];
    for (int c = 0; c < 16; ++c) t[c] = e2m1_to_float(static_cast<uint32_t>(c));
    lut = _mm512_load_ps(t);
  }
  void begin(int64_t n) {
    codes = p.codes + n * (p.k / 2);
    e8m0 = p.e8m0 + n * (p.k / 32);
  }
  inline void ahead(int64_t k0) { prefetch_ahead(p, codes + k0 / 2); }
  inline __m512 chunk(int64_t k0) {
    const __m512 v = _mm512_permutexvar_ps(nibbles16(codes + k0 / 2), lut);
    return _mm512_mul_ps(v, _mm512_set1_ps(e8m0_to_float(e8m0[k0 / 32])));
  }
};

struct Int8Decoder {
  const Packed& p;
  const int8_t* codes = nullptr;
  __m512 scale;
  explicit Int8Decoder(const Packed& pk) : p(pk) {}
  void begin(int64_t n) {
    codes = reinterpret_cast<const int8_t*>(p.codes) + n * p.k;
    scale = _mm512_set1_ps(fp16_to_float(p.scales[n]));
  }
  inline void ahead(int64_t k0) { prefetch_ahead(p, codes + k0); }
  inline __m512 chunk(int64_t k0) {
    const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + k0)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(q), scale);
  }
};

// rows n0..n1, tokens [t0, t0 + MT): the row is decoded once per tile of MT tokens
template <int MT, class D>
inline void tile(D& d, const Packed& p, const float* x, int64_t t0, float* out, const float* bias, int64_t n0,
                 int64_t n1) {
  const int64_t K = p.k, simd_k = K & ~int64_t(15);
  for (int64_t n = n0; n < n1; ++n) {
    d.begin(n);
    __m512 acc[2][MT];  // two chains, alternate chunks: the FMA latency (4 cycles) overlaps
    for (int t = 0; t < MT; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    const float* xt = x + t0 * K;
    auto step = [&](int64_t k0, __m512* a) {
      if ((k0 & 63) == 0) d.ahead(k0);
      const __m512 w = d.chunk(k0);
      for (int t = 0; t < MT; ++t) a[t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xt + t * K + k0), a[t]);
    };
    int64_t k0 = 0;
    for (; k0 + 32 <= simd_k; k0 += 32) {
      step(k0, acc[0]);
      step(k0 + 16, acc[1]);
    }
    if (k0 < simd_k) step(k0, acc[0]);
    for (int t = 0; t < MT; ++t) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]));
      for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * xt[t * K + k];
      out[(t0 + t) * p.n + n] = s + (bias ? bias[n] : 0.0f);
    }
  }
}

// ---------------------------------------------------------------- 2:4 layouts at decode
//
// Expanding the kept values into a dense row (the `chunk` decoders) multiplies the zeros too and rebuilds
// a keep-mask per 16 inputs. At decode it is cheaper to gather the activations instead: the 4 metadata
// bytes of 32 inputs hold the 16 kept positions as consecutive 2-bit fields (lane j at bits 2j, 2j + 1), so
// one variable shift, an AND and an add of the group bases give the 16 input indices, and one vpermt2ps
// picks those inputs out of the two 16-float halves of x (kept_index32, decode_rows.h). 16 kept values then meet
// 16 activations in one FMA per token; the index math is shared by all tokens of the tile.

// the 16 kept weights of inputs k0 .. k0 + 31 (in kept order) of a row
struct KeptSemi24 {
  const Packed& p;
  const char* values = nullptr;
  int vbytes;
  explicit KeptSemi24(const Packed& pk) : p(pk), vbytes(pk.value_type == ValueType::kFloat32 ? 4 : 2) {}
  void begin(int64_t n) { values = static_cast<const char*>(p.values) + n * (p.k / 2) * vbytes; }
  inline void ahead(int64_t k0) { prefetch_ahead(p, values + (k0 / 2) * vbytes); }
  inline __m512 kept(int64_t k0) {
    const char* v = values + (k0 / 2) * vbytes;
    switch (p.value_type) {
      case ValueType::kFloat32: return _mm512_loadu_ps(v);
      case ValueType::kBFloat16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v))), 16));
      default: return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)));
    }
  }
};

template <int MT, class D>
void kept_tile(D& d, const Packed& p, const float* x, int64_t t0, float* out, const float* bias, int64_t n0,
               int64_t n1) {
  const int64_t K = p.k, simd_k = K & ~int64_t(31);
  for (int64_t n = n0; n < n1; ++n) {
    d.begin(n);
    const uint8_t* meta = p.meta + n * (K / 8);
    __m512 acc[2][MT];  // two chains, alternate steps: the FMA latency (4 cycles) overlaps
    for (int t = 0; t < MT; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    const float* xt = x + t0 * K;
    auto step = [&](int64_t k0, __m512* a) {
      // every line of each stream: a line of values covers 32 inputs (fp32) or 64 (bf16, fp16), one of
      // positions 512 (with every other line of values prefetched, the 2:4 bf16 loop ran at ~2/3 of this
      // rate from DRAM on Zen 4)
      if ((k0 & (d.vbytes == 4 ? 31 : 63)) == 0) d.ahead(k0);
      if ((k0 & 511) == 0) prefetch_ahead(p, meta + k0 / 8);
      const __m512i idx = kept_index32(meta, k0);
      const __m512 w = d.kept(k0);
      for (int t = 0; t < MT; ++t) {
        const float* xk = xt + t * K + k0;
        const __m512 xs = _mm512_permutex2var_ps(_mm512_loadu_ps(xk), idx, _mm512_loadu_ps(xk + 16));
        a[t] = _mm512_fmadd_ps(w, xs, a[t]);
      }
    };
    int64_t k0 = 0;
    for (; k0 + 64 <= simd_k; k0 += 64) {
      step(k0, acc[0]);
      step(k0 + 32, acc[1]);
    }
    if (k0 < simd_k) step(k0, acc[0]);
    for (int t = 0; t < MT; ++t) {
      float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]));
      for (int64_t k = simd_k; k < K; ++k) s += weight_at(p, n, k) * xt[t * K + k];
      out[(t0 + t) * p.n + n] = s + (bias ? bias[n] : 0.0f);
    }
  }
}

// 2:4 with bf16 values, 64 inputs a step. kept_tile spends 8 instructions per 32 inputs at one token (the index:
// broadcast, shift, AND, add; the values: widen, shift; the gather; the FMA), as many as the memory stream
// leaves time for: at one thread on Zen 4 it streamed 61% of the read. Here one zmm load takes the 32 values of
// 64 inputs (one cache line) and vpunpck{l,h}wd against zero widens them to fp32 in one instruction per 16:
// each 128-bit lane gives the unpacks its values 0-3 and 4-7, so the low unpack holds the kept values of groups
// {0, 1, 4, 5, 8, 9, 12, 13} (inputs 0-7, 16-23, 32-39, 48-55) and the high one the others. The activations
// are reordered once per call to match (`reorder64`: those inputs first, then the rest), so each unpack's
// candidates lie within 32 floats and one vpermt2ps still gathers them. The positions: the 8 metadata bytes of
// the 64 inputs, broadcast as a qword, and one vpmultishiftqb moves each lane's 2-bit fields into its low bytes
// (the other bits do not matter: vpternlogd keeps the fields and ORs in the group base). 4.5 instructions per
// 32 inputs instead of 8; the same fp32 products, summed in other lanes.
inline void reorder64(const float* x, int64_t k64, float* xr) {
  for (int64_t b = 0; b < k64; b += 64)
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 4; ++l) std::memcpy(xr + b + 32 * h + 8 * l, x + b + 16 * l + 8 * h, 8 * sizeof(float));
}

// R rows at a time: the 4 lines of activations a step are loaded once for R rows. With one row they are 3.6x
// the weight bytes, and at K = 14336 (57 KB of fp32, more than L1) they come from L2: one row a step took 1.5x
// kept_tile's time on 4096 x 14336 from DRAM at two threads (1.6x with two processes each streaming 2048 x 14336
// side by side), though it was 1.8x faster with every operand in cache.
template <int MT, int R>
void kept_bf16_tile(const Packed& p, const float* x, const float* xr, int64_t t0, float* out, const float* bias,
                    int64_t n0, int64_t n1) {
  const int64_t K = p.k, k64 = K & ~int64_t(63), simd_k = K & ~int64_t(31);
  // lane l of the low unpack holds kept value kv = 8 (l / 4) + l % 4, whose position is bits 2 kv, 2 kv + 1 of
  // the metadata qword; the high unpack's lane l holds kv + 4. Both gather from 4 (l / 2) + position. One
  // vpmultishiftqb puts the low unpack's field in byte 0 of each lane and the high one's in byte 1, one
  // vpternlogd adds the base to both bytes, and a shift by 8 gives the high index (vpermt2ps reads the low 5
  // bits of a lane): a shift instead of a second multishift and vpternlogd (-5% in cache on 1024 x 14336,
  // alternating builds).
  alignas(64) uint8_t ctrl_b[64] = {};
  alignas(64) uint32_t base_b[16];
  for (int l = 0; l < 16; ++l) {
    ctrl_b[4 * l] = static_cast<uint8_t>(2 * (8 * (l / 4) + l % 4));
    ctrl_b[4 * l + 1] = static_cast<uint8_t>(2 * (8 * (l / 4) + l % 4 + 4));
    base_b[l] = 0x101u * static_cast<uint32_t>(4 * (l / 2));
  }
  __m512i ctrl = _mm512_load_si512(ctrl_b), base = _mm512_load_si512(base_b);
  __m512i three = _mm512_set1_epi32(0x0303);
  const __m512i zero = _mm512_setzero_si512();
  KeptSemi24 d(p);
  for (int64_t n = n0; n + R <= n1; n += R) {
    const uint16_t* values[R];
    const uint8_t* meta[R];
    for (int r = 0; r < R; ++r) {
      values[r] = static_cast<const uint16_t*>(p.values) + (n + r) * (K / 2);
      meta[r] = p.meta + (n + r) * (K / 8);
    }
    __m512 acc[R][2][MT];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < MT; ++t) acc[r][0][t] = acc[r][1][t] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < k64; k0 += 64) {
      // the loop's constants stay in registers: GCC otherwise reads them from memory as operands every step,
      // and with every operand in cache the loop is bound by its loads
      asm("" : "+v"(ctrl), "+v"(base), "+v"(three));
      __m512i idx_lo[R], idx_hi[R];
      __m512 w_lo[R], w_hi[R];
      for (int r = 0; r < R; ++r) {
        // With R rows a step, the same inputs R rows on (prefetch_kept_bf16): bytes ahead ran past the row's end
        // into rows the other streams read at the same time, and the next block's rows started cold: 8 KB ahead
        // left 4096 x 14336 at 59-63% of the read at one thread; rows ahead (with the one-shift index above) -21% /
        // -33% p10 from DRAM at one / two threads (bench/results/cpu/ab_zen4_semi24_bf16_rows_ahead_*.json)
        prefetch_kept_bf16<R>(p, values[r], meta[r], k0);
        uint64_t mw;
        std::memcpy(&mw, meta[r] + k0 / 8, 8);
        const __m512i mv = _mm512_set1_epi64(static_cast<long long>(mw));
        idx_lo[r] = _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(ctrl, mv), three, base, 0xEA);
        idx_hi[r] = _mm512_srli_epi32(idx_lo[r], 8);
        const __m512i v = _mm512_loadu_si512(values[r] + k0 / 2);
        w_lo[r] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v));
        w_hi[r] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v));
      }
      for (int t = 0; t < MT; ++t) {
        const float* xk = xr + (t0 + t) * k64 + k0;
        const __m512 xa = _mm512_loadu_ps(xk), xb = _mm512_loadu_ps(xk + 16), xc = _mm512_loadu_ps(xk + 32),
                     xd = _mm512_loadu_ps(xk + 48);
        for (int r = 0; r < R; ++r) {
          acc[r][0][t] = _mm512_fmadd_ps(w_lo[r], _mm512_permutex2var_ps(xa, idx_lo[r], xb), acc[r][0][t]);
          acc[r][1][t] = _mm512_fmadd_ps(w_hi[r], _mm512_permutex2var_ps(xc, idx_hi[r], xd), acc[r][1][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      d.begin(n + r);
      if (k64 < simd_k) {  // 32 inputs left: kept_tile's step on x in input order
        const __m512i idx = kept_index32(meta[r], k64);
        const __m512 w = d.kept(k64);
        for (int t = 0; t < MT; ++t) {
          const float* xk = x + (t0 + t) * K + k64;
          acc[r][0][t] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(_mm512_loadu_ps(xk), idx, _mm512_loadu_ps(xk + 16)),
                                         acc[r][0][t]);
        }
      }
      for (int t = 0; t < MT; ++t) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0][t], acc[r][1][t]));
        for (int64_t k = simd_k; k < K; ++k) sum += weight_at(p, n + r, k) * x[(t0 + t) * K + k];
        out[(t0 + t) * p.n + n + r] = sum + (bias ? bias[n + r] : 0.0f);
      }
    }
  }
}

// tokens t0 .. t0 + MT - 1 of rows n0 .. n1: R rows a step (as many as the registers hold next to MT tokens'
// accumulators), the rows left over one at a time
template <int MT, int R>
void kept_bf16_tokens(const Packed& p, const float* x, const float* xr, int64_t t0, float* out, const float* bias,
                      int64_t n0, int64_t n1) {
  const int64_t whole = n0 + (n1 - n0) / R * R;
  kept_bf16_tile<MT, R>(p, x, xr, t0, out, bias, n0, whole);
  if (R > 1) kept_bf16_tile<MT, 1>(p, x, xr, t0, out, bias, whole, n1);
}

// One token (x, xr, out: its row) where the reordered activations outgrow L1 (K >= 6208): rows in blocks of
// kSegRows, each block's rows taken over segments of at most kSegInputs inputs (whose activations, <= 16 KB, stay
// in L1), one row a step, with partial sums per row; the segment kSegAhead on (the same segment kSegAhead rows on,
// else the next segment's rows, else the next block's) is prefetched line by line as the loop reads this one.
// The same bytes stream faster in short contiguous rows than in long ones read 4 at a time: on one Zen 4 core
// from DRAM, 2:4 bf16 values as 16384 x 3584 ran 2.4-2.9 ms against 4.4-4.8 ms as 4096 x 14336 (4 rows a step,
// kept_bf16_tile), ad hoc, same run. Segments keep the plain layout and win part of that: 3.3-4.0 ms over
// segments of 2048-4096 inputs, 16-128 rows a block and 4-32 segments ahead (3584 x 32 x 8: 3.6-4.0, alternating
// with the 4-rows loop at 4.3-4.7, ad hoc). Rows stored in K blocks would add little: emulated in alternating
// rounds (bench/kernels/semi24_kblocks.py) -11% / -3% / +3% (1t fp32, 1t bf16 acts, 2t), so the 16384 x 3584
// figure above was more the machine's state than the layout. (The same on bf16
// activations, rows_semi24_bf16_dot, gained nothing over its 8 rows a step: +1.8% / -6.1%, docs/cpu-kernels.md.)
constexpr int64_t kSegInputs = 4096;
constexpr int kSegRows = 32;
constexpr int kSegAhead = 8;

struct Segments {
  int64_t chunk, chunks;
  // equal segments in whole lines of positions (512 inputs): K = 14336 as 4 x 3584, not 3 x 4096 + 2048
  explicit Segments(int64_t k64) {
    const int64_t parts = (k64 + kSegInputs - 1) / kSegInputs;
    chunk = ((k64 + parts - 1) / parts + 511) / 512 * 512;
    chunks = (k64 + chunk - 1) / chunk;
  }
  // the values and positions of the segment kSegAhead after segment c of row nb + r, in the order a block of
  // `rows` rows from nb reads them (segment-major) and then the next block's; false past row n1
  bool ahead(const Packed& p, int64_t nb, int rows, int64_t c, int r, int64_t n1, const uint16_t*& pv,
             const uint8_t*& pm) const {
    const int64_t s = c * rows + r + kSegAhead;
    const int64_t pc = s < chunks * rows ? s / rows : 0;
    const int64_t pn = s < chunks * rows ? nb + s % rows : nb + rows + (s - chunks * rows);
    if (pn >= n1) return false;
    pv = static_cast<const uint16_t*>(p.values) + pn * (p.k / 2) + pc * chunk / 2;
    pm = p.meta + pn * (p.k / 8) + pc * chunk / 8;
    return true;
  }
};

void kept_bf16_segments(const Packed& p, const float* x, const float* xr, float* out, const float* bias, int64_t n0,
                        int64_t n1) {
  const int64_t K = p.k, k64 = K & ~int64_t(63), simd_k = K & ~int64_t(31);
  const Segments seg(k64);
  // kept_bf16_tile's index constants, set up here in full: from a helper that took them by reference, this loop
  // ran 11% slower (4096 x 14336, one thread, ab_builds.py)
  alignas(64) uint8_t ctrl_b[64] = {};
  alignas(64) uint32_t base_b[16];
  for (int l = 0; l < 16; ++l) {
    ctrl_b[4 * l] = static_cast<uint8_t>(2 * (8 * (l / 4) + l % 4));
    ctrl_b[4 * l + 1] = static_cast<uint8_t>(2 * (8 * (l / 4) + l % 4 + 4));
    base_b[l] = 0x101u * static_cast<uint32_t>(4 * (l / 2));
  }
  __m512i ctrl = _mm512_load_si512(ctrl_b), base = _mm512_load_si512(base_b);
  __m512i three = _mm512_set1_epi32(0x0303);
  const __m512i zero = _mm512_setzero_si512();
  KeptSemi24 d(p);
  const uint16_t* V = static_cast<const uint16_t*>(p.values);
  float part[kSegRows];
  for (int64_t nb = n0; nb < n1; nb += kSegRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kSegRows, n1 - nb));
    std::fill(part, part + rows, 0.0f);
    for (int64_t c = 0; c < seg.chunks; ++c) {
      const int64_t ka = c * seg.chunk, kb = std::min(k64, ka + seg.chunk);
      for (int r = 0; r < rows; ++r) {
        const uint16_t* pv = nullptr;
        const uint8_t* pm = nullptr;
        const bool pf = seg.ahead(p, nb, rows, c, r, n1, pv, pm);
        const uint16_t* values = V + (nb + r) * (K / 2);
        const uint8_t* meta = p.meta + (nb + r) * (K / 8);
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int64_t k0 = ka; k0 < kb; k0 += 64) {
          asm("" : "+v"(ctrl), "+v"(base), "+v"(three));
          if (pf) {
            prefetch_line(p, pv + (k0 - ka) / 2);
            if (((k0 - ka) & 511) == 0) prefetch_line(p, pm + (k0 - ka) / 8);
          }
          uint64_t mw;
          std::memcpy(&mw, meta + k0 / 8, 8);
          const __m512i mv = _mm512_set1_epi64(static_cast<long long>(mw));
          const __m512i ilo = _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(ctrl, mv), three, base, 0xEA);
          const __m512i ihi = _mm512_srli_epi32(ilo, 8);
          const __m512i v = _mm512_loadu_si512(values + k0 / 2);
          const float* xk = xr + k0;
          a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v)),
                               _mm512_permutex2var_ps(_mm512_loadu_ps(xk), ilo, _mm512_loadu_ps(xk + 16)), a0);
          a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v)),
                               _mm512_permutex2var_ps(_mm512_loadu_ps(xk + 32), ihi, _mm512_loadu_ps(xk + 48)), a1);
        }
        part[r] += _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
      }
    }
    for (int r = 0; r < rows; ++r) {
      const int64_t n = nb + r;
      float sum = part[r];
      d.begin(n);
      const uint8_t* meta = p.meta + n * (K / 8);
      if (k64 < simd_k) {  // 32 inputs left: kept_tile's step on x in input order
        const __m512i idx = kept_index32(meta, k64);
        sum += _mm512_reduce_add_ps(_mm512_mul_ps(
            d.kept(k64), _mm512_permutex2var_ps(_mm512_loadu_ps(x + k64), idx, _mm512_loadu_ps(x + k64 + 16))));
      }
      for (int64_t k = simd_k; k < K; ++k) sum += weight_at(p, n, k) * x[k];
      out[n] = sum + (bias ? bias[n] : 0.0f);
    }
  }
}

void kept_bf16_rows(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                    int64_t n1) {
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  // 64-byte aligned: a zmm load that straddles two cache lines costs two
  std::vector<float> buf(static_cast<size_t>(m * k64 + 16));
  float* xr = buf.data() + (16 - (reinterpret_cast<uintptr_t>(buf.data()) / sizeof(float)) % 16) % 16;
  for (int64_t t = 0; t < m; ++t) reorder64(x + t * K, k64, xr + t * k64);
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    const int64_t mt = std::min<int64_t>(4, m - t0);
    // Rows share the activation loads only where the tile's activations outgrow L1. With them in L1, 4 rows a
    // step gained nothing (4096 x 4096 from L3, one token, 10 alternating runs: median ~22 GB/s of weights
    // either way, best 27.5 against 33 for one row); from DRAM at K = 14336 they did (~18 against ~14), and one
    // token there now takes segments of the rows, faster still (kept_bf16_segments).
    const bool share = mt * k64 * static_cast<int64_t>(sizeof(float)) > kSharedActsBytes;
    if (mt == 1 && share) {
      kept_bf16_segments(p, x + t0 * K, xr + t0 * k64, out + t0 * p.n, bias, n0, n1);  // (a last tile of one)
      continue;
    }
    switch (mt) {
      case 1: kept_bf16_tokens<1, 1>(p, x, xr, t0, out, bias, n0, n1); break;
      case 2: share ? kept_bf16_tokens<2, 2>(p, x, xr, t0, out, bias, n0, n1)
                    : kept_bf16_tokens<2, 1>(p, x, xr, t0, out, bias, n0, n1); break;
      case 3: share ? kept_bf16_tokens<3, 2>(p, x, xr, t0, out, bias, n0, n1)
                    : kept_bf16_tokens<3, 1>(p, x, xr, t0, out, bias, n0, n1); break;
      default: kept_bf16_tokens<4, 1>(p, x, xr, t0, out, bias, n0, n1); break;
    }
  }
}

template <class D>
void kept_rows(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  D d(p);
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    switch (std::min<int64_t>(4, m - t0)) {
      case 1: kept_tile<1>(d, p, x, t0, out, bias, n0, n1); break;
      case 2: kept_tile<2>(d, p, x, t0, out, bias, n0, n1); break;
      case 3: kept_tile<3>(d, p, x, t0, out, bias, n0, n1); break;
      default: kept_tile<4>(d, p, x, t0, out, bias, n0, n1); break;
    }
  }
}

// int4 + 2:4: the kept codes become values through a 16-entry table (vpermps: code - 8, or the code
// itself when a zero point follows), and the group scale multiplies the group's partial sum once instead
// of every weight: per 32 inputs ~11 instructions for 12 bytes (8 of codes, 4 of positions).
template <int MT>
void int4_semi24_tile(const Packed& p, const float* x, int64_t t0, float* out, const float* bias, int64_t n0,
                      int64_t n1) {
  const int64_t K = p.k, G = p.groups();
  alignas(64) float table[16];
  for (int c = 0; c < 16; ++c) table[c] = static_cast<float>(c) - (p.zeros ? 0.0f : 8.0f);
  const __m512 lut = _mm512_load_ps(table);
  const float* xt = x + t0 * K;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * (K / 4);
    const uint8_t* meta = p.meta + n * (K / 8);
    __m512 acc[MT];
    for (int t = 0; t < MT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k_end = std::min(K, (g + 1) * p.group);
      const __m512 zero = _mm512_set1_ps(p.zeros ? static_cast<float>(p.zeros[n * G + g]) : 0.0f);
      __m512 accg[2][MT];  // two chains, alternate steps: the FMA latency (4 cycles) overlaps
      for (int t = 0; t < MT; ++t) accg[0][t] = accg[1][t] = _mm512_setzero_ps();
      auto step = [&](int64_t k0, __m512* a) {
        if ((k0 & 255) == 0) {  // 64 bytes of codes per 256 inputs, 32 of positions
          prefetch_ahead_l1(p, codes + k0 / 4);  // instruction-bound (packed_cpu.h)
          if ((k0 & 511) == 0) prefetch_ahead_l1(p, meta + k0 / 8);
        }
        const __m512i idx = kept_index32(meta, k0);
        __m512 w = _mm512_permutexvar_ps(nibbles16(codes + k0 / 4), lut);
        if (p.zeros) w = _mm512_sub_ps(w, zero);
        for (int t = 0; t < MT; ++t) {
          const float* xk = xt + t * K + k0;
          const __m512 xs = _mm512_permutex2var_ps(_mm512_loadu_ps(xk), idx, _mm512_loadu_ps(xk + 16));
          a[t] = _mm512_fmadd_ps(w, xs, a[t]);
        }
      };
      int64_t k0 = g * p.group;
      for (; k0 + 64 <= k_end; k0 += 64) {
        step(k0, accg[0]);
        step(k0 + 32, accg[1]);
      }
      if (k0 < k_end) step(k0, accg[0]);
      const __m512 sv = _mm512_set1_ps(fp16_to_float(p.scales[n * G + g]));
      for (int t = 0; t < MT; ++t) acc[t] = _mm512_fmadd_ps(sv, _mm512_add_ps(accg[0][t], accg[1][t]), acc[t]);
    }
    for (int t = 0; t < MT; ++t) out[(t0 + t) * p.n + n] = _mm512_reduce_add_ps(acc[t]) + (bias ? bias[n] : 0.0f);
  }
}

// one token (2+ tokens take gemm_lookup_fp32.cpp's tiles: rows_avx512)
void int4_semi24_rows(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                      int64_t n1) {
  for (int64_t t0 = 0; t0 < m; ++t0) int4_semi24_tile<1>(p, x, t0, out, bias, n0, n1);
}

// ---------------------------------------------------------------- int8 at decode
//
// Rows R at a time. The chunk loop (`tile` with Int8Decoder) streamed 36% of the read on one Zen 4 core (4096 x
// 14336, one token): per 16 weights a widening, a conversion, a multiply by the row scale and an FMA on one of
// two chains per row (each waiting out the FMA latency), and at K = 14336 the row's fp32 activations (57 KB,
// more than L1) came again from L2 for every row: 4 bytes of them per byte of weight. Here 16 activations of a
// token load once for R rows, the R rows are R independent chains, the scale multiplies a row's sum once
// (s * sum c x: the same fp32 products as sum (c s) x up to one rounding of each weight), and each row's stream
// prefetches the block R rows on (as the 2:4 bf16 kernels do). 3 instructions per 16 weights and token.
constexpr int kInt8Rows = 4, kInt8RowsOneToken = 8;

template <int MT, int R>
inline void int8_block(const Packed& p, const float* x, int64_t t0, float* out, const float* bias, int64_t n) {
  const int64_t K = p.k, k64 = K & ~int64_t(63), simd_k = K & ~int64_t(15);
  const int8_t* codes = reinterpret_cast<const int8_t*>(p.codes) + n * K;
  const float* xt = x + t0 * K;
  __m512 acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
  // (always inlined: GCC otherwise keeps the lambda out of line at 2+ tokens, its accumulators in memory)
  auto step = [&](int64_t k0) __attribute__((always_inline)) {
    __m512 xv[MT];
    for (int t = 0; t < MT; ++t) xv[t] = _mm512_loadu_ps(xt + t * K + k0);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 w = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + r * K + k0))));
      for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_fmadd_ps(w, xv[t], acc[r][t]);
    }
  };
  int64_t k0 = 0;
  for (; k0 < k64; k0 += 64) {  // a line of each row a step, and its prefetch
    // the block R rows on, into L2 whatever the CPU's plan: R rows ahead is more than L1 holds
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) __builtin_prefetch(codes + (R + r) * K + k0, 0, 2);
    step(k0);
    step(k0 + 16);
    step(k0 + 32);
    step(k0 + 48);
  }
  for (; k0 < simd_k; k0 += 16) step(k0);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) {
      float s = _mm512_reduce_add_ps(acc[r][t]);
      for (int64_t k = simd_k; k < K; ++k) s += static_cast<float>(codes[r * K + k]) * xt[t * K + k];
      out[(t0 + t) * p.n + n + r] = s * fp16_to_float(p.scales[n + r]) + (bias ? bias[n + r] : 0.0f);
    }
}

// every token of rows n .. n + R - 1, tiles of up to 4 tokens: the later tiles read the block's rows from L2
template <int R>
void int8_block_tokens(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n) {
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    if constexpr (R > kInt8Rows) {  // one token only (more would spill)
      int8_block<1, R>(p, x, t0, out, bias, n);
    } else {
      switch (std::min<int64_t>(4, m - t0)) {
        case 1: int8_block<1, R>(p, x, t0, out, bias, n); break;
        case 2: int8_block<2, R>(p, x, t0, out, bias, n); break;
        case 3: int8_block<3, R>(p, x, t0, out, bias, n); break;
        default: int8_block<4, R>(p, x, t0, out, bias, n); break;
      }
    }
  }
}

void int8_rows(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if (m == 1)
    for (; n + kInt8RowsOneToken <= n1; n += kInt8RowsOneToken)
      int8_block_tokens<kInt8RowsOneToken>(p, x, m, out, bias, n);
  for (; n + kInt8Rows <= n1; n += kInt8Rows) int8_block_tokens<kInt8Rows>(p, x, m, out, bias, n);
  for (; n < n1; ++n) int8_block_tokens<1>(p, x, m, out, bias, n);
}

inline bool kept_fits(const Packed& p) {
  if (p.kind == Kind::kSemi24) return true;  // (a K % 32 tail runs the scalar decoder)
  // int4 + 2:4 steps 32 inputs from each group start: whole 32-input steps in every group
  return p.kind == Kind::kInt4Semi24 && p.k % 32 == 0 && (p.group % 32 == 0 || p.group >= p.k);
}


// The tile-size switches below are written out per caller on purpose: one generic dispatch through a
// templated lambda measured 15-20% slower on int4 and int4 + 2:4 decode (GCC 12, 14336 x 4096, M = 1).
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
    for (int64_t k0 = 0; k0 < simd_k; k0 += 16) _mm512_storeu_ps(row + k0, d.chunk(k0));
    for (int64_t k = simd_k; k < K; ++k) row[k] = weight_at(p, n, k);
  }
}

}  // namespace

void rows_avx512(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  if (nibble_chunks_fit(p)) {  // gemm_lookup_fp32.cpp (the binding's own branch for it prepares once for all threads)
    F32Acts a;
    prepare_nibble_f32(p, x, m, a);
    return rows_nibble_f32(p, a, m, out, bias, n0, n1);
  }
  if (kept_fits(p)) {
    if (p.kind == Kind::kSemi24 && p.value_type == ValueType::kBFloat16 && p.k >= 64)
      return kept_bf16_rows(p, x, m, out, bias, n0, n1);
    if (p.kind == Kind::kSemi24) return kept_rows<KeptSemi24>(p, x, m, out, bias, n0, n1);
    // 2+ tokens: 4-row tiles in gemm_lookup_fp32.cpp (kept_fits is its int4_semi24_f32_fits; at one token its
    // 8-row tile measured slower than this loop: 5.5 against 3.9 ms on 4096 x 14336 in a C++ prototype)
    if (m >= 2) return rows_int4_semi24_f32(p, x, m, out, bias, n0, n1);
    return int4_semi24_rows(p, x, m, out, bias, n0, n1);
  }
  switch (p.kind) {
    case Kind::kSemi24: return rows_with<Semi24Decoder>(p, x, m, out, bias, n0, n1);
    case Kind::kInt4: return rows_with<Int4Decoder>(p, x, m, out, bias, n0, n1);
    case Kind::kInt4Semi24: return rows_with<Int4Semi24Decoder>(p, x, m, out, bias, n0, n1);
    case Kind::kMXFP4: return rows_with<MXFP4Decoder>(p, x, m, out, bias, n0, n1);
    case Kind::kInt8: return int8_rows(p, x, m, out, bias, n0, n1);
  }
}

void dequant_avx512(const Packed& p, float* dst, int64_t n0, int64_t n1) {
  switch (p.kind) {
    case Kind::kSemi24: return dequant_with<Semi24Decoder>(p, dst, n0, n1);
    case Kind::kInt4: return dequant_with<Int4Decoder>(p, dst, n0, n1);
    case Kind::kInt4Semi24: return dequant_with<Int4Semi24Decoder>(p, dst, n0, n1);
    case Kind::kMXFP4: return dequant_with<MXFP4Decoder>(p, dst, n0, n1);
    case Kind::kInt8: return dequant_with<Int8Decoder>(p, dst, n0, n1);
  }
}

bool avx512_compiled() { return true; }

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: the scalar path serves (avx512_compiled() is false)

namespace sparsekit {
namespace cpu {

bool avx512_compiled() { return false; }
void rows_avx512(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  rows_scalar(p, x, m, out, bias, n0, n1);
}
void dequant_avx512(const Packed& p, float* dst, int64_t n0, int64_t n1) { dequant_scalar(p, dst, n0, n1); }

}  // namespace cpu
}  // namespace sparsekit

#endif
