// The a8 decode kernels: int4, int4 + 2:4, MXFP4 and int8 weights times int8 activation blocks (acts_int8.cpp)
// with AVX-512 VNNI (vpdpbusd) and VBMI (vpermb, vpmultishiftqb).
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

// ---------------------------------------------------------------- int4 + 2:4: 16 rows a step (q + 128) x (c - z)
//
// Reads the tiles of `Int4Semi24Tiles` (packed_cpu.h): one zmm of codes is two steps of 8 inputs for 16 rows, 4
// kept codes a row and step, so each int32 lane of vpdpbusd is one row. Per step: vpermb turns the nibbles into
// c - 8 (a 64-entry table indexed by the low 6 bits: the AND and the subtraction in one instruction; the high
// nibbles after one 16-bit shift), vpmultishiftqb + vpternlogd turn the broadcast positions into an index per
// byte (2-bit position + 4 for a step's second group), and vpshufb picks each row's 4 activations out of the
// step's 8, broadcast as one qword (a gather within 16 bytes: no vpermi2b over 128). The int32 lanes sum over
// the 4 steps of an activation block (one scale d for every row), the fp32 lanes over the blocks of a group
// (one scale a row), so the conversion and scaling that a row-at-a-time kernel pays every 128 inputs of a row
// come once per block for 16 rows. Activations biased by 128 (u8 operand), weights c - z signed: sum (q + 128) w
// - 128 sum w, the second sum from the block's w added bytewise (|4 w| <= 60 fits a byte) and one vpdpbusd
// against bytes of 128, shared by every token.
//
// kZeros: the layout stores zero points (the table gives c, the group's z of each row is subtracted).
template <int MT, bool kZeros>
void int4_semi24_a8_tiles(const Packed& p, const QActs& qa, int64_t t0, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  constexpr int64_t R = Int4Semi24Tiles::kRows, B = Int4Semi24Tiles::kBlockBytes;
  const int64_t N = p.n, K = p.k, G = p.groups(), nb = K / kActBlock;
  const int64_t per_group = G == 1 ? nb : p.group / kActBlock;  // a8_fits: group % 32 == 0 or one group
  alignas(64) uint8_t ctrl_b[64], base_b[64], quad_b[64];
  alignas(64) int8_t table_b[64];
  for (int i = 0; i < 64; ++i) {
    const int r = i / 4, j = i % 4, q = i / 8;
    ctrl_b[i] = static_cast<uint8_t>(8 * (2 * (q / 2) + r % 2) + 2 * j);  // row r's byte in qword q, slot j
    base_b[i] = static_cast<uint8_t>(4 * (j / 2));                        // slots 2, 3: the step's second group
    quad_b[i] = static_cast<uint8_t>(r);
    table_b[i] = static_cast<int8_t>((i & 15) - (kZeros ? 0 : 8));
  }
  const __m512i ctrl = _mm512_load_si512(ctrl_b), base = _mm512_load_si512(base_b), quad = _mm512_load_si512(quad_b),
                table = _mm512_load_si512(table_b), three = _mm512_set1_epi8(3),
                bias128 = _mm512_set1_epi8(static_cast<char>(128));
  const NaturalA8<MT> acts(qa, t0);
  for (int64_t tile = n0 / R; tile * R < n1; ++tile) {
    const uint8_t* stream = p.tiles + tile * nb * B;
    __m512 o[MT];
    for (int t = 0; t < MT; ++t) o[t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      __m512i z = _mm512_setzero_si512();
      if (kZeros)  // each row's zero point in its 4 bytes
        z = _mm512_permutexvar_epi8(quad, _mm512_castsi128_si512(_mm_loadu_si128(
                                              reinterpret_cast<const __m128i*>(p.tile_zeros + (tile * G + g) * R))));
      __m512 f[MT];
      for (int t = 0; t < MT; ++t) f[t] = _mm512_setzero_ps();
      for (int64_t b = g * per_group; b < std::min(nb, (g + 1) * per_group); ++b) {
        const uint8_t* blk = stream + b * B;
        prefetch_ahead(p, blk);
        prefetch_ahead(p, blk + 64);
        prefetch_ahead(p, blk + 128);
        __m512i acc[MT];
        for (int t = 0; t < MT; ++t) acc[t] = _mm512_setzero_si512();
        __m512i wsum = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
          const __m512i v = _mm512_loadu_si512(blk + 64 * h);
          __m512i w[2] = {_mm512_permutexvar_epi8(v, table), _mm512_permutexvar_epi8(_mm512_srli_epi16(v, 4), table)};
          for (int s = 0; s < 2; ++s) {
            if (kZeros) w[s] = _mm512_sub_epi8(w[s], z);
            const int64_t step = 2 * h + s;
            const __m512i pos = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 128 + 16 * step)));
            // (position & 3) | base: base has its low 2 bits clear, so OR is the add; one vpternlogd for both
            const __m512i idx = _mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(ctrl, pos), three, base, 0xEA);
            int64_t x8;
            for (int t = 0; t < MT; ++t) {
              std::memcpy(&x8, acts.x[t] + b * kActBlock + 8 * step, 8);
              acc[t] = _mm512_dpbusd_epi32(acc[t], _mm512_shuffle_epi8(_mm512_set1_epi64(x8), idx), w[s]);
            }
            wsum = _mm512_add_epi8(wsum, w[s]);
          }
        }
        wsum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, wsum);
        for (int t = 0; t < MT; ++t)
          f[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[t], wsum)), _mm512_set1_ps(acts.d[t][b]), f[t]);
      }
      const __m512 sv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.tile_scales + (tile * G + g) * R)));
      for (int t = 0; t < MT; ++t) o[t] = _mm512_fmadd_ps(f[t], sv, o[t]);
    }
    // rows [n0, n1) of this tile (the binding passes whole tiles; a range that cuts one writes only its rows)
    const int64_t lo = std::max<int64_t>(0, n0 - tile * R), hi = std::min(R, n1 - tile * R);
    const __mmask16 live = static_cast<__mmask16>(((1u << hi) - 1) & ~((1u << lo) - 1));
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(live, bias + tile * R) : _mm512_setzero_ps();
    for (int t = 0; t < MT; ++t) _mm512_mask_storeu_ps(out + (t0 + t) * N + tile * R, live, _mm512_add_ps(o[t], bv));
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
  const int64_t K = p.k;
  const __m512i bias128 = _mm512_set1_epi8(static_cast<char>(128));
  const __m512i two = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const NaturalA8<MT> acts(qa, t0);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* codes = p.codes + n * K;
    __m512 acc[2][MT];  // two chains, alternate chunks: the FMA latency overlaps
    for (int t = 0; t < MT; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    // w: the 64 codes at k0 (past K: masked to 0, weighing nothing)
    auto chunk = [&](int64_t k0, __m512i w, __m512* a) {
      const __m512i wsum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, w);
      for (int t = 0; t < MT; ++t) {
        const __m512i d = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(acts.x[t] + k0), w),
                                           wsum);
        const __m128d pair = _mm_load_sd(reinterpret_cast<const double*>(acts.d[t] + k0 / 32));  // the 2 block scales
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
  if (p.tile_zeros) return int4_semi24_a8_tiles<MT, true>(p, qa, t0, out, bias, n0, n1);
  int4_semi24_a8_tiles<MT, false>(p, qa, t0, out, bias, n0, n1);
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
