// The a8 decode kernels: int4, int4 + 2:4, MXFP4 and int8 weights times int8 activation blocks (acts_int8.cpp)
// with AVX-512 VNNI (vpdpbusd) and VBMI (vpermi2b, vpmultishiftqb).
//
// Why: the exact kernels (gemm_avx512.cpp) turn every weight into an fp32 lane before its FMA, ~6
// instructions per 32 int4 weights; at one thread that caps int4 at about half the memory stream
// (measured: 6.1 of 12.5 GB/s on 4096 x 14336). With int8 activations, one vpdpbusd multiplies 64 code
// bytes by 64 activation bytes and sums them in fours: 128 int4 weights cost ~5 instructions plus ~5 per
// token, and the weight stream, not the core, sets the time again.
//
// Per layout, one chunk of a row (one zmm of codes) lies inside one weight group, so the group scale
// multiplies a chunk's sum once; each 4-byte lane of a chunk lies inside one activation block of 32, so
// a vector of 16 block scales (prepared per call in QActs) converts the int32 lanes to fp32.
#include <algorithm>
#include <cstring>
#include <vector>

#include "a8_common.h"
#include "packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,fma,f16c")
#include <immintrin.h>

namespace sparsekit {
namespace cpu {
namespace {


inline __mmask64 low_bytes(int64_t nb) { return nb >= 64 ? ~__mmask64(0) : ((__mmask64(1) << nb) - 1); }

// A row's G fp16 group scales as fp32, 16 at a time (F16C), and s * z per group: converting one scale per
// 128 inputs with scalar code cost as much as the chunk's vector work (measured: int4 a8 at 7.9 GB/s).
struct RowScales {
  std::vector<float> s, sz;  // [G] scale, scale x zero point
  void load(const Packed& p, int64_t n) {
    const int64_t G = p.groups();
    s.resize(G + 16);
    sz.resize(G + 16);
    for (int64_t g = 0; g < G; g += 16) {
      const __mmask16 mk = static_cast<__mmask16>(G - g >= 16 ? 0xFFFF : (1u << (G - g)) - 1);
      const __m512 sv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, p.scales + n * G + g));
      const __m512 zv =
          p.zeros ? _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, p.zeros + n * G + g)))
                  : _mm512_set1_ps(8.0f);
      _mm512_storeu_ps(&s[g], sv);
      _mm512_storeu_ps(&sz[g], _mm512_mul_ps(sv, zv));
    }
  }
};

// Rows whose every 128-input chunk lies inside one group (group % 128 == 0, or one group per row) run a
// flat loop over chunks: the group scale multiplies each chunk's int32 sums directly, so no per-group
// partial sum, no loop nest, and two accumulator chains that alternate chunks hide the FMA latency (a
// loop over groups of one chunk each kept its accumulators on the stack: ~10 cycles a chunk).
inline bool flat_chunks(const Packed& p) { return p.group % 128 == 0 || p.groups() == 1; }

// the group of each 128-input chunk of a row, for flat_chunks() layouts (no division in the loops)
inline void chunk_groups(const Packed& p, std::vector<int32_t>& of) {
  const int64_t chunks = (p.k + 127) / 128, per = p.groups() == 1 ? chunks : p.group / 128;
  of.resize(chunks);
  for (int64_t c = 0; c < chunks; ++c) of[c] = static_cast<int32_t>(p.groups() == 1 ? 0 : c / per);
}

// sum_g a[g] b[g] over G values
inline float dot(const float* a, const float* b, int64_t G) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; g += 16) {
    const __mmask16 mk = static_cast<__mmask16>(G - g >= 16 ? 0xFFFF : (1u << (G - g)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + g), _mm512_maskz_loadu_ps(mk, b + g), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// the even / odd activation bytes and lane scales of tokens t0 .. t0 + MT - 1 (the nibble layouts)
template <int MT>
struct EvenOdd {
  const uint8_t* ev[MT];
  const uint8_t* od[MT];
  const float* ln[MT];
  EvenOdd(const QActs& qa, int64_t t0) {
    for (int t = 0; t < MT; ++t) {
      ev[t] = &qa.even[(t0 + t) * (qa.kpad / 2)];
      od[t] = &qa.odd[(t0 + t) * (qa.kpad / 2)];
      ln[t] = &qa.lanes[(t0 + t) * (qa.kpad / 8)];
    }
  }
};

// ---------------------------------------------------------------- int4: codes (u8) x q (s8)
//
// The low nibbles of 64 code bytes meet the even inputs and the high nibbles the odd ones: both are
// plain byte vectors after an AND and a shift. The zero point z (8, or the stored one) is folded out:
// sum d q (c - z) = sum d q c - z sum d q, the last sum per group and token prepared once (QActs::gsum).
template <int MT>
void int4_a8_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                  int64_t n1) {
  const int64_t half = p.k / 2, G = p.groups();
  const __m512i low = _mm512_set1_epi8(0x0F);
  const EvenOdd<MT> eo(qa, t0);
  const uint8_t* const* ev = eo.ev;
  const uint8_t* const* od = eo.od;
  const float* const* ln = eo.ln;
  RowScales rs;
  std::vector<int32_t> group_of;
  const bool flat = flat_chunks(p);
  if (flat) chunk_groups(p, group_of);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    rs.load(p, n);
    __m512 acc[MT];
    for (int t = 0; t < MT; ++t) acc[t] = _mm512_setzero_ps();
    // the 64 code bytes v at byte b (zeros past a short chunk: their products vanish whatever the
    // activation bytes there are), times scale sv, into a
    auto chunk = [&](uint64_t b, __m512i v, __m512 sv, __m512* a) {
      const __m512i lo = _mm512_and_si512(v, low);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      for (int t = 0; t < MT; ++t) {
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(ev[t] + b));
        d = _mm512_dpbusd_epi32(d, hi, _mm512_loadu_si512(od[t] + b));
        a[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sv, _mm512_loadu_ps(ln[t] + b / 4)), a[t]);
      }
    };
    __m512 acc1[MT];
    for (int t = 0; t < MT; ++t) acc1[t] = _mm512_setzero_ps();
    if (flat) {  // acc and acc1 alternate chunks
      const int64_t full = half / 64;
      auto scale = [&](int64_t c) { return _mm512_set1_ps(rs.s[group_of[c]]); };
      int64_t c = 0;
      for (; c + 2 <= full; c += 2) {
        prefetch_ahead(p, codes + c * 64);
        prefetch_ahead(p, codes + c * 64 + 64);
        chunk(c * 64, _mm512_loadu_si512(codes + c * 64), scale(c), acc);
        chunk(c * 64 + 64, _mm512_loadu_si512(codes + c * 64 + 64), scale(c + 1), acc1);
      }
      if (c < full) chunk(c * 64, _mm512_loadu_si512(codes + c * 64), scale(c), acc), ++c;
      if (c * 64 < half)
        chunk(c * 64, _mm512_maskz_loadu_epi8(low_bytes(half - c * 64), codes + c * 64), scale(c), acc1);
      for (int t = 0; t < MT; ++t) acc[t] = _mm512_add_ps(acc[t], acc1[t]);
    } else {  // acc1 holds one group's sum, then its scale multiplies it into acc
      const __m512 one = _mm512_set1_ps(1.0f);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t b0 = g * p.group / 2, b1 = std::min(half, (g + 1) * p.group / 2);
        for (int t = 0; t < MT; ++t) acc1[t] = _mm512_setzero_ps();
        for (int64_t b = b0; b < b1; b += 64) {
          prefetch_ahead(p, codes + b);
          chunk(b, _mm512_maskz_loadu_epi8(low_bytes(b1 - b), codes + b), one, acc1);
        }
        const __m512 sv = _mm512_set1_ps(rs.s[g]);
        for (int t = 0; t < MT; ++t) acc[t] = _mm512_fmadd_ps(sv, acc1[t], acc[t]);
      }
    }
    for (int t = 0; t < MT; ++t)
      out[(t0 + t) * p.n + n] = _mm512_reduce_add_ps(acc[t]) - dot(rs.sz.data(), &qa.gsum[(t0 + t) * G], G) +
                                (bias ? bias[n] : 0.0f);
  }
}

// ---------------------------------------------------------------- MXFP4: (q + 128) (u8) x 2 E2M1 (s8)
//
// Twice an E2M1 value is an integer in [-12, 12], so a 16-entry byte table (vpshufb) turns nibbles into
// signed weights; the activations come biased (u8), and sum (q + 128) w - 128 sum w = sum q w, the
// second sum from vpdpbusd against bytes of 128, shared by every token. A 64-byte chunk holds 4 blocks
// of 32 inputs, each with its E8M0 scale: 2^(e - 127) is e placed in an fp32 exponent field.
template <int MT>
void mxfp4_a8_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                   int64_t n1) {
  const int64_t half = p.k / 2;
  alignas(64) int8_t table[64];  // vpshufb looks up within each 16-byte quarter: the table in all four
  mxfp4_x2_table(table);
  for (int i = 16; i < 64; ++i) table[i] = table[i % 16];
  const __m512i lut = _mm512_load_si512(table);
  // 128 as the unsigned operand gives 128 sum w directly (see int4 + 2:4 below)
  const __m512i low = _mm512_set1_epi8(0x0F), bias128 = _mm512_set1_epi8(static_cast<char>(128));
  const __m128i rep4 = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  const EvenOdd<MT> eo(qa, t0);
  const uint8_t* const* ev = eo.ev;
  const uint8_t* const* od = eo.od;
  const float* const* ln = eo.ln;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * half;
    const uint8_t* e8m0 = p.e8m0 + n * (p.k / 32);
    __m512 acc[2][MT];  // two chains, alternate chunks: the FMA latency overlaps
    for (int t = 0; t < MT; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    // v: 64 code bytes (zeros past the row), e4: their (up to) 4 block exponents, one per 16 code bytes
    auto chunk = [&](uint64_t b, __m512i v, __m128i e4, __m512* a) {
      const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, low));
      const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), low));
      const __m512i wsum =
          _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, lo), bias128, hi);
      // each exponent over its block's 4 lanes, placed in an fp32 exponent field (E8M0 0 reads as 0, 255 as inf)
      const __m512 ws = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_shuffle_epi8(e4, rep4)), 23));
      for (int t = 0; t < MT; ++t) {
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(ev[t] + b), lo);
        d = _mm512_dpbusd_epi32(d, _mm512_loadu_si512(od[t] + b), hi);
        d = _mm512_sub_epi32(d, wsum);
        a[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(ws, _mm512_loadu_ps(ln[t] + b / 4)), a[t]);
      }
    };
    auto e4_at = [&](uint64_t b) {
      int32_t w;
      std::memcpy(&w, e8m0 + b / 16, 4);
      return _mm_cvtsi32_si128(w);
    };
    const uint64_t full = static_cast<uint64_t>(half / 64) * 64;
    uint64_t b = 0;
    for (; b + 128 <= full; b += 128) {
      prefetch_ahead(p, codes + b);
      prefetch_ahead(p, codes + b + 64);
      chunk(b, _mm512_loadu_si512(codes + b), e4_at(b), acc[0]);
      chunk(b + 64, _mm512_loadu_si512(codes + b + 64), e4_at(b + 64), acc[1]);
    }
    if (b < full) chunk(b, _mm512_loadu_si512(codes + b), e4_at(b), acc[0]), b += 64;
    if (b < static_cast<uint64_t>(half)) {
      const int64_t nb = half - static_cast<int64_t>(b);
      chunk(b, _mm512_maskz_loadu_epi8(low_bytes(nb), codes + b),
            _mm_maskz_loadu_epi8(static_cast<__mmask16>(low_bytes(nb / 16)), e8m0 + b / 16), acc[1]);
    }
    for (int t = 0; t < MT; ++t)  // the table held 2 x E2M1
      out[(t0 + t) * p.n + n] = 0.5f * _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t])) +
                                (bias ? bias[n] : 0.0f);
  }
}

// ---------------------------------------------------------------- int4 + 2:4: gathered (q + 128) x (c - z)
//
// A chunk is 128 inputs: 32 groups of 4, 64 kept codes (32 bytes) and 16 metadata bytes. The codes
// become one vector [first kept of groups 0..31 | second kept of groups 0..31] (shift and AND), and the
// metadata gives the input index of each: vpmultishiftqb pulls every 2-bit position out of its qword
// (4 groups' nibbles per byte pair, so one instruction for all 64), plus the group base 4g. One vpermi2b
// per token then picks those 64 activation bytes out of the chunk's 128: 64 products in one vpdpbusd,
// with no zeros multiplied. Weights are c - z (signed), activations biased, as for MXFP4.
//
// kZeros: the layout stores zero points. A template argument, not a test of p.zeros per chunk: with the test
// in the loop the compiler broadcast z from a general register every chunk and split the code and metadata
// loads from their broadcasts (two more shuffles on port 5); symmetric rows now broadcast 8 once.
template <int MT, bool kZeros>
void int4_semi24_a8_rows(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                         int64_t n1) {
  const int64_t K = p.k, G = p.groups(), kp = qa.kpad, nb = qa.blocks;
  const __m512i low = _mm512_set1_epi8(0x0F), bias128 = _mm512_set1_epi8(static_cast<char>(128)),
                three = _mm512_set1_epi8(3);
  // bytes 0-31: low nibbles (shift 0), bytes 32-63: high nibbles (shift 4), as 16-bit lanes
  const __m512i nib_shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  alignas(64) uint8_t ctrl_b[64], base_b[64];
  for (int i = 0; i < 64; ++i) {
    ctrl_b[i] = static_cast<uint8_t>(4 * (i % 8) + (i < 32 ? 0 : 2));  // byte i of qword q: group 8 (q % 4) + i % 8
    base_b[i] = static_cast<uint8_t>(4 * (i % 32));
  }
  const __m512i ctrl = _mm512_load_si512(ctrl_b), base = _mm512_load_si512(base_b);
  const uint8_t* xq[MT];
  const float* ln[MT];
  for (int t = 0; t < MT; ++t) {
    xq[t] = &qa.natural[(t0 + t) * kp];
    ln[t] = &qa.lanes24[(t0 + t) * nb * 16];
  }
  RowScales rs;
  std::vector<int32_t> group_of;
  const bool flat = flat_chunks(p);
  if (flat) chunk_groups(p, group_of);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * (K / 4);
    const uint8_t* meta = p.meta + n * (K / 8);
    const uint8_t* zeros = kZeros ? p.zeros + n * G : nullptr;
    rs.load(p, n);
    __m512 acc[2][MT];  // two chains (flat rows alternate chunks), or per row and per group (the others)
    for (int t = 0; t < MT; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    // the chunk of `groups` groups of 4 (8, 16, 24 or 32) at input k0, inside group g, times scale sv
    auto chunk = [&](int64_t k0, int64_t groups, int64_t g, __m512 sv, __m512* a) {
      // a code byte per group (its two kept nibbles), a metadata byte per two groups
      const uint8_t* cp = codes + k0 / 4;
      const uint8_t* mp = meta + k0 / 8;
      const __m256i c = groups == 32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp))
                                     : _mm256_maskz_loadu_epi8(static_cast<__mmask32>(low_bytes(groups)), cp);
      const __m128i m16 = groups == 32 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(mp))
                                       : _mm_maskz_loadu_epi8(static_cast<__mmask16>(low_bytes(groups / 2)), mp);
      const __mmask64 live = low_bytes(groups) | (low_bytes(groups) << 32);
      const __m512i zero = _mm512_set1_epi8(static_cast<char>(kZeros ? zeros[g] : 8));
      const __m512i cw = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i64x4(c), nib_shift), low);
      const __m512i w = _mm512_maskz_sub_epi8(live, cw, zero);  // groups past the chunk weigh 0
      // 128 sum w per lane in one instruction: 128 is a legal unsigned byte (no shift after a sum with ones);
      // the kernel is bound by 512-bit instructions (two a cycle), so every one per chunk counts
      const __m512i wsum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, w);
      const __m512i mq = _mm512_cvtepu32_epi64(_mm256_broadcastsi128_si256(m16));
      // (position & 3) | 4g: base has its low 2 bits clear, so OR is the add; one vpternlogd for both
      const __m512i idx = _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(ctrl, mq), three, base, 0xEA);
      for (int t = 0; t < MT; ++t) {
        const uint8_t* x = xq[t] + k0;
        const __m512i xs = _mm512_permutex2var_epi8(_mm512_loadu_si512(x), idx, _mm512_loadu_si512(x + 64));
        const __m512i d = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xs, w), wsum);
        a[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(sv, _mm512_loadu_ps(ln[t] + (k0 / 32) * 16)), a[t]);
      }
    };
    if (flat) {
      const int64_t full = K / 128;
      int64_t c = 0;
      for (; c + 2 <= full; c += 2) {
        prefetch_ahead(p, codes + c * 32);
        if ((c & 3) == 0) prefetch_ahead(p, meta + c * 16);
        chunk(c * 128, 32, group_of[c], _mm512_set1_ps(rs.s[group_of[c]]), acc[0]);
        chunk(c * 128 + 128, 32, group_of[c + 1], _mm512_set1_ps(rs.s[group_of[c + 1]]), acc[1]);
      }
      for (; c * 128 < K; ++c)
        chunk(c * 128, std::min<int64_t>(128, K - c * 128) / 4, group_of[c], _mm512_set1_ps(rs.s[group_of[c]]), acc[0]);
    } else {
      for (int64_t g = 0; g < G; ++g) {
        const int64_t k_end = std::min(K, (g + 1) * p.group);
        for (int t = 0; t < MT; ++t) acc[1][t] = _mm512_setzero_ps();
        for (int64_t k0 = g * p.group; k0 < k_end; k0 += 128) {
          prefetch_ahead(p, codes + k0 / 4);
          chunk(k0, std::min<int64_t>(128, k_end - k0) / 4, g, _mm512_set1_ps(1.0f), acc[1]);
        }
        const __m512 sv = _mm512_set1_ps(rs.s[g]);
        for (int t = 0; t < MT; ++t) acc[0][t] = _mm512_fmadd_ps(sv, acc[1][t], acc[0][t]);
      }
      for (int t = 0; t < MT; ++t) acc[1][t] = _mm512_setzero_ps();
    }
    for (int t = 0; t < MT; ++t)
      out[(t0 + t) * p.n + n] = _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t])) + (bias ? bias[n] : 0.0f);
  }
}

// ---------------------------------------------------------------- int8: (q + 128) (u8) x w (s8)
//
// The codes are already signed bytes: one vpdpbusd per token multiplies 64 of them with the biased activations,
// and sum (q + 128) w - 128 sum w comes out exact per int32 lane with 128 sum w from the same instruction
// (against bytes of 128), once per chunk for every token, as for int4 + 2:4. ~6 instructions per 64 weight
// bytes, so the stream from memory sets the time (the exact kernel turns every code into an fp32 lane: 36-38%
// of the read on Zen 4 at one token). Subtracting a per-token 128 sum q after the lanes are scaled instead
// (one instruction less) lost the true sum in the rounding of the large terms: 0.4% off for activations of
// one sign (the tests' case, measured while writing this). A chunk of 64 inputs is two activation blocks:
// lanes 0-7 take the first block's scale, lanes 8-15 the second's, through a vpermps of the two (a per-lane
// vector in memory is 4x the activations' bytes: a variant that read one per chunk ran 57% slower).
template <int MT>
void int8_a8_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                  int64_t n1) {
  const int64_t K = p.k, kp = qa.kpad, nb = qa.blocks;
  const __m512i bias128 = _mm512_set1_epi8(static_cast<char>(128));
  const __m512i two = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const uint8_t* xq[MT];
  const float* db[MT];
  for (int t = 0; t < MT; ++t) {
    xq[t] = &qa.natural[(t0 + t) * kp];
    db[t] = &qa.d[(t0 + t) * nb];
  }
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * K;
    __m512 acc[2][MT];  // two chains, alternate chunks: the FMA latency overlaps
    for (int t = 0; t < MT; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    // w: the 64 codes at k0 (past K: masked to 0, weighing nothing)
    auto chunk = [&](int64_t k0, __m512i w, __m512* a) {
      const __m512i wsum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, w);
      for (int t = 0; t < MT; ++t) {
        const __m512i d = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(xq[t] + k0), w),
                                           wsum);
        const __m128d pair = _mm_load_sd(reinterpret_cast<const double*>(db[t] + k0 / 32));  // the 2 block scales
        const __m512 sv = _mm512_permutexvar_ps(two, _mm512_castps128_ps512(_mm_castpd_ps(pair)));
        a[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv, a[t]);
      }
    };
    int64_t k0 = 0;
    for (; k0 + 128 <= K; k0 += 128) {
      prefetch_ahead(p, codes + k0);
      prefetch_ahead(p, codes + k0 + 64);
      chunk(k0, _mm512_loadu_si512(codes + k0), acc[0]);
      chunk(k0 + 64, _mm512_loadu_si512(codes + k0 + 64), acc[1]);
    }
    for (; k0 < K; k0 += 64) chunk(k0, _mm512_maskz_loadu_epi8(low_bytes(K - k0), codes + k0), acc[0]);
    const float s = fp16_to_float(p.scales[n]);
    for (int t = 0; t < MT; ++t)
      out[(t0 + t) * p.n + n] = s * _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t])) + (bias ? bias[n] : 0.0f);
  }
}

template <int MT>
void int4_semi24_a8_tile(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                         int64_t n1) {
  if (p.zeros) return int4_semi24_a8_rows<MT, true>(p, qa, t0, out, bias, n0, n1);
  int4_semi24_a8_rows<MT, false>(p, qa, t0, out, bias, n0, n1);
}

SPARSEKIT_A8_TILE(Int4A8, int4_a8_tile)
SPARSEKIT_A8_TILE(MXFP4A8, mxfp4_a8_tile)
SPARSEKIT_A8_TILE(Int4Semi24A8, int4_semi24_a8_tile)
SPARSEKIT_A8_TILE(Int8A8, int8_a8_tile)

}  // namespace

bool a8_compiled() { return true; }

void rows_a8(const Packed& p, const QActs& qa, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  switch (p.kind) {
    case Kind::kInt4: return a8_rows<Int4A8>(p, qa, m, out, bias, n0, n1);
    case Kind::kMXFP4: return a8_rows<MXFP4A8>(p, qa, m, out, bias, n0, n1);
    case Kind::kInt4Semi24: return a8_rows<Int4Semi24A8>(p, qa, m, out, bias, n0, n1);
    case Kind::kInt8: return a8_rows<Int8A8>(p, qa, m, out, bias, n0, n1);
    default: return;  // a8_fits() is false: the binding never calls it
  }
}

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: the exact kernels run on d * q instead (a8_compiled() is false)

namespace sparsekit {
namespace cpu {
bool a8_compiled() { return false; }
void rows_a8(const Packed&, const QActs&, int64_t, float*, const float*, int64_t, int64_t) {}
}  // namespace cpu
}  // namespace sparsekit

#endif

namespace sparsekit {
namespace cpu {

bool a8_fits(const Packed& p) {
  if (p.k % kActBlock) return false;
  switch (p.kind) {
    case Kind::kMXFP4:
    case Kind::kInt8: return true;
    case Kind::kInt4:
    case Kind::kInt4Semi24: return p.group % kActBlock == 0 || p.group >= p.k;
    default: return false;
  }
}

}  // namespace cpu
}  // namespace sparsekit
